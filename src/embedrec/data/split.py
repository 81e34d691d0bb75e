"""Train/test splits of interaction frames (``user_id``, ``listing_id``, ``timestamp``).

Every splitter returns rows of the input unchanged (all columns, original index and order),
so each input row lands in exactly one output frame.
"""

from __future__ import annotations

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
    all go to test.
    """
    _require(df, TIME)
    times = df[TIME]
    if test_start is None:
        _check_fraction(test_fraction)
        if len(df) == 0:
            return df.copy(), df.copy()
        test_start = times.quantile(1.0 - test_fraction)
    elif pd.api.types.is_datetime64_any_dtype(times):
        test_start = pd.Timestamp(test_start)
    is_test = (times >= test_start).to_numpy()
    return df[~is_test], df[is_test]


def per_user_split(
    df: pd.DataFrame, test_fraction: float = 0.2, min_positives: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest interactions.

    A user's rows are ordered by (timestamp, listing_id, input position). Users with at least
    ``min_positives`` rows put their last ``max(1, floor(n * test_fraction))`` into test; users
    with fewer stay entirely in train.
    """
    _require(df, USER, ITEM, TIME)
    _check_fraction(test_fraction)
    order = pd.DataFrame(
        {
            "u": df[USER].to_numpy(),
            "t": df[TIME].to_numpy(),
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


def cold_listing_split(
    train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``test`` into (warm, cold): cold rows are listings that never appear in ``train``."""
    _require(train, ITEM)
    _require(test, ITEM)
    is_cold = (~test[ITEM].isin(train[ITEM].unique())).to_numpy()
    return test[~is_cold], test[is_cold]
