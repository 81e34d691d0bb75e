"""Filters and the vector index: correctness against exact search on small data."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from embedrec.index.catalogue import Catalogue
from embedrec.index.filters import (
    ExcludeFilter,
    FilterCache,
    FilterError,
    RadiusFilter,
    RangeFilter,
    SetFilter,
    allowed_mask,
    allowed_rows,
    filters_from_mapping,
    parse_filter,
)
from embedrec.index.vector_index import VectorIndex
from embedrec.ranking import top_k

N, DIM = 8000, 16


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    valid = truth >= 0
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1) & valid
    return float(hits.sum() / max(valid.sum(), 1))


@pytest.fixture(scope="module")
def both() -> np.ndarray:
    return clustered(N + 60)


@pytest.fixture(scope="module")
def data(both) -> np.ndarray:
    return both[:N]


@pytest.fixture(scope="module")
def queries(both) -> np.ndarray:
    return both[N:]  # unseen draws from the same mixture


@pytest.fixture(scope="module")
def ivf(data) -> VectorIndex:
    return VectorIndex(exact_below=1000, kind="auto", filter_exact_below=200).build(data)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 10
    return pd.DataFrame(
        {
            "listing_id": [f"id{i}" for i in range(n)],
            "make": ["Nissan", "Toyota", "VW", "nissan", None, "Nissan", "BMW", "VW", "VW", "BMW"],
            "body": ["suv", "van", "suv", "sedan", "van", "suv", None, "suv", "van", "suv"],
            "price": [4000, 5000, 25000, 30000, np.nan, 12000, 26000, 8000, 5000.5, 24999],
            "year": [2010, 2018, 2019, 2020, 2021, 2017, 2018, 2015, 2022, 2016],
            "lat": [51.05, 51.34, 52.52, 48.14, 51.06, 53.55, 50.94, 51.1, 0.0, 51.05],
            "lon": [13.74, 12.37, 13.40, 11.58, 13.70, 9.99, 6.96, 13.8, 0.0, 13.74],
            "noise": rng.random(n),
        }
    )


# ----------------------------------------------------------------------------- filters


def rows_of(filters, table) -> list[int]:
    return np.flatnonzero(allowed_mask(filters, table)).tolist()


def test_parse_numeric_filters(table):
    assert rows_of([parse_filter("price<=25000")], table) == [0, 1, 2, 5, 7, 8, 9]
    assert rows_of([parse_filter("price<25000")], table) == [0, 1, 5, 7, 8, 9]
    assert rows_of([parse_filter("price>=25000")], table) == [2, 3, 6]
    assert rows_of([parse_filter("year>2019")], table) == [3, 4, 8]
    assert parse_filter(" mileage_km < 100000 ") == RangeFilter(
        "mileage_km", high=100000, high_inclusive=False
    )


def test_parse_set_filters(table):
    assert rows_of([parse_filter("make=Nissan,Toyota")], table) == [0, 1, 5]
    assert rows_of([parse_filter("make=Nissan")], table) == [0, 5]  # case-sensitive
    # on a numeric column, values compare as numbers: 2018.0 is 2018, 5000 is 5000.0
    assert rows_of([parse_filter("year=2018")], table) == [1, 6]
    assert rows_of([parse_filter("year=2018.0")], table) == [1, 6]
    assert rows_of([parse_filter("price=5000,5000.5")], table) == [1, 8]
    assert rows_of([parse_filter("year!=2018.0")], table) == [0, 2, 3, 4, 5, 7, 8, 9]
    # missing values fail both equality and inequality
    assert rows_of([parse_filter("body!=van")], table) == [0, 2, 3, 5, 7, 9]
    combined = [parse_filter("make=VW"), parse_filter("price<=10000")]
    assert rows_of(combined, table) == [7, 8]
    # a value in double quotes may hold commas, as in CSV
    assert parse_filter('make="Rolls, Royce", Toyota').values == {"Rolls, Royce", "Toyota"}
    assert parse_filter('exclude="Flat 3, Köln",L2').ids == {"Flat 3, Köln", "L2"}
    assert parse_filter('make=12" rims').values == {'12" rims'}  # a quote inside is text


@pytest.mark.parametrize("missing", [False, True])
def test_set_filters_on_a_boolean_column_take_true_and_false_in_any_case(missing):
    # as the JSON answers print it (true); with a missing value the column holds objects
    values = [True, False, None, True] if missing else [True, False, False, True]
    table = pd.DataFrame({"furnished": values})
    for text in ("furnished=true", "furnished=True", "furnished= TRUE", "furnished!=false"):
        assert rows_of([parse_filter(text)], table) == [0, 3], text
    assert rows_of([parse_filter("furnished=false")], table) == ([1] if missing else [1, 2])
    with pytest.raises(FilterError, match="expected true or false, got 'ja'"):
        rows_of([parse_filter("furnished=ja")], table)


def test_radius_and_exclude(table):
    f = parse_filter("within=51.05,13.74,100km")
    assert f == RadiusFilter(51.05, 13.74, 100.0)
    # Dresden: Leipzig lies 100.8 km away, Berlin 165 km
    assert rows_of([f], table) == [0, 4, 7, 9]
    assert rows_of([parse_filter("within=51.05,13.74,101km")], table) == [0, 1, 4, 7, 9]
    assert rows_of([parse_filter("within=51.05,13.74,10")], table) == [0, 4, 7, 9]
    assert rows_of([parse_filter("within=51.05,13.74,0km")], table) == [0, 9]
    assert rows_of([parse_filter("exclude=id0,id3")], table) == [1, 2, 4, 5, 6, 7, 8, 9]
    geo = table.rename(columns={"lat": "latitude", "lon": "longitude"})
    assert rows_of([f], geo) == [0, 4, 7, 9]


def test_filters_from_mapping(table):
    filters = filters_from_mapping(
        {
            "price_min": 5000,
            "price_max": "25000",
            "make": ["VW", "Toyota"],
            "body": "van",
            "near": [51.05, 13.74],
            "within_km": 200,
            "exclude": ["id1"],
            "year": None,
        }
    )
    assert rows_of(filters, table) == []  # row 1 matches all but the exclusion
    assert rows_of([f for f in filters if not isinstance(f, ExcludeFilter)], table) == [1]
    assert rows_of(
        filters_from_mapping({"make": "Nissan", "near": "51,13", "within_km": 500}), table
    ) == [0, 5]
    assert RangeFilter("year", low=2018, high=None) in filters_from_mapping({"year_min": 2018})
    assert filters_from_mapping({}) == []
    assert allowed_mask([], table).all()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: parse_filter("colour=red"), None),
        (lambda: parse_filter("price<=cheap"), "price"),
        (lambda: parse_filter("price"), "price"),
        (lambda: parse_filter("make="), "make"),
        (lambda: parse_filter('make="Rolls, Royce'), "make"),  # the quote never closed
        (lambda: parse_filter("within=91,13,10km"), "within"),
        (lambda: parse_filter("within=51,181,10km"), "within"),
        (lambda: parse_filter("within=51,x,10km"), "within"),
        (lambda: parse_filter("within=51,13,-5km"), "within"),
        (lambda: parse_filter("within=51,13"), "within"),
        (lambda: parse_filter("within<51,13,5"), "within"),
        (lambda: filters_from_mapping({"near": [51, 13]}), "within_km"),
        (lambda: filters_from_mapping({"within_km": 10}), "near"),
        (lambda: filters_from_mapping({"near": [95, 13], "within_km": 10}), "near"),
        (lambda: filters_from_mapping({"near": "a,b", "within_km": 10}), "near"),
        (lambda: filters_from_mapping({"near": [51, 13], "within_km": -1}), "within_km"),
        (lambda: filters_from_mapping({"price_min": "x"}), "price_min"),
        (lambda: filters_from_mapping({"price_min": 10, "price_max": 5}), "price"),
        (lambda: filters_from_mapping({"make": {"a": 1}}), "make"),
    ],
)
def test_filter_parse_errors(build, field):
    if field is None:  # parses fine; fails against the table
        build()
        return
    with pytest.raises(FilterError) as err:
        build()
    assert err.value.field == field
    assert repr(field) in str(err.value)


def test_filter_table_errors(table):
    with pytest.raises(FilterError) as err:
        allowed_mask([parse_filter("colour=red")], table)
    assert err.value.field == "colour"
    assert "valid fields: listing_id, make" in str(err.value) and "price" in str(err.value)
    with pytest.raises(FilterError) as err:
        allowed_mask([parse_filter("make>=3")], table)
    assert err.value.field == "make" and "non-numeric" in str(err.value)
    # a value that could never equal a number is the error price<=abc is, not no rows
    for expression in ("price=abc", "price!=abc", "year=2018,abc"):
        with pytest.raises(FilterError, match="expected a number, got 'abc'") as err:
            allowed_mask([parse_filter(expression)], table)
        assert err.value.field == expression.partition("=")[0].rstrip("!")
    with pytest.raises(FilterError, match="expected a number"):
        allowed_mask(filters_from_mapping({"price": ["cheap"]}), table.iloc[:0])  # as HTTP checks
    with pytest.raises(FilterError) as err:
        allowed_mask([RadiusFilter(1, 2, 3)], table.drop(columns=["lat"]))
    assert err.value.field == "within"
    with pytest.raises(FilterError):
        allowed_mask([ExcludeFilter(frozenset({"a"}))], table.drop(columns=["listing_id"]))
    assert isinstance(err.value, ValueError)


def test_set_filter_on_categorical_and_missing():
    table = pd.DataFrame({"listing_id": [1, 2, 3, 4], "make": ["a", "b", None, "a"]})
    table["make"] = table["make"].astype("category")
    assert SetFilter("make", frozenset({"a"})).mask(table).tolist() == [True, False, False, True]
    assert ExcludeFilter(frozenset({"2"})).mask(table).tolist() == [True, False, True, True]


# ----------------------------------------------------------------------------- index


def test_build_chooses_by_size(data):
    assert VectorIndex(exact_below=10_000).build(data).resolved_kind == "exact"
    index = VectorIndex(exact_below=1000).build(data)
    assert index.resolved_kind == "ivf" and 1 <= index.nprobe <= index.nlist
    assert len(index) == N and index.vectors.shape == (N, DIM)


def test_unfiltered_recall(ivf, data, queries):
    truth, truth_scores = top_k(queries, data, 10)
    rows, scores = ivf.search(queries, 10)
    assert rows.dtype == np.int64 and scores.dtype == np.float32 and rows.shape == (60, 10)
    assert recall(rows, truth) >= 0.97
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    exact_rows, _ = VectorIndex(exact_below=10**9).build(data).search(queries, 10)
    np.testing.assert_array_equal(exact_rows, truth)


def blended(data: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries of another kind than the rows: the mean of three random rows (mostly of
    different clusters, so between them), as a user's query lies between what they viewed."""
    rng = np.random.default_rng(seed)
    q = data[rng.integers(0, len(data), (n, 3))].mean(axis=1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_each_kind_of_query_gets_the_breadth_its_recall_needs(data, tmp_path):
    users = blended(data, 300, seed=1)
    index = VectorIndex(exact_below=1000).build(data, {"user": users})
    assert index.breadths["user"] > index.nprobe
    assert index.calibrated_recalls["user"] >= 0.99
    fresh = blended(data, 200, seed=2)  # not those it calibrated on
    truth, _ = top_k(fresh, data, 10)
    as_listings = recall(index.search(fresh, 10)[0], truth)
    as_users = recall(index.search(fresh, 10, kind="user")[0], truth)
    assert as_users >= 0.98 and as_users > as_listings + 0.03
    # a kind it was not given searches as the listings do; filters widen from each kind's own
    np.testing.assert_array_equal(
        index.search(fresh, 10, kind="other")[0], index.search(fresh, 10)[0]
    )
    assert index.breadth(0.25, "user") == min(index.nlist, 2 * index.breadths["user"])
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.breadths == index.breadths
    np.testing.assert_array_equal(
        loaded.search(fresh, 10, kind="user")[0], index.search(fresh, 10, kind="user")[0]
    )
    with pytest.raises(ValueError, match="queries 'user' have 3 dimensions, vectors 16"):
        VectorIndex(exact_below=1000).build(data, {"user": users[:, :3]})


def test_catalogue_calibrates_the_kinds_its_queries_come_in(data):
    table = pd.DataFrame({"listing_id": np.arange(N), "price": np.arange(N) % 100})
    asked = []

    def samples(cosine: bool, unit_vectors: np.ndarray) -> dict[str, np.ndarray]:
        asked.append(cosine)
        return {"similar": blended(unit_vectors, 300, seed=1)} if cosine else {}

    catalogue = Catalogue(
        table, data, np.arange(N), normalized=True, exact_below=1000, query_samples=samples
    )
    index = catalogue.index(True)
    assert asked == [True, False] and set(index.breadths) == {"similar"}  # one index: both kinds
    fresh = blended(data, 200, seed=2)
    truth, _ = top_k(fresh, data, 10)
    assert recall(catalogue.search(fresh, 10, True, kind="similar")[0], truth) >= 0.98
    # through a filter that the unfiltered search's best rows are checked against
    filters = [parse_filter("price>=10")]
    kept = np.flatnonzero(table["price"].to_numpy() >= 10)
    truth = kept[top_k(fresh, data[kept], 10)[0]]
    assert recall(catalogue.search(fresh, 10, True, filters, kind="similar")[0], truth) >= 0.98
    # a compacted catalogue keeps the samples, and an exact one asks for none
    assert set(catalogue.compacted().index(True).breadths) == {"similar"}
    asked.clear()
    small = Catalogue(
        table[:500], data[:500], np.arange(500), exact_below=1000, query_samples=samples
    )
    assert small.index(True).resolved_kind == "exact" and asked == []


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.3, 0.8])
def test_filtered_search_matches_exact(ivf, data, queries, fraction):
    allowed = np.random.default_rng(7).random(N) < fraction
    truth, _ = top_k(queries, data, 10, allowed=allowed)
    rows, _ = ivf.search(queries, 10, allowed=allowed)
    assert allowed[rows[rows >= 0]].all()
    assert recall(rows, truth) >= 0.99
    assert ((rows >= 0).sum(axis=1) == min(10, allowed.sum())).all()


