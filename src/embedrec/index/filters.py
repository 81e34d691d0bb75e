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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedrec.geo import EARTH_RADIUS_KM, LAT_LON_COLUMNS

ID_COLUMN = "listing_id"

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|<|>|=)\s*(.*?)\s*$")


class FilterError(ValueError):
    """A filter that cannot be parsed or applied; ``field`` names the filter field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"filter {field!r}: {message}")
        self.field = field


# What a column index says of a filter: how many rows may pass, a function returning them
# (each once, in no particular order: sorting 10,000 row numbers costs more than searching
# their vectors) and whether exactly those pass (False: a superset, checked row by row).
Candidates = tuple[int, Callable[[], np.ndarray], bool]


class Filter:
    """One condition on the catalogue; ``mask(table)`` says which rows satisfy it.

    Each method takes an optional :class:`FilterCache` of ``table``: without one, columns are
    converted and indexes built anew on every call.
    """

    field: str

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        raise NotImplementedError

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        """Whether the filter holds at ``rows``; costs O(len(rows)) where overridden."""
        return self.mask(table, cache)[rows]

    def candidates(
        self, table: pd.DataFrame, cache: FilterCache | None = None
    ) -> Candidates | None:
        """Rows that may pass (a superset), from a sorted index of a large table; None where
        no index narrows the filter."""
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
        return self._test(self._values(table, cache))

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        return self._test(self._values(table, cache)[rows])

    def candidates(
        self, table: pd.DataFrame, cache: FilterCache | None = None
    ) -> Candidates | None:
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
        return int(stop - start), lambda: order[start:stop], True

    def _values(self, table: pd.DataFrame, cache: FilterCache | None) -> np.ndarray:
        return _numeric(table, self.field, self.field, cache)

    def _test(self, values: np.ndarray) -> np.ndarray:
        keep = ~np.isnan(values)
        # NaN compares False, so missing values already fail; the explicit mask keeps it obvious.
        if self.low is not None:
            keep &= values >= self.low if self.low_inclusive else values > self.low
        if self.high is not None:
            keep &= values <= self.high if self.high_inclusive else values < self.high
        return keep


@dataclass(frozen=True)
class SetFilter(Filter):
    """Column value, converted to str, is (or with ``negate`` is not) one of ``values``.

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

    def candidates(
        self, table: pd.DataFrame, cache: FilterCache | None = None
    ) -> Candidates | None:
        _check_field(table, self.field)
        if self.negate or len(table) < _CACHED_ROWS:
            return None  # "not one of" keeps most rows: no index narrows it
        codes, uniques = _codes(table, self.field, cache)
        order, starts = _cached(cache, table, ("postings", self.field), lambda: _postings(codes))
        runs = [(starts[c], starts[c + 1]) for c, u in enumerate(uniques) if u in self.values]
        count = sum(int(stop - start) for start, stop in runs)
        return count, lambda: np.concatenate([order[:0], *(order[a:b] for a, b in runs)]), True


