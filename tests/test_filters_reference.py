"""Filters (index/filters/) against a brute-force reference written here, row by row.

Random catalogue tables, small and above the size that gets sorted column indexes, with
missing values in every column; random range, set, radius and exclude filters and their
combinations. Both ``allowed_mask`` and ``allowed_rows`` (the index path) must keep exactly
the rows the reference keeps. The reference shares nothing with the code under test: it reads
the Python values each table was built from, one row at a time, with its own haversine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from embedrec.index.filters import (
    ExcludeFilter,
    Filter,
    FilterCache,
    RadiusFilter,
    RangeFilter,
    SetFilter,
    allowed_mask,
    allowed_rows,
    allowed_selection,
)
from embedrec.index.grid import Grid, OrderedRows, circle_box, run_positions

LARGE = 10_000  # tables from this size answer selective filters from sorted indexes
MAKES = ["VW", "BMW", "Audi", "Opel", "Škoda"]
# near the poles and the antimeridian the radius filter takes other paths
LATITUDES = [51.05, -33.9, 0.0, -90.0, -89.99, 89.99, 90.0]
LONGITUDES = [13.74, 0.0, -180.0, -179.95, 179.95, 180.0]
GLOBE = (LATITUDES, LONGITUDES)
RADIUS_KM = 6371.0088  # mean Earth radius
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ tables
@dataclass
class Rows:
    """A table's values as plain Python lists (None: missing) and the table built from them."""

    ids: list
    price: list  # float or None
    year: list  # int or None (a nullable integer column)
    make: list  # str or None
    doors: list  # int or None (set filters compare its values as numbers: 4.0 is 4)
    lat: list  # float or None
    lon: list
    geo_names: tuple[str, str]
    hotspot: tuple[float, float]  # where most points are
    table: pd.DataFrame


