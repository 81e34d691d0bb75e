"""What listing embeddings encode, in numbers: neighbour agreement per field, and geography."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from embedrec.data.io import date_columns
from embedrec.geo import LAT_LON_COLUMNS
from embedrec.ranking import neighbours
from embedrec.viz.plots import haversine_km
from embedrec.viz.projection import normalise

ID_COLUMNS = {"id", "listing_id", "dealer_id", "user_id", "seller_id"}
GEO_COLUMNS = {name for pair in LAT_LON_COLUMNS for name in pair}
RADII_KM = (50, 100, 200)
# A '|'-separated column (equipment) is a set when this share of its values hold a '|'.
SET_SHARE = 0.2
# Whole numbers all within these bounds, or a column named *year, are years: their
# differences are absolute (2018 vs 2021 is 3 years, 0.001 relatively).
YEARS = (1900, 2100)


def inspect_embeddings(
    vectors: np.ndarray,
    table: pd.DataFrame,
    k: int = 10,
    sample: int = 2000,
    seed: int = 0,
    kinds: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Measure what the embeddings encode about the listings in `table` (same row order).

    For a seeded sample of query listings, the k nearest neighbours (cosine, itself excluded,
    exact search over all rows) are compared with k random other listings per query:

    - categorical columns: share of pairs with the same value ("neighbours" vs "random";
      "lift" = their ratio),
    - numeric columns: median relative difference |a-b| / max(|a|,|b|) (lower = closer;
      "ratio" = neighbours / random); for year-like columns (named *year, or whole numbers
      all within YEARS) the median absolute difference |a-b| instead, as relative
      differences of years are all near 0 ("difference" says which),
    - '|'-separated set columns (equipment): mean Jaccard similarity,
    - geography (when lat/lon exist): Spearman correlation of embedding distance (1 - cosine)
      with haversine km over random pairs and over neighbour pairs, median km, and the share
      of pairs within 50, 100 and 200 km.

    ``kinds``: the model's feature kind of each feature column (``feature_specs_``), which
    decides how it is compared: a ``categorical`` column of numbers by equal values, a
    ``multi`` one as a set, ``text`` skipped (free text has no equal values to count). Other
    columns are compared as their values read. Id-like columns (listing_id, dealer_id, *_id,
    non-numeric columns with > 50% unique values), dates (the columns the reader marks as
    dates without a time of day: ``data.io.date_columns``), timestamps and constant columns
    are skipped, with the reason under "skipped".
    """
    x = normalise(vectors)
    n = len(x)
    if len(table) != n:
        raise ValueError(f"table has {len(table)} rows but vectors has {n}")
    if n < 3:
        raise ValueError(f"need at least 3 listings, got {n}")
    k = min(k, n - 1)
    table = table.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    nbrs, sims = neighbours(x, queries, k)
    q_nb = np.repeat(queries, k)
    nb = nbrs.ravel()
    # Random partners: a uniform non-zero offset guarantees j != i.
    q_rnd = q_nb
    rnd = (q_rnd + rng.integers(1, n, size=len(q_rnd))) % n

    result: dict[str, Any] = {
        "n": n,
        "dim": int(x.shape[1]),
        "k": k,
        "queries": len(queries),
        "mean_neighbour_cosine": float(sims.mean()),
        "mean_random_cosine": float(np.einsum("ij,ij->i", x[q_rnd], x[rnd]).mean()),
        "categorical": {},
        "numeric": {},
        "sets": {},
        "geo": None,
        "skipped": {},
    }
    days = set(date_columns(table))
    for col in table.columns:
        kind, why = _column_kind(table, str(col), (kinds or {}).get(str(col)), str(col) in days)
        if kind is None:
            result["skipped"][str(col)] = why
            continue
        s = table[col]
        if kind == "categorical":
            codes, uniques = pd.factorize(s)
            a, b = _share_equal(codes, q_nb, nb), _share_equal(codes, q_rnd, rnd)
            result["categorical"][str(col)] = {
                "neighbours": a,
                "random": b,
                "lift": a / b if b > 0 else math.inf,
                "values": len(uniques),
            }
        elif kind == "numeric":
            v = s.to_numpy(dtype=float, na_value=np.nan)
            absolute = _is_year(str(col), v)
            median = _median_abs_diff if absolute else _median_rel_diff
            a, b = median(v, q_nb, nb), median(v, q_rnd, rnd)
            result["numeric"][str(col)] = {
                "neighbours": a,
                "random": b,
                "ratio": a / b if b > 0 else math.nan,
                "difference": "absolute" if absolute else "relative",
            }
        else:
            dummies = s.astype("string").fillna("").str.get_dummies(sep="|")
            # a listing without items (or "a||b") is no item named "" that empty sets share
            m = dummies.drop(columns="", errors="ignore").to_numpy(bool)
            result["sets"][str(col)] = {
                "neighbours": _mean_jaccard(m, q_nb, nb),
                "random": _mean_jaccard(m, q_rnd, rnd),
                "items": m.shape[1],
            }
    lat, lon = _geo_columns(table)
    if lat is not None and lon is not None:
        la = table[lat].to_numpy(dtype=float, na_value=np.nan)
        lo = table[lon].to_numpy(dtype=float, na_value=np.nan)
        cos_rnd = np.einsum("ij,ij->i", x[q_rnd], x[rnd])
        result["geo"] = _geo(la, lo, q_nb, nb, 1.0 - sims.ravel(), q_rnd, rnd, 1.0 - cos_rnd)
    return result


