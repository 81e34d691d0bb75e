"""Exact top-k over a circle's rows, reading only the blocks that can hold the best of them.

A vector index's clusters (IVF lists) bound their rows' scores: a row ``v`` of a cluster with
centroid ``c`` lies within ``r`` of it, so ``q.v <= q.c + |q| r``. On a catalogue whose vectors
learned where listings are, a cluster's rows sit in few grid cells, and a circle's cells hold
few clusters. The grid orders each cell's rows by cluster, so the rows of one cluster in one
cell are one run of positions (a block), with its own ``r``: the farthest of them from the
centroid. Within a block the rows come farthest first, so that each row's own bound
(``q.c + |q| d`` for its distance ``d``) falls along the block. A search reads the circle's
blocks best bound first, checks the filters on each row and scores those that pass, leaves a
block at the first row whose bound cannot beat the k-th best score, and stops once no block
left can (a compiled loop, :mod:`embedrec.index.block_scan`). The answer is exactly the top k of the
circle's rows that pass the filters, for a fraction of the rows read: 100 km around Dresden,
38,621 rows, scores about 4,700 (median; 300 km, 254,458 rows: 9,700).

Filters without a circle use the same layout the way an IVF index searches: the clusters
nearest the query, each through its blocks, with the column tests in the loop instead of a
mask over the catalogue built for each request first (:func:`nearest_clusters_top_k`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedrec.index.grid import Grid, run_positions

# float32 rounding of inner products and norms stays far below this, relative to the norms:
# a bound this much above its computed value never rules out a row of the top k
_BOUND_SLACK = 1e-4
# range and set filters the compiled loop checks (each kind); more go into a position mask
MAX_TESTS = 4
# a radius search's heap holds at first about this many of the circle's blocks, those of
# the best bounds: a large circle has thousands, of which it reads a few hundred, and
# ordering them all took longer than the bounds (block_scan._scan)
FIRST_BLOCKS = 1024


@dataclass(frozen=True)
class ClusterBlocks:
    """A layout of the rows cut into blocks of one cell and one cluster: ``order`` gives the
    row at each position; each block's first position (``starts``, one more for the end),
    its cell (ascending), its cluster and its radius (the farthest of its rows from the
    cluster's centroid); the clusters' centroids; each cluster's blocks,
    ``by_cluster[cluster_starts[c]:cluster_starts[c + 1]]``; and, at each position, the
    farthest distance to the centroid among its block's rows from there on (``reach``:
    each row's own distance where, as :func:`cluster_order_key` orders them, a block's rows
    come farthest first). ``grid``: the map grid whose order this is (None: rows ordered by
    cluster alone, a table without coordinates)."""

    order: np.ndarray
    starts: np.ndarray
    cells: np.ndarray
    clusters: np.ndarray
    radii: np.ndarray
    centroids: np.ndarray
    by_cluster: np.ndarray
    cluster_starts: np.ndarray
    reach: np.ndarray
    grid: Grid | None = None

    @classmethod
    def build(
        cls,
        row_clusters: np.ndarray,
        vectors: np.ndarray,
        centroids: np.ndarray,
        grid: Grid | None = None,
        row_distances: np.ndarray | None = None,
    ) -> ClusterBlocks:
        """The blocks of ``grid`` (a grid ordered within each cell by
        :func:`cluster_order_key`), or of the rows ordered by that key alone, given each
        row's cluster (-1: none, a removed row) and vector, and the clusters' centroids
        (``row_distances``: :func:`centroid_distances` of the rows, where already known)."""
        if row_distances is None:
            row_distances = centroid_distances(row_clusters, vectors, centroids)
        if grid is None:
            order = np.argsort(cluster_order_key(row_clusters, row_distances), kind="stable")
            cells = np.zeros(len(order), dtype=np.int64)
        else:
            order, cells = grid.order, grid.cell_of_positions()
        clusters = row_clusters[order]
        change = (cells[1:] != cells[:-1]) | (clusters[1:] != clusters[:-1])
        starts = np.concatenate([[0], np.flatnonzero(change) + 1, [len(cells)]])
        distance = row_distances[order]
        reach = _farthest_from_here(distance, starts)
        radii = np.maximum.reduceat(distance, starts[:-1]) if len(cells) else distance
        block_clusters = clusters[starts[:-1]]
        by_cluster = np.argsort(block_clusters, kind="stable")
        by_cluster = by_cluster[block_clusters[by_cluster] >= 0]
        cluster_starts = np.searchsorted(block_clusters[by_cluster], np.arange(len(centroids) + 1))
        return cls(
            order,
            starts,
            cells[starts[:-1]],
            block_clusters,
            radii,
            np.ascontiguousarray(centroids, dtype=np.float32),
            by_cluster,
            cluster_starts,
            reach,
            grid,
        )

    def __len__(self) -> int:
        return len(self.clusters)

    def of_cells(self, cells: np.ndarray, whole: np.ndarray) -> CircleBlocks:
        """The blocks of ``cells`` (ascending), ``whole`` telling the cells a circle covers."""
        low = np.searchsorted(self.cells, cells, side="left")
        high = np.searchsorted(self.cells, cells, side="right")
        blocks = run_positions(low, high)
        inside = np.repeat(whole, high - low)
        live = self.clusters[blocks] >= 0  # rows removed before the blocks were cut: none
        blocks, inside = blocks[live], inside[live]
        return CircleBlocks(
            self.starts[blocks],
            self.starts[blocks + 1],
            self.clusters[blocks],
            self.radii[blocks],
            inside,
        )


def centroid_distances(
    row_clusters: np.ndarray, vectors: np.ndarray, centroids: np.ndarray
) -> np.ndarray:
    """Each row's distance to its cluster's centroid (float32; 0 for a row of no cluster)."""
    distance = np.zeros(len(row_clusters), dtype=np.float32)
    for start in range(0, len(row_clusters), 1 << 16):  # in parts: memory stays small
        part = slice(start, start + (1 << 16))
        of = row_clusters[part]
        gap = vectors[part] - centroids[np.maximum(of, 0)]
        distance[part] = np.where(of >= 0, np.linalg.norm(gap, axis=1), 0)
    return distance


def _farthest_from_here(distance: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The largest of ``distance[p:end of p's block]`` at each position ``p`` (blocks from
    ``starts``): a running maximum from the end, each block lifted above the ones after it
    so that none carries into the block before."""
    if not len(distance):
        return distance
    later = np.repeat(np.arange(len(starts) - 2, -1, -1), np.diff(starts))  # blocks after
    lift = later * (float(distance.max()) + 1.0)
    lifted = distance.astype(np.float64) + lift
    return (np.maximum.accumulate(lifted[::-1])[::-1] - lift).astype(np.float32)


