"""Filters (index/filters.py) against a brute-force reference written here, row by row.

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec.index.filters import (
    ExcludeFilter,
    Filter,
    RadiusFilter,
    RangeFilter,
    SetFilter,
    allowed_mask,
    allowed_rows,
)

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
    doors: list  # int or None (set filters compare its values as text)
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

    def holes(values: list, keep_one: bool = False) -> list:
        holed = [None if rng.random() < missing else v for v in values]
        if keep_one and all(v is None for v in holed):
            # a column without any value fails set filters (see the xfail test below)
            holed[0] = values[0]
        return holed

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
        make=holes([MAKES[rng.integers(0, len(MAKES))] for _ in range(n)], keep_one=True),
        doors=holes([int(rng.integers(2, 6)) for _ in range(n)], keep_one=True),
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
    rounding: either answer is right there."""
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
        return (str(value) in f.values) != f.negate
    if isinstance(f, RadiusFilter):
        if rows.lat[i] is None or rows.lon[i] is None:
            return False
        distance = reference_distance_km(f.lat, f.lon, rows.lat[i], rows.lon[i])
        # the filter allows for rounding by comparing cosines with a tolerance of 1e-12: under
        # 5 cm beyond a radius of 1 km or more, but up to 9 m around a radius of 0
        angle = min(f.radius_km / RADIUS_KM, math.pi)
        edge = RADIUS_KM * math.acos(max(-1.0, math.cos(angle) - 1e-12))
        if f.radius_km - 1e-6 < distance <= max(edge, f.radius_km) + 1e-6:
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


@pytest.mark.xfail(
    strict=True,
    raises=IndexError,
    reason="known bug: a set filter on a column with no value at all raises IndexError "
    "(filters._isin_str indexes an empty array) instead of keeping no row",
)
@pytest.mark.parametrize("negate", [False, True])
def test_a_set_filter_on_a_column_without_values_keeps_no_row(negate):
    table = pd.DataFrame({"listing_id": ["a", "b"], "body": pd.Series([None, None], dtype=object)})
    mask = allowed_mask([SetFilter("body", frozenset(["van"]), negate=negate)], table)
    assert mask.tolist() == [False, False]  # a missing value fails either way


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known inconsistency: near a radius of 0 the cosine tolerance of the radius filter "
    "admits points a few metres away on the index path (allowed_rows) but not on the mask path, "
    "whose bounding box is exact",
)
def test_mask_and_index_agree_on_a_point_metres_from_a_zero_radius_centre():
    rng = np.random.default_rng(0)
    lat = np.concatenate([[51.05 + 5e-5], rng.uniform(40, 60, LARGE)])  # the first 5.6 m north
    lon = np.concatenate([[13.74], rng.uniform(0, 20, LARGE)])
    table = pd.DataFrame({"lat": lat, "lon": lon})
    circle = [RadiusFilter(51.05, 13.74, 0.0)]
    rows = allowed_rows(circle, table, limit=len(table))
    assert rows is not None
    assert sorted(rows.tolist()) == np.flatnonzero(allowed_mask(circle, table)).tolist()
