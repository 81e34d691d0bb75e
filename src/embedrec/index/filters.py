"""Query-time filters over the listing catalogue, evaluated as vectorised boolean masks.

Filters come from CLI expressions (:func:`parse_filter`) or the HTTP API's JSON shape
(:func:`filters_from_mapping`); :func:`allowed_mask` turns a list of them into one boolean
mask over the rows of the catalogue table (all filters must hold). On large tables,
:func:`allowed_rows` answers a selective filter from a sorted index of its column instead, in
time that grows with the rows it keeps rather than with the catalogue. Converted columns and
indexes are kept in a :class:`FilterCache` that the table's owner holds and passes in.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from embedrec.data.errors import shown
from embedrec.geo import EARTH_RADIUS_KM, LAT_LON_COLUMNS, haversine_km
from embedrec.index.bounded import MAX_TESTS, CircleTest, PositionTests
from embedrec.index.grid import Grid, OrderedRows, circle_box, in_box, run_positions

ID_COLUMN = "listing_id"

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|<|>|=)\s*(.*?)\s*$")


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


@dataclass(frozen=True)
class RangeFilter(Filter):
    """``low <= column <= high`` (bounds optional, each inclusive or strict); missing fails."""

    field: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        return self._test(self._compact(table, cache))

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        return self._test(self._compact(table, cache)[rows])

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        compact = self._compact(table, cache)
        return self._test(
            _in_order(table, ("compact", self.field), compact, order, cache)[positions]
        )

    def ordered_range(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None
    ) -> tuple[np.ndarray, float, float]:
        """The column as float64 in the grid's ``order`` and the filter's bounds made
        inclusive (a strict bound as the next float inside it; none: infinite), for a
        compiled loop; NaN fails ``low <= value <= high`` as it fails the filter."""
        values = _in_order(table, ("float", self.field), self._values(table, cache), order, cache)
        low = -math.inf if self.low is None else float(self.low)
        high = math.inf if self.high is None else float(self.high)
        if not self.low_inclusive:
            low = float(np.nextafter(low, math.inf))
        if not self.high_inclusive:
            high = float(np.nextafter(high, -math.inf))
        return values, low, high

    def _candidates(self, table: pd.DataFrame, cache: FilterCache | None) -> Candidates | None:
        values = self._values(table, cache)
        if len(table) < _CACHED_ROWS:
            return None
        ordered, order = _cached(cache, table, ("sorted", self.field), lambda: _sorted(values))
        start, stop = 0, np.searchsorted(ordered, np.inf, side="right")  # NaN sorts last
        if self.low is not None:
            side = "left" if self.low_inclusive else "right"
            start = np.searchsorted(ordered, self.low, side=side)
        if self.high is not None:
            side = "right" if self.high_inclusive else "left"
            stop = np.searchsorted(ordered, self.high, side=side)
        stop = max(start, stop)
        return int(stop - start), lambda: order[start:stop], True, None

    def _values(self, table: pd.DataFrame, cache: FilterCache | None) -> np.ndarray:
        return _numeric(table, self.field, self.field, cache)

    def _compact(self, table: pd.DataFrame, cache: FilterCache | None) -> np.ndarray:
        """The column for comparisons: whole numbers without a missing value (years, prices)
        as the narrowest integers that hold them, a quarter to an eighth of the bytes to
        read over a large table; else as float64."""
        values = self._values(table, cache)
        if cache is None or len(table) < _CACHED_ROWS:  # converting costs more than it saves
            return values
        return _cached(cache, table, ("compact", self.field), lambda: _narrowest(values))

    def _test(self, values: np.ndarray) -> np.ndarray:
        if values.dtype.kind == "i":
            return self._test_whole(values)
        # NaN (missing) compares False with any bound, so a bound alone makes it fail
        keep = None
        if self.low is not None:
            keep = values >= self.low if self.low_inclusive else values > self.low
        if self.high is not None:
            high = values <= self.high if self.high_inclusive else values < self.high
            if keep is None:
                keep = high
            else:
                keep &= high
        return ~np.isnan(values) if keep is None else keep

    def _test_whole(self, values: np.ndarray) -> np.ndarray:
        """``_test`` on whole numbers: the bounds as the whole numbers they admit, compared in
        the values' own dtype."""
        info = np.iinfo(values.dtype)
        low, high = info.min, info.max
        if any(b is not None and math.isnan(b) for b in (self.low, self.high)):
            return np.zeros(len(values), dtype=bool)  # as a comparison with NaN
        if self.low is not None:
            if self.low == math.inf:
                return np.zeros(len(values), dtype=bool)
            if self.low > -math.inf:
                low = max(
                    low, math.ceil(self.low) if self.low_inclusive else math.floor(self.low) + 1
                )
        if self.high is not None:
            if self.high == -math.inf:
                return np.zeros(len(values), dtype=bool)
            if self.high < math.inf:
                high = min(
                    high, math.floor(self.high) if self.high_inclusive else math.ceil(self.high) - 1
                )
        if low > high:
            return np.zeros(len(values), dtype=bool)
        keep = values >= low if low > info.min else np.ones(len(values), dtype=bool)
        if high < info.max:
            keep &= values <= high
        return keep


