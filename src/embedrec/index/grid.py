"""A latitude/longitude grid over a table's points, for radius filters on large tables.

Rows are grouped by grid cell and cells numbered row-major by latitude, so the cells a box
covers in one band of latitude are one contiguous run of the grouped rows. A radius filter
reads only those runs: its cost follows the rows near the circle, not the table's size. The
rows of cells wholly inside the circle pass without a distance; only the cells on its edge are
checked row by row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from embedrec.geo import EARTH_RADIUS_KM

# Cells of a quarter degree (about 28 x 18 km in Germany): a 100 km circle's box covers about
# a hundred cells in eight runs, and the box holds few rows beyond the circle.
CELL_DEGREES = 0.25
LON_CELLS = int(360 / CELL_DEGREES) + 1
LAT_CELLS = int(180 / CELL_DEGREES) + 1
# Margin added to a box's bounds (degrees): the bounds come from trigonometry in floats.
_MARGIN = 1e-9

# A box of up to this many cells is read cell by cell, each asked whether the shape covers it
MAX_CELLS = 4096

Box = tuple[tuple[float, float], list[tuple[float, float]]]
# (lat low, lat high, lon low, lon high) of cells, in degrees -> whether a shape covers each
Covered = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def circle_box(lat: float, lon: float, radius_km: float) -> Box:
    """(lat low, lat high) and one or two (lon low, lon high), west to east, holding the
    circle, in degrees.

    A circle that wraps around the antimeridian takes two longitude ranges; one that holds a
    pole, or nearly does, takes every longitude.
    """
    angle = radius_km / EARTH_RADIUS_KM
    height = math.degrees(min(angle, math.pi)) + _MARGIN
    lats = (max(-90.0, lat - height), min(90.0, lat + height))
    cos_lat = math.cos(math.radians(lat))
    # near a pole asin's slope is unbounded: widen to every longitude before rounding matters
    if angle >= math.pi / 2 or math.sin(angle) >= cos_lat * (1 - 1e-9):
        return lats, [(-180.0, 180.0)]
    width = math.degrees(math.asin(math.sin(angle) / cos_lat)) + _MARGIN
    low, high = lon - width, lon + width
    if low < -180:
        return lats, [(-180.0, high), (low + 360, 180.0)]
    if high > 180:
        return lats, [(-180.0, high - 360), (low, 180.0)]
    return lats, [(low, high)]


def in_box(lat: np.ndarray, lon: np.ndarray, box: Box) -> np.ndarray:
    """Whether each point lies in ``box`` (NaN: no)."""
    (lat_low, lat_high), lons = box
    near = np.zeros(len(lat), dtype=bool)
    for low, high in lons:
        near |= (lon >= low) & (lon <= high)
    return near & (lat >= lat_low) & (lat <= lat_high)


@dataclass(frozen=True)
class Grid:
    """Rows grouped by cell (``order``), where each cell's group starts in it (``starts``)
    and the rows' points as unit vectors in that order (``points``); ``clustered``: each
    cell's rows ordered by a vector index's clusters."""

    order: np.ndarray
    starts: np.ndarray
    points: np.ndarray
    clustered: bool = False
    # the cells of recent circles (``RadiusFilter.cells``), by centre and radius
    circles: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        lat: np.ndarray,
        lon: np.ndarray,
        points: np.ndarray,
        within: np.ndarray | None = None,
    ) -> Grid:
        """The grid of points given in degrees (NaN: missing, in no cell) and as unit vectors;
        inside each cell, rows ordered by ``within`` (a vector index's cluster of each row:
        the rows one cluster has in one cell are then one run), else as they come."""
        valid = ~(np.isnan(lat) | np.isnan(lon))
        cells = np.full(len(lat), -1, dtype=np.int64)
        cells[valid] = _cell(lat[valid], 90.0) * LON_CELLS + _cell(lon[valid], 180.0)
        by_cell = (cells,) if within is None else (within, cells)
        order = np.lexsort(by_cell)  # stable: rows of one cell (and cluster) as they come
        # missing points (-1) sort first, before the first cell's start
        starts = np.searchsorted(cells[order], np.arange(LAT_CELLS * LON_CELLS + 1))
        return cls(order, starts, np.ascontiguousarray(points[order]), within is not None)

    def runs(self, box: Box, covered: Covered | None = None) -> tuple[np.ndarray, ...]:
        """The cells ``box`` overlaps as runs of positions in ``order``, ascending: (first,
        last, whole), ``whole`` telling the runs of cells that ``covered`` says lie wholly
        inside the shape asked for. A box of at most ``MAX_CELLS`` cells is given cell by cell,
        each asked for; a larger one band by band, none whole."""
        found = self.cells(box, covered) if covered is not None else None
        if found is None:
            # band by band, west to east: the runs come out ascending
            bands, west, east = _band_range(box)
            first = self.starts[(bands[:, None] * LON_CELLS + west).ravel()]
            last = self.starts[(bands[:, None] * LON_CELLS + east + 1).ravel()]
            return first, last, np.zeros(len(first), dtype=bool)
        cells, whole = found
        return self.starts[cells], self.starts[cells + 1], whole

    def cells(self, box: Box, covered: Covered) -> tuple[np.ndarray, np.ndarray] | None:
        """The cells ``box`` overlaps, ascending, and whether ``covered`` says each lies wholly
        inside the shape asked for; None for a box of more than ``MAX_CELLS`` cells."""
        bands, west, east = _band_range(box)
        if len(bands) * int((east - west + 1).sum()) > MAX_CELLS:
            return None
        columns = np.concatenate([np.arange(w, e + 1) for w, e in zip(west, east, strict=True)])
        cells = (bands[:, None] * LON_CELLS + columns).ravel()
        lat0 = np.repeat(bands * CELL_DEGREES - 90.0, len(columns))
        lon0 = np.tile(columns * CELL_DEGREES - 180.0, len(bands))
        return cells, covered(lat0, lat0 + CELL_DEGREES, lon0, lon0 + CELL_DEGREES)

    def cell_of_positions(self) -> np.ndarray:
        """The cell of each position in ``order`` (-1: no coordinates)."""
        counts = np.diff(self.starts)
        cells = np.repeat(np.arange(len(counts)), counts)
        return np.concatenate([np.full(self.starts[0], -1, dtype=np.int64), cells])


def _band_range(box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The latitude bands of ``box`` and, per longitude range, its first and last column."""
    (lat_low, lat_high), lons = box
    bands = np.arange(_cell(lat_low, 90.0), _cell(lat_high, 90.0) + 1)
    west = np.array([_cell(low, 180.0) for low, _ in lons])
    east = np.array([_cell(high, 180.0) for _, high in lons])
    return bands, west, east


def run_positions(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The positions of runs ``first[i]`` to ``last[i]`` (excluded), run after run."""
    lengths = last - first
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # without a Python loop: each run's start, shifted to where its block begins in the
    # output, plus a running count
    shift = first - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total)


def _cell(degrees: float | np.ndarray, offset: float) -> np.ndarray:
    return np.floor((np.asarray(degrees) + offset) / CELL_DEGREES).astype(np.int64)


@dataclass(frozen=True)
class OrderedRows:
    """Rows given as ``positions`` (each once, in ascending runs) in a permutation ``order``
    of a table's rows (a grid's), plus ``extra`` row numbers beyond that table (rows added
    since).

    A vector index scores such rows from a copy of its vectors in ``order``, read nearly in
    sequence instead of scattered over the catalogue.
    """

    order: np.ndarray
    positions: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.positions) + len(self.extra)

    def rows(self) -> np.ndarray:
        """The rows as row numbers."""
        return np.concatenate([self.order[self.positions], self.extra])