def test_filter_at_odds_with_the_query_searches_wider_until_it_finds_the_best(ivf, data, queries):
    # the allowed rows are those least like the queries: the lists probed near a query hold
    # none of them, and the search must widen (up to every list) to the exact answer
    centre = queries[:8].mean(axis=0)
    similarity = data @ centre
    allowed = similarity < np.quantile(similarity, 0.2)
    assert allowed.sum() > ivf.filter_exact_below
    truth, _ = top_k(queries[:8], data, 10, allowed=allowed)
    rows, scores = ivf.search(queries[:8], 10, allowed=allowed)
    assert allowed[rows].all() and np.isfinite(scores).all()
    # the best 10 of the first rows found that pass would give 0.8: too few were seen
    assert recall(rows, truth) >= 0.95
    # the caller checking a filter itself gets what the usual search finds, not wider
    rows, _ = ivf.search(queries[:8], 10, post_filter=0.2)
    assert recall(rows, top_k(queries[:8], data, 10)[0]) >= 0.9


def test_a_wider_probe_scans_only_the_lists_it_adds(ivf, queries):
    from embedrec.index.vector_index import _best_of

    allowed = np.random.default_rng(8).random(N) < 0.3
    bits = np.packbits(allowed, bitorder="little")
    q = np.ascontiguousarray(queries[:6])
    near = ivf._probe(q, 40, bits, 2, N)
    further = ivf._probe_further(q, 40, bits, 2, 8, N)
    for first, more in zip(near[0], further[0], strict=True):  # no row found twice
        assert not set(first[first >= 0]) & set(more[more >= 0])
    rows, scores = _best_of(*near, *further)
    wide_rows, wide_scores = ivf._probe(q, 40, bits, 8, N)
    np.testing.assert_array_equal(rows, wide_rows)
    np.testing.assert_allclose(scores, wide_scores, rtol=1e-6)


