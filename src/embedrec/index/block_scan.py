"""The compiled loops of filtered searches (see :mod:`embedrec.index.bounded`).

One query at a time: groups of blocks of consecutive positions are read best key first, from
a heap (a circle's blocks by their bound, one block to a group; an IVF index's clusters by
their centroid's score, a cluster's blocks to a group). Each row is checked against the
filters (set and range columns, a circle, a mask of positions) before its vector is scored.
A bounded search stops once the next bound cannot beat the k-th score; a search of the
nearest clusters once it has read enough of them and enough rows passed.

In numpy the same work took some forty calls per pass over the blocks, each costing more in
set-up than the rows it read: 100 km around Dresden at 1M listings ran 2.2 times faster
compiled, side by side (docs/index-benchmark.md).

Every array argument has one fixed type, and the filter tuples a fixed length
(`bounded.MAX_TESTS`, unused slots padded), so each loop compiles once (cached on disk by
numba) for any combination of filters. The row tests sit inside the loop, not in a function
of their own: passing the filters' arrays to a call per row cost more than the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from embedrec.geo import EARTH_RADIUS_KM

_SAMPLE_EVERY = 8  # a bounded search's first groups: their key threshold from every 8th key


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
def _heap(keys: np.ndarray) -> np.ndarray:
    """Indexes into ``keys`` as a max-heap, ``keys`` reordered alike."""
    n = len(keys)
    heap = np.arange(n)
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(keys, heap, n, i)
    return heap


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
def _scan(
    query: np.ndarray,
    vectors: np.ndarray,
    live: np.ndarray,
    keys: np.ndarray,
    group_starts: np.ndarray,
    members: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    whole: np.ndarray,
    bounded: bool,
    radii: np.ndarray,
    reach: np.ndarray,
    norm: float,
    first_groups: int,
    breadth: int,
    widen: int,
    want: int,
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
    blocks read, by dot product of ``vectors[p]`` with ``query``, best first and padded with
    -1 / -inf, where:

    - ``live[p]`` holds (an empty ``live``: every row is live) and ``allowed[p]`` (empty:
      all);
    - ``codes[j][p]`` is a code whose ``answers[j]`` is True (-1: missing, fails), for
      ``j < n_sets``; ``lows[j] <= ranges[j][p] <= highs[j]`` (NaN fails), ``j < n_ranges``;
    - in a block not ``whole`` (a cell on a circle's edge; an empty ``whole``: every block
      is), ``points[p]`` (a unit vector) lies in the circle: its cosine to ``centre`` at least
      ``edge``; within ``band`` of ``edge``, the haversine distance from (``centre_lat``,
      ``centre_lon``) to row ``order[p]``'s (``lat``, ``lon``) at most ``radius_km`` decides,
      as ``RadiusFilter._within`` does.

    Group ``g`` holds the blocks ``members[group_starts[g]:group_starts[g + 1]]``, block
    ``b`` the positions ``first[b]:last[b]``; groups are read by ``keys`` (a max-heap). With
    ``bounded``, a group is one block and its key bounds its rows' scores as its centroid's
    score plus ``norm`` (the query's) times ``radii[b]``: the search stops once a key cannot
    beat the k-th score. ``reach[p]``, the farthest distance to the centroid among the
    block's rows from ``p`` on, bounds those rows alike (the key less ``norm`` times
    ``radii[b] - reach[p]``): the block is left where that cannot beat the k-th, and the
    rows after it are not read (most of a block's, its rows coming farthest first). It stops
    anyway after ``breadth`` groups where ``want`` rows passed, else after ``widen`` times as
    many (where they did), and so on. Also returns how many rows were scored (passed)."""
    best_positions = np.full(fetch, -1, np.int64)
    best = np.full(fetch, -np.inf, np.float32)
    found = 0
    scored = 0
    check_live, check_allowed, check_whole = len(live) > 0, len(allowed) > 0, len(whole) > 0
    # the tuples unpacked once: indexing a tuple by a loop variable costs a branch per row
    c0, c1, c2, c3 = codes
    a0, a1, a2, a3 = answers
    r0, r1, r2, r3 = ranges
    low0, low1, low2, low3 = lows[0], lows[1], lows[2], lows[3]
    high0, high1, high2, high3 = highs[0], highs[1], highs[2], highs[3]
    # a bounded search reads a few hundred of a large circle's thousands of groups: the
    # heap holds first those whose key is about among the best ``first_groups`` (a
    # threshold from a sample of the keys), the others only if the search gets to them
    later = np.zeros(0, np.int64)
    threshold = -np.inf
    if bounded and len(keys) > 2 * first_groups >= 2 * _SAMPLE_EVERY:
        sample = keys[::_SAMPLE_EVERY].copy()
        rank = len(sample) - first_groups // _SAMPLE_EVERY
        threshold = np.partition(sample, rank)[rank]
        ids = np.nonzero(keys >= threshold)[0]
        later = np.nonzero(keys < threshold)[0]
    else:
        ids = np.arange(len(keys))
    heap_keys = keys[ids]
    heap = _heap(heap_keys)
    n = len(heap_keys)
    visited = 0
    while True:
        if n == 0:
            # the later groups' keys lie below the threshold: read on only if one can beat
            # the k-th (or fewer than k rows were found)
            if len(later) == 0 or (found == fetch and threshold <= best[fetch - 1]):
                break
            ids, later = later, later[:0]
            heap_keys = keys[ids]
            heap = _heap(heap_keys)
            n = len(heap_keys)
            continue
        if visited == breadth:
            if scored >= want:
                break
            breadth *= widen  # as the index widens: the same groups, the same answers
        group = ids[heap[0]]
        key = heap_keys[0]
        if bounded and found == fetch and key < best[fetch - 1]:
            break  # no row left can beat the k-th
        n -= 1
        heap_keys[0], heap[0] = heap_keys[n], heap[n]
        _sift_down(heap_keys, heap, n, 0)
        visited += 1
        for member in range(group_starts[group], group_starts[group + 1]):
            block = members[member]
            in_circle = check_whole and not whole[block]
            for p in range(first[block], last[block]):
                if (
                    bounded
                    and found == fetch
                    and key - norm * (radii[block] - reach[p]) < best[fetch - 1]
                ):
                    break  # no row left in the block can beat the k-th
                if (check_live and not live[p]) or (check_allowed and not allowed[p]):
                    continue
                if n_sets > 0:
                    code = c0[p]
                    if code < 0 or not a0[code]:
                        continue
                if n_sets > 1:
                    code = c1[p]
                    if code < 0 or not a1[code]:
                        continue
                if n_sets > 2:
                    code = c2[p]
                    if code < 0 or not a2[code]:
                        continue
                if n_sets > 3:
                    code = c3[p]
                    if code < 0 or not a3[code]:
                        continue
                if n_ranges > 0:
                    value = r0[p]
                    if not (value >= low0 and value <= high0):
                        continue
                if n_ranges > 1:
                    value = r1[p]
                    if not (value >= low1 and value <= high1):
                        continue
                if n_ranges > 2:
                    value = r2[p]
                    if not (value >= low2 and value <= high2):
                        continue
                if n_ranges > 3:
                    value = r3[p]
                    if not (value >= low3 and value <= high3):
                        continue
                ok = True
                if in_circle:
                    cosine = (
                        points[p, 0] * centre[0]
                        + points[p, 1] * centre[1]
                        + points[p, 2] * centre[2]
                    )
                    if abs(cosine - edge) < band:
                        row = order[p]
                        distance = _haversine_km(centre_lat, centre_lon, lat[row], lon[row])
                        ok = distance <= radius_km
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
    reach: np.ndarray,
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
    first_groups: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The exact top ``fetch`` of a circle's blocks ``first[b]:last[b]`` (``whole``: the
    circle covers the block's cell) where the filters hold (see :func:`_scan`), the blocks
    read best bound first. Block ``b``'s rows belong to cluster ``clusters[b]`` and lie
    within ``radii[b]`` of its centroid, which bounds their scores (plus ``slack``, for
    rounding); ``reach`` bounds the rows from a position on, and the heap holds at first
    about the ``first_groups`` blocks of the best bounds (see :func:`_scan`)."""
    keys = _bounds(query, centroids, clusters, radii, slack)
    norm = math.sqrt(_dot(query.reshape(1, -1), 0, query))
    each = np.arange(len(keys) + 1)
    return _scan(
        query, vectors, live, keys, each, each, first, last, whole, True, radii, reach,
        norm, first_groups, len(keys) + 1, 1, 0,
        points, centre, centre_lat, centre_lon, edge, band, order, lat, lon, radius_km,
        ranges, lows, highs, n_ranges, codes, answers, n_sets, allowed, fetch,
    )  # fmt: skip


@_compiled()
def scan_clusters(
    query: np.ndarray,
    vectors: np.ndarray,
    live: np.ndarray,
    centroids: np.ndarray,
    cluster_starts: np.ndarray,
    by_cluster: np.ndarray,
    starts: np.ndarray,
    order: np.ndarray,
    breadth: int,
    widen: int,
    want: int,
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
    """As an IVF index's filtered search: the top ``fetch`` of the clusters nearest
    ``query`` where the set and range tests hold (see :func:`_scan`). Clusters are read by
    their centroid's score, each through its blocks
    ``by_cluster[cluster_starts[c]:cluster_starts[c + 1]]``, block ``b`` being positions
    ``starts[b]:starts[b + 1]``. The search reads ``breadth`` clusters, and ``widen`` times
    as many while fewer than ``want`` rows passed, as the index widens a filtered search:
    a filter at odds with the query reads on until it has found enough."""
    keys = np.empty(len(centroids), np.float32)
    for c in range(len(centroids)):
        keys[c] = _dot(centroids, c, query)
    no_circle, no_point = np.zeros(0, np.bool_), np.zeros((1, 3))
    nowhere, unbounded = np.zeros(3), np.zeros(0, np.float32)
    return _scan(
        query, vectors, live, keys, cluster_starts, by_cluster, starts[:-1], starts[1:],
        no_circle, False, unbounded, unbounded, 0.0, 0, breadth, widen, want, no_point, nowhere,
        0.0, 0.0, 0.0, 0.0, order, nowhere, nowhere, 0.0, ranges, lows, highs, n_ranges, codes,
        answers, n_sets, allowed, fetch,
    )  # fmt: skip
