"""Train/test splits of interaction frames (``user_id``, ``listing_id``, ``timestamp``).

Every splitter returns rows of the input unchanged (all columns, original index and order),
so each input row lands in exactly one output frame.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from embedrec.data.errors import DataError

USER, ITEM, TIME = "user_id", "listing_id", "timestamp"


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"interactions lack column(s): {', '.join(missing)}")


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def global_time_split(
    df: pd.DataFrame, test_start: Any = None, test_fraction: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split at one moment: rows with ``timestamp >= test_start`` are test, the rest train.

    Without ``test_start`` the cut is the ``1 - test_fraction`` quantile of the timestamps
    (linear interpolation), so roughly ``test_fraction`` of the rows are test; ties at the cut
    all go to test. Timestamps and ``test_start`` are read as ``load_interactions`` reads
    them: numbers as they are, datetimes and ISO-8601 text as moments, a moment without a
    zone in UTC; a missing or non-finite timestamp is a DataError naming its row.
    """
    _require(df, TIME)
    times = _instants(df[TIME])
    if test_start is None:
        _check_fraction(test_fraction)
        if len(df) == 0:
            return df.copy(), df.copy()
        if times.dtype.kind == "i":
            # from the earliest, so that whole numbers past 2**53 interpolate exactly
            low = int(times.min())
            cut = low + math.ceil(np.quantile(times - low, 1.0 - test_fraction))
        else:
            cut = np.quantile(times, 1.0 - test_fraction)
    else:
        cut = _instant(test_start, numbers=df[TIME].dtype.kind in "iuf")
        if times.dtype.kind == "i" and isinstance(cut, float) and math.isfinite(cut):
            cut = math.ceil(cut)  # for whole numbers t >= cut exactly when t >= ceil(cut)
    is_test = times >= cut
    return df[~is_test], df[is_test]


def per_user_split(
    df: pd.DataFrame, test_fraction: float = 0.2, min_positives: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest interactions.

    A user's rows are ordered by (timestamp, listing_id, input position), the timestamps read
    as in :func:`global_time_split`. Users with at least ``min_positives`` rows put their last
    ``max(1, floor(n * test_fraction))`` into test; users with fewer stay entirely in train.
    """
    _require(df, USER, ITEM, TIME)
    _check_fraction(test_fraction)
    order = pd.DataFrame(
        {
            "u": df[USER].to_numpy(),
            "t": _instants(df[TIME]),
            "i": df[ITEM].to_numpy(),
            "pos": np.arange(len(df)),
        }
    ).sort_values(["u", "t", "i", "pos"])
    by_user = order.groupby("u", sort=False, dropna=False)["pos"]
    rank = by_user.cumcount().to_numpy()
    n = by_user.transform("size").to_numpy()
    # the epsilon keeps n * fraction from flooring below an exact integer (0.7 * 10 = 6.99...)
    n_test = np.maximum(1, np.floor(n * test_fraction + 1e-9).astype(np.int64))
    n_test = np.where(n >= min_positives, n_test, 0)
    is_test = np.zeros(len(df), dtype=bool)
    is_test[order["pos"].to_numpy()] = rank >= n - n_test
    return df[~is_test], df[is_test]


def _instants(values: pd.Series) -> np.ndarray:
    """Timestamps as numbers that order them: numbers as they are; datetimes and ISO-8601
    text (zones respected, none read as UTC) as UTC microseconds."""
    if values.dtype.kind in "iuf":
        bad = values.isna().to_numpy()
        if values.dtype.kind == "f":
            bad = bad | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            # as load_interactions refuses it: a NaN compares false with any cut and would
            # put its row in train whatever its moment
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"row {row}, column {TIME!r}: a timestamp must be a finite number, got "
                f"{values.iloc[row]!r}"
            )
        # whole numbers stay whole: as float64, epoch nanoseconds (past 2**53) round, and an
        # event just before a cut ties with it
        return values.to_numpy(dtype=np.float64 if values.dtype.kind == "f" else np.int64)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        moments = pd.to_datetime(values, utc=True)
    else:
        moments = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = moments.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"row {row}, column {TIME!r}: cannot read {values.iloc[row]!r} as a moment: use "
            "ISO-8601 (2026-11-01T12:30:00Z), datetimes or numbers"
        )
    return moments.astype("datetime64[us, UTC]").astype(np.int64).to_numpy()


def _instant(value: Any, numbers: bool) -> int | float:
    """``test_start`` comparable with :func:`_instants` of a column of numbers or not."""
    if numbers and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if numbers and isinstance(value, (float, np.floating)):
        if math.isnan(value):
            raise ValueError("test_start is NaN: give the moment the test begins")
        return float(value)
    if numbers:
        raise ValueError(f"test_start {value!r}: the timestamps are numbers, give a number")
    return float(_instants(pd.Series([value]))[0])


def cold_listing_split(
    train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``test`` into (warm, cold): cold rows are listings that never appear in ``train``."""
    _require(train, ITEM)
    _require(test, ITEM)
    is_cold = (~test[ITEM].isin(train[ITEM].unique())).to_numpy()
    return test[~is_cold], test[is_cold]
