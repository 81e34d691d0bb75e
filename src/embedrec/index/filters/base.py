"""The filter contract: one condition on the catalogue, as a mask, a test of rows, or the
rows a sorted index of a large table gives (its candidates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from embedrec.index.filters.cache import FilterCache


ID_COLUMN = "listing_id"


class FilterError(ValueError):
    """A filter that cannot be parsed or applied; ``field`` names the filter field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"filter {field!r}: {message}")
        self.field = field


# What a column index says of a filter: how many rows may pass, a function returning them
# (each once, in no particular order: sorting 10,000 row numbers costs more than searching
# their vectors), whether exactly those pass (False: a superset, checked row by row) and the
# order they are given in: None for row numbers, else a permutation of the rows (the grid's)
# that the function returns positions in.
# A function given the order may take ``check``: positions -> a mask over them, where the
# other filters hold, evaluated before its own costlier test.
Candidates = tuple[int, Callable[..., np.ndarray], bool, "np.ndarray | None"]
Check = Callable[[np.ndarray], np.ndarray]


class Filter:
    """One condition on the catalogue; ``mask(table)`` says which rows satisfy it.

    Each method takes an optional :class:`FilterCache` of ``table``: without one, columns are
    converted and indexes built anew on every call.
    """

    field: str
    # the relative cost of checking a row: other filters are checked cheapest first
    check_cost: ClassVar[int] = 1

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        """Whether the filter holds at each row of ``table``: a new array, the caller's to
        change."""
        raise NotImplementedError

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        """Whether the filter holds at ``rows``; costs O(len(rows)) where overridden."""
        return self.mask(table, cache)[rows]

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        """Whether the filter holds at rows ``order[positions]``, ``order`` being the table's
        grid order; overridden where a column kept in that order reads faster."""
        return self.holds(table, order[positions], cache)

    def candidates(
        self, table: pd.DataFrame, cache: FilterCache | None = None
    ) -> Candidates | None:
        """Rows that may pass (a superset), from a sorted index of a large table; None where
        no index narrows the filter. Found once per table and cache: a request asks up to
        three times (its share, its selection, a mask)."""
        held = self.__dict__.get("_held_candidates")
        basis = self._basis(table, cache)
        if held is None or held[0] is not table or held[1] is not cache or held[2] is not basis:
            held = table, cache, basis, self._candidates(table, cache)
            object.__setattr__(self, "_held_candidates", held)  # a cache, not a field
        return held[3]

    def _candidates(self, table: pd.DataFrame, cache: FilterCache | None) -> Candidates | None:
        return None

    def _basis(self, table: pd.DataFrame, cache: FilterCache | None) -> Any:
        """What the candidates derive from besides the table and its cache (by identity)."""
        return None

    def grid_positions(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray | None:
        """Positions in the grid's ``order`` of exactly the rows that pass, ascending, from an
        index of a large table; None where no index gives them."""
        return None