def test_a_filter_whose_lists_hold_far_more_rows_than_it_keeps_is_searched_exactly(
    ivf, data, queries, monkeypatch
):
    from embedrec.index import vector_index

    # the fewest rows least like the queries, above the exact threshold: widening would scan
    # lists holding many times the rows the filter keeps, so its rows are searched exactly
    similarity = data @ queries[:8].mean(axis=0)
    allowed = similarity < np.quantile(similarity, 0.03)
    assert allowed.sum() > ivf.filter_exact_below
    exact, further = [], []
    search_rows, probe_further = vector_index.search_rows, ivf._probe_further
    monkeypatch.setattr(vector_index, "search_rows", lambda *a: exact.append(a) or search_rows(*a))
    monkeypatch.setattr(ivf, "_probe_further", lambda *a: further.append(a) or probe_further(*a))
    truth, _ = top_k(queries[:8], data, 10, allowed=allowed)
    rows, _ = ivf.search(queries[:8], 10, allowed=allowed)
    np.testing.assert_array_equal(rows, truth)
    assert exact and all(breadth < ivf.nlist for *_, breadth, _ in further)


def test_filter_keeping_fewer_than_k(ivf, queries):
    allowed = np.zeros(N, dtype=bool)
    allowed[[5, 77, 4000]] = True
    rows, scores = ivf.search(queries[:3], 5, allowed=allowed)
    assert set(rows[:, :3].ravel()) == {5, 77, 4000}
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    rows, _ = ivf.search(queries[:2], 5, allowed=np.zeros(N, dtype=bool))
    assert (rows == -1).all()


