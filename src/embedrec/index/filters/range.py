"""Numeric range filters (``price<=25000``), and ranges on one field merged into one."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedrec.index.filters.base import Candidates, Filter
from embedrec.index.filters.cache import CACHED_ROWS, FilterCache, cached
from embedrec.index.filters.columns import in_grid_order, numeric_column, sorted_values


@dataclass(frozen=True)
class RangeFilter(Filter):
    """``low <= column <= high`` (bounds optional, each inclusive or strict); missing fails."""

    field: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        return self._test(self._compact(table, cache))

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        return self._test(self._compact(table, cache)[rows])

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        compact = self._compact(table, cache)
        return self._test(
            in_grid_order(table, ("compact", self.field), compact, order, cache)[positions]
        )

    def ordered_range(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None
    ) -> tuple[np.ndarray, float, float]:
        """The column as float64 in the grid's ``order`` and the filter's bounds made
        inclusive (a strict bound as the next float inside it; none: infinite), for a
        compiled loop; NaN fails ``low <= value <= high`` as it fails the filter."""
        values = in_grid_order(
            table, ("float", self.field), self._values(table, cache), order, cache
        )
        low = -math.inf if self.low is None else float(self.low)
        high = math.inf if self.high is None else float(self.high)
        if not self.low_inclusive:
            low = float(np.nextafter(low, math.inf))
        if not self.high_inclusive:
            high = float(np.nextafter(high, -math.inf))
        return values, low, high

    def _candidates(self, table: pd.DataFrame, cache: FilterCache | None) -> Candidates | None:
        values = self._values(table, cache)
        if len(table) < CACHED_ROWS:
            return None
        ordered, order = cached(cache, table, ("sorted", self.field), lambda: sorted_values(values))
        start, stop = 0, np.searchsorted(ordered, np.inf, side="right")  # NaN sorts last
        if self.low is not None:
            side = "left" if self.low_inclusive else "right"
            start = np.searchsorted(ordered, self.low, side=side)
        if self.high is not None:
            side = "right" if self.high_inclusive else "left"
            stop = np.searchsorted(ordered, self.high, side=side)
        stop = max(start, stop)
        return int(stop - start), lambda: order[start:stop], True, None

    def _values(self, table: pd.DataFrame, cache: FilterCache | None) -> np.ndarray:
        return numeric_column(table, self.field, self.field, cache)

    def _compact(self, table: pd.DataFrame, cache: FilterCache | None) -> np.ndarray:
        """The column for comparisons: whole numbers without a missing value (years, prices)
        as the narrowest integers that hold them, a quarter to an eighth of the bytes to
        read over a large table; else as float64."""
        values = self._values(table, cache)
        if cache is None or len(table) < CACHED_ROWS:  # converting costs more than it saves
            return values
        return cached(cache, table, ("compact", self.field), lambda: _narrowest(values))

    def _test(self, values: np.ndarray) -> np.ndarray:
        if values.dtype.kind == "i":
            return self._test_whole(values)
        # NaN (missing) compares False with any bound, so a bound alone makes it fail
        keep = None
        if self.low is not None:
            keep = values >= self.low if self.low_inclusive else values > self.low
        if self.high is not None:
            high = values <= self.high if self.high_inclusive else values < self.high
            if keep is None:
                keep = high
            else:
                keep &= high
        return ~np.isnan(values) if keep is None else keep

    def _test_whole(self, values: np.ndarray) -> np.ndarray:
        """``_test`` on whole numbers: the bounds as the whole numbers they admit, compared in
        the values' own dtype."""
        info = np.iinfo(values.dtype)
        low, high = info.min, info.max
        if any(b is not None and math.isnan(b) for b in (self.low, self.high)):
            return np.zeros(len(values), dtype=bool)  # as a comparison with NaN
        if self.low is not None:
            if self.low == math.inf:
                return np.zeros(len(values), dtype=bool)
            if self.low > -math.inf:
                low = max(
                    low, math.ceil(self.low) if self.low_inclusive else math.floor(self.low) + 1
                )
        if self.high is not None:
            if self.high == -math.inf:
                return np.zeros(len(values), dtype=bool)
            if self.high < math.inf:
                high = min(
                    high, math.floor(self.high) if self.high_inclusive else math.ceil(self.high) - 1
                )
        if low > high:
            return np.zeros(len(values), dtype=bool)
        keep = values >= low if low > info.min else np.ones(len(values), dtype=bool)
        if high < info.max:
            keep &= values <= high
        return keep


def _narrowest(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) as the narrowest integer dtype that holds each exactly, when they
    are whole numbers without a missing one; else as they are."""
    if len(values) == 0 or not np.isfinite(values).all():
        return values
    low, high = values.min(), values.max()
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            whole = values.astype(dtype)
            return whole if np.array_equal(whole, values) else values
    return values


def merged_ranges(filters: Iterable[Filter]) -> list[Filter]:
    """The filters with the range filters on one field merged into one (``price>=10000`` and
    ``price<=30000``: one pass over the column, not two), in the place of the first."""
    out: list[Filter] = []
    merged: dict[str, int] = {}  # field -> its range filter's place in ``out``
    for f in filters:
        if not isinstance(f, RangeFilter) or any(
            b is not None and math.isnan(b) for b in (f.low, f.high)
        ):  # a NaN bound (a filter built by hand) keeps no row: left as it is
            out.append(f)
        elif f.field not in merged:
            merged[f.field] = len(out)
            out.append(f)
        else:
            out[merged[f.field]] = _intersection(out[merged[f.field]], f)
    return out


def _intersection(a: RangeFilter, b: RangeFilter) -> RangeFilter:
    """The range filter that holds where both hold."""
    low, low_inclusive = a.low, a.low_inclusive
    if b.low is not None and (
        low is None or (b.low, not b.low_inclusive) > (low, not low_inclusive)
    ):
        low, low_inclusive = b.low, b.low_inclusive
    high, high_inclusive = a.high, a.high_inclusive
    if b.high is not None and (high is None or (b.high, b.high_inclusive) < (high, high_inclusive)):
        high, high_inclusive = b.high, b.high_inclusive
    return RangeFilter(a.field, low, high, low_inclusive, high_inclusive)