@st.composite
def tables(draw) -> Rows:
    n = draw(st.sampled_from([LARGE, 60, LARGE + 321, 7, 1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    missing = draw(st.sampled_from([0.1, 0.0, 0.5, 1.0]))

    def holes(values: list) -> list:
        return [None if rng.random() < missing else v for v in values]

    hot_lat = draw(st.sampled_from(LATITUDES))
    hot_lon = draw(st.sampled_from(LONGITUDES))
    spread = draw(st.sampled_from([0.01, 0.3, 3.0]))
    lat, lon = [], []
    for _ in range(n):
        if rng.random() < 0.7:  # most near one place, so that radii find rows
            a = hot_lat + rng.normal(0, spread)
            b = hot_lon + rng.normal(0, spread)
            a = max(-90.0, min(90.0, a))
            b = (b + 180.0) % 360.0 - 180.0
        else:
            a, b = rng.uniform(-90, 90), rng.uniform(-180, 180)
        lat.append(float(a))
        lon.append(float(b))
    int_ids = draw(st.booleans())
    ids = [i * 3 for i in range(n)] if int_ids else [f"c{i} ü" for i in range(n)]
    rows = Rows(
        ids=ids,
        price=holes([float(rng.integers(0, 40)) for _ in range(n)]),
        year=holes([int(rng.integers(2000, 2010)) for _ in range(n)]),
        make=holes([MAKES[rng.integers(0, len(MAKES))] for _ in range(n)]),
        doors=holes([int(rng.integers(2, 6)) for _ in range(n)]),
        lat=holes(lat),
        lon=holes(lon),
        geo_names=draw(st.sampled_from([("lat", "lon"), ("latitude", "longitude")])),
        hotspot=(hot_lat, hot_lon),
        table=pd.DataFrame(),
    )
    lat_name, lon_name = rows.geo_names
    rows.table = pd.DataFrame(
        {
            "listing_id": rows.ids,
            "price": pd.array(rows.price, dtype="float64"),
            "year": pd.array(rows.year, dtype="Int64"),
            "make": pd.Series(rows.make, dtype=object),
            "doors": pd.array(rows.doors, dtype="Int64"),
            lat_name: pd.array(rows.lat, dtype="float64"),
            lon_name: pd.array(rows.lon, dtype="float64"),
        }
    )
    return rows


# ------------------------------------------------------------------ filters
bound = st.none() | st.integers(-2, 42).map(float) | st.sampled_from([2003.0, 2007.5])
range_filters = st.builds(
    RangeFilter,
    field=st.sampled_from(["price", "year"]),
    low=bound,
    high=bound,
    low_inclusive=st.booleans(),
    high_inclusive=st.booleans(),
)
set_filters = st.one_of(
    st.builds(
        SetFilter,
        field=st.just("make"),
        values=st.frozensets(st.sampled_from([*MAKES, "Fiat", "vw"]), min_size=1, max_size=3),
        negate=st.booleans(),
    ),
    st.builds(
        SetFilter,
        field=st.just("doors"),
        values=st.frozensets(st.sampled_from(["2", "3", "4", "5", "4.0", "7"]), min_size=1),
        negate=st.booleans(),
    ),
)


@st.composite
def radius_filters(draw, rows: Rows) -> RadiusFilter:
    # mostly around the table's dense spot, so that circles hold some rows and miss others
    lat, lon = draw(st.just(rows.hotspot) | st.tuples(*map(st.sampled_from, GLOBE)))
    lat = max(-90.0, min(90.0, lat + draw(st.floats(-0.5, 0.5))))
    lon = max(-180.0, min(180.0, lon + draw(st.floats(-0.5, 0.5))))
    radius = draw(st.sampled_from([0.0, 1.0, 25.0, 150.0, 2_000.0, 12_000.0, 25_000.0]))
    return RadiusFilter(lat, lon, radius * draw(st.floats(0.5, 1.0)))


@st.composite
def exclude_filters(draw, rows: Rows) -> ExcludeFilter:
    picked = draw(st.lists(st.integers(0, max(len(rows.ids) - 1, 0)), max_size=30))
    ids = {str(rows.ids[i]) for i in picked} | set(draw(st.lists(st.sampled_from(["x", "3"]))))
    return ExcludeFilter(frozenset(ids))


# ------------------------------------------------------------------ the reference
def reference_distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def reference_keeps(f: Filter, rows: Rows, i: int) -> bool | None:
    """Whether row ``i`` passes ``f``; None where it lies on a radius's edge, within
    rounding (a millimetre; a metre where the distance nears half the globe, where the
    haversine's arcsine loses digits): either answer is right there."""
    if isinstance(f, RangeFilter):
        value = {"price": rows.price, "year": rows.year}[f.field][i]
        if value is None:
            return False
        if f.low is not None and not (value >= f.low if f.low_inclusive else value > f.low):
            return False
        return f.high is None or (value <= f.high if f.high_inclusive else value < f.high)
    if isinstance(f, SetFilter):
        value = {"make": rows.make, "doors": rows.doors}[f.field][i]
        if value is None:
            return False
        wanted = {float(v) for v in f.values} if f.field == "doors" else f.values
        return (value in wanted if f.field == "doors" else str(value) in wanted) != f.negate
    if isinstance(f, RadiusFilter):
        if rows.lat[i] is None or rows.lon[i] is None:
            return False
        distance = reference_distance_km(f.lat, f.lon, rows.lat[i], rows.lon[i])
        rounding = 1e-3 if distance > 19_000 else 1e-6
        if abs(distance - f.radius_km) <= rounding:
            return None
        return distance <= f.radius_km
    if isinstance(f, ExcludeFilter):
        return str(rows.ids[i]) not in f.ids
    raise AssertionError(f"no reference for {f!r}")


def check(filters: list[Filter], rows: Rows, limit: int) -> None:
    n = len(rows.ids)
    expected, unsure = [], []
    for i in range(n):
        answers = [reference_keeps(f, rows, i) for f in filters]
        if False in answers:
            continue
        (unsure if None in answers else expected).append(i)
    mask = allowed_mask(filters, rows.table)
    assert mask.dtype == bool and mask.shape == (n,)
    kept = set(np.flatnonzero(mask).tolist()) - set(unsure)
    assert kept == set(expected), (filters, sorted(kept ^ set(expected))[:10])

    found = allowed_rows(filters, rows.table, limit)
    indexed = any(
        isinstance(f, RangeFilter) or (isinstance(f, SetFilter) and not f.negate) for f in filters
    )
    if n >= LARGE and limit >= n and indexed:
        assert found is not None, "a range or set filter on a large table is served by its index"
    if n < LARGE:
        assert found is None, "small tables have no indexes"
    if found is not None:
        listed = found.tolist()
        assert len(listed) == len(set(listed)), "each row once"
        assert set(listed) - set(unsure) == set(expected), (filters, limit)
        assert len(listed) <= n and all(0 <= r < n for r in listed)


limits = st.sampled_from([10**9, 400, 5, 0])


@SETTINGS
@given(rows=tables(), f=range_filters, limit=limits)
def test_range_filters_match_the_reference(rows, f, limit):
    check([f], rows, limit)


@SETTINGS
@given(rows=tables(), f=set_filters, limit=limits)
def test_set_filters_match_the_reference(rows, f, limit):
    check([f], rows, limit)


@SETTINGS
@given(data=st.data(), limit=limits)
def test_radius_filters_match_the_reference(data, limit):
    rows = data.draw(tables())
    check([data.draw(radius_filters(rows))], rows, limit)


@SETTINGS
@given(data=st.data(), limit=limits)
def test_exclude_filters_match_the_reference(data, limit):
    rows = data.draw(tables())
    check([data.draw(exclude_filters(rows))], rows, limit)


@SETTINGS
@given(data=st.data(), limit=limits)
def test_combined_filters_match_the_reference(data, limit):
    rows = data.draw(tables())
    one = st.one_of(range_filters, set_filters, radius_filters(rows), exclude_filters(rows))
    filters = data.draw(st.lists(one, min_size=2, max_size=4))
    check(filters, rows, limit)
    # asked twice, a large table answers from its cached columns and indexes: the same rows
    check(filters, rows, limit)


@SETTINGS
@given(data=st.data())
def test_combining_filters_leaves_each_filters_own_mask_as_it_was(data):
    # allowed_mask combines the masks in place: a filter's mask must be a new array each
    # time, never one a cache keeps (large tables), or the next request would read the
    # combined one. Each filter comes first once: the first mask is the one combined into.
    rows = data.draw(tables())
    assume(len(rows.ids) >= LARGE)
    one = st.one_of(range_filters, set_filters, radius_filters(rows), exclude_filters(rows))
    filters = data.draw(st.lists(one, min_size=2, max_size=4))
    cache = FilterCache()
    alone = [f.mask(rows.table, cache).copy() for f in filters]
    expected = np.logical_and.reduce(alone)
    for first in range(len(filters)):
        turned = filters[first:] + filters[:first]
        assert np.array_equal(allowed_mask(turned, rows.table, cache), expected)
        for f, mask in zip(filters, alone, strict=True):
            assert np.array_equal(f.mask(rows.table, cache), mask), f


@pytest.mark.parametrize("negate", [False, True])
def test_a_set_filter_on_a_column_without_values_keeps_no_row(negate):
    table = pd.DataFrame({"listing_id": ["a", "b"], "body": pd.Series([None, None], dtype=object)})
    mask = allowed_mask([SetFilter("body", frozenset(["van"]), negate=negate)], table)
    assert mask.tolist() == [False, False]  # a missing value fails either way


def test_mask_and_index_agree_on_a_point_metres_from_a_zero_radius_centre():
    rng = np.random.default_rng(0)
    lat = np.concatenate([[51.05 + 5e-5], rng.uniform(40, 60, LARGE)])  # the first 5.6 m north
    lon = np.concatenate([[13.74], rng.uniform(0, 20, LARGE)])
    table = pd.DataFrame({"lat": lat, "lon": lon})
    circle = [RadiusFilter(51.05, 13.74, 0.0)]
    rows = allowed_rows(circle, table, limit=len(table))
    assert rows is not None
    assert sorted(rows.tolist()) == np.flatnonzero(allowed_mask(circle, table)).tolist()


def fixed_rows(lat: list[float], lon: list[float]) -> Rows:
    """A table of the given points (padded to a size with indexes) and plain other columns."""
    rng = np.random.default_rng(7)
    pad = max(0, LARGE - len(lat))
    lat = [*lat, *rng.uniform(-90, 90, pad).tolist()]
    lon = [*lon, *rng.uniform(-180, 180, pad).tolist()]
    n = len(lat)
    make = [MAKES[i % len(MAKES)] for i in range(n)]
    price = [float(i % 40) for i in range(n)]
    table = pd.DataFrame({"listing_id": range(n), "price": price, "make": make})
    table["year"] = pd.array([None] * n, dtype="Int64")
    table["doors"] = pd.array([None] * n, dtype="Int64")  # every value missing
    table["lat"], table["lon"] = lat, lon
    return Rows(list(range(n)), price, [None] * n, make, [None] * n, lat, lon,
                ("lat", "lon"), (0.0, 0.0), table)  # fmt: skip


def test_radius_filters_on_cell_borders_poles_and_the_antimeridian():
    # points on and a hair either side of the grid's quarter-degree borders, at the poles and
    # on both sides of 180 degrees; circles centred on borders, reaching borders, of radius 0
    # and larger than the globe, alone and with other filters read in the grid's order
    border = [b + e for b in (-90.0, -45.25, 0.0, 51.0, 51.25, 89.75, 90.0)
              for e in (-1e-9, 0.0, 1e-9)]  # fmt: skip
    border = [max(-90.0, min(90.0, b)) for b in border]
    lons = [-180.0, -179.75, -1e-9, 0.0, 0.25, 13.75, 179.75, 180.0]
    lat = [a for a in border for _ in lons]
    lon = [b for _ in border for b in lons]
    rows = fixed_rows(lat, lon)
    circles = [
        RadiusFilter(51.25, 13.75, 0.0),  # a point exactly at the centre is kept
        RadiusFilter(51.25, 13.75, 27.8),  # about one cell: its edge near the next border
        RadiusFilter(51.0, 0.0, 111.19508),  # about one degree
        RadiusFilter(0.0, 180.0, 30.0),
        RadiusFilter(0.0, -180.0, 300.0),
        RadiusFilter(-45.25, -179.75, 1_000.0),
        RadiusFilter(89.75, 0.0, 28.0),  # just short of the pole
        RadiusFilter(90.0, 0.0, 50.0),
        RadiusFilter(-90.0, 13.75, 5_000.0),
        RadiusFilter(10.0, 10.0, 25_000.0),
    ]
    others = [SetFilter("make", frozenset(["VW", "Audi"])), RangeFilter("price", high=20.0),
              SetFilter("doors", frozenset(["4"]), negate=True)]  # fmt: skip
    assert isinstance(allowed_selection([circles[2], *others], rows.table, 10**9), OrderedRows)
    for circle in circles:
        for extra in ([], others[:1], others[:2], others):
            check([circle, *extra], rows, limit=10**9)
            check([circle, *extra], rows, limit=len(rows.ids) // 8)


def test_radius_filter_index_path_is_exact_metres_from_the_centre():
    # the cosine alone cannot tell 1 m from 0 m: those points are decided by the distance
    lat = [51.05, 51.05 + 9e-6, 51.05, 51.05 - 2e-5, -33.9, -33.9 + 1e-7]
    lon = [13.74, 13.74, 13.74 + 1.5e-5, 13.74, 151.2, 151.2]
    rows = fixed_rows(lat, lon)
    for radius in (0.0, 1e-3, 2e-3, 5e-3):
        for centre in ((51.05, 13.74), (-33.9, 151.2)):
            check([RadiusFilter(*centre, radius)], rows, limit=10**9)


def test_cells_inside_a_circle_and_a_set_filters_rows_in_grid_order():
    # dense points around a city and on the grid's cell corners: cells the circle holds
    # whole pass without a distance, the others row by row; a set filter's rows, kept in the
    # grid's order, are cut to the circle's cells
    rng = np.random.default_rng(11)
    corners = [(a, b) for a in np.arange(50.0, 52.1, 0.25) for b in np.arange(12.0, 15.6, 0.25)]
    lat = [a for a, _ in corners] + (51.05 + rng.normal(0, 0.6, 3 * LARGE)).tolist()
    lon = [b for _, b in corners] + (13.74 + rng.normal(0, 0.9, 3 * LARGE)).tolist()
    rows = fixed_rows(lat, lon)
    circle = RadiusFilter(51.05, 13.74, 100.0)
    latitudes, longitudes = np.array(rows.lat), np.array(rows.lon)
    phi, lam = np.radians(latitudes), np.radians(longitudes)
    points = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], 1)
    grid = Grid.build(latitudes, longitudes, points)
    first, last, whole = grid.runs(circle_box(51.05, 13.74, 100.0), circle._covers)
    assert whole.any() and not whole.all()
    inside = grid.order[run_positions(first[whole], last[whole])]
    assert len(inside) > 1000
    distances = [reference_distance_km(51.05, 13.74, lat[i], lon[i]) for i in inside.tolist()]
    assert max(distances) < 100.0
    makes = SetFilter("make", frozenset(["VW"])), SetFilter("make", frozenset(["BMW", "Audi"]))
    assert isinstance(allowed_selection([circle, makes[0]], rows.table, 10**9), OrderedRows)
    for extra in ([], [makes[0]], [makes[1], RangeFilter("price", low=10.0)],
                  [SetFilter("make", frozenset(["VW"]), negate=True)]):  # fmt: skip
        check([circle, *extra], rows, limit=10**9)
        check([*extra, circle], rows, limit=len(rows.ids) // 8)


@pytest.mark.parametrize(
    "values",
    [
        np.arange(LARGE) % 100 - 50,  # int8
        np.arange(LARGE) % 30 + 1990,  # years: int16
        np.arange(LARGE) * 997 - 10**6,  # int32
        (np.arange(LARGE) % 7).astype(float),  # whole numbers stored as floats
    ],
)
def test_range_filters_on_whole_numbers_compare_them_as_narrow_integers(values):
    """A large column of whole numbers without a missing value is compared as the narrowest
    integers holding it: every bound (fractional, strict, infinite, beyond the dtype) keeps
    exactly the rows that the comparison in floats keeps."""
    from embedrec.index.filters import FilterCache

    table = pd.DataFrame({"listing_id": np.arange(LARGE), "x": values})
    cache = FilterCache()
    x = values.astype(float)
    picks = [x.min(), x.max(), np.median(x), x.min() - 1e9, x.max() + 1e9]
    bounds = [*picks, *(p + 0.5 for p in picks), *(p - 0.25 for p in picks), math.inf, -math.inf]
    bounds.append(math.nan)  # a filter built by hand: compares False, as in floats
    for low in [None, *bounds[::2]]:
        for high in [None, *bounds[1::2]]:
            for low_inclusive, high_inclusive in [(True, True), (False, False), (True, False)]:
                f = RangeFilter("x", low, high, low_inclusive, high_inclusive)
                expected = np.ones(LARGE, dtype=bool)
                if low is not None:
                    expected &= x >= low if low_inclusive else x > low
                if high is not None:
                    expected &= x <= high if high_inclusive else x < high
                np.testing.assert_array_equal(f.mask(table, cache), expected, err_msg=repr(f))
                rows = np.arange(0, LARGE, 7)
                np.testing.assert_array_equal(f.holds(table, rows, cache), expected[rows])
    assert f._compact(table, cache).dtype.kind == "i"


def test_range_filters_on_one_field_merge_into_one_that_keeps_the_same_rows():
    from embedrec.index.filters import merged_ranges

    rng = np.random.default_rng(3)
    table = pd.DataFrame({"x": rng.integers(0, 10, 200).astype(float), "make": ["VW"] * 200})
    table.loc[::7, "x"] = np.nan
    bounds = [None, 2.0, 5.0, 5.5, 9.0, math.nan]
    ranges = [
        RangeFilter("x", low, high, low_inclusive, high_inclusive)
        for low in bounds
        for high in bounds
        for low_inclusive in (True, False)
        for high_inclusive in (True, False)
    ]
    other = SetFilter("make", frozenset({"VW"}))
    for i in rng.choice(len(ranges), (300, 2)):
        pair = [ranges[i[0]], other, ranges[i[1]]]
        merged = merged_ranges(pair)
        bounds_of_pair = [b for f in pair[::2] for b in (f.low, f.high) if b is not None]
        assert len(merged) == (3 if any(map(math.isnan, bounds_of_pair)) else 2)
        assert other in merged
        np.testing.assert_array_equal(
            allowed_mask(merged, table), allowed_mask(pair, table), err_msg=repr(pair)
        )


def test_one_filter_reused_on_other_tables_answers_for_each_table():
    # a filter remembers its candidates for the table it was last asked about, so that one
    # request asks its index once; asked about another table, it must not answer from memory
    from embedrec.index.filters import FilterCache

    rng = np.random.default_rng(5)
    filters = [
        RangeFilter("price", 1_000.0, 5_000.0),
        SetFilter("make", frozenset({"VW"})),
        RadiusFilter(51.05, 13.74, 150.0),
    ]
    tables = [
        pd.DataFrame(
            {
                "price": rng.uniform(0, 10_000 * (i + 1), LARGE),
                "make": rng.choice(MAKES[: 2 + i], LARGE),
                "lat": rng.uniform(48 + i, 54, LARGE),
                "lon": rng.uniform(6, 15 - i, LARGE),
            }
        )
        for i in range(2)
    ]
    for f in filters:
        for table in tables + tables:  # each table again after the other
            for cache in (FilterCache(), FilterCache()):
                _, fetch, exact, order = f.candidates(table, cache)
                rows = fetch() if order is None else order[fetch()]
                assert exact
                np.testing.assert_array_equal(
                    np.sort(rows), np.flatnonzero(f.mask(table)), err_msg=repr(f)
                )