def _narrowest(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) as the narrowest integer dtype that holds each exactly, when they
    are whole numbers without a missing one; else as they are."""
    if len(values) == 0 or not np.isfinite(values).all():
        return values
    low, high = values.min(), values.max()
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            whole = values.astype(dtype)
            return whole if np.array_equal(whole, values) else values
    return values


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
        _check_field(table, self.field)
        return _isin_str(table, self.field, self.values, self.negate, cache)

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        _check_field(table, self.field)
        return _isin_str(table, self.field, self.values, self.negate, cache, rows)

    def holds_ordered(
        self,
        table: pd.DataFrame,
        order: np.ndarray,
        positions: np.ndarray,
        cache: FilterCache | None = None,
    ) -> np.ndarray:
        _check_field(table, self.field)
        codes = _in_order(table, ("codes", self.field), _codes(table, self.field, cache).codes,
                          order, cache)[positions]  # fmt: skip
        return _isin_str(table, self.field, self.values, self.negate, cache, codes=codes)

    def ordered_answers(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The column's codes as int32 in the grid's ``order`` (-1: missing) and whether the
        filter holds for each code, for a compiled loop."""
        _check_field(table, self.field)
        column = _codes(table, self.field, cache)
        codes = _of_order(
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
        _check_field(table, self.field)
        if self.negate or len(table) < _CACHED_ROWS:
            return None  # "not one of" keeps most rows: no index narrows it
        count, fetch = _rows_of_values(table, self.field, self.values, cache)
        return count, fetch, True, None

    def grid_positions(
        self, table: pd.DataFrame, order: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray | None:
        if self.negate or len(table) < _CACHED_ROWS:
            return None
        column = _codes(table, self.field, cache)
        codes = _in_order(table, ("codes", self.field), column.codes, order, cache)
        # per value, its rows' positions in the grid's order, ascending (a stable sort)
        by_value, starts = _of_order(
            cache,
            table,
            ("grid postings", self.field),
            order,
            lambda: _postings(codes, column.n_values),
        )
        wanted = column.of(self.values).astype(np.int64).tolist()
        found = np.concatenate(
            [by_value[:0], *(by_value[starts[c] : starts[c + 1]] for c in wanted)]
        )
        return np.sort(found) if len(wanted) > 1 else found


@dataclass(frozen=True)
class RadiusFilter(Filter):
    """Great-circle (haversine) distance from (lat, lon) at most ``radius_km``."""

    lat: float
    lon: float
    radius_km: float
    field: str = "within"
    check_cost: ClassVar[int] = 4  # three coordinates gathered per row, and a product

    def __post_init__(self) -> None:
        _check_point(self.field, self.lat, self.lon)
        if not _is_number(self.radius_km) or not math.isfinite(self.radius_km):
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
        if len(table) < _CACHED_ROWS:
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
        if cache is None or len(table) < _CACHED_ROWS:
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
        lat = _numeric(table, names[0], self.field, cache)
        return lat, _numeric(table, names[1], self.field, cache)


def _lat_lon_columns(table: pd.DataFrame) -> tuple[str, str] | None:
    """The names of the table's latitude and longitude columns; None: it has none."""
    for lat_name, lon_name in LAT_LON_COLUMNS:
        if lat_name in table.columns and lon_name in table.columns:
            return lat_name, lon_name
    return None


def table_grid(
    table: pd.DataFrame, cache: FilterCache, within: np.ndarray | None = None
) -> Grid | None:
    """The grid of ``table``'s coordinates kept in ``cache`` (as :meth:`RadiusFilter.grid`,
    built again if it was built without ``within``); None for a table without coordinates."""
    names = _lat_lon_columns(table)
    if names is None:
        return None
    try:
        lat, lon = (_numeric(table, name, name, cache) for name in names)
    except FilterError:  # not numbers: a radius filter says so when asked
        return None
    grid = _grid(table, lat, lon, cache, within)
    if within is not None and not grid.clustered:
        grid = _grid(table, lat, lon, cache, within, rebuild=True)
    return grid


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
        return ~_isin_str(table, ID_COLUMN, self.ids, False, cache, rows, strict=False)

    def rows(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        """The rows this filter drops, found from the ids it names: a few ids cost a few
        look-ups, not a pass over the table."""
        self._check(table)
        return _rows_of_values(table, ID_COLUMN, self.ids, cache, strict=False)[1]()

    def _check(self, table: pd.DataFrame) -> None:
        if ID_COLUMN not in table.columns:
            raise FilterError(self.field, f"the catalogue has no {ID_COLUMN!r} column")


def parse_filter(expression: str) -> Filter:
    """Parse a CLI filter such as ``price<=25000``, ``make=Nissan,Toyota``, ``body!=van``,
    ``within=51.05,13.74,100km`` or ``exclude=id1,id2``."""
    match = _EXPRESSION.match(expression)
    if match is None:
        raise FilterError(
            expression.strip() or "?",
            "expected FIELD OP VALUE with OP one of <=, >=, <, >, =, != (e.g. price<=25000)",
        )
    field, op, raw = match.groups()
    if not raw:
        raise FilterError(field, f"missing value in {expression!r}")
    if field == "within":
        if op != "=":
            raise FilterError(field, "use within=LAT,LON,RADIUS (e.g. within=51.05,13.74,100km)")
        return _parse_within(raw)
    if field == "exclude":
        if op != "=":
            raise FilterError(field, "use exclude=ID1,ID2")
        return ExcludeFilter(_split_values(field, raw))
    if op in ("=", "!="):
        return SetFilter(field, _split_values(field, raw), negate=op == "!=")
    value = _to_float(field, raw)
    if op in ("<=", "<"):
        return RangeFilter(field, high=value, high_inclusive=op == "<=")
    return RangeFilter(field, low=value, low_inclusive=op == ">=")


def filters_from_mapping(d: Mapping[str, Any]) -> list[Filter]:
    """Filters from the HTTP API shape.

    ``<column>_min`` / ``<column>_max`` are inclusive numeric bounds; ``near`` ([lat, lon] or
    "lat,lon") with ``within_km`` is a radius; ``exclude`` is a list of listing ids; any other key
    is a categorical equality (str) or set (list) on that column. Keys whose value is None are
    ignored, so optional form fields can be sent empty.
    """
    items = {key: value for key, value in d.items() if value is not None}
    filters: list[Filter] = []
    bounds: dict[str, dict[str, float]] = {}
    near = items.pop("near", None)
    within = items.pop("within_km", None)
    if (near is None) != (within is None):
        field = "near" if near is None else "within_km"
        raise FilterError(field, "'near' and 'within_km' must be given together")
    if near is not None:
        lat, lon = _parse_point("near", near)
        filters.append(RadiusFilter(lat, lon, _to_float("within_km", within), field="within_km"))
    if "exclude" in items:
        filters.append(ExcludeFilter(_as_strings("exclude", items.pop("exclude"))))
    for key, value in items.items():
        base, _, side = key.rpartition("_")
        if base and side in ("min", "max"):
            bounds.setdefault(base, {})[side] = _to_float(key, value)
        else:
            filters.append(SetFilter(key, _as_strings(key, value)))
    for column, sides in bounds.items():
        low, high = sides.get("min"), sides.get("max")
        if low is not None and high is not None and low > high:
            raise FilterError(column, f"{column}_min ({low:g}) is above {column}_max ({high:g})")
        filters.append(RangeFilter(column, low=low, high=high))
    return filters


def merged_ranges(filters: Iterable[Filter]) -> list[Filter]:
    """The filters with the range filters on one field merged into one (``price>=10000`` and
    ``price<=30000``: one pass over the column, not two), in the place of the first."""
    out: list[Filter] = []
    merged: dict[str, int] = {}  # field -> its range filter's place in ``out``
    for f in filters:
        if not isinstance(f, RangeFilter) or any(
            b is not None and math.isnan(b) for b in (f.low, f.high)
        ):  # a NaN bound (a filter built by hand) keeps no row: left as it is
            out.append(f)
        elif f.field not in merged:
            merged[f.field] = len(out)
            out.append(f)
        else:
            out[merged[f.field]] = _intersection(out[merged[f.field]], f)
    return out


def _intersection(a: RangeFilter, b: RangeFilter) -> RangeFilter:
    """The range filter that holds where both hold."""
    low, low_inclusive = a.low, a.low_inclusive
    if b.low is not None and (
        low is None or (b.low, not b.low_inclusive) > (low, not low_inclusive)
    ):
        low, low_inclusive = b.low, b.low_inclusive
    high, high_inclusive = a.high, a.high_inclusive
    if b.high is not None and (high is None or (b.high, b.high_inclusive) < (high, high_inclusive)):
        high, high_inclusive = b.high, b.high_inclusive
    return RangeFilter(a.field, low, high, low_inclusive, high_inclusive)


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


def _check_field(table: pd.DataFrame, field: str) -> None:
    """Raise FilterError for a field the table has no column for (cheap: no column taken)."""
    if field not in table.columns:
        valid = ", ".join(str(c) for c in table.columns)
        raise FilterError(
            field, f"unknown field; valid fields: {valid}, within (radius), exclude (ids)"
        )


# A radius filter decides by the cosine of the angle to its centre where that is at least
# this far from the cosine of the radius (float64 rounding is ~1e-16), else by the distance.
_COSINE_BAND = 1e-9
# A cell counts as inside a circle when its farthest corner is this much inside the edge: far
# more than the rounding of a point's cell or of the distances.
_COVER_MARGIN_KM = 1e-3
# A grid keeps the cells of this many circles (at most MAX_CELLS each)
_CIRCLES_KEPT = 64
# Up to this many candidate rows are checked one by one, without the grid's help.
_FEW_CANDIDATES = 2048
GRID = ("geo cells",)  # the FilterCache key of a table's grid
# A set filter naming at most this many values compares each row with each value.
_FEW_VALUES = 4

# Columns of tables this large are converted once into a FilterCache (float arrays, factorised
# codes, sorted indexes); smaller ones cost less to convert than to look up.
_CACHED_ROWS = 10_000


class FilterCache:
    """Columns of one table converted for filtering, and the indexes built on them.

    A catalogue answers many filtered queries over the same, unchanged table: the table's
    owner keeps one cache with it and passes it to :func:`allowed_mask` and
    :func:`allowed_rows`. The table must not change in place while the cache is in use. Safe
    to share between threads: each entry is computed once, by the first thread that needs it,
    while other entries stay readable; at most ``max_entries`` are kept (least recently used
    go first; one per column and kind, so a catalogue's usual filters all stay).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._computing: dict[Any, threading.Lock] = {}
        self._table: weakref.ref[pd.DataFrame] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, table: pd.DataFrame, key: Any, value: Any) -> None:
        """Keep ``value`` as the entry ``key`` of ``table``, replacing any."""
        with self._lock:
            self._check_table(table)
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, table: pd.DataFrame, key: Any, compute: Callable[[], Any]) -> Any:
        """The entry ``key`` of ``table``, computed by ``compute()`` if not kept."""
        with self._lock:
            self._check_table(table)
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                if key in self._entries:  # computed by the thread this one waited for
                    return self._entries[key]
            value = compute()
            with self._lock:
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                self._computing.pop(key, None)
        return value

    def _check_table(self, table: pd.DataFrame) -> None:
        if self._table is None:
            self._table = weakref.ref(table)
        elif self._table() is not table:
            raise ValueError("a FilterCache holds the columns of one table, not of another")


def _cached(cache: FilterCache | None, table: pd.DataFrame, key: Any, compute: Any) -> Any:
    if cache is None or len(table) < _CACHED_ROWS:
        return compute()
    return cache.get(table, key, compute)


def _numeric(table: pd.DataFrame, name: str, field: str, cache: FilterCache | None) -> np.ndarray:
    """The column as float64 (NaN: missing), checked and converted once per cache: taking a
    column out of a frame costs more than a selective filter's whole search."""

    def convert() -> np.ndarray:
        _check_field(table, name)
        column = table[name]
        dtype = column.dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            raise FilterError(name, f"column {name!r} holds dates and times: not filterable")
        if not _is_numeric(dtype):
            raise FilterError(field, f"numeric comparison on non-numeric column {name!r} ({dtype})")
        return column.to_numpy(dtype=np.float64, na_value=np.nan)

    return _cached(cache, table, ("float", name), convert)


def _is_numeric(dtype: Any) -> bool:
    """Numbers, not booleans (which pandas counts as numeric)."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _codes(table: pd.DataFrame, name: str, cache: FilterCache | None) -> _Codes:
    """The column factorised (-1: missing) with a lookup from each value to its codes: as
    str, or as a Python number for a numeric column (so that 2018.0 finds 2018); converted
    once per distinct value, and a filter looks up only the values it names."""

    def factorize() -> _Codes:
        if pd.api.types.is_datetime64_any_dtype(table[name].dtype):
            # as text a value is '2026-09-01 10:00:00+00:00': a date given would match nothing
            raise FilterError(name, f"column {name!r} holds dates and times: not filterable")
        numeric = _is_numeric(table[name].dtype)
        codes, uniques = pd.factorize(table[name], use_na_sentinel=True)
        lookup: dict[Any, list[int]] = {}
        # distinct values may print alike (1, "1"); numbers as int or float, which compare
        # and hash alike where equal
        for code, value in enumerate(uniques.tolist() if numeric else uniques):
            key = value if numeric else str(value)
            lookup.setdefault(key, []).append(code)
            if not numeric and "|" in key:
                # a multi-valued value (``wood|oak``) is found by each of its values too
                for part in {p.strip() for p in key.split("|")} - {"", key}:
                    lookup.setdefault(part, []).append(code)
        # the narrowest dtype: a comparison over a million rows reads 1 MB, not 8
        small = next(
            t for t in (np.int8, np.int16, np.int32, np.int64) if len(uniques) < np.iinfo(t).max
        )
        return _Codes(codes.astype(small), lookup, len(uniques), name if numeric else None)

    return _cached(cache, table, ("codes", name), factorize)


@dataclass(frozen=True)
class _Codes:
    codes: np.ndarray
    lookup: dict[Any, list[int]]
    n_values: int
    numeric_field: str | None = None  # the column's name where its values are numbers

    def of(self, values: Iterable[str], strict: bool = True) -> np.ndarray:
        """The codes of ``values`` (those the column holds), ascending. On a numeric column a
        value that is not a number could never match: with ``strict`` a FilterError (a set
        filter's value), else it matches nothing (an id to exclude)."""
        field = self.numeric_field
        keys = values if field is None else [_number_key(field, v, strict) for v in values]
        # as a set: two values may name one number (4, 4.0)
        found = sorted({c for key in keys for c in self.lookup.get(key, ())})
        return np.array(found, dtype=self.codes.dtype)


def _number_key(field: str, value: str, strict: bool) -> int | float | None:
    """``value`` as the number a numeric column's lookup holds: an int where it is one (exact
    beyond 2**53), else a float; None where it is no number and not ``strict``."""
    try:
        return int(value)
    except ValueError:
        try:
            return _to_float(field, value)
        except FilterError:
            if strict:
                raise
            return None


def _isin_str(
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
    column = _codes(table, name, cache)
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


def _rows_of_values(
    table: pd.DataFrame,
    name: str,
    values: Iterable[str],
    cache: FilterCache | None,
    strict: bool = True,
) -> tuple[int, Callable[[], np.ndarray]]:
    """How many rows hold one of ``values`` (as ``_isin_str`` compares) in column ``name``,
    and a function returning them; from the column's postings, looking up only the values
    named."""
    column = _codes(table, name, cache)
    order, starts = _cached(cache, table, ("postings", name), lambda: _postings(column.codes))
    wanted = column.of(values, strict).astype(np.int64)
    first, last = starts[wanted], starts[wanted + 1]
    count = int((last - first).sum())
    runs = list(zip(first.tolist(), last.tolist(), strict=True))
    return count, lambda: np.concatenate([order[:0], *(order[a:b] for a, b in runs)])


def _ordered_coordinates(
    lat: np.ndarray, lon: np.ndarray, order: np.ndarray, positions: np.ndarray
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(lat, lon) of some of the rows at ``positions`` in ``order``; the rows looked up only
    for those few (the points near a circle's edge)."""

    def coordinates(i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = order[positions[i]]
        return lat[rows], lon[rows]

    return coordinates


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
    return _cached(cache, table, GRID, build)


def _in_order(
    table: pd.DataFrame, key: Any, values: np.ndarray, order: np.ndarray, cache: FilterCache | None
) -> np.ndarray:
    """A column's ``values`` in the grid's ``order`` (cached): read at a radius filter's
    positions nearly in sequence instead of scattered over the column."""
    return _of_order(cache, table, ("grid order", key), order, lambda: values[order])


def _of_order(
    cache: FilterCache | None, table: pd.DataFrame, key: Any, order: np.ndarray, compute: Any
) -> Any:
    """A cache entry derived from a grid's ``order``: kept per grid, as a catalogue may build
    its grid again, its cells' rows ordered by clusters (see :meth:`RadiusFilter.grid`)."""
    held = _cached(cache, table, (*key, id(order)), lambda: (order, compute()))
    return held[1] if held[0] is order else compute()  # an id reused by a later grid


def _unit_points(
    table: pd.DataFrame, lat: np.ndarray, lon: np.ndarray, cache: FilterCache | None
) -> np.ndarray:
    """Points as unit vectors (x, y, z); NaN where a coordinate is missing."""

    def compute() -> np.ndarray:
        phi, lam = np.radians(lat), np.radians(lon)
        return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], 1)

    return _cached(cache, table, ("unit points",), compute)


def _sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column's values in ascending order (NaN last) and the rows they come from."""
    order = np.argsort(values, kind="stable")
    return values[order], order


def _postings(codes: np.ndarray, n_codes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by code (``order``) and where each code's group starts (codes from 0 to
    ``n_codes`` - 1, by default the largest present; -1, missing, sorts before all)."""
    order = np.argsort(codes, kind="stable")
    n_codes = codes.max(initial=-1) + 1 if n_codes is None else n_codes
    starts = np.searchsorted(codes[order], np.arange(n_codes + 1))
    return order, starts


def _split_values(field: str, raw: str) -> frozenset[str]:
    values = frozenset(v.strip() for v in raw.split(",") if v.strip())
    if not values:
        raise FilterError(field, f"no values in {raw!r}")
    return values


def _as_strings(field: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return _split_values(field, value) if field == "exclude" else frozenset([value])
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value:
            raise FilterError(field, "empty list of values")
        for v in value:
            # JSON's null, true or an object would match the text 'None', 'True', "{...}"
            if not (isinstance(v, str) or _is_number(v)):
                raise FilterError(field, f"expected strings or numbers in the list, got {v!r}")
        return frozenset(str(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return frozenset([str(value)])
    raise FilterError(field, f"expected a string or a list of strings, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


_DATE_LIKE = re.compile(r"\s*\d{4}-\d{2}")


def _to_float(field: str, value: Any) -> float:
    if _is_number(value):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer beyond any float
            raise FilterError(field, f"expected a finite number, got {shown(value)}") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise FilterError(
                field,
                f"expected a number, got {value!r} (a column of dates and times cannot be filtered)"
                if _DATE_LIKE.match(value)
                else f"expected a number, got {value!r}",
            ) from None
    else:
        raise FilterError(field, f"expected a number, got {value!r}")
    if not math.isfinite(number):
        raise FilterError(field, f"expected a finite number, got {value!r}")
    return number


def _check_point(field: str, lat: Any, lon: Any) -> None:
    if not (_is_number(lat) and _is_number(lon)) or not (math.isfinite(lat) and math.isfinite(lon)):
        raise FilterError(field, f"coordinates must be numbers, got ({lat!r}, {lon!r})")
    if not -90 <= lat <= 90:
        raise FilterError(field, f"latitude {lat} outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise FilterError(field, f"longitude {lon} outside [-180, 180]")


def _parse_point(field: str, value: Any) -> tuple[float, float]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 2:
        raise FilterError(field, f"expected [lat, lon] or 'lat,lon', got {value!r}")
    lat, lon = (_to_float(field, p) for p in parts)
    _check_point(field, lat, lon)
    return lat, lon


def _parse_within(raw: str) -> RadiusFilter:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise FilterError("within", f"expected LAT,LON,RADIUS (e.g. 1.5,2.5,100km), got {raw!r}")
    lat, lon = _parse_point("within", parts[:2])
    radius = parts[2].lower().removesuffix("km").strip()
    return RadiusFilter(lat, lon, _to_float("within", radius))