# the model's feature kinds as this module compares them (numeric ones as their values read)
_FEATURE_KINDS = {"categorical": "categorical", "multi": "set"}


def _column_kind(
    table: pd.DataFrame, col: str, feature_kind: str | None = None, is_date: bool = False
) -> tuple[str | None, str]:
    s = table[col]
    name = col.lower()
    if name in ID_COLUMNS or name.endswith("_id"):
        return None, "id"
    if name in GEO_COLUMNS:
        return None, "geo (see geo section)"
    if feature_kind == "text":
        return None, "free text"
    if feature_kind in _FEATURE_KINDS and s.nunique(dropna=True) >= 2:
        return _FEATURE_KINDS[feature_kind], ""
    if (
        pd.api.types.is_datetime64_any_dtype(s)
        or isinstance(s.dtype, pd.PeriodDtype)
        or name in {"timestamp", "ts", "date", "time"}
        or name.endswith(("_at", "_ts", "_date", "_time", "timestamp"))
    ):
        return None, "date" if is_date else "timestamp"
    nunique = s.nunique(dropna=True)
    if nunique < 2:
        return None, "constant"
    if _is_numeric(s):
        return "numeric", ""
    if not (
        pd.api.types.is_object_dtype(s)
        or pd.api.types.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(s)
    ):
        return None, f"unsupported dtype {s.dtype}"
    text = s.dropna().astype("string")
    if len(text) and text.str.contains("|", regex=False).mean() >= SET_SHARE:
        return "set", ""
    if nunique > 0.5 * len(s):
        return None, f"id-like ({nunique} distinct values)"
    return "categorical", ""


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _geo_columns(table: pd.DataFrame) -> tuple[str | None, str | None]:
    cols = {str(c).lower(): c for c in table.columns}
    lat = next((cols[la] for la, _ in LAT_LON_COLUMNS if la in cols), None)
    lon = next((cols[lo] for _, lo in LAT_LON_COLUMNS if lo in cols), None)
    return lat, lon


