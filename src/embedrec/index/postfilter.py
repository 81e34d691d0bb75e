"""Filters that keep most rows, checked on the best rows of an unfiltered search.

A filter keeping a large share of the catalogue costs a mask over every row, and the vector
index a wider search with that mask inside. The unfiltered search's best few hundred rows
hold k that pass instead, with near certainty: the filters are checked on those rows only,
the search widened while too few pass, and the queries still short are left to the filtered
search, so that no answer loses rows that pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from embedrec.index.filters import Filter, FilterCache
from embedrec.index.vector_index import TRUSTED

# Filters estimated to keep at least this share of the rows are checked after the search:
# below it a radius filter's grid or a column index finds the rows faster than the search.
POST_FILTER_SHARE = 0.2
# Rows fetched first (at least; ~4 k / share) and at most from an exact search: each try
# fetches 4 times more. An approximate search tries once: asking it for more rows rescans the
# same lists (at 1M rows one try, then the filtered search, gave a p99 of 1.2-1.3 ms against
# 2.0-2.1 ms with widening, at the same recall).
FIRST_FETCH = 256
MAX_FETCH = 65_536

Search = Callable[[int], tuple[np.ndarray, np.ndarray]]


def estimated_share(
    filters: Sequence[Filter], table: pd.DataFrame, cache: FilterCache | None
) -> float:
    """The share of ``table``'s rows that every filter keeps, were the filters independent:
    the product of each indexed filter's share; a filter without an index (a negated set,
    a small table) counts as keeping every row, as it usually keeps most."""
    share = 1.0
    for f in filters:
        found = f.candidates(table, cache)
        if found is not None:
            share *= found[0] / max(len(table), 1)
    return share


def post_filtered(
    search: Search,
    passes: Callable[[np.ndarray], np.ndarray],
    k: int,
    share: float,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``k`` rows per query that ``passes`` (row numbers -> bool), from
    ``search(n)``: the unfiltered (rows, scores), (m, n), best first, padded with -1.

    ``exact``: whether ``search`` is exact (then widened while short; else tried once).
    Returns (rows, scores, short): ``short`` lists the queries with too few passing rows
    found (``k``; ``TRUSTED * k`` when not exact), whose answers the caller must get from a
    filtered search.
    """
    fetch = max(FIRST_FETCH, 2 ** math.ceil(math.log2(max(4 * k / max(share, 1e-9), 2 * k, 1))))
    limit = max(MAX_FETCH, fetch) if exact else fetch
    # an approximate search's best k that pass are trusted when its rows hold a few times
    # more: a filter at odds with the query leaves only the fringe of them passing
    enough = k if exact else TRUSTED * k
    while True:
        rows, scores = search(fetch)
        ok = (rows >= 0) & passes(rows.ravel()).reshape(rows.shape)
        found = ok.sum(axis=1)
        # widen while a query is short and its search was not already exhausted
        wider = (found < enough) & (rows[:, -1] >= 0)
        if not wider.any() or fetch >= limit:
            break
        fetch = min(4 * fetch, limit)
    # the passing rows first, each group in its order: a stable sort on "fails"
    first = np.argsort(~ok, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(ok, first, axis=1)
    rows = np.where(kept, np.take_along_axis(rows, first, axis=1), -1)
    scores = np.where(kept, np.take_along_axis(scores, first, axis=1), -np.inf)
    return rows, scores.astype(np.float32), np.flatnonzero(found < enough)
