"""Listing feature schema: which columns are features, of what kind.

Types are inferred from the data (numbers, or text that writes only numbers: numeric; other
strings: categorical, multi-valued when values hold ``|`` (unless their items are mostly
one-offs, as a title's parts are: text), or free text when they are long and mostly
unique; a lat/lon pair: geo; text that writes nearly only numbers is refused) and a TOML
config can override a column's type or drop it. The schema is saved with the model as JSON
so the same columns are encoded the same way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from embedrec.data.errors import DataError
from embedrec.geo import LAT_LON_COLUMNS

KINDS = ("numeric", "categorical", "multi", "geo", "text")
MULTI_SEPARATOR = "|"
# Cells that mean "no value": pandas' own spellings (NA, n/a, null, #N/A, ...) and "-", as
# spreadsheets write it. The CSV reader takes them as written; type inference and the
# numeric encoder also without case or surrounding spaces.
MISSING_MARKERS = frozenset(STR_NA_VALUES) | {"-"}
_MISSING_FOLDED = frozenset(marker.lower() for marker in MISSING_MARKERS)
# A text column is numeric when all its distinct values (missing markers aside) are numbers;
# from this share on, the few that are not are taken for typos or markers of their own
# ("k.A."), refused rather than making a category of every price.
NUMERIC_SHARE = 0.9
# distinct values looked at first: a column of titles is told from one of numbers cheaply
_SAMPLE = 1000


def missing_text(text: pd.Series) -> np.ndarray:
    """Mask of the cells of a text column that are missing markers (or blank)."""
    folded = text.astype(str).str.strip().str.lower()
    return folded.isin(_MISSING_FOLDED).to_numpy()


@dataclass(frozen=True)
class FeatureSpec:
    """One listing feature: ``name``, ``kind`` (one of KINDS) and its source ``columns``.

    Geo features read two columns (latitude, longitude); every other kind reads one.
    """

    name: str
    kind: str
    columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "columns": list(self.columns)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(name=data["name"], kind=data["kind"], columns=tuple(data["columns"]))


def column_kinds(specs: Iterable[FeatureSpec] | None) -> dict[str, str]:
    """Each feature column's kind (both coordinate columns ``geo``); none for ``mf``'s."""
    return {column: spec.kind for spec in specs or () for column in spec.columns}


@dataclass
class SchemaConfig:
    """What a TOML config may say about listing features.

    ```toml
    [features]
    drop = ["dealer_id"]
    [features.types]
    year = "categorical"
    equipment = "multi"
    ```
    """

    types: dict[str, str] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)

    @classmethod
    def from_toml(cls, path: str | Path) -> SchemaConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # as cli's config
        except FileNotFoundError:
            raise DataError("config file not found", file=str(path)) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"not valid TOML: {exc}", file=str(path)) from None
        return cls.from_mapping(data.get("features", {}), source=str(path))

    @classmethod
    def from_mapping(cls, features: dict[str, Any], source: str | None = None) -> SchemaConfig:
        if not isinstance(features, dict):
            raise DataError("[features] must be a table", file=source)
        unknown = sorted(set(features) - {"types", "drop"})
        if unknown:
            raise DataError(
                f"unknown key(s) in [features]: {', '.join(unknown)}; expected types, drop",
                file=source,
            )
        types = features.get("types", {})
        if not isinstance(types, dict):
            raise DataError("[features] types must be a table of column = type", file=source)
        drop = features.get("drop", [])
        if not isinstance(drop, list) or not all(isinstance(c, str) for c in drop):
            raise DataError("[features] drop must be a list of column names", file=source)
        types = dict(types)
        for column, kind in types.items():
            if kind not in KINDS:
                raise DataError(
                    f"unknown feature type '{kind}' for column '{column}'; "
                    f"expected one of {', '.join(KINDS)}",
                    file=source,
                )
        return cls(types=types, drop=list(drop))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def infer_schema(
    listings: pd.DataFrame, config: SchemaConfig | None = None, source: str | None = None
) -> list[FeatureSpec]:
    """Infer the feature specs of a listings table, applying ``config`` overrides."""
    config = config or SchemaConfig()
    columns = [c for c in listings.columns if c != "listing_id" and c not in config.drop]
    unknown = [c for c in list(config.types) + config.drop if c not in listings.columns]
    if unknown:
        raise DataError(
            f"config names column(s) not in the listings table: {', '.join(map(str, unknown))}",
            file=source,
        )
    specs: list[FeatureSpec] = []
    used: set[str] = set()
    for lat, lon in LAT_LON_COLUMNS:
        if lat in columns and lon in columns and lat not in config.types:
            specs.append(FeatureSpec(name="geo", kind="geo", columns=(lat, lon)))
            used.update((lat, lon))
            break
    for column in columns:
        if column in used:
            continue
        try:
            kind = config.types.get(column) or _infer_kind(listings[column])
        except DataError as exc:
            raise (exc.in_file(source) if source else exc) from None
        if kind is None:
            continue
        if kind == "geo":
            raise DataError(
                "a geo feature is a lat/lon (or latitude/longitude) column pair, "
                "not a single column",
                file=source,
                column=column,
            )
        specs.append(FeatureSpec(name=str(column), kind=kind, columns=(str(column),)))
    return specs


def _infer_kind(series: pd.Series) -> str | None:
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series):
        return None  # dates describe the listing's life, not the listing; not a feature
    if pd.api.types.infer_dtype(series, skipna=True) == "decimal":
        return "numeric"
    if _numbers_as_text(series):
        return "numeric"
    sample = series.dropna().astype(str).head(1000)
    if len(sample) and sample.str.contains(MULTI_SEPARATOR, regex=False).mean() > 0.2:
        # "Senior Engineer | Remote" is a title, "balcony|garden" a list: decided by the items
        return "text" if looks_like_text(sample) and _one_off_items(sample) else "multi"
    if looks_like_text(sample):
        return "text"
    return "categorical"


def _numbers_as_text(series: pd.Series) -> bool:
    """Whether a column of text holds numbers only (missing markers aside), as a CSV column
    does whose missing values are written "k.A."-style or a database column typed as text.
    Raises DataError naming the first value that is no number where nearly all are
    (NUMERIC_SHARE). Numbers with leading zeros (postal codes: 01067) are codes, not
    numbers."""
    values = series.dropna()
    # the distinct values of the first rows decide most columns (titles, makes) before the
    # passes over a whole column of a million listings
    head = _distinct_text(values.head(_SAMPLE))
    if len(head) and pd.to_numeric(head, errors="coerce").notna().mean() < NUMERIC_SHARE:
        return False
    distinct = _distinct_text(values)
    if distinct.empty or distinct.str.match(r"[+-]?0[0-9]").any():
        return False
    is_number = pd.to_numeric(distinct, errors="coerce").notna()
    if is_number.all():
        return True
    if is_number.mean() < NUMERIC_SHARE:
        return False
    first = distinct[~is_number].iloc[0]
    text = series.astype(str).str.strip()
    row = int(np.flatnonzero((text == first).to_numpy() & series.notna().to_numpy())[0])
    column = str(series.name)
    raise DataError(
        f"{first!r} is not a number, but {int(is_number.sum()):,} of the column's "
        f"{len(distinct):,} distinct values are: clean the column (leave a missing value's "
        f"cell empty) or, if it is a category, say so in the config's [features.types]: "
        f'{column} = "categorical"',
        row=row + 1,
        column=column,
    )


def _distinct_text(values: pd.Series) -> pd.Series:
    """The distinct values of a text column as stripped text, missing markers left out."""
    values = values[~missing_text(values)]
    return pd.Series(pd.unique(values.astype(str).str.strip()), dtype=object)


def looks_like_text(sample: pd.Series) -> bool:
    """Titles and descriptions: several words, and mostly unique, so that a category per
    value would learn nothing (a make or a city repeats; a title rarely does). Scripts that
    write no spaces between words (Chinese, Japanese, Thai, ...) count as several words from
    six of their characters on."""
    if len(sample) < 20:
        return False
    words = sample.str.replace(MULTI_SEPARATOR, " ", regex=False).str.split().str.len()
    unspaced = sample.str.count(_UNSPACED_SCRIPTS)
    several = (words >= 3) | (unspaced >= 6)
    return bool(several.mean() >= 0.5 and sample.nunique() / len(sample) > 0.5)


def _one_off_items(sample: pd.Series) -> bool:
    """Whether the ``a|b|c`` items of a column are mostly one-offs, as the parts of titles
    are: at least half its rows hold an item of several words (two, or six characters of a
    script without spaces) that no other row holds. The items of a list (amenities,
    equipment) come from a vocabulary and repeat across rows."""
    items = sample.reset_index(drop=True).str.split(MULTI_SEPARATOR, regex=False).explode()
    items = items.str.strip()
    items = items[items.str.len() > 0].reset_index().drop_duplicates()
    items.columns = ["row", "item"]
    once = items["item"].map(items["item"].value_counts()) == 1
    long = (items["item"].str.split().str.len() >= 2) | (
        items["item"].str.count(_UNSPACED_SCRIPTS) >= 6
    )
    return bool(items.loc[once & long, "row"].nunique() >= 0.5 * len(sample))


# characters of scripts written without spaces between words: Thai, Lao, Myanmar, Khmer,
# kana, CJK ideographs (and their extension A)
_UNSPACED_SCRIPTS = (
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]"
)
