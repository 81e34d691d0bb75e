"""The radius filter (``within=51.05,13.74,100km``): great-circle distance from a point, answered
from a grid of the table's coordinates on large tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from embedrec.geo import EARTH_RADIUS_KM, LAT_LON_COLUMNS, haversine_km
from embedrec.index.bounded import CircleTest
from embedrec.index.filters.base import Candidates, Check, Filter, FilterError
from embedrec.index.filters.cache import CACHED_ROWS, FilterCache, cached
from embedrec.index.filters.columns import numeric_column
from embedrec.index.filters.values import check_point, is_number
from embedrec.index.grid import Grid, circle_box, in_box, run_positions

# A radius filter decides by the cosine of the angle to its centre where that is at least
# this far from the cosine of the radius (float64 rounding is ~1e-16), else by the distance.
_COSINE_BAND = 1e-9
# A cell counts as inside a circle when its farthest corner is this much inside the edge: far
# more than the rounding of a point's cell or of the distances.
_COVER_MARGIN_KM = 1e-3
# A grid keeps the cells of this many circles (at most MAX_CELLS each)
_CIRCLES_KEPT = 64
GRID = ("geo cells",)  # the FilterCache key of a table's grid


@dataclass(frozen=True)
class RadiusFilter(Filter):
    """Great-circle (haversine) distance from (lat, lon) at most ``radius_km``."""

    lat: float
    lon: float
    radius_km: float
    field: str = "within"
    check_cost: ClassVar[int] = 4  # three coordinates gathered per row, and a product

    def __post_init__(self) -> None:
        check_point(self.field, self.lat, self.lon)
        if not is_number(self.radius_km) or not math.isfinite(self.radius_km):
            raise FilterError(self.field, f"radius must be a number, got {self.radius_km!r}")
        if self.radius_km < 0:
            raise FilterError(self.field, f"radius must not be negative, got {self.radius_km}")

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        found = self.candidates(table, cache) if cache is not None else None
        if found is not None:  # the rows near the circle from the grid, not a pass over all
            _, fetch, _, order = found
            keep = np.zeros(len(table), dtype=bool)
            keep[order[fetch()]] = True
            return keep
        lat, lon = self._coordinates(table, cache)
        # distances only inside a box that holds the circle
        rows = np.flatnonzero(in_box(lat, lon, circle_box(self.lat, self.lon, self.radius_km)))
        keep = np.zeros(len(lat), dtype=bool)
        points = _unit_points(table, lat, lon, cache)[rows]
        keep[rows] = self._within(points, lambda i: (lat[rows[i]], lon[rows[i]]))
        return keep

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        lat, lon = self._coordinates(table, cache)
        points = np.take(_unit_points(table, lat, lon, cache), rows, axis=0)
        return self._within(points, lambda i: (lat[rows[i]], lon[rows[i]]))

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        lat, lon = self._coordinates(table, cache)
        points = _grid(table, lat, lon, cache).points  # in ``order``: the grid's
        return self._within(points[positions], _ordered_coordinates(lat, lon, order, positions))

    def _candidates(self, table: pd.DataFrame, cache: FilterCache | None) -> Candidates | None:
        if len(table) < CACHED_ROWS:
            return None
        lat, lon = self._coordinates(table, cache)
        grid = _grid(table, lat, lon, cache)
        found = self.cells(grid)
        if found is None:  # a circle over too many cells: read band by band
            first, last, whole = grid.runs(circle_box(self.lat, self.lon, self.radius_km))
        else:
            cells, whole = found
            first, last = grid.starts[cells], grid.starts[cells + 1]

        def fetch(check: Check | None = None, within: np.ndarray | None = None) -> np.ndarray:
            # the rows of cells the circle covers whole, then those of the cells on its edge:
            # the first pass as they are, the others by their distance
            cells = np.concatenate([np.flatnonzero(whole), np.flatnonzero(~whole)])
            if within is None:
                positions = run_positions(first[cells], last[cells])
                n_inner = int((last - first)[whole].sum())
            else:  # only rows at these positions (ascending): each cell's share of them
                low, high = np.searchsorted(within, first), np.searchsorted(within, last)
                positions = within[run_positions(low[cells], high[cells])]
                n_inner = int((high - low)[whole].sum())
            return self._kept(grid, lat, lon, positions, n_inner, check)

        return int((last - first).sum()), fetch, True, grid.order

    def _basis(self, table: pd.DataFrame, cache: FilterCache | None) -> Any:
        # the grid: a catalogue may build it again (see ``grid``)
        if cache is None or len(table) < CACHED_ROWS:
            return None
        return self.grid(table, cache)

    def _kept(
        self,
        grid: Grid,
        lat: np.ndarray,
        lon: np.ndarray,
        positions: np.ndarray,
        n_inner: int,
        check: Check | None,
    ) -> np.ndarray:
        if check is not None:  # the other filters first: the distance on fewer rows
            # as row numbers: a boolean index that keeps rows at random costs more
            picked = np.flatnonzero(check(positions))
            n_inner = int(np.searchsorted(picked, n_inner))
            positions = positions[picked]
        inner, edge = positions[:n_inner], positions[n_inner:]
        coordinates = _ordered_coordinates(lat, lon, grid.order, edge)
        # np.take gathers rows several times faster than fancy indexing
        near = self._within(np.take(grid.points, edge, axis=0), coordinates)
        return np.concatenate([inner, edge[np.flatnonzero(near)]])

    def grid(
        self, table: pd.DataFrame, cache: FilterCache, within: np.ndarray | None = None
    ) -> Grid:
        """The grid of ``table``'s coordinates kept in ``cache``; when built by this call,
        each cell's rows are ordered by ``within`` (see :meth:`Grid.build`; a catalogue
        builds it again ordered by its index's clusters, :func:`table_grid`)."""
        lat, lon = self._coordinates(table, cache)
        return _grid(table, lat, lon, cache, within)

    def cells(self, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
        """The grid's cells near the circle and whether it covers each whole (:meth:`Grid.cells`),
        found once per grid and circle: users search around the same few places."""
        held = self.__dict__.get("_held_cells")
        if held is None or held[0] is not grid:
            circle = (self.lat, self.lon, self.radius_km)
            found = grid.circles.get(circle)
            if found is None:
                found = grid.cells(circle_box(*circle), self._covers)
                if len(grid.circles) >= _CIRCLES_KEPT:
                    grid.circles.clear()
                grid.circles[circle] = found
            held = grid, found
            object.__setattr__(self, "_held_cells", held)  # a cache, not a field
        return held[1]

    def _covers(
        self, lat_low: np.ndarray, lat_high: np.ndarray, lon_low: np.ndarray, lon_high: np.ndarray
    ) -> np.ndarray:
        """Whether the circle holds each cell whole, with a metre to spare. On a sphere a
        cell's farthest point from the centre is a corner, unless the cell holds the point
        opposite the centre: circles of up to a quarter of the globe's circumference only."""
        if self.radius_km > math.pi / 2 * EARTH_RADIUS_KM:
            return np.zeros(len(lat_low), dtype=bool)
        corners = np.concatenate([lat_low, lat_low, lat_high, lat_high])
        sides = np.concatenate([lon_low, lon_high, lon_low, lon_high])
        farthest = haversine_km(self.lat, self.lon, corners, sides).reshape(4, -1).max(axis=0)
        return farthest <= self.radius_km - _COVER_MARGIN_KM

    def _within(
        self, points: np.ndarray, coordinates: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    ) -> np.ndarray:
        """Whether points, as unit vectors, lie within the radius: the great-circle distance
        (haversine, as ``geo.haversine_km``) at most ``radius_km``. ``coordinates(i)`` gives
        the (lat, lon) of points ``i``.

        The cosine of the angle to the centre decides all but the points within rounding of
        the edge (in the band, up to ~300 m from the centre of a zero radius, well under a
        metre at 100 km); those few are decided by the distance itself, so every path that
        calls this keeps exactly the same points."""
        centre, edge = self._centre_and_edge()
        # three columns, not a BLAS product: on a busy machine waking BLAS threads for one
        # query's rows cost milliseconds
        cosines = points[:, 0] * centre[0] + points[:, 1] * centre[1] + points[:, 2] * centre[2]
        keep = cosines >= edge + _COSINE_BAND
        unsure = np.flatnonzero(np.abs(cosines - edge) < _COSINE_BAND)  # NaN: neither
        if len(unsure):
            lat, lon = coordinates(unsure)
            keep[unsure] = haversine_km(self.lat, self.lon, lat, lon) <= self.radius_km
        return keep

    def _centre_and_edge(self) -> tuple[np.ndarray, float]:
        """The centre as a unit vector and the cosine of the radius's angle."""
        phi, lam = math.radians(self.lat), math.radians(self.lon)
        centre = np.array(
            [math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)]
        )
        return centre, math.cos(min(self.radius_km / EARTH_RADIUS_KM, math.pi))

    def circle_test(self, table: pd.DataFrame, cache: FilterCache) -> CircleTest:
        """The filter as a compiled loop tests positions of the table's grid, deciding as
        :meth:`_within` does."""
        lat, lon = self._coordinates(table, cache)
        grid = _grid(table, lat, lon, cache)
        centre, edge = self._centre_and_edge()
        return CircleTest(
            centre, float(self.lat), float(self.lon), float(self.radius_km), edge, _COSINE_BAND,
            grid.order, grid.points, lat, lon,
        )  # fmt: skip

    def _coordinates(
        self, table: pd.DataFrame, cache: FilterCache | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The table's latitudes and longitudes, looked up once per table and cache: a
        request asks up to six times, and finding the columns costs more than reading them."""
        held = self.__dict__.get("_held_coordinates")
        if held is None or held[0] is not table or held[1] is not cache:
            held = table, cache, self._find_coordinates(table, cache)
            object.__setattr__(self, "_held_coordinates", held)  # a cache, not a field
        return held[2]

    def _find_coordinates(
        self, table: pd.DataFrame, cache: FilterCache | None
    ) -> tuple[np.ndarray, np.ndarray]:
        names = _lat_lon_columns(table)
        if names is None:
            raise FilterError(
                self.field,
                "the catalogue has no coordinates (needs columns lat/lon or latitude/longitude)",
            )
        lat = numeric_column(table, names[0], self.field, cache)
        return lat, numeric_column(table, names[1], self.field, cache)


def table_grid(
    table: pd.DataFrame, cache: FilterCache, within: np.ndarray | None = None
) -> Grid | None:
    """The grid of ``table``'s coordinates kept in ``cache`` (as :meth:`RadiusFilter.grid`,
    built again if it was built without ``within``); None for a table without coordinates."""
    names = _lat_lon_columns(table)
    if names is None:
        return None
    try:
        lat, lon = (numeric_column(table, name, name, cache) for name in names)
    except FilterError:  # not numbers: a radius filter says so when asked
        return None
    grid = _grid(table, lat, lon, cache, within)
    if within is not None and not grid.clustered:
        grid = _grid(table, lat, lon, cache, within, rebuild=True)
    return grid


def _lat_lon_columns(table: pd.DataFrame) -> tuple[str, str] | None:
    """The names of the table's latitude and longitude columns; None: it has none."""
    for lat_name, lon_name in LAT_LON_COLUMNS:
        if lat_name in table.columns and lon_name in table.columns:
            return lat_name, lon_name
    return None


