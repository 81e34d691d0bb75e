"""Set filters on a column's values (``make=Nissan,Toyota``, ``body!=van``) and the exclusion
of listings by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedrec.index.filters.base import ID_COLUMN, Candidates, Filter, FilterError
from embedrec.index.filters.cache import CACHED_ROWS, FilterCache
from embedrec.index.filters.columns import (
    check_field,
    column_codes,
    in_grid_order,
    isin_str,
    of_grid_order,
    postings,
    rows_of_values,
)


@dataclass(frozen=True)
class SetFilter(Filter):
    """Column value, converted to str, is (or with ``negate`` is not) one of ``values``; on a
    numeric column, compared as numbers (``year=2018.0`` matches 2018; a value that is not a
    number is a FilterError). A multi-valued value (``wood|oak``) is each of its values
    (``tags=wood`` holds for it) as well as the whole.

    Comparison is case-sensitive; rows with a missing value fail either way.
    """

    field: str
    values: frozenset[str]
    negate: bool = False

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        check_field(table, self.field)
        return isin_str(table, self.field, self.values, self.negate, cache)

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        check_field(table, self.field)
        return isin_str(table, self.field, self.values, self.negate, cache, rows)

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        check_field(table, self.field)
        column = column_codes(table, self.field, cache)
        codes = in_grid_order(table, ("codes", self.field), column.codes, order, cache)[positions]
        return isin_str(table, self.field, self.values, self.negate, cache, codes=codes)

    def ordered_answers(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The column's codes as int32 in the grid's ``order`` (-1: missing) and whether the
        filter holds for each code, for a compiled loop."""
        check_field(table, self.field)
        column = column_codes(table, self.field, cache)
        codes = of_grid_order(
            cache,
            table,
            ("codes int32", self.field),
            order,
            lambda: column.codes[order].astype(np.int32),
        )
        answers = np.zeros(column.n_values, dtype=bool)
        answers[column.of(self.values)] = True
        return codes, ~answers if self.negate else answers

    def _candidates(self, table: pd.DataFrame, cache: FilterCache | None) -> Candidates | None:
        check_field(table, self.field)
        if self.negate or len(table) < CACHED_ROWS:
            return None  # "not one of" keeps most rows: no index narrows it
        count, fetch = rows_of_values(table, self.field, self.values, cache)
        return count, fetch, True, None

    def grid_positions(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray | None:
        if self.negate or len(table) < CACHED_ROWS:
            return None
        column = column_codes(table, self.field, cache)
        codes = in_grid_order(table, ("codes", self.field), column.codes, order, cache)
        # per value, its rows' positions in the grid's order, ascending (a stable sort)
        by_value, starts = of_grid_order(
            cache,
            table,
            ("grid postings", self.field),
            order,
            lambda: postings(codes, column.n_values),
        )
        wanted = column.of(self.values).astype(np.int64).tolist()
        found = np.concatenate(
            [by_value[:0], *(by_value[starts[c] : starts[c + 1]] for c in wanted)]
        )
        return np.sort(found) if len(wanted) > 1 else found


@dataclass(frozen=True)
class ExcludeFilter(Filter):
    """Drops the listings whose ``listing_id`` (as str) is in ``ids``."""

    ids: frozenset[str]
    field: str = "exclude"

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        return self.holds(table, None, cache)

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray | None, cache: FilterCache | None = None
    ) -> np.ndarray:
        self._check(table)
        return ~isin_str(table, ID_COLUMN, self.ids, False, cache, rows, strict=False)

    def rows(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        """The rows this filter drops, found from the ids it names: a few ids cost a few
        look-ups, not a pass over the table."""
        self._check(table)
        return rows_of_values(table, ID_COLUMN, self.ids, cache, strict=False)[1]()

    def _check(self, table: pd.DataFrame) -> None:
        if ID_COLUMN not in table.columns:
            raise FilterError(self.field, f"the catalogue has no {ID_COLUMN!r} column")