def test_exclusion_lists(ivf, data):
    q = data[:4]
    first, _ = ivf.search(q, 10)
    assert (first[:, 0] == np.arange(4)).all()  # each row is its own nearest neighbour
    exclude = [np.array([0]), first[1, :5], np.array([], dtype=np.int64), np.array([10**9])]
    rows, _ = ivf.search(q, 10, exclude=exclude)
    assert 0 not in rows[0] and not set(first[1, :5]) & set(rows[1])
    np.testing.assert_array_equal(rows[2], first[2])
    assert (rows >= 0).all()
    allowed = np.ones(N, dtype=bool)
    allowed[::2] = False
    rows, _ = ivf.search(q, 10, allowed=allowed, exclude=[first[i, :3] for i in range(4)])
    for i in range(4):
        assert allowed[rows[i]].all() and not set(first[i, :3]) & set(rows[i])


def test_add_and_remove_without_rebuild(data, queries):
    index = VectorIndex(exact_below=1000).build(data[:6000])
    nprobe = index.nprobe
    new_rows = index.add(data[6000:])
    np.testing.assert_array_equal(new_rows, np.arange(6000, N))
    assert len(index) == N and index.nprobe == nprobe
    rows, _ = index.search(data[6000:6050], 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(6000, 6050))

    before, _ = index.search(queries, 10)
    gone = np.unique(before[:, :3])
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0
    assert len(index) == N - len(gone)
    for allowed in (None, np.ones(N, dtype=bool), np.random.default_rng(1).random(N) < 0.02):
        after, _ = index.search(queries, 10, allowed=allowed)
        assert not np.isin(after, gone).any()
    rows, _ = index.search(data[gone], 1)
    assert not np.isin(rows, gone).any()
    live = np.ones(N, dtype=bool)
    live[gone] = False
    truth, _ = top_k(queries, data, 10, allowed=live)
    assert recall(index.search(queries, 10)[0], truth) >= 0.97
    more = index.add(clustered(5, seed=9))
    assert more.tolist() == list(range(N, N + 5))  # ids continue after removals
    with pytest.raises(IndexError):
        index.remove([N + 5])


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_other_kinds_add_remove_filter(kind, data, queries):
    index = VectorIndex(kind=kind, filter_exact_below=100).build(data[:3000])
    index.add(data[3000:4000])
    index.remove(np.arange(0, 4000, 3))
    live = np.ones(4000, dtype=bool)
    live[::3] = False
    allowed = np.random.default_rng(2).random(4000) < 0.5
    truth, _ = top_k(queries, data[:4000], 10, allowed=allowed & live)
    rows, _ = index.search(queries, 10, allowed=allowed)
    assert recall(rows, truth) >= 0.95
    assert live[rows].all() and allowed[rows].all()
    assert live[index.search(queries, 10)[0]].all()


def test_save_load_round_trip(tmp_path, data, queries):
    index = VectorIndex(exact_below=1000).build(data)
    index.remove([1, 2, 3])
    index.save(tmp_path / "ix")
    assert not [p for p in (tmp_path / "ix").iterdir() if p.name.startswith(".")]
    for mmap in (True, False):
        loaded = VectorIndex.load(tmp_path / "ix", mmap=mmap)
        assert loaded.resolved_kind == "ivf" and loaded.nprobe == index.nprobe
        assert len(loaded) == N - 3
        np.testing.assert_array_equal(loaded.vectors, index.vectors)
        for allowed in (None, np.random.default_rng(4).random(N) < 0.1):
            a = index.search(queries, 10, allowed=allowed)
            b = loaded.search(queries, 10, allowed=allowed)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_allclose(a[1], b[1])
    # a loaded (memory-mapped) index accepts writes without touching the files
    assert loaded.add(data[:1]).tolist() == [N]
    loaded = VectorIndex.load(tmp_path / "ix")
    loaded.add(data[:2])
    loaded.remove([N])
    assert len(loaded) == N - 3 + 1
    exact = VectorIndex(exact_below=10**9).build(data[:500])
    exact.save(tmp_path / "exact")
    again = VectorIndex.load(tmp_path / "exact")
    assert again.resolved_kind == "exact"
    np.testing.assert_array_equal(again.search(queries, 5)[0], exact.search(queries, 5)[0])


def test_concurrent_searches_with_writer(data, queries):
    index = VectorIndex(exact_below=1000).build(data[:6000])
    errors: list[BaseException] = []
    removed = np.arange(0, 6000, 7)

    def reader() -> None:
        try:
            for _ in range(30):
                rows, _ = index.search(queries[:8], 10)
                assert (rows >= 0).all()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for start in range(6000, N, 200):
        index.add(data[start : start + 200])
    index.remove(removed)
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == N - len(removed)
    assert not np.isin(index.search(queries, 10)[0], removed).any()