@dataclass(frozen=True)
class RadiusFilter(Filter):
    """Great-circle (haversine) distance from (lat, lon) at most ``radius_km``."""

    lat: float
    lon: float
    radius_km: float
    field: str = "within"

    def __post_init__(self) -> None:
        _check_point(self.field, self.lat, self.lon)
        if not _is_number(self.radius_km) or not math.isfinite(self.radius_km):
            raise FilterError(self.field, f"radius must be a number, got {self.radius_km!r}")
        if self.radius_km < 0:
            raise FilterError(self.field, f"radius must not be negative, got {self.radius_km}")

    def mask(self, table: pd.DataFrame, cache: FilterCache | None = None) -> np.ndarray:
        lat, lon = self._coordinates(table, cache)
        box = self._box()
        # distances only inside a box that holds the circle
        if box is None:  # only the latitude bound holds
            height = math.degrees(self.radius_km / EARTH_RADIUS_KM) + 1e-9
            near = np.abs(lat - self.lat) <= height
        else:
            (lat_low, lat_high), (lon_low, lon_high) = box
            near = (lat >= lat_low) & (lat <= lat_high) & (lon >= lon_low) & (lon <= lon_high)
        rows = np.flatnonzero(near)
        keep = np.zeros(len(lat), dtype=bool)
        keep[rows] = self._within(_unit_points(table, lat, lon, cache)[rows])
        return keep

    def holds(
        self, table: pd.DataFrame, rows: np.ndarray, cache: FilterCache | None = None
    ) -> np.ndarray:
        return self._within(_unit_points(table, *self._coordinates(table, cache), cache)[rows])

    def candidates(
        self, table: pd.DataFrame, cache: FilterCache | None = None
    ) -> Candidates | None:
        lat, lon = self._coordinates(table, cache)
        box = self._box()
        if box is None or len(table) < _CACHED_ROWS:
            return None

        def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            order, starts = _postings(_cells(lat, lon), _N_CELLS)
            return order, starts, _unit_points(table, lat, lon, cache)[order]

        # rows grouped by grid cell, cells numbered row-major: the cells a box covers in one
        # row of latitude are one contiguous run of the grouped rows (and of their points)
        order, starts, points = _cached(cache, table, ("geo cells",), grid)
        (lat_low, lat_high), (lon_low, lon_high) = box
        first, last = _cell_index(lon_low, 180.0), _cell_index(lon_high, 180.0)
        runs = [
            (starts[i * _LON_CELLS + first], starts[i * _LON_CELLS + last + 1])
            for i in range(_cell_index(lat_low, 90.0), _cell_index(lat_high, 90.0) + 1)
        ]
        count = sum(int(stop - start) for start, stop in runs)

        def rows() -> np.ndarray:
            parts = [order[a:b][self._within(points[a:b])] for a, b in runs]
            return np.concatenate([order[:0], *parts])

        return count, rows, True

    def _box(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """(lat, lon) bounds holding the circle; None where it reaches a pole or wraps."""
        angle = self.radius_km / EARTH_RADIUS_KM
        cos_lat = math.cos(math.radians(self.lat))
        if angle >= math.pi / 2 or math.sin(angle) >= cos_lat:
            return None
        height = math.degrees(angle) + 1e-9
        width = math.degrees(math.asin(math.sin(angle) / cos_lat)) + 1e-9
        if self.lon - width < -180 or self.lon + width > 180:
            return None
        return (self.lat - height, self.lat + height), (self.lon - width, self.lon + width)

    def _coordinates(
        self, table: pd.DataFrame, cache: FilterCache | None
    ) -> tuple[np.ndarray, np.ndarray]:
        for lat_name, lon_name in LAT_LON_COLUMNS:
            if lat_name in table.columns and lon_name in table.columns:
                break
        else:
            raise FilterError(
                self.field,
                "the catalogue has no coordinates (needs columns lat/lon or latitude/longitude)",
            )
        lat = _numeric(table, lat_name, self.field, cache)
        return lat, _numeric(table, lon_name, self.field, cache)

    def _within(self, points: np.ndarray) -> np.ndarray:
        """Whether unit vectors on the sphere lie within the radius: the great-circle
        distance is at most r exactly when the cosine of the angle is at least cos(r / R)."""
        phi, lam = math.radians(self.lat), math.radians(self.lon)
        centre = np.array(
            [math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)]
        )
        angle = min(self.radius_km / EARTH_RADIUS_KM, math.pi)
        return points @ centre >= math.cos(angle) - 1e-12


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
        if ID_COLUMN not in table.columns:
            raise FilterError(self.field, f"the catalogue has no {ID_COLUMN!r} column")
        return ~_isin_str(table, ID_COLUMN, self.ids, False, cache, rows)


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
        filters.append(RadiusFilter(lat, lon, _to_float("within_km", within)))
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


