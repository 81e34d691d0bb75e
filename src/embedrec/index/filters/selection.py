"""All filters at once: a mask over the table, the rows of the most selective indexed filter
checked against the others, or tests of grid positions for the compiled search loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from embedrec.index.bounded import MAX_TESTS, PositionTests
from embedrec.index.filters.base import Candidates, Check, Filter
from embedrec.index.filters.cache import FilterCache
from embedrec.index.filters.radius import RadiusFilter
from embedrec.index.filters.range import RangeFilter
from embedrec.index.filters.sets import SetFilter
from embedrec.index.grid import OrderedRows

# Up to this many candidate rows are checked one by one, without the grid's help.
_FEW_CANDIDATES = 2048


def allowed_mask(
    filters: Iterable[Filter], table: pd.DataFrame, cache: FilterCache | None = None
) -> np.ndarray:
    """Boolean mask over the rows of ``table``: True where every filter holds.

    With a ``cache``, the columns of a table of 10,000 rows or more are converted once and
    kept there, so such a table must not be changed in place while its cache is in use.
    """
    keep = None
    for f in filters:
        mask = np.asarray(f.mask(table, cache), dtype=bool)
        if keep is None:
            keep = mask
        else:  # in place: a new array of a million rows costs its page faults again
            keep &= mask
    return np.ones(len(table), dtype=bool) if keep is None else keep


def allowed_rows(
    filters: Iterable[Filter], table: pd.DataFrame, limit: int, cache: FilterCache | None = None
) -> np.ndarray | None:
    """Rows of ``table`` where every filter holds (each once, in no particular order), or None
    when no filter's index narrows them to at most ``limit`` candidates (then use
    :func:`allowed_mask`).

    The most selective indexed filter gives the candidates; every filter is then checked on
    those rows only, so the cost follows the rows kept, not the size of the table, once the
    indexes are built: pass the table's ``cache`` to build them once.
    """
    found = allowed_selection(filters, table, limit, cache)
    return found.rows() if isinstance(found, OrderedRows) else found


def allowed_selection(
    filters: Iterable[Filter], table: pd.DataFrame, limit: int, cache: FilterCache | None = None
) -> OrderedRows | np.ndarray | None:
    """As :func:`allowed_rows`, but rows a radius filter's grid gives stay positions in the
    grid's order (:class:`~embedrec.index.grid.OrderedRows`): the other filters read their
    columns in that order, and a vector index its vectors."""
    filters = list(filters)
    best: tuple[Filter, Candidates] | None = None
    grid: tuple[Filter, Candidates] | None = None
    share: dict[int, float] = {}  # by id(filter): the share of rows it may keep
    for f in filters:
        found = f.candidates(table, cache)
        share[id(f)] = 1.0 if found is None else found[0] / max(len(table), 1)
        if found is not None and found[0] <= limit and (best is None or found[0] < best[1][0]):
            best = f, found
        if found is not None and found[0] <= limit and found[3] is not None:
            grid = f, found
    if best is None:
        return None
    within, source = None, None
    if grid is not None and best[1][0] > _FEW_CANDIDATES:
        # a radius with a set filter: the set's rows in the grid's order, cut to the circle's
        # cells by binary search, cost time in the rows both keep, not in either's rows
        for f in sorted(filters, key=lambda f: share[id(f)]):
            within = f.grid_positions(table, grid[1][3], cache)
            if within is not None:
                best, source = grid, f
                break
    chosen, (_, fetch, exact, order) = best
    # the others by the rows they may keep times their cost a row: the fewest rows soonest
    others = [f for f in filters if (f is not chosen or not exact) and f is not source]
    others.sort(key=lambda f: share[id(f)] * f.check_cost)
    if order is None:
        found = fetch()
        for f in others:
            found = found[f.holds(table, found, cache)]
        return found

    return OrderedRows(order, fetch(_all_hold(others, table, order, cache), within))


def position_tests(
    filters: Sequence[Filter],
    order: np.ndarray,
    table: pd.DataFrame,
    cache: FilterCache,
    positions: Callable[[], np.ndarray],
    radius: RadiusFilter | None = None,
) -> PositionTests:
    """``filters`` (``radius``, if given, one of them) as tests of positions in ``order``
    (a permutation of ``table``'s rows: its grid's, where there is a radius), for a compiled
    loop: range and set filters by their columns; the others (a second circle, a long
    exclusion) as a mask, evaluated at ``positions()``, the only positions the loop reads."""
    ranges, sets, others = [], [], []
    for f in filters:
        if f is radius:
            continue
        if isinstance(f, RangeFilter) and len(ranges) < MAX_TESTS:
            ranges.append(f.ordered_range(table, order, cache))
        elif isinstance(f, SetFilter) and len(sets) < MAX_TESTS:
            sets.append(f.ordered_answers(table, order, cache))
        else:
            others.append(f)
    allowed = np.zeros(0, dtype=bool)
    if others:
        at = positions()
        allowed = np.zeros(len(order), dtype=bool)
        allowed[at[_all_hold(others, table, order, cache)(at)]] = True
    columns, lows, highs = zip(*ranges, strict=True) if ranges else ((), (), ())
    codes, answers = zip(*sets, strict=True) if sets else ((), ())
    circle = None if radius is None else radius.circle_test(table, cache)
    return PositionTests(circle, columns, lows, highs, codes, answers, allowed)


def _all_hold(
    filters: Sequence[Filter], table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None
) -> Check | None:
    """Where all of ``filters`` hold at positions of ``order`` (None for no filter)."""
    if not filters:
        return None

    def check(positions: np.ndarray) -> np.ndarray:
        # each filter over all the positions, as masks: narrowing the positions between
        # filters copied them and cost more than the comparisons it saved
        keep = filters[0].holds_ordered(table, order, positions, cache)
        for f in filters[1:]:
            keep &= f.holds_ordered(table, order, positions, cache)
        return keep

    return check