def test_bad_arguments(ivf, queries):
    with pytest.raises(ValueError):
        ivf.search(queries, 5, allowed=np.ones(3, dtype=bool))
    with pytest.raises(ValueError):
        ivf.search(queries[:, :3], 5)
    with pytest.raises(ValueError):
        ivf.search(queries[:2], 5, exclude=[np.array([1])])
    with pytest.raises(ValueError):
        VectorIndex(kind="annoy")
    with pytest.raises(ValueError):
        VectorIndex().build(np.full((3, 2), np.nan, dtype=np.float32))
    assert ivf.search(queries[:2], 0)[0].shape == (2, 0)


def test_catalogue_lookups_follow_adds_and_removes():

    table = pd.DataFrame(
        {
            "listing_id": ["a", "b", "c"],
            "price": [1.0, np.nan, 3.0],
            "listed_at": pd.to_datetime(["2026-01-01", None, "2026-01-03"], utc=True),
        }
    )
    vectors = np.eye(3, 4, dtype=np.float32)
    catalogue = Catalogue(table, vectors, np.array([0, 1, -1]))
    assert catalogue.rows_of(["c", "x", "a"]).tolist() == [2, -1, 0]
    assert catalogue.rows_of_model_rows(np.array([1, 0, 5, -1])).tolist() == [1, 0, -1, -1]
    assert catalogue.fields(np.array([1, 0])) == [
        {"listing_id": "b", "price": None, "listed_at": None},
        {"listing_id": "a", "price": 1.0, "listed_at": "2026-01-01T00:00:00+00:00"},
    ]
    # replacing "b" moves model row 1 to the new row; removing "a" unmaps model row 0
    new = pd.DataFrame(
        {"listing_id": ["b"], "price": [2.0], "listed_at": pd.to_datetime([None], utc=True)}
    )
    (row,) = catalogue.add(new, np.ones((1, 4), np.float32), np.array([1]))
    catalogue.remove(["a"])
    assert row == 3 and len(catalogue) == 2
    assert catalogue.rows_of(["a", "b"]).tolist() == [-1, 3]
    assert catalogue.rows_of_model_rows(np.array([0, 1])).tolist() == [-1, 3]
    assert catalogue.fields(np.array([3]))[0]["price"] == 2.0
    # only the columns asked for, from the base table and from the added rows alike
    assert catalogue.fields(np.array([2, 3]), columns={"price"}) == [{"price": 3.0}, {"price": 2.0}]


def test_mapped_unit_vectors_are_searched_in_place_until_a_write(tmp_path):
    """Workers map one file of unit vectors: neither the catalogue's unit vectors nor the
    index's rows may be copies of it (128 MB each per worker at 1M listings), and a write
    copies them instead of failing on the read-only map."""

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60_000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(tmp_path / "vectors.npy", vectors)
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    table = pd.DataFrame({"listing_id": [f"L{i}" for i in range(len(vectors))]})
    catalogue = Catalogue(table, mapped, np.arange(len(table)), normalized=True)
    index = catalogue.index(True)
    assert np.shares_memory(catalogue.unit_vectors, mapped)
    assert np.shares_memory(index.vectors, mapped)
    found, _ = catalogue.search(vectors[7:8], 1, True)
    assert found[0].tolist() == [7]
    (row,) = catalogue.add(pd.DataFrame({"listing_id": ["new"]}), -vectors[7:8], np.array([-1]))
    found, _ = catalogue.search(-vectors[7:8], 1, True)
    assert found[0].tolist() == [row]
    assert not np.shares_memory(catalogue.unit_vectors, mapped)
    # not unit length: the catalogue's unit vectors are its own
    scaled = Catalogue(table, 2 * vectors, np.arange(len(table)))
    assert np.allclose(scaled.unit_vectors, vectors, atol=1e-6)


@pytest.mark.parametrize(
    "lat, lon, radius_km",
    [
        (51.05, 13.74, 100),
        (51.05, 13.74, 5),
        (89.9, 0, 50),
        (0, 179.9, 300),
        (-60, -170, 2000),
        (50, 10, 20000),
    ],  # fmt: skip
)
def test_radius_filter_matches_haversine_on_a_large_table(lat, lon, radius_km):
    from embedrec.geo import haversine_km

    rng = np.random.default_rng(3)
    # above the size whose columns are cached, with points over the whole globe
    table = pd.DataFrame(
        {"lat": rng.uniform(-90, 90, 30_000), "lon": rng.uniform(-180, 180, 30_000)}
    )
    table.loc[::97, "lat"] = np.nan
    expected = haversine_km(lat, lon, table["lat"].to_numpy(), table["lon"].to_numpy())
    expected = expected <= radius_km
    cache = FilterCache()
    for _ in range(2):  # the second call reads the cached columns
        mask = allowed_mask([RadiusFilter(lat, lon, radius_km)], table, cache)
        assert (mask == expected).all()
        rows = allowed_rows([RadiusFilter(lat, lon, radius_km)], table, len(table), cache)
        # the grid serves every circle, those reaching a pole or crossing 180 degrees too
        assert rows is not None
        assert sorted(rows.tolist()) == np.flatnonzero(expected).tolist()


@pytest.fixture(scope="module")
def large_table() -> pd.DataFrame:
    """Above the size whose columns get sorted indexes; with missing values in each column."""
    rng = np.random.default_rng(5)
    n = 40_000
    table = pd.DataFrame(
        {
            "listing_id": [f"L{i}" for i in range(n)],
            "make": rng.choice(["Nissan", "VW", "BMW", "Dacia"], n, p=[0.01, 0.5, 0.3, 0.19]),
            "price": rng.integers(1_000, 60_000, n).astype(float),
            "lat": rng.uniform(47, 55, n),
            "lon": rng.uniform(6, 15, n),
        }
    )
    table.loc[::101, "price"] = np.nan
    table.loc[::89, "make"] = None
    return table


