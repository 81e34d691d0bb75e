"""The compiled loops of filtered searches over an IVF index (index/bounded.py).

Radius searches read a circle's clusters by their score bound: exactly the top k of the rows
every filter keeps, against a brute force over all rows. Other filters read the clusters
nearest a query with the filters tested row by row: the lists the index itself would read,
widened as it widens, against a reference written with numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedrec.index.bounded import (
    FIRST_BLOCKS,
    ClusterBlocks,
    bounded_top_k,
    centroid_distances,
    cluster_order_key,
    compile_scan,
)
from embedrec.index.catalogue import MERGE_MIN_ROWS, Catalogue
from embedrec.index.filters import (
    FilterCache,
    RadiusFilter,
    allowed_mask,
    parse_filter,
    position_tests,
)
from embedrec.index.postfilter import estimated_share
from embedrec.index.vector_index import TRUSTED, WIDEN

N = 40_000


def _table_and_vectors(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Listings over Germany whose vectors say where they are, as learned ones do (so a
    cluster's rows lie in few cells), plus what they are."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(47.5, 54.5, N), rng.uniform(6.5, 14.5, N)
    where = np.stack([np.sin(lat), np.cos(lat), np.sin(lon / 2), np.cos(lon / 2)], axis=1)
    what = rng.standard_normal((N, 12))
    vectors = np.hstack([6 * where, what]).astype(np.float32)
    table = pd.DataFrame(
        {
            "listing_id": [f"L{i}" for i in range(N)],
            "make": rng.choice(["VW", "BMW", "Nissan"], N, p=[0.5, 0.4, 0.1]),
            "price": rng.integers(1_000, 60_000, N).astype(float),
            "lat": lat,
            "lon": lon,
        }
    )
    table.loc[::97, "price"] = np.nan
    return table, vectors


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    table, vectors = _table_and_vectors()
    catalogue = Catalogue(table, vectors, np.arange(N), exact_below=10_000)
    # bounded searches serve circles keeping more rows than an exact search takes: few here
    catalogue.index(True).filter_exact_below = 1_000
    return catalogue


def _brute_force(catalogue: Catalogue, filters, query: np.ndarray, k: int, excluded=()) -> list:
    keep = allowed_mask(filters, catalogue.table) & catalogue.live
    keep[list(excluded)] = False
    rows = np.flatnonzero(keep)
    unit = query / np.linalg.norm(query)
    scores = catalogue.unit_vectors[rows] @ unit
    return rows[np.argsort(-scores, kind="stable")[:k]].tolist()


CASES = [
    ["within=51.05,13.74,150km"],
    ["within=50.0,8.0,250km"],
    ["within=51.05,13.74,200km", "price>=10000", "price<=30000"],
    ["within=52.5,13.4,200km", "make=VW,Nissan"],
    ["within=48.1,11.6,180km", "make!=BMW", "price<=40000"],
    # a second circle: no column test, a mask over the first one's positions
    ["within=51.05,13.74,200km", "within=51.6,12.4,120km", "price>10000"],
]


def test_bounded_radius_search_equals_brute_force_with_adds_removes_and_exclusions(catalogue):
    rng = np.random.default_rng(7)
    queries = catalogue.unit_vectors[rng.choice(N, 12, replace=False)] + 0.3 * rng.standard_normal(
        (12, 16)
    ).astype(np.float32)

    def agree(excluded: list[int]) -> None:
        for expressions in CASES:
            filters = [parse_filter(e) for e in expressions]
            exclude = [np.array(excluded, dtype=np.int64)] * len(queries)
            found, scores = catalogue.search(queries, 10, True, filters, exclude)
            for i, q in enumerate(queries):
                expected = _brute_force(catalogue, filters, q, 10, excluded)
                assert found[i][found[i] >= 0].tolist() == expected, expressions
                assert np.all(np.diff(scores[i][found[i] >= 0]) <= 0)

    agree([])
    structure = catalogue._built_layout(catalogue.index(True))
    assert structure is not None, "the searches were not bounded by clusters"
    # one or two rows per cell and cluster would mean no cluster order inside cells
    assert len(structure) < N // 4
    # rows removed inside circles, rows added (they join the first pass), rows excluded
    circle = [RadiusFilter(51.05, 13.74, 150.0)]
    near = np.flatnonzero(allowed_mask(circle, catalogue.table))
    catalogue.remove([f"L{i}" for i in near[:50]])
    added = catalogue.table.iloc[near[50:53]].assign(listing_id=["N1", "N2", "N3"])
    catalogue.add(added, queries[:3] * 4, np.full(3, -1))  # near the queries: they rank first
    found, _ = catalogue.search(queries[:1], 10, True, circle)
    assert N + 0 in found[0]
    agree([int(near[60]), N + 1])
    # enough rows added that they are merged into the base table (a new grid and blocks)
    base = catalogue._fields.base
    more = catalogue.table.iloc[: MERGE_MIN_ROWS + 1].assign(
        listing_id=[f"M{i}" for i in range(MERGE_MIN_ROWS + 1)]
    )
    moved = catalogue.vectors[: len(more)] + rng.normal(0, 0.5, (len(more), 16))
    catalogue.add(more, moved.astype(np.float32), np.full(len(more), -1))
    assert catalogue._fields.base is not base
    agree([N + 2])
    assert catalogue._blocks[id(catalogue.index(True))][1] is catalogue._fields.base


def test_bounded_top_k_scores_few_rows_and_finds_the_exact_top_k():
    table, vectors = _table_and_vectors(seed=11)
    catalogue = Catalogue(table, vectors, np.arange(N), exact_below=10_000)
    index = catalogue.index(True)
    clusters, centroids = index.clusters()
    radius = RadiusFilter(50.5, 10.0, 220.0)
    inside = np.flatnonzero(allowed_mask([radius], table))
    queries = index.vectors[np.random.default_rng(2).choice(N, 20, replace=False)]
    farthest_first = cluster_order_key(clusters, centroid_distances(clusters, vectors, centroids))
    scored: dict[tuple[str, int], float] = {}
    # each list's rows in a cell as they come, or farthest from the centroid first (as a
    # catalogue orders them); the heap holding the best-bound blocks first, or all of them
    for within, order_name in ((clusters, "as they come"), (farthest_first, "farthest first")):
        cache = FilterCache()
        grid = radius.grid(table, cache, within=within)
        structure = ClusterBlocks.build(clusters, index.vectors, centroids, grid)
        circle = structure.of_cells(*radius.cells(grid))
        assert set(inside) <= set(grid.order[circle.positions()].tolist())  # hold the circle
        assert len(circle.first) > 2 * 8  # the two-phase heap below takes effect
        tests = position_tests([radius], grid.order, table, cache, circle.positions, radius)
        ordered = index.vectors[grid.order]
        for first_blocks in (FIRST_BLOCKS, 8):
            counts = []
            for query in queries:
                rows, scores, n_scored = bounded_top_k(
                    query, 10, structure, circle, tests, ordered, np.zeros(0, dtype=bool),
                    first_blocks,
                )  # fmt: skip
                counts.append(n_scored)
                exact = inside[np.argsort(-(index.vectors[inside] @ query), kind="stable")[:10]]
                assert rows.tolist() == exact.tolist(), (order_name, first_blocks)
                np.testing.assert_allclose(scores, index.vectors[exact] @ query, rtol=1e-5)
            scored[order_name, first_blocks] = float(np.median(counts))
    # most of the circle's rows are never scored: their clusters' bounds rule them out
    assert scored["as they come", FIRST_BLOCKS] * 2 < len(inside)
    # and with the farthest rows first, a block is left at the first row whose own bound
    # cannot reach the top 10
    assert scored["farthest first", FIRST_BLOCKS] < scored["as they come", FIRST_BLOCKS]


def test_a_grid_built_before_the_index_is_built_again_and_filters_on_both_agree():
    table, vectors = _table_and_vectors(seed=5)
    fresh = Catalogue(table, vectors, np.arange(N), exact_below=10_000)
    cases = [
        [parse_filter("within=51.05,13.74,200km")],
        [parse_filter("within=51.05,13.74,60km"), parse_filter("make=Nissan")],
        [parse_filter("within=51.05,13.74,90km"), parse_filter("price<=20000")],
    ]
    # the filters build the grid first, without the index's clusters, and derive columns
    # and postings in its order
    before = [fresh.allowed(filters, few=N, ordered=True) for filters in cases]
    old_grid = before[0].order
    index = fresh.index(True)
    index.filter_exact_below = 1_000
    query = vectors[:1]
    found, _ = fresh.search(query, 10, True, cases[0])
    structure = fresh._built_layout(index)
    assert structure is not None and structure.grid.order is not old_grid  # built again
    assert found[0].tolist() == _brute_force(fresh, cases[0], query[0], 10)
    for filters, rows in zip(cases, before, strict=True):
        again = fresh.allowed(filters, few=N, ordered=True)
        assert again.order is structure.grid.order
        assert (
            sorted(again.rows())
            == sorted(rows.rows())
            == sorted(np.flatnonzero(allowed_mask(filters, table)))
        )
        found, _ = fresh.search(query, 10, True, filters)
        assert found[0][found[0] >= 0].tolist() == _brute_force(fresh, filters, query[0], 10)


def test_cosine_and_dot_product_searches_on_one_catalogue_both_stay_exact():
    # the grid orders cells by the first index's clusters; the second index's clusters cut
    # it into small blocks, and its searches go the way they went before, still exact
    table, vectors = _table_and_vectors(seed=9)
    scaled = vectors * np.random.default_rng(1).uniform(0.5, 2.0, (N, 1)).astype(np.float32)
    catalogue = Catalogue(table, scaled, np.arange(N), exact_below=10_000)
    for cosine in (True, False):
        catalogue.index(cosine).filter_exact_below = 1_000
    circle = [parse_filter("within=51.05,13.74,200km")]
    inside = np.flatnonzero(allowed_mask(circle, table))
    query = scaled[7]
    for cosine in (True, False, True):
        found, _ = catalogue.search(query[None], 10, cosine, circle)
        target = catalogue.unit_vectors if cosine else catalogue.vectors
        scores = target[inside] @ (query / np.linalg.norm(query) if cosine else query)
        expected = inside[np.argsort(-scores, kind="stable")[:10]]
        assert found[0].tolist() == expected.tolist(), cosine


def test_the_loops_compiled_at_warm_up_serve_every_combination_of_filters(catalogue):
    # one fixed signature: a search compiling another would stall its request for seconds
    from embedrec.index.block_scan import scan_blocks, scan_clusters

    compile_scan()
    assert len(scan_blocks.signatures) == len(scan_clusters.signatures) == 1
    query = catalogue.unit_vectors[:1]
    radius = [*CASES, ["within=51,13,150km"], ["within=51.05,13.74,150km", "make=VW"]]
    for expressions in [*radius, *NEAREST_CASES]:
        catalogue.search(query, 10, True, [parse_filter(e) for e in expressions])
    assert catalogue._built_layout(catalogue.index(True)) is not None  # the loops ran
    assert len(scan_blocks.signatures) == len(scan_clusters.signatures) == 1


NEAREST_CASES = [
    ["make=Nissan"],
    ["make=VW,Nissan", "price>=20000"],
    ["price<=12000"],
    ["price>=5000", "price<=50000"],  # most rows pass
    ["make!=BMW"],  # no index says how many pass: read on until enough did
    ["make=Nissan", "price>58000"],  # few pass anywhere: read on to every list
    # an exclusion of many ids: no column test, a mask over the positions
    ["make=VW", "exclude=" + ",".join(f"L{i}" for i in range(0, 6000, 4))],
]


def _reference(catalogue: Catalogue, filters, keep: np.ndarray, query: np.ndarray, k: int):
    """The rows of the lists nearest ``query`` that pass (``keep``, live rows): as many
    lists as the index reads for the filters' estimated share, four times as many while
    fewer than 8 k rows passed; and the rows added since the lists were built."""
    index = catalogue.index(True)
    clusters, centroids = index.clusters()
    base = len(clusters)
    unit = query / np.linalg.norm(query)
    nearest = np.argsort(-(centroids @ unit), kind="stable")
    part = catalogue._fields
    breadth = index.breadth(max(estimated_share(filters, part.base, part.cache), 1 / base))
    while True:
        rows = np.flatnonzero(keep[:base] & np.isin(clusters, nearest[:breadth]))
        if len(rows) >= TRUSTED * k or breadth >= len(nearest):
            break
        breadth *= WIDEN
    rows = np.concatenate([rows, base + np.flatnonzero(keep[base:])])
    scores = catalogue.unit_vectors[rows] @ unit
    return rows[np.argsort(-scores, kind="stable")[:k]].tolist()


@pytest.mark.parametrize("coordinates", [True, False], ids=["grid", "no-coordinates"])
def test_filtered_search_reads_the_lists_the_index_would_read(coordinates):
    table, vectors = _table_and_vectors(seed=13)
    if not coordinates:
        table = table.drop(columns=["lat", "lon"])
    catalogue = Catalogue(table, vectors, np.arange(N), exact_below=10_000)
    index = catalogue.index(True)
    index.filter_exact_below = 500  # few rows are searched exactly: the loop serves the rest
    rng = np.random.default_rng(4)
    queries = catalogue.unit_vectors[rng.choice(N, 15, replace=False)]
    queries = queries + 0.3 * rng.standard_normal(queries.shape).astype(np.float32)

    def agree() -> float:
        hits = 0
        for expressions in NEAREST_CASES:
            filters = [parse_filter(e) for e in expressions]
            keep = allowed_mask(filters, catalogue.table) & catalogue.live
            found, scores = catalogue.search(queries, 10, True, filters)
            for i, query in enumerate(queries):
                rows = found[i][found[i] >= 0]
                assert rows.tolist() == _reference(catalogue, filters, keep, query, 10), expressions
                assert np.all(np.diff(scores[i][: len(rows)]) <= 0)
                exact = np.flatnonzero(keep)
                best = exact[np.argsort(-(catalogue.unit_vectors[exact] @ query))[:10]]
                hits += len(set(rows.tolist()) & set(best.tolist()))
        return hits / (10 * len(NEAREST_CASES) * len(queries))

    assert agree() >= 0.95  # and the index's lists hold nearly all of the exact top 10
    structure = catalogue._built_layout(index)  # the loop ran
    assert structure is not None and (structure.grid is not None) == coordinates
    # removed rows never come back; added ones (not in any list yet) are searched as well
    catalogue.remove([f"L{i}" for i in range(0, N, 7)])
    added = catalogue.table.iloc[[3, 8, 9]].assign(listing_id=["N1", "N2", "N3"])
    catalogue.add(added, queries[:3] * 4, np.full(3, -1))
    agree()