def cluster_order_key(row_clusters: np.ndarray, row_distances: np.ndarray) -> np.ndarray:
    """One float64 sort key per row: its cluster, then its distance to the centroid, farthest
    first (the fraction ``1 - d / (max d + 1)`` added to the cluster number), so that a grid
    sorting by it within each cell makes each block's rows' bounds fall along the block."""
    scale = float(row_distances.max(initial=0.0)) + 1.0
    return row_clusters + (1.0 - row_distances.astype(np.float64) / scale) * 0.5


@dataclass(frozen=True)
class CircleBlocks:
    """The blocks of a circle's cells, ascending: their first and last positions (excluded),
    their clusters and radii, and whether the circle covers their cell whole."""

    first: np.ndarray
    last: np.ndarray
    clusters: np.ndarray
    radii: np.ndarray
    inside: np.ndarray

    def positions(self) -> np.ndarray:
        """The positions of every block, ascending."""
        return run_positions(self.first, self.last)


@dataclass(frozen=True)
class CircleTest:
    """A radius filter as the loop tests a row: its centre as a unit vector and in degrees,
    the cosine of its radius's angle (``edge``) and the band around it where the distance
    decides; the grid's order and the table's coordinates (for that distance) and the
    rows' unit vectors in the grid's order (``points``)."""

    centre: np.ndarray
    lat: float
    lon: float
    radius_km: float
    edge: float
    band: float
    order: np.ndarray
    points: np.ndarray
    row_lat: np.ndarray
    row_lon: np.ndarray


