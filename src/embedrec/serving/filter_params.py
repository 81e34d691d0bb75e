"""The filter query parameters the HTTP API documents, derived from the catalogue's columns,
and the description of those columns that ``GET /v1/catalogue`` answers (the explorer page
builds its filter boxes, table and colours from it).

Any listing column filters whatever is documented (the filters are read from the whole query
string); these parameters put the served catalogue's filters into the OpenAPI schema. They are
OpenAPI entries, not parameters of the route's signature: FastAPI would parse and validate
dozens of them on every request (a sixth of a similar-listing request's time at 1M listings)
only for the filter parser to read the query string again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from embedrec.data.schema import MULTI_SEPARATOR, looks_like_text
from embedrec.geo import LAT_LON_COLUMNS
from embedrec.index.filters import ID_COLUMN

# the routes' number of results, never a filter
RESULTS = "k"
# not derived from a column, so no column may take these names
RADIUS = ("near", "within_km")
EXCLUDE = "exclude"
# query parameters that are no column's filter: the service refuses a catalogue with a column
# of one of these names (serving/state.py), which could never be filtered
QUERY_PARAMETERS = (RESULTS, *RADIUS, EXCLUDE)
# listings the column description reads its distinct values from, and the values it lists
DESCRIBED_SAMPLE = 20_000
DESCRIBED_VALUES = 100
# a feature's kind (data/schema.py) that the description keeps for a column of text
_TEXT_KINDS = ("categorical", "multi", "text")


def filter_parameters(schema: pd.DataFrame, reserved: Collection[str] = ()) -> list[dict[str, Any]]:
    """OpenAPI query parameter objects, one per documented filter.

    Numeric columns give ``<column>_min`` and ``<column>_max`` (numbers), text, categorical
    and boolean columns a repeatable ``<column>``, a lat/lon column pair ``near`` and
    ``within_km``, and ``exclude`` is always there. Names in ``reserved`` (the routes' own
    parameters) are left out, as are date-time columns and the id column (see ``exclude``).
    """
    number, text = {"type": "number"}, {"type": "string"}
    texts = {"type": "array", "items": text}
    documented: dict[str, tuple[dict[str, Any], str]] = {}
    taken = {*reserved, *RADIUS, EXCLUDE}
    for column, dtype in schema.dtypes.items():
        name = str(column)
        if name == ID_COLUMN or pd.api.types.is_datetime64_any_dtype(dtype):
            continue
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            documented[f"{name}_min"] = (number, f"lowest {name} (inclusive)")
            documented[f"{name}_max"] = (number, f"highest {name} (inclusive)")
        else:
            documented[name] = (texts, f"{name} is one of these: a,b, or repeated, each whole")
    documented = {alias: doc for alias, doc in documented.items() if alias not in taken}
    if any(lat in schema.columns and lon in schema.columns for lat, lon in LAT_LON_COLUMNS):
        documented["near"] = (text, "lat,lon")
        documented["within_km"] = (number, "radius around near, in km")
    documented[EXCLUDE] = (texts, "listing ids never returned: id1,id2, or repeated, each whole")
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": kind,
        }  # fmt: skip
        for name, (kind, description) in documented.items()
    ]


def column_filters(name: str, dtype: Any, reserved: Collection[str] = ()) -> list[str]:
    """The query parameters that filter the column ``name`` (as documented above)."""
    if name == ID_COLUMN or pd.api.types.is_datetime64_any_dtype(dtype):
        return []
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        names = [f"{name}_min", f"{name}_max"]
    else:
        names = [name]
    taken = {*reserved, *RADIUS, EXCLUDE}
    return [n for n in names if n not in taken]


def location_columns(columns: Collection[str]) -> list[str] | None:
    """The lat/lon column pair a catalogue is located by (``near`` filters it), or None."""
    for lat, lon in LAT_LON_COLUMNS:
        if lat in columns and lon in columns:
            return [lat, lon]
    return None


def describe_columns(
    sample: pd.DataFrame,
    schema: pd.DataFrame,
    feature_kinds: Mapping[str, str] | None = None,
    reserved: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Each column of ``schema`` but the id: its name, kind, the query parameters that filter
    it and, read from ``sample`` (some of the catalogue's listings), how many distinct values
    it has and the most frequent of them.

    The kind follows what filters it: ``numeric`` (a range), ``boolean``, ``datetime`` (no
    filter), and for other columns the model's feature kind where the column is a feature
    (``categorical``, ``multi`` for ``a|b|c`` values, ``text`` for titles and descriptions),
    else as the data reads. A multi-valued column's values are its single values, as a set
    filter matches them; free text lists none.
    """
    feature_kinds = feature_kinds or {}
    described = []
    for column, dtype in schema.dtypes.items():
        name = str(column)
        if name == ID_COLUMN:
            continue
        values = sample[column] if column in sample.columns else pd.Series([], dtype=dtype)
        kind = _column_kind(values, dtype, feature_kinds.get(name))
        entry: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "filters": column_filters(name, dtype, reserved),
            "distinct": None,
            "values": None,
        }
        if kind in ("categorical", "multi", "boolean", "text"):
            present = values.dropna()
            if kind == "boolean":
                present = present.map(lambda v: str(v).lower())
            else:
                present = present.astype(str)
            if kind == "multi":
                present = present.str.split(MULTI_SEPARATOR, regex=False).explode().str.strip()
                present = present[present != ""]
            counts = present.value_counts(sort=True)
            entry["distinct"] = int(len(counts))
            if kind != "text":
                entry["values"] = [str(v) for v in counts.index[:DESCRIBED_VALUES]]
        described.append(entry)
    return described


def holds_booleans(values: pd.Series) -> bool:
    """Whether a column holds true and false: of the bool dtype, or, with missing values, a
    column of objects whose values (the first 1,000 present) are all booleans."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return True
    if values.dtype != object:
        return False
    present = values.dropna().head(1000)
    return bool(len(present)) and all(isinstance(v, bool | np.bool_) for v in present)


def _column_kind(values: pd.Series, dtype: Any, feature_kind: str | None) -> str:
    if pd.api.types.is_bool_dtype(dtype) or holds_booleans(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    present = values.dropna()
    if feature_kind in _TEXT_KINDS:
        return feature_kind
    sample = present.astype(str).head(1000)
    if len(sample) and sample.str.contains(MULTI_SEPARATOR, regex=False).mean() > 0.2:
        return "multi"
    return "text" if looks_like_text(sample) else "categorical"