@pytest.mark.parametrize(
    "expressions",
    [
        ["price<=1500"],
        ["price<1500", "price>1200"],
        ["price>=59500"],
        ["make=Nissan"],
        ["make=Nissan,Dacia", "price<=30000"],
        ["within=51.05,13.74,30km"],
        ["within=51.05,13.74,100km", "make!=VW", "exclude=L5,L17,L40"],
        ["make=Tesla"],
        ["price<=0"],
    ],
)
def test_rows_from_indexes_equal_the_mask(large_table, expressions):
    filters = [parse_filter(e) for e in expressions]
    expected = np.flatnonzero(allowed_mask(filters, large_table))
    cache = FilterCache()
    # without a cache (indexes built for the call), then building and reading the cache
    for cached in (None, cache, cache):
        rows = allowed_rows(filters, large_table, limit=len(large_table), cache=cached)
        assert rows is not None and rows.dtype.kind == "i"
        assert sorted(rows.tolist()) == expected.tolist()
    assert (allowed_mask(filters, large_table, cache) == allowed_mask(filters, large_table)).all()


def test_a_set_filter_on_a_multi_valued_column_matches_each_of_its_values(large_table):
    table = pd.DataFrame(
        {
            "listing_id": [f"L{i}" for i in range(6)],
            "tags": ["wood|oak", "metal", "oak", None, "glass | metal", "wood|oak"],
        }
    )
    assert rows_of([parse_filter("tags=oak")], table) == [0, 2, 5]
    assert rows_of([parse_filter("tags=metal")], table) == [1, 4]
    assert rows_of([parse_filter("tags=wood|oak")], table) == [0, 5]  # the whole value too
    assert rows_of([parse_filter("tags!=oak")], table) == [1, 4]
    # the same through the cached indexes of a large table
    large = large_table.assign(tags=np.where(np.arange(len(large_table)) % 3, "a|b", "b|c"))
    expected = np.flatnonzero(np.arange(len(large)) % 3 == 0).tolist()
    rows = allowed_rows([parse_filter("tags=c")], large, limit=len(large), cache=FilterCache())
    assert sorted(rows.tolist()) == expected


def test_unselective_filters_fall_back_to_the_mask(large_table):
    # no index narrows "make!=VW" or a wide price range to 5,000 rows
    assert allowed_rows([parse_filter("make!=VW")], large_table, limit=5_000) is None
    assert allowed_rows([parse_filter("price>=2000")], large_table, limit=5_000) is None
    # an unknown field is still named, whichever path is taken
    with pytest.raises(FilterError, match="colour"):
        allowed_rows([parse_filter("colour=red")], large_table, limit=5_000)


def test_filter_cache_is_bounded_and_holds_one_table(large_table):
    cache = FilterCache(max_entries=3)
    for expression in ("price<=1500", "make=Nissan", "lat>=50", "make=VW"):
        allowed_rows([parse_filter(expression)], large_table, len(large_table), cache)
    assert len(cache) == 3
    # a cache of one table answering for another would answer with the first one's columns
    with pytest.raises(ValueError, match="one table"):
        allowed_mask([parse_filter("price<=1500")], large_table.copy(), cache)