def _share_equal(codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Share of pairs with equal non-missing values, over pairs whose first value exists."""
    ca, cb = codes[a], codes[b]
    known = ca >= 0
    return float((ca[known] == cb[known]).mean()) if known.any() else math.nan


def _is_year(name: str, v: np.ndarray) -> bool:
    if name.lower().endswith("year"):
        return True
    known = v[np.isfinite(v)]
    return bool(
        len(known)
        and (known == np.round(known)).all()
        and YEARS[0] <= known.min()
        and known.max() <= YEARS[1]
    )


def _median_abs_diff(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    diff = np.abs(v[a] - v[b])
    diff = diff[~np.isnan(diff)]
    return float(np.median(diff)) if len(diff) else math.nan


def _median_rel_diff(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    va, vb = v[a], v[b]
    ok = ~(np.isnan(va) | np.isnan(vb))
    va, vb = va[ok], vb[ok]
    if not len(va):
        return math.nan
    denom = np.maximum(np.abs(va), np.abs(vb))
    rel = np.divide(np.abs(va - vb), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(np.median(rel))


def _mean_jaccard(m: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    inter = (m[a] & m[b]).sum(axis=1)
    union = (m[a] | m[b]).sum(axis=1)
    jac = np.divide(inter, union, out=np.ones(len(a)), where=union > 0)
    return float(jac.mean()) if len(jac) else math.nan


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


def _geo(
    lat: np.ndarray,
    lon: np.ndarray,
    q_nb: np.ndarray,
    nb: np.ndarray,
    d_nb: np.ndarray,
    q_rnd: np.ndarray,
    rnd: np.ndarray,
    d_rnd: np.ndarray,
) -> dict[str, Any]:
    km_nb = haversine_km(lat[q_nb], lon[q_nb], lat[nb], lon[nb])
    km_rnd = haversine_km(lat[q_rnd], lon[q_rnd], lat[rnd], lon[rnd])
    return {
        "spearman_random": _spearman(d_rnd, km_rnd),
        "spearman_neighbours": _spearman(d_nb, km_nb),
        "median_km": {
            "neighbours": float(np.nanmedian(km_nb)),
            "random": float(np.nanmedian(km_rnd)),
        },
        "within_km": {
            r: {
                "neighbours": float(np.mean(km_nb[np.isfinite(km_nb)] <= r)),
                "random": float(np.mean(km_rnd[np.isfinite(km_rnd)] <= r)),
            }
            for r in RADII_KM
        },
    }


def format_inspection(result: dict[str, Any]) -> str:
    """Render an `inspect_embeddings` result as a plain-text report with aligned tables."""
    out = [
        f"{result['n']:,} listings, {result['dim']} dims; {result['queries']:,} queries x "
        f"{result['k']} nearest neighbours (cosine) vs as many random pairs",
        f"mean cosine: neighbours {result['mean_neighbour_cosine']:.3f}, "
        f"random {result['mean_random_cosine']:.3f}",
    ]
    if result["categorical"]:
        rows = [
            [c, f"{v['values']}", f"{v['neighbours']:.3f}", f"{v['random']:.3f}",
             f"{v['lift']:.1f}x"]
            for c, v in sorted(result["categorical"].items(), key=lambda kv: -kv[1]["lift"])
        ]  # fmt: skip
        out += ["", "Same value (share of pairs; higher = encoded)"]
        out += _table(["column", "values", "neighbours", "random", "lift"], rows)
    numeric = sorted(result["numeric"].items(), key=lambda kv: kv[1]["ratio"])
    relative = [(c, v) for c, v in numeric if v.get("difference", "relative") == "relative"]
    absolute = [(c, v) for c, v in numeric if v.get("difference") == "absolute"]
    if relative:
        rows = [
            [c, f"{v['neighbours']:.3f}", f"{v['random']:.3f}", f"{v['ratio']:.2f}"]
            for c, v in relative
        ]
        out += ["", "Median relative difference |a-b|/max(|a|,|b|) (lower = encoded)"]
        out += _table(["column", "neighbours", "random", "ratio"], rows)
    if absolute:
        rows = [
            [c, f"{v['neighbours']:.1f}", f"{v['random']:.1f}", f"{v['ratio']:.2f}"]
            for c, v in absolute
        ]
        out += ["", "Median absolute difference |a-b| of years (lower = encoded)"]
        out += _table(["column", "neighbours", "random", "ratio"], rows)
    if result["sets"]:
        rows = [
            [c, f"{v['items']}", f"{v['neighbours']:.3f}", f"{v['random']:.3f}"]
            for c, v in result["sets"].items()
        ]
        out += ["", "Mean Jaccard similarity of '|'-separated sets (higher = encoded)"]
        out += _table(["column", "items", "neighbours", "random"], rows)
    geo = result.get("geo")
    if geo:
        out += [
            "",
            "Geography",
            f"Spearman(1 - cosine, km): random pairs {geo['spearman_random']:+.3f}, "
            f"neighbour pairs {geo['spearman_neighbours']:+.3f}",
        ]
        rows = [["median km", f"{geo['median_km']['neighbours']:,.0f}",
                 f"{geo['median_km']['random']:,.0f}"]]  # fmt: skip
        rows += [
            [f"within {r} km", f"{v['neighbours']:.1%}", f"{v['random']:.1%}"]
            for r, v in geo["within_km"].items()
        ]
        out += _table(["", "neighbours", "random"], rows)
    if result["skipped"]:
        out += ["", "Skipped: " + ", ".join(f"{c} ({w})" for c, w in result["skipped"].items())]
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]
