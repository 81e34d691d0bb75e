"""A table's columns as filters read them: numbers as float64, other values factorised into
codes with a lookup from each value, postings of each code's rows, and columns kept in a
grid's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedrec.index.filters.base import FilterError
from embedrec.index.filters.cache import FilterCache, cached
from embedrec.index.filters.values import to_float

# A set filter naming at most this many values compares each row with each value.
_FEW_VALUES = 4


def check_field(table: pd.DataFrame, field: str) -> None:
    """Raise FilterError for a field the table has no column for (cheap: no column taken)."""
    if field not in table.columns:
        valid = ", ".join(str(c) for c in table.columns)
        raise FilterError(
            field, f"unknown field; valid fields: {valid}, within (radius), exclude (ids)"
        )


def numeric_column(
    table: pd.DataFrame, name: str, field: str, cache: FilterCache | None
) -> np.ndarray:
    """The column as float64 (NaN: missing), checked and converted once per cache: taking a
    column out of a frame costs more than a selective filter's whole search."""

    def convert() -> np.ndarray:
        check_field(table, name)
        column = table[name]
        dtype = column.dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            raise FilterError(name, f"column {name!r} holds dates and times: not filterable")
        if not _is_numeric(dtype):
            raise FilterError(field, f"numeric comparison on non-numeric column {name!r} ({dtype})")
        return column.to_numpy(dtype=np.float64, na_value=np.nan)

    return cached(cache, table, ("float", name), convert)