def test_filter_cache_shared_by_threads_computes_each_entry_once(large_table):
    cache, calls, started = FilterCache(), [], threading.Barrier(8)

    def compute() -> object:
        calls.append(1)
        return object()

    def get(_: int) -> object:
        started.wait()
        return cache.get(large_table, ("key",), compute)

    threads = [threading.Thread(target=get, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1

    expressions = ["price<=1500", "make=Nissan,Dacia", "within=51.05,13.74,30km", "price>59000"]
    shared, failures = FilterCache(), []

    def check(expression: str) -> None:
        filters = [parse_filter(expression)]
        expected = np.flatnonzero(allowed_mask(filters, large_table))
        for _ in range(3):
            rows = allowed_rows(filters, large_table, len(large_table), shared)
            if rows is None or sorted(rows.tolist()) != expected.tolist():
                failures.append(expression)

    threads = [threading.Thread(target=check, args=(e,)) for e in expressions * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures


def test_search_with_rows_equals_search_with_mask(ivf, queries):
    mask = np.zeros(ivf.n_rows, dtype=bool)
    mask[::50] = True  # 160 rows: below filter_exact_below
    mask[::7] |= np.arange(ivf.n_rows)[::7] > 6000  # and more, to take the index path
    for allowed in (mask, np.flatnonzero(mask)[:150]):
        as_mask = np.zeros(ivf.n_rows, dtype=bool)
        as_mask[allowed] = True
        by_rows = ivf.search(queries, 10, allowed=np.flatnonzero(as_mask))
        by_mask = ivf.search(queries, 10, allowed=as_mask)
        assert (by_rows[0] == by_mask[0]).all()
        assert np.allclose(by_rows[1], by_mask[1])
    shuffled = np.random.default_rng(0).permutation(np.flatnonzero(mask))
    assert (
        ivf.search(queries, 5, allowed=shuffled)[0] == ivf.search(queries, 5, allowed=mask)[0]
    ).all()
    with pytest.raises(ValueError, match="allowed rows must lie in"):
        ivf.search(queries, 5, allowed=np.array([ivf.n_rows]))
    with pytest.raises(ValueError, match="boolean mask or row numbers"):
        ivf.search(queries, 5, allowed=np.array([0.5, 1.5]))


def test_filtered_exact_search_one_query_at_a_time_equals_a_batch(ivf, queries):
    # under 20 queries the kept rows are scored in place; a batch copies them out for BLAS
    rows = np.random.default_rng(3).permutation(ivf.n_rows)[:150]  # any order
    exclude = [rows[i : i + 3] for i in range(len(queries))]
    batch = ivf.search(queries, 10, allowed=rows, exclude=exclude)
    assert ivf.filter_path(len(rows)) == "exact"
    for i in range(len(queries)):
        one = ivf.search(queries[i], 10, allowed=rows, exclude=exclude[i : i + 1])
        np.testing.assert_array_equal(one[0][0], batch[0][i])
        np.testing.assert_allclose(one[1][0], batch[1][i], rtol=1e-5)
        assert set(one[0][0]) <= set(rows) and not set(one[0][0]) & set(exclude[i])


def test_catalogue_filtered_search_through_indexes_with_adds_and_removes(large_table):

    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((len(large_table), 8)).astype(np.float32)
    catalogue = Catalogue(large_table, vectors, np.arange(len(large_table)), exact_below=10_000)
    new = large_table.iloc[:3].assign(listing_id=["N1", "N2", "N3"], make="Nissan", price=1234.0)
    catalogue.add(new, rng.standard_normal((3, 8)).astype(np.float32), np.full(3, -1))
    nissans = large_table.index[large_table["make"] == "Nissan"]
    catalogue.remove([large_table["listing_id"][nissans[0]], "N2"])
    filters = [parse_filter("make=Nissan"), parse_filter("price<=30000")]
    # the same query answered from a mask over the whole catalogue: the reference
    mask = catalogue.allowed(filters) & catalogue.live
    assert (
        catalogue.allowed(filters, few=5_000).tolist()
        == np.flatnonzero(catalogue.allowed(filters)).tolist()
    )
    query = rng.standard_normal((1, 8)).astype(np.float32)
    rows, scores = catalogue.search(query, 10, False, filters)
    every = np.flatnonzero(mask)
    best = every[np.argsort(-(catalogue.vectors[every] @ query[0]), kind="stable")[:10]]
    assert set(rows[0].tolist()) == set(best.tolist())
    assert "N2" not in set(catalogue.table["listing_id"].to_numpy()[rows[0]])
    assert len(every) > 10 and (rows[0] >= 0).all()


def brute_force(catalogue, filters, query: np.ndarray, k: int) -> np.ndarray:
    """The reference: every filter as a mask over every row, live rows, exact scores."""
    every = np.flatnonzero(allowed_mask(filters, catalogue.table) & catalogue.live)
    scores = catalogue.unit_vectors[every] @ (query / np.linalg.norm(query))
    return every[np.argsort(-scores, kind="stable")[:k]]


def test_catalogue_radius_search_through_the_grid_with_adds_and_removes(large_table):
    from embedrec.index.grid import OrderedRows

    rng = np.random.default_rng(11)
    table = large_table.assign(dealer=rng.integers(0, 8_000, len(large_table)).astype(str))
    vectors = rng.standard_normal((len(table), 8)).astype(np.float32)
    catalogue = Catalogue(table, vectors, np.arange(len(table)), exact_below=10_000)
    queries = rng.standard_normal((25, 8)).astype(np.float32)
    cases = [
        ["within=51.05,13.74,100km"],
        ["within=51.05,13.74,100km", "make=Nissan,BMW"],
        ["within=51.05,13.74,150km", "make=BMW", "price>=5000", "price<=40000"],
        ["within=51.05,13.74,100km", "exclude=L1,L2,L3,N1"],
        ["within=51.05,13.74,100km", "price>=2000"],
        ["within=51.05,13.74,100km", "price<=60000", "make!=BMW"],
        ["exclude=L1,L2,L3,L4,L5,L6,L7,L8,L9,L10", "make!=VW"],
        ["exclude=L1,N2"],
        ["dealer=17,4242"],
    ]

    def agree() -> None:
        for expressions in cases:
            filters = [parse_filter(e) for e in expressions]
            found, _ = catalogue.search(queries[:2], 10, True, filters)
            batch, _ = catalogue.search(queries, 10, True, filters)  # 20+ queries: BLAS
            for i, q in enumerate(queries[:2]):
                expected = brute_force(catalogue, filters, q, 10).tolist()
                assert found[i][found[i] >= 0].tolist() == expected, expressions
                assert batch[i][batch[i] >= 0].tolist() == expected, expressions

    agree()
    radius = [parse_filter("within=51.05,13.74,100km")]
    assert isinstance(catalogue.allowed(radius, few=10_000, ordered=True), OrderedRows)
    # after the grid and the ordered vectors exist: rows removed, added inside the circle,
    # replaced (the old row dies, the new one is added), some named by exclude=
    near = np.flatnonzero(allowed_mask(radius, table))
    catalogue.remove(table["listing_id"].to_numpy()[near[:40]].tolist())
    new = table.iloc[near[40:43]].assign(listing_id=["N1", "N2", "N3"], make="Nissan")
    catalogue.add(new, queries[:3] * 3, np.full(3, -1))  # close to the queries: they rank
    assert (catalogue.search(queries[:1], 10, True, radius)[0][0] >= len(table)).any()
    agree()
    catalogue.remove(["N3", "L1"])
    agree()


def test_ordered_rows_search_equals_search_by_rows(data, queries):
    from embedrec.index.grid import OrderedRows

    index = VectorIndex(exact_below=1000, filter_exact_below=200).build(data[:6000])
    index.add(data[6000:])
    order = np.random.default_rng(4).permutation(6000)
    positions = np.sort(np.random.default_rng(5).choice(6000, 900, replace=False))
    allowed = OrderedRows(order, positions, np.arange(6000, 6100))
    exclude = [order[positions[i : i + 4]] for i in range(len(queries))]
    for _ in range(2):  # the second time after removals: the ordered copy follows them
        by_rows = index.search(queries, 10, allowed.rows(), exclude)
        by_order = index.search(queries, 10, allowed, exclude)
        one = index.search(queries[:1], 10, allowed, exclude[:1])
        np.testing.assert_array_equal(by_order[0], by_rows[0])
        np.testing.assert_allclose(by_order[1], by_rows[1], rtol=1e-5)
        np.testing.assert_array_equal(one[0][0], by_rows[0][0])
        index.remove(np.concatenate([by_rows[0][:, 0], [6001, 6002]]))
    with pytest.raises(ValueError, match="must lie in"):
        index.search(queries, 5, OrderedRows(order, positions, np.array([10**6])))


def test_catalogue_unselective_filters_checked_on_the_unfiltered_best_rows(
    large_table, monkeypatch
):
    from embedrec.index import catalogue as catalogue_module

    rng = np.random.default_rng(12)
    red = np.arange(len(large_table)) % 2000 == 0  # 20 rows
    table = large_table.assign(colour=np.where(red, "red", "blue"))
    vectors = rng.standard_normal((len(table), 8)).astype(np.float32)
    # an exact index, so that any path must give the reference's answers exactly; filters
    # keeping more than 100 rows (and a fifth of them) are checked after the search
    catalogue = Catalogue(table, vectors, np.arange(len(table)), exact_below=10**6)
    catalogue.index(True).filter_exact_below = 100
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    calls = {"post": [], "filtered": []}
    post_filtered, filtered = catalogue_module.post_filtered, Catalogue._filtered

    def spy_post(*args, **kwargs):
        found = post_filtered(*args, **kwargs)
        calls["post"].append(found[2].tolist())
        return found

    def spy_filtered(self, index, q, *args):
        calls["filtered"].append(len(q))
        return filtered(self, index, q, *args)

    monkeypatch.setattr(catalogue_module, "post_filtered", spy_post)
    monkeypatch.setattr(Catalogue, "_filtered", spy_filtered)

    def agree(expressions: list[str], k: int) -> None:
        calls["post"].clear(), calls["filtered"].clear()
        filters = [parse_filter(e) for e in expressions]
        found, _ = catalogue.search(queries, k, True, filters)
        for i, q in enumerate(queries):
            expected = brute_force(catalogue, filters, q, k).tolist()
            assert found[i][found[i] >= 0].tolist() == expected, expressions
            assert (found[i][len(expected) :] == -1).all()

    agree(["price<=40000"], 10)  # two thirds pass: the first unfiltered rows hold k
    assert calls == {"post": [[]], "filtered": []}
    agree(["make!=Nissan", "price>=2000", "exclude=L1,L2"], 10)
    assert calls == {"post": [[]], "filtered": []}
    # a negated filter is taken to keep most rows; here 20 pass: the search widens
    # until they are found, and with k above 20 every query falls back to the filter first
    agree(["colour!=blue"], 10)
    assert calls == {"post": [[]], "filtered": []}
    agree(["colour!=blue"], 25)
    assert calls == {"post": [[0, 1, 2]], "filtered": [3]}
    agree(["price<=30000"], 10)
    agree(["make=Nissan"], 10)  # 1%: the rows from the column's index, not checked after
    assert calls == {"post": [], "filtered": [3]}
    # added rows are checked in the added part, removed ones never come back
    new = table.iloc[:4].assign(listing_id=["N1", "N2", "N3", "N4"], colour="red")
    near = np.vstack([queries, rng.standard_normal((1, 8))]).astype(np.float32)
    catalogue.add(new, near, np.full(4, -1))  # close to the queries: they rank first
    catalogue.remove(["N2", table["listing_id"][0]])
    agree(["colour!=blue"], 10)
    agree(["price<=40000"], 10)
    agree(["colour!=blue"], 25)
    assert catalogue.search(queries, 0, True, [parse_filter("price<=40000")])[0].shape == (3, 0)


@pytest.mark.parametrize("exact", [True, False])
def test_post_filter_widens_an_exact_search_and_tries_an_approximate_one_once(exact):
    from embedrec.index.postfilter import FIRST_FETCH, post_filtered

    asked = []
    rows = np.arange(100_000)

    def search(n: int) -> tuple[np.ndarray, np.ndarray]:
        asked.append(n)
        return rows[None, :n], -rows[None, :n].astype(np.float32)

    # only every 500th row passes: the first rows hold too few of them
    found, _, short = post_filtered(search, lambda r: r % 500 == 0, 10, 0.5, exact=exact)
    if exact:
        assert asked == [FIRST_FETCH * 4**i for i in range(len(asked))] and len(asked) > 1
        assert found[0].tolist() == list(range(0, 5000, 500)) and not len(short)
    else:  # one try; the caller's filtered search answers the short query
        assert asked == [FIRST_FETCH] and short.tolist() == [0]


def test_a_catalogue_asks_its_index_source_only_for_the_rows_it_was_built_with() -> None:
    """A shared index covers the rows as constructed: once rows were added (a merge of added
    rows included), the index is built here and never handed to the source to save."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    table = pd.DataFrame({"listing_id": [f"L{i}" for i in range(300)], "price": range(300)})
    asked: list[bool] = []

    def source(cosine: bool, build):
        asked.append(cosine)
        return build()

    untouched = Catalogue(table, vectors, np.arange(300), index_source=source)
    assert untouched.index(True).n_rows == 300 and asked == [True]

    asked.clear()
    grown = Catalogue(table, vectors, np.arange(300), index_source=source)
    n = 2_100  # enough that the added rows are merged into the base table
    extra = pd.DataFrame({"listing_id": [f"new-{i}" for i in range(n)], "price": range(n)})
    grown.add(extra, rng.normal(size=(n, 8)).astype(np.float32), np.full(n, -1))
    assert grown.index(True).n_rows == 300 + n and asked == []