def _grid(
    table: pd.DataFrame,
    lat: np.ndarray,
    lon: np.ndarray,
    cache: FilterCache | None,
    within: np.ndarray | None = None,
    rebuild: bool = False,
) -> Grid:
    def build() -> Grid:
        return Grid.build(lat, lon, _unit_points(table, lat, lon, cache), within)

    if rebuild and cache is not None:
        grid = build()
        cache.put(table, GRID, grid)  # what derives from the old grid's order is kept apart
        return grid
    return cached(cache, table, GRID, build)


def _unit_points(
    table: pd.DataFrame, lat: np.ndarray, lon: np.ndarray, cache: FilterCache | None
) -> np.ndarray:
    """Points as unit vectors (x, y, z); NaN where a coordinate is missing."""

    def compute() -> np.ndarray:
        phi, lam = np.radians(lat), np.radians(lon)
        return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], 1)

    return cached(cache, table, ("unit points",), compute)


def _ordered_coordinates(
    lat: np.ndarray, lon: np.ndarray, order: np.ndarray, positions: np.ndarray
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(lat, lon) of some of the rows at ``positions`` in ``order``; the rows looked up only
    for those few (the points near a circle's edge)."""

    def coordinates(i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = order[positions[i]]
        return lat[rows], lon[rows]

    return coordinates