def _is_numeric(dtype: Any) -> bool:
    """Numbers, not booleans (which pandas counts as numeric)."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def column_codes(table: pd.DataFrame, name: str, cache: FilterCache | None) -> _Codes:
    """The column factorised (-1: missing) with a lookup from each value to its codes: as
    str, or as a Python number for a numeric column (so that 2018.0 finds 2018); converted
    once per distinct value, and a filter looks up only the values it names."""

    def factorize() -> _Codes:
        if pd.api.types.is_datetime64_any_dtype(table[name].dtype):
            # as text a value is '2026-09-01 10:00:00+00:00': a date given would match nothing
            raise FilterError(name, f"column {name!r} holds dates and times: not filterable")
        numeric = _is_numeric(table[name].dtype)
        codes, uniques = pd.factorize(table[name], use_na_sentinel=True)
        # true/false (a bool column, or one with missing values: objects) as JSON writes them
        boolean = not numeric and bool(len(uniques)) and all(_is_bool(v) for v in uniques)
        lookup: dict[Any, list[int]] = {}
        # distinct values may print alike (1, "1"); numbers as int or float, which compare
        # and hash alike where equal
        for code, value in enumerate(uniques.tolist() if numeric else uniques):
            key = value if numeric else str(value).lower() if boolean else str(value)
            lookup.setdefault(key, []).append(code)
            if not numeric and "|" in key:
                # a multi-valued value (``wood|oak``) is found by each of its values too
                for part in {p.strip() for p in key.split("|")} - {"", key}:
                    lookup.setdefault(part, []).append(code)
        # the narrowest dtype: a comparison over a million rows reads 1 MB, not 8
        small = next(
            t for t in (np.int8, np.int16, np.int32, np.int64) if len(uniques) < np.iinfo(t).max
        )
        return _Codes(
            codes.astype(small),
            lookup,
            len(uniques),
            name if numeric else None,
            name if boolean else None,
        )

    return cached(cache, table, ("codes", name), factorize)


@dataclass(frozen=True)
class _Codes:
    codes: np.ndarray
    lookup: dict[Any, list[int]]
    n_values: int
    numeric_field: str | None = None  # the column's name where its values are numbers
    boolean_field: str | None = None  # the column's name where its values are true or false

    def of(self, values: Iterable[str], strict: bool = True) -> np.ndarray:
        """The codes of ``values`` (those the column holds), ascending. On a numeric column a
        value that is not a number could never match, nor one other than true or false
        (without case) on a boolean column: with ``strict`` a FilterError (a set filter's
        value), else it matches nothing (an id to exclude)."""
        field = self.numeric_field
        keys = values if field is None else [_number_key(field, v, strict) for v in values]
        if self.boolean_field is not None:
            keys = [_bool_key(self.boolean_field, v, strict) for v in values]
        # as a set: two values may name one number (4, 4.0)
        found = sorted({c for key in keys for c in self.lookup.get(key, ())})
        return np.array(found, dtype=self.codes.dtype)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _bool_key(field: str, value: str, strict: bool) -> str | None:
    """``value`` as a boolean column's lookup holds it: ``true`` or ``false``, given in any
    case (``True`` as Python prints it, ``true`` as JSON writes it); None where it is neither
    and not ``strict``."""
    key = value.strip().lower()
    if key in ("true", "false"):
        return key
    if strict:
        raise FilterError(field, f"expected true or false, got {value!r}")
    return None


def _number_key(field: str, value: str, strict: bool) -> int | float | None:
    """``value`` as the number a numeric column's lookup holds: an int where it is one (exact
    beyond 2**53), else a float; None where it is no number and not ``strict``."""
    try:
        return int(value)
    except ValueError:
        try:
            return to_float(field, value)
        except FilterError:
            if strict:
                raise
            return None


def isin_str(
    table: pd.DataFrame,
    name: str,
    values: frozenset[str],
    negate: bool,
    cache: FilterCache | None,
    rows: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    strict: bool = True,
) -> np.ndarray:
    """Whether the column's value (as str; a number on a numeric column) is in ``values``,
    at ``rows`` (None: all rows); with ``negate``, whether it is not. A missing value fails
    either way. ``codes``: the column's codes to test, instead of those at ``rows``.
    ``strict``: as ``_Codes.of``."""
    column = column_codes(table, name, cache)
    wanted = column.of(values, strict)
    if codes is None:
        codes = column.codes if rows is None else column.codes[rows]
    if len(wanted) <= _FEW_VALUES or column.n_values > 8 * len(codes):
        # a few values (make=Nissan): one vectorised comparison each, 25 times faster over a
        # million rows than the table below, whose look-ups are scattered; many distinct
        # values (ids, dealers) and few rows: compare with the wanted codes
        if len(wanted) <= _FEW_VALUES:
            hit = codes == wanted[0] if len(wanted) else np.zeros(len(codes), dtype=bool)
            for code in wanted[1:]:
                hit |= codes == code
        else:
            hit = np.isin(codes, wanted)
        return (codes >= 0) & ~hit if negate else hit
    # a table of every code's answer, one more slot (False) for -1, the missing value
    table_of = np.zeros(column.n_values + 1, dtype=bool)
    table_of[wanted] = True
    if negate:
        table_of[:-1] = ~table_of[:-1]
    return table_of[codes]


def rows_of_values(
    table: pd.DataFrame,
    name: str,
    values: Iterable[str],
    cache: FilterCache | None,
    strict: bool = True,
) -> tuple[int, Callable[[], np.ndarray]]:
    """How many rows hold one of ``values`` (as ``isin_str`` compares) in column ``name``,
    and a function returning them; from the column's postings, looking up only the values
    named."""
    column = column_codes(table, name, cache)
    order, starts = cached(cache, table, ("postings", name), lambda: postings(column.codes))
    wanted = column.of(values, strict).astype(np.int64)
    first, last = starts[wanted], starts[wanted + 1]
    count = int((last - first).sum())
    runs = list(zip(first.tolist(), last.tolist(), strict=True))
    return count, lambda: np.concatenate([order[:0], *(order[a:b] for a, b in runs)])


def sorted_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column's values in ascending order (NaN last) and the rows they come from."""
    order = np.argsort(values, kind="stable")
    return values[order], order


def postings(codes: np.ndarray, n_codes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by code (``order``) and where each code's group starts (codes from 0 to
    ``n_codes`` - 1, by default the largest present; -1, missing, sorts before all)."""
    order = np.argsort(codes, kind="stable")
    n_codes = codes.max(initial=-1) + 1 if n_codes is None else n_codes
    starts = np.searchsorted(codes[order], np.arange(n_codes + 1))
    return order, starts


def in_grid_order(
    table: pd.DataFrame, key: Any, values: np.ndarray, order: np.ndarray, cache: FilterCache | None
) -> np.ndarray:
    """A column's ``values`` in the grid's ``order`` (cached): read at a radius filter's
    positions nearly in sequence instead of scattered over the column."""
    return of_grid_order(cache, table, ("grid order", key), order, lambda: values[order])


def of_grid_order(
    cache: FilterCache | None, table: pd.DataFrame, key: Any, order: np.ndarray, compute: Any
) -> Any:
    """A cache entry derived from a grid's ``order``: kept per grid, as a catalogue may build
    its grid again, its cells' rows ordered by clusters (see :meth:`RadiusFilter.grid`)."""
    held = cached(cache, table, (*key, id(order)), lambda: (order, compute()))
    return held[1] if held[0] is order else compute()  # an id reused by a later grid