def allowed_mask(
    filters: Iterable[Filter], table: pd.DataFrame, cache: FilterCache | None = None
) -> np.ndarray:
    """Boolean mask over the rows of ``table``: True where every filter holds.

    With a ``cache``, the columns of a table of 10,000 rows or more are converted once and
    kept there, so such a table must not be changed in place while its cache is in use.
    """
    keep = np.ones(len(table), dtype=bool)
    for f in filters:
        keep &= np.asarray(f.mask(table, cache), dtype=bool)
    return keep


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
    filters = list(filters)
    best: tuple[Filter, Candidates] | None = None
    for f in filters:
        found = f.candidates(table, cache)
        if found is not None and found[0] <= limit and (best is None or found[0] < best[1][0]):
            best = f, found
    if best is None:
        return None
    chosen, (_, fetch, exact) = best
    rows = fetch()
    for f in filters:
        if f is not chosen or not exact:
            rows = rows[f.holds(table, rows, cache)]
    return rows


def _check_field(table: pd.DataFrame, field: str) -> None:
    """Raise FilterError for a field the table has no column for (cheap: no column taken)."""
    if field not in table.columns:
        valid = ", ".join(str(c) for c in table.columns if c != ID_COLUMN)
        raise FilterError(
            field, f"unknown field; valid fields: {valid}, within (radius), exclude (ids)"
        )


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

    def get(self, table: pd.DataFrame, key: Any, compute: Callable[[], Any]) -> Any:
        """The entry ``key`` of ``table``, computed by ``compute()`` if not kept."""
        with self._lock:
            if self._table is None:
                self._table = weakref.ref(table)
            elif self._table() is not table:
                raise ValueError("a FilterCache holds the columns of one table, not of another")
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
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise FilterError(field, f"numeric comparison on non-numeric column {name!r} ({dtype})")
        return column.to_numpy(dtype=np.float64, na_value=np.nan)

    return _cached(cache, table, ("float", name), convert)


def _codes(
    table: pd.DataFrame, name: str, cache: FilterCache | None
) -> tuple[np.ndarray, list[str]]:
    """Factorised column (-1: missing) and its values as str: str() runs once per value."""

    def factorize() -> tuple[np.ndarray, list[str]]:
        codes, uniques = pd.factorize(table[name], use_na_sentinel=True)
        return codes, [str(u) for u in uniques]

    return _cached(cache, table, ("codes", name), factorize)


def _isin_str(
    table: pd.DataFrame,
    name: str,
    values: frozenset[str],
    negate: bool,
    cache: FilterCache | None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Whether the column's value (as str) is in ``values``, at ``rows`` (None: all rows);
    with ``negate``, whether it is not. A missing value fails either way."""
    codes, uniques = _codes(table, name, cache)
    if rows is not None:
        codes = codes[rows]
    hit = np.fromiter((u in values for u in uniques), dtype=bool, count=len(uniques))
    if negate:
        hit = ~hit
    return (codes >= 0) & hit[np.maximum(codes, 0)]


# The grid of the radius filter's index: cells of a quarter degree (about 28 x 18 km in
# Germany), so a 100 km circle's box covers a few dozen cells in eight runs.
_CELL_DEGREES = 0.25
_LON_CELLS = int(360 / _CELL_DEGREES) + 1
_N_CELLS = (int(180 / _CELL_DEGREES) + 1) * _LON_CELLS


def _cell_index(degrees: float | np.ndarray, offset: float) -> Any:
    return np.floor((np.asarray(degrees) + offset) / _CELL_DEGREES).astype(np.int64)


def _cells(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Grid cell of each point, row-major by latitude; -1 where a coordinate is missing."""
    valid = ~(np.isnan(lat) | np.isnan(lon))
    cells = np.full(len(lat), -1, dtype=np.int64)
    cells[valid] = _cell_index(lat[valid], 90.0) * _LON_CELLS + _cell_index(lon[valid], 180.0)
    return cells


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
        return frozenset(str(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return frozenset([str(value)])
    raise FilterError(field, f"expected a string or a list of strings, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _to_float(field: str, value: Any) -> float:
    if _is_number(value):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise FilterError(field, f"expected a number, got {value!r}") from None
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
