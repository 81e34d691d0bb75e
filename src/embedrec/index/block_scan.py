"""The compiled loop of a bounded search (see :mod:`embedrec.index.bounded`).

One query at a time: blocks of consecutive positions are read best bound first, from a heap;
each row is checked against the filters (set and range columns, a circle, a mask of
positions) before its vector is scored, and the search stops once the next bound cannot
beat the k-th score. In numpy the same work took some forty calls per pass over the blocks,
each costing more in set-up than the rows it read: 100 km around Dresden at 1M listings ran
2.2 times faster compiled, side by side (docs/index-benchmark.md).

Every array argument has one fixed type, and the filter tuples a fixed length
(`bounded.MAX_TESTS`, unused slots padded), so the loop compiles once (cached on disk by numba)
for any combination of filters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from embedrec.geo import EARTH_RADIUS_KM


def _compiled(**options: object) -> Callable[[Callable], Callable]:
    """numba's ``njit`` without the GIL, cached on disk; where numba finds no writable place
    for its cache (a read-only install and home), compiled anew in each process instead."""

    def wrap(function: Callable) -> Callable:
        try:
            return numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(nogil=True, **options)(function)

    return wrap


@_compiled()
def _sift_down(keys: np.ndarray, values: np.ndarray, n: int, i: int) -> None:
    """Restore the max-heap order of ``keys[:n]`` (with ``values``) below node ``i``."""
    while True:
        child = 2 * i + 1
        if child >= n:
            return
        if child + 1 < n and keys[child + 1] > keys[child]:
            child += 1
        if keys[child] <= keys[i]:
            return
        keys[i], keys[child] = keys[child], keys[i]
        values[i], values[child] = values[child], values[i]
        i = child


@_compiled()
def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """As :func:`embedrec.geo.haversine_km`, for one pair of points."""
    phi1, lam1, phi2, lam2 = (
        math.radians(lat1),
        math.radians(lon1),
        math.radians(lat2),
        math.radians(lon2),
    )
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin((lam2 - lam1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


@_compiled(fastmath={"reassoc", "contract"})
def _dot(vectors: np.ndarray, row: int, query: np.ndarray) -> np.float32:
    total = np.float32(0.0)
    for j in range(query.shape[0]):
        total += vectors[row, j] * query[j]
    return total


@_compiled()
def _bounds(
    query: np.ndarray,
    centroids: np.ndarray,
    clusters: np.ndarray,
    radii: np.ndarray,
    slack: float,
) -> np.ndarray:
    """Each block's bound on its rows' scores: its cluster's centroid score plus ``|q|``
    times its radius, plus ``slack``; a centroid scored once, when a block needs it."""
    norm = np.float32(math.sqrt(_dot(query.reshape(1, -1), 0, query)))
    centroid_scores = np.full(len(centroids), np.nan, dtype=np.float32)
    bounds = np.empty(len(clusters), dtype=np.float32)
    for b in range(len(clusters)):
        c = clusters[b]
        if np.isnan(centroid_scores[c]):
            centroid_scores[c] = _dot(centroids, c, query)
        bounds[b] = centroid_scores[c] + norm * radii[b] + np.float32(slack)
    return bounds


@_compiled()
def scan_blocks(
    query: np.ndarray,
    vectors: np.ndarray,
    live: np.ndarray,
    centroids: np.ndarray,
    clusters: np.ndarray,
    radii: np.ndarray,
    slack: float,
    first: np.ndarray,
    last: np.ndarray,
    whole: np.ndarray,
    points: np.ndarray,
    centre: np.ndarray,
    centre_lat: float,
    centre_lon: float,
    edge: float,
    band: float,
    order: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    radius_km: float,
    ranges: tuple,
    lows: np.ndarray,
    highs: np.ndarray,
    n_ranges: int,
    codes: tuple,
    answers: tuple,
    n_sets: int,
    allowed: np.ndarray,
    fetch: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The best ``fetch`` (rows, scores) of the rows ``order[p]`` at positions ``p`` in the
    blocks ``first[b]:last[b]``, by dot product of ``vectors[p]`` with ``query``, best first
    and padded with -1 / -inf, where:

    - ``live[p]`` holds (an empty ``live``: every row is live) and ``allowed[p]`` (empty:
      all);
    - ``codes[j][p]`` is a code whose ``answers[j]`` is True (-1: missing, fails), for
      ``j < n_sets``; ``lows[j] <= ranges[j][p] <= highs[j]`` (NaN fails), ``j < n_ranges``;
    - in a block not ``whole`` (a cell on a circle's edge), ``points[p]`` (a unit vector)
      lies in the circle: its cosine to ``centre`` at least ``edge``; within ``band`` of
      ``edge``, the haversine distance from (``centre_lat``, ``centre_lon``) to row
      ``order[p]``'s (``lat``, ``lon``) at most ``radius_km`` decides, as
      ``RadiusFilter._within`` does.

    Block ``b``'s rows belong to cluster ``clusters[b]`` and lie within ``radii[b]`` of its
    centroid, which bounds their scores (plus ``slack``, for rounding). Also returns how many
    rows were scored."""
    best_positions = np.full(fetch, -1, np.int64)
    best = np.full(fetch, -np.inf, np.float32)
    found = 0
    scored = 0
    keys = _bounds(query, centroids, clusters, radii, slack)
    n = len(keys)
    heap = np.arange(n)
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(keys, heap, n, i)
    check_live, check_allowed = len(live) > 0, len(allowed) > 0
    while n:
        block = heap[0]
        if found == fetch and keys[0] < best[fetch - 1]:
            break  # no row left can beat the k-th
        n -= 1
        keys[0], heap[0] = keys[n], heap[n]
        _sift_down(keys, heap, n, 0)
        for p in range(first[block], last[block]):
            if (check_live and not live[p]) or (check_allowed and not allowed[p]):
                continue
            ok = True
            for j in range(n_sets):
                code = codes[j][p]
                if code < 0 or not answers[j][code]:
                    ok = False
                    break
            for j in range(n_ranges if ok else 0):
                value = ranges[j][p]
                if not (value >= lows[j] and value <= highs[j]):
                    ok = False
                    break
            if ok and not whole[block]:
                cosine = (
                    points[p, 0] * centre[0] + points[p, 1] * centre[1] + points[p, 2] * centre[2]
                )
                if abs(cosine - edge) < band:
                    row = order[p]
                    ok = _haversine_km(centre_lat, centre_lon, lat[row], lon[row]) <= radius_km
                else:
                    ok = cosine >= edge
            if not ok:
                continue
            scored += 1
            score = _dot(vectors, p, query)
            if found < fetch:
                i = found
                found += 1
            elif score > best[fetch - 1]:
                i = fetch - 1
            else:
                continue
            while i > 0 and best[i - 1] < score:  # insertion: equal scores keep their order
                best[i], best_positions[i] = best[i - 1], best_positions[i - 1]
                i -= 1
            best[i], best_positions[i] = score, p
    rows = np.full(fetch, -1, np.int64)
    for i in range(found):
        rows[i] = order[best_positions[i]]
    return rows, best, scored