@dataclass(frozen=True)
class PositionTests:
    """Filters as tests of a layout's positions, for the compiled loops: the circle (None:
    no radius filter); range filters (a float64 column in the layout's order, inclusive
    bounds); set filters (int32 codes in that order, -1 missing, and each code's answer);
    and a mask of the positions where any other filter holds (empty: no other filter)."""

    circle: CircleTest | None = None
    ranges: tuple[np.ndarray, ...] = ()
    lows: tuple[float, ...] = ()
    highs: tuple[float, ...] = ()
    codes: tuple[np.ndarray, ...] = ()
    answers: tuple[np.ndarray, ...] = ()
    allowed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def bounded_top_k(
    query: np.ndarray,
    fetch: int,
    structure: ClusterBlocks,
    circle: CircleBlocks,
    tests: PositionTests,
    vectors: np.ndarray,
    live: np.ndarray,
    first_blocks: int = FIRST_BLOCKS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The top ``fetch`` (rows, scores) of the ``circle``'s rows where ``tests`` hold, by
    dot product with ``query`` (float32) of ``vectors``, the rows' in the grid's order, best
    first and padded with -1 / -inf; ``live`` flags the positions' rows (empty: all live).
    Also returns how many rows were scored. The same answers whatever ``first_blocks``."""
    from embedrec.index.block_scan import scan_blocks  # numba: imported on first use

    c = tests.circle
    assert c is not None, "a bounded search is a radius filter's"
    return scan_blocks(
        query,
        vectors,
        live,
        structure.centroids,
        circle.clusters,
        circle.radii,
        _BOUND_SLACK,
        circle.first,
        circle.last,
        circle.inside,
        structure.reach,
        c.points,
        c.centre,
        c.lat,
        c.lon,
        c.edge,
        c.band,
        c.order,
        _read_only(c.row_lat),
        _read_only(c.row_lon),
        c.radius_km,
        *_column_tests(tests),
        fetch,
        first_blocks,
    )


def nearest_clusters_top_k(
    query: np.ndarray,
    fetch: int,
    structure: ClusterBlocks,
    tests: PositionTests,
    vectors: np.ndarray,
    live: np.ndarray,
    breadth: int,
    widen: int,
    want: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The top ``fetch`` (rows, scores) where ``tests`` hold (no circle) in the ``breadth``
    clusters nearest ``query``, or ``widen`` times as many until ``want`` rows passed; as
    :func:`bounded_top_k` otherwise (:func:`~embedrec.index.block_scan.scan_clusters`)."""
    from embedrec.index.block_scan import scan_clusters  # numba: imported on first use

    return scan_clusters(
        query,
        vectors,
        live,
        structure.centroids,
        structure.cluster_starts,
        structure.by_cluster,
        structure.starts,
        structure.order,
        breadth,
        widen,
        want,
        *_column_tests(tests),
        fetch,
    )


def _column_tests(tests: PositionTests) -> tuple:
    """The loops' arguments for range and set tests and the mask: fixed-length tuples."""
    return (
        _padded(tests.ranges, _NO_FLOATS),
        _bounds(tests.lows),
        _bounds(tests.highs),
        len(tests.ranges),
        _padded(tests.codes, _NO_CODES),
        _padded(tests.answers, _NO_ANSWERS),
        len(tests.codes),
        tests.allowed,
    )


# fillers of the loop's fixed-length tuples: one type for any number of filters
_NO_FLOATS = np.zeros(1, dtype=np.float64)
_NO_CODES = np.zeros(1, dtype=np.int32)
_NO_ANSWERS = np.zeros(1, dtype=bool)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: the table's coordinates come read-only from some sources (pandas,
    mapped files) and writable from others, and numba compiles each kind apart."""
    view = array.view()
    view.flags.writeable = False
    return view


def _padded(arrays: tuple[np.ndarray, ...], filler: np.ndarray) -> tuple[np.ndarray, ...]:
    return (*arrays, *(filler,) * (MAX_TESTS - len(arrays)))


def _bounds(values: tuple[float, ...]) -> np.ndarray:
    return np.array([*values, *(0.0,) * (MAX_TESTS - len(values))], dtype=np.float64)


def compile_scan() -> None:
    """Compile the search loops now rather than in the first filtered search: numba caches
    them on disk, so this takes seconds once per install, then a fraction of a second."""
    one, vector = np.zeros(1, dtype=np.int64), np.zeros((1, 2), dtype=np.float32)
    structure = ClusterBlocks.build(one, vector, vector)
    blocks = CircleBlocks(one, one, one, np.zeros(1, dtype=np.float32), np.ones(1, dtype=bool))
    floats = np.zeros(1, dtype=np.float64)
    circle = CircleTest(
        np.zeros(3), 0.0, 0.0, 1.0, 1.0, 1e-9, one, np.zeros((1, 3)), floats, floats
    )
    all_live = blocks.inside[:0]
    bounded_top_k(vector[0], 1, structure, blocks, PositionTests(circle), vector, all_live)
    nearest_clusters_top_k(vector[0], 1, structure, PositionTests(), vector, all_live, 1, 4, 1)
