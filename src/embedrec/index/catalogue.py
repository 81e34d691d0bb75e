"""The searchable catalogue: listings' fields, their vectors, a vector index and filters."""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from embedrec.data.ids import id_index, positions
from embedrec.data.io import date_columns
from embedrec.data.jsonable import plain
from embedrec.index.bounded import (
    CircleBlocks,
    ClusterBlocks,
    bounded_top_k,
    centroid_distances,
    cluster_order_key,
    nearest_clusters_top_k,
)
from embedrec.index.filters import (
    ExcludeFilter,
    Filter,
    FilterCache,
    RadiusFilter,
    allowed_mask,
    allowed_selection,
    merged_ranges,
    position_tests,
    table_grid,
)
from embedrec.index.grid import OrderedRows
from embedrec.index.postfilter import POST_FILTER_SHARE, estimated_share, post_filtered
from embedrec.index.vector_index import TRUSTED, WIDEN, VectorIndex
from embedrec.ranking import ties_to_lowest_row

# added rows are merged into one table again once they exceed a 64th of it (and 2,048 rows)
MERGE_MIN_ROWS = 2048
MERGE_SHARE = 64
# rows of removed or replaced listings are dropped (a new catalogue) once they exceed a
# quarter of the live ones (and 256 rows): memory and filter cost follow the live listings
COMPACT_MIN_DEAD = 256
COMPACT_SHARE = 0.25
# a string column with at most one distinct value per this many rows is kept as codes into its
# distinct values (see _json_column)
FEW_VALUES_SHARE = 8
# (cosine or not, how to build the index) -> the index: one that another process built over
# the same vectors and saved, or the one built (see ``Catalogue``'s ``index_source``)
IndexSource = Callable[[bool, Callable[[], VectorIndex]], VectorIndex]


class Catalogue:
    """Listings a query may return: fields, vectors and an index over them.

    Rows are stable: adding appends rows, removing hides them (a later add of the same id
    gets a new row). ``model_rows`` is each row's listing index in the model, -1 for listings
    the model never saw. Cosine searches use unit vectors; dot-product searches the raw ones
    (the same index when the model's vectors are already normalised).

    The hot paths of a server (fields of a few rows, filters, single adds) cost time in the
    rows they touch, not in the catalogue's size: fields come from per-column arrays, added
    rows live apart from the base table, and vectors grow in amortised buffers.

    Parameters
    ----------
    table : pandas.DataFrame
        The listings' fields, ``listing_id`` first; one row per vector.
    vectors : numpy.ndarray
        float32 [n, dim], the listings' vectors in ``table``'s order.
    model_rows : numpy.ndarray
        Each row's listing row in the model, -1 for listings it never saw.
    normalized : bool
        The vectors are unit length already: cosine and dot-product search share an index.
    exact_below : int
        Below this many rows the vector index searches exactly, above approximately.
    query_samples : callable, optional
        ``query_samples(cosine, unit_vectors)``: samples of the kinds of queries searched by
        cosine (True) or by dot product, by kind (e.g. ``{"user": ...}``), given the
        catalogue's unit vectors. An approximate vector index calibrates its search breadth
        for each kind apart (``search(kind=...)``): a model's queries need not lie where its
        listing vectors do.
    index_source : callable, optional
        ``index_source(cosine, build)``: the vector index of the rows as constructed, for a
        caller that shares it between processes (built by the first that needs it, loaded by
        the others: ``serving/shared.py``). Used only while no row was added; an index that
        does not match the vectors is built here instead. :meth:`compacted` builds its own.

    Attributes
    ----------
    id_dtype : dtype
        The dtype of ``listing_id``: ids given as text are parsed to it.
    normalized : bool
        As given.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        vectors: np.ndarray,
        model_rows: np.ndarray,
        normalized: bool = False,
        exact_below: int = 50_000,
        query_samples: Callable[[bool, np.ndarray], Mapping[str, np.ndarray]] | None = None,
        index_source: IndexSource | None = None,
        schema: pd.DataFrame | None = None,
    ) -> None:
        self._lock = threading.RLock()
        base = table.reset_index(drop=True)
        # a compacted catalogue keeps its origin's: an integer column that added listings
        # left without a value is float64 in the table, and still answers integers
        self._schema = base.iloc[:0] if schema is None else schema
        self.id_dtype = base["listing_id"].dtype
        self._fields = _Fields(base, self._schema)
        self._added_rows: dict[Any, int] = {}  # ids added after construction -> newest row
        self._row_of = id_index(base["listing_id"])
        self._n = len(base)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._vectors = vectors
        self._unit = _unit(vectors)
        self._model_rows = np.asarray(model_rows, dtype=np.int64)
        self._live = np.ones(self._n, dtype=bool)
        self._n_live = self._n
        self.normalized = normalized
        self._exact_below = exact_below
        self.query_samples = query_samples
        self._index_source = index_source
        self._constructed_rows = self._n  # rows only grow: equal means nothing was added
        self._indexes: dict[bool, VectorIndex] = {}
        self._row_of_model: np.ndarray | None = None  # model row -> live row, built on demand
        # per index: the index, the base table, its rows' clusters, the centroids, the grid's
        # sort key of the rows (cluster_order_key) and the layout (once built)
        self._blocks: dict[int, tuple[Any, ...]] = {}
        self._circles: dict[tuple, tuple[ClusterBlocks, CircleBlocks]] = {}

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self._n_live

    @property
    def n_rows(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._n]

    @property
    def unit_vectors(self) -> np.ndarray:
        return self._unit[: self._n]

    @property
    def model_rows(self) -> np.ndarray:
        return self._model_rows[: self._n]

    @property
    def live(self) -> np.ndarray:
        return self._live[: self._n]

    @property
    def schema(self) -> pd.DataFrame:
        """An empty frame with the catalogue's columns and dtypes."""
        return self._schema

    @property
    def table(self) -> pd.DataFrame:
        """Fields of every row (removed rows included, in row order). Builds a frame: for
        bulk work, not for per-request paths."""
        return self._fields.table()

    @property
    def n_dead(self) -> int:
        """Rows of removed or replaced listings, kept until :meth:`compacted`."""
        return self._n - self._n_live

    # ------------------------------------------------------------------ lookups
    def rows_of(self, ids: Sequence) -> np.ndarray:
        """Row of each id, -1 where the id is unknown or removed."""
        ids = list(ids)
        if not ids:
            return np.zeros(0, dtype=np.int64)
        rows = positions(self._row_of, ids)
        if self._added_rows:
            for position, listing_id in enumerate(ids):
                rows[position] = self._added_rows.get(listing_id, rows[position])
        found = rows >= 0
        rows[found & ~self.live[np.maximum(rows, 0)]] = -1
        return rows

    def rows_of_model_rows(self, model_rows: np.ndarray) -> np.ndarray:
        """Live row holding each model row (a listing the model knows), -1 where none."""
        model_rows = np.asarray(model_rows, dtype=np.int64)
        with self._lock:
            if self._row_of_model is None:
                self._row_of_model = np.zeros(0, dtype=np.int64)
                self._map_model_rows(np.flatnonzero(self.live))
            inverse = self._row_of_model
        out = np.full(len(model_rows), -1, dtype=np.int64)
        inside = (model_rows >= 0) & (model_rows < len(inverse))
        out[inside] = inverse[model_rows[inside]]
        return out

    def _map_model_rows(self, rows: np.ndarray) -> None:
        model_rows = self._model_rows[rows]
        rows, model_rows = rows[model_rows >= 0], model_rows[model_rows >= 0]
        if len(model_rows) and model_rows.max() >= len(self._row_of_model):
            grown = np.full(int(model_rows.max()) + 1, -1, dtype=np.int64)
            grown[: len(self._row_of_model)] = self._row_of_model
            self._row_of_model = grown
        self._row_of_model[model_rows] = rows

    def fields(
        self, rows: np.ndarray, columns: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Each row's fields (or only ``columns`` of them) as a JSON-ready dict."""
        rows = np.asarray(rows, dtype=np.int64)
        part = self._fields  # once: a merge swaps in another
        base = len(part.base)
        in_base = rows[rows < base]
        names = list(part.columns) if columns is None else [c for c in part.columns if c in columns]
        # column by column: one vectorised conversion per column, not one per value
        values = [part.columns[name](in_base) for name in names]
        records = iter(
            [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
            if names
            else [{} for _ in range(len(in_base))]  # none of ``columns`` here: no fields
        )
        out = []
        for row in rows.tolist():
            if row < base:
                out.append(next(records))
            else:
                added = part.records[row - base]
                out.append({name: added[name] for name in names if name in added})
        return out

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        """Fields of ``rows`` as a frame with the catalogue's columns, in the order given:
        for bulk work on some rows (a model's inputs of its new listings), without building
        the whole table."""
        rows = np.asarray(rows, dtype=np.int64)
        part = self._fields  # once: a merge swaps in another
        base = len(part.base)
        inside = rows < base
        if inside.all():
            return part.base.iloc[rows].reset_index(drop=True)
        added = part.added()[0]
        assert added is not None  # a row past the base is an added one
        both = pd.concat([part.base.iloc[rows[inside]], added.iloc[rows[~inside] - base]])
        order = np.concatenate([np.flatnonzero(inside), np.flatnonzero(~inside)])
        return both.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)

    # ------------------------------------------------------------------ search
    def index(self, cosine: bool) -> VectorIndex:
        """The vector index for cosine (unit vectors) or dot-product search, built lazily."""
        key = cosine or self.normalized
        with self._lock:
            if key not in self._indexes:
                vectors = self.unit_vectors if key else self.vectors

                def build() -> VectorIndex:
                    # an exact index (below ``exact_below`` rows) has no breadth to calibrate
                    approximate = len(vectors) >= self._exact_below
                    samples = self._query_samples(key) if approximate else None
                    return VectorIndex(exact_below=self._exact_below).build(vectors, samples)

                index = None
                if self._index_source is not None and self._n == self._constructed_rows:
                    index = self._index_source(key, build)  # the rows as constructed: shareable
                    if index.n_rows != len(vectors) or index.dim != vectors.shape[1]:
                        index = None  # not this catalogue's: built here
                if index is None:
                    index = build()
                dead = np.flatnonzero(~self.live)
                if len(dead):
                    index.remove(dead)
                self._indexes[key] = index
            return self._indexes[key]

    def _query_samples(self, cosine: bool) -> dict[str, np.ndarray]:
        """Samples of the queries the index for ``cosine`` answers, by kind (unit vectors
        for the cosine index); a normalised catalogue's one index answers both."""
        samples: dict[str, np.ndarray] = {}
        if self.query_samples is None:
            return samples
        for searched_by_cosine in (True, False) if self.normalized else (cosine,):
            drawn = self.query_samples(searched_by_cosine, self.unit_vectors)
            for kind, queries in drawn.items():
                queries = np.asarray(queries, dtype=np.float32)
                samples[kind] = _unit(queries) if searched_by_cosine else queries
        return samples

    def allowed(
        self, filters: Sequence[Filter], few: int = 0, ordered: bool = False
    ) -> np.ndarray | OrderedRows:
        """Rows passing every filter (base table and added rows evaluated apart): row numbers
        when a column index narrows them to at most ``few`` candidates, else a mask. With
        ``ordered``, rows a radius filter's grid found come as :class:`OrderedRows`."""
        part = self._fields
        base = part.base
        rows = allowed_selection(filters, base, few, part.cache) if few else None
        if isinstance(rows, OrderedRows):
            rows = OrderedRows(rows.order, rows.positions, self._added_allowed(part, filters))
            return rows if ordered else rows.rows()
        if rows is None:
            mask = allowed_mask(filters, base, part.cache)
            added, added_cache = part.added()
            if added is not None:
                mask = np.concatenate([mask, allowed_mask(filters, added, added_cache)])
            return mask[: self._n]
        return np.concatenate([rows, self._added_allowed(part, filters)])

    def _added_allowed(self, part: _Fields, filters: Sequence[Filter]) -> np.ndarray:
        """The rows added since the base table (of ``part``) that pass every filter."""
        added, added_cache = part.added()
        if added is None:
            return np.zeros(0, dtype=np.int64)
        rows = np.flatnonzero(allowed_mask(filters, added, added_cache)) + len(part.base)
        return rows[rows < self._n]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        cosine: bool,
        filters: Sequence[Filter] | None = None,
        exclude: Sequence[np.ndarray] | None = None,
        kind: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query that pass every filter, minus each query's ``exclude``.
        ``kind``: which of ``query_samples``' kinds the queries are (None: like the
        listings' own vectors). Equal scores come lowest row first, as the exact ranking
        of an evaluation orders them."""
        return ties_to_lowest_row(*self._search(queries, k, cosine, filters, exclude, kind))

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        cosine: bool,
        filters: Sequence[Filter] | None,
        exclude: Sequence[np.ndarray] | None,
        kind: str | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self.index(cosine)
        queries = _unit(queries) if cosine else np.asarray(queries, dtype=np.float32)
        if not filters:
            return index.search(queries, k, None, exclude, kind=kind)
        queries = np.atleast_2d(queries)
        filters, exclude = self._excluded(merged_ranges(filters), exclude, len(queries))
        if not filters:
            return index.search(queries, k, None, exclude, kind=kind)
        part = self._fields
        bounded = self._circle_blocks(index, filters, len(queries))  # before the grid is built
        share = estimated_share(filters, part.base, part.cache)
        if share * self._n > index.filter_exact_below:
            if bounded is not None:
                return self._bounded(index, queries, k, filters, exclude, *bounded)
            structure = self._scan_layout(index, filters, len(queries))
            if structure is not None:
                return self._nearest_clusters(
                    index, queries, k, filters, exclude, structure, index.breadth(share, kind)
                )
        if share < POST_FILTER_SHARE or share * self._n <= index.filter_exact_below:
            return self._filtered(index, queries, k, filters, exclude, kind)
        # most rows pass: the filters are checked on the unfiltered search's best rows
        rows, scores, short = post_filtered(
            lambda n: index.search(queries, n, None, exclude, post_filter=share, kind=kind),
            lambda found: self._passes(filters, found),
            k,
            share,
            exact=index.resolved_kind == "exact",
        )
        if len(short):
            excluded = None if exclude is None else [exclude[i] for i in short]
            rows[short], scores[short] = self._filtered(
                index, queries[short], k, filters, excluded, kind
            )
        return rows, scores

    def _filtered(
        self,
        index: VectorIndex,
        queries: np.ndarray,
        k: int,
        filters: Sequence[Filter],
        exclude: Sequence[np.ndarray] | None,
        kind: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The search with the filters' rows found first."""
        # candidates from a column index are checked row by row: up to an eighth of the
        # catalogue that costs less than evaluating every filter over every row
        few = max(index.filter_exact_below, self._n // 8)
        allowed = self.allowed(filters, few=few, ordered=True)
        unpadded = not isinstance(allowed, OrderedRows) and allowed.dtype == bool
        if unpadded and len(allowed) < index.n_rows:  # rows added meanwhile
            allowed = np.pad(allowed, (0, index.n_rows - len(allowed)))
        return index.search(queries, k, allowed, exclude, kind=kind)

    def _layout(self, index: VectorIndex) -> ClusterBlocks | None:
        """The base table's rows cut into blocks of one of ``index``'s clusters (and one grid
        cell, where the table has coordinates: the grid is built with each cell's rows ordered
        by cluster, again if a filter built it before without them); None for an index
        without clusters or searched exactly, or blocks too small to pay."""
        part = self._fields
        if len(part.base) <= index.filter_exact_below:
            return None
        with self._lock:
            held = self._blocks.get(id(index))
            distances = None  # computed for the sort key, reused by a first layout
            if held is None or held[0] is not index or held[1] is not part.base:
                # the base table is new after adds were merged into it: its rows' clusters
                found = index.clusters()
                clusters, centroids, key = None, None, None
                if found is not None:
                    clusters, centroids = found[0][: len(part.base)], found[1]
                    distances = centroid_distances(clusters, index.vectors, centroids)
                    key = cluster_order_key(clusters, distances)
                held = index, part.base, clusters, centroids, key, None
                self._blocks[id(index)] = held
            _, _, clusters, centroids, key, structure = held
            if clusters is None:
                return None  # an index without clusters
            grid = table_grid(part.base, part.cache, within=key)
            if structure is None or structure.grid is not grid:
                structure = ClusterBlocks.build(clusters, index.vectors, centroids, grid, distances)
                self._blocks[id(index)] = (*held[:-1], structure)
        # a grid ordered by another index's clusters (cosine and dot product on one
        # catalogue) cuts this index's clusters into blocks too small to pay
        return structure if len(structure) <= len(part.base) // _ROWS_PER_BLOCK else None

    def _built_layout(self, index: VectorIndex) -> ClusterBlocks | None:
        """The layout a search over ``index`` built and keeps (None: none yet)."""
        held = self._blocks.get(id(index))
        return None if held is None else held[-1]

    def _scan_layout(
        self, index: VectorIndex, filters: Sequence[Filter], m: int
    ) -> ClusterBlocks | None:
        """The layout for a search of ``m`` queries with ``filters`` and no radius filter,
        reading the nearest clusters; None where that does not apply."""
        if m > _SCANNED_QUERIES or any(isinstance(f, RadiusFilter) for f in filters):
            return None
        return self._layout(index)

    def _circle_blocks(
        self, index: VectorIndex, filters: Sequence[Filter], m: int
    ) -> tuple[RadiusFilter, ClusterBlocks, CircleBlocks] | None:
        """For a search of ``m`` queries with a radius filter over an IVF index: the radius
        filter, the grid's cluster blocks and the circle's blocks; None where a search
        bounded by clusters does not apply."""
        radius = next((f for f in filters if isinstance(f, RadiusFilter)), None)
        if radius is None or m > _SCANNED_QUERIES:
            return None
        structure = self._layout(index)
        if structure is None or structure.grid is None:
            return None
        # the blocks of recent circles, kept: users search around the same few places
        key = (id(structure), radius.lat, radius.lon, radius.radius_km)
        held_circle = self._circles.get(key)
        if held_circle is None or held_circle[0] is not structure:
            found = radius.cells(structure.grid)
            if found is None:
                return None
            held_circle = structure, structure.of_cells(*found)
            if len(self._circles) >= _CIRCLES_KEPT:
                self._circles.clear()
            self._circles[key] = held_circle
        return radius, structure, held_circle[1]

    def _bounded(
        self,
        index: VectorIndex,
        queries: np.ndarray,
        k: int,
        filters: Sequence[Filter],
        exclude: Sequence[np.ndarray] | None,
        radius: RadiusFilter,
        structure: ClusterBlocks,
        circle: CircleBlocks,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The search with a radius filter, query by query, reading the circle's clusters
        by their bound (:func:`~embedrec.index.bounded.bounded_top_k`)."""
        part = self._fields
        order = structure.order
        tests = position_tests(filters, order, part.base, part.cache, circle.positions, radius)

        def scan(
            query: np.ndarray, vectors: np.ndarray, live: np.ndarray, fetch: int
        ) -> tuple[np.ndarray, np.ndarray]:
            return bounded_top_k(query, fetch, structure, circle, tests, vectors, live)[:2]

        extra = self._added_allowed(part, filters)
        return index.search_scanned(queries, k, order, scan, extra, exclude)

    def _nearest_clusters(
        self,
        index: VectorIndex,
        queries: np.ndarray,
        k: int,
        filters: Sequence[Filter],
        exclude: Sequence[np.ndarray] | None,
        structure: ClusterBlocks,
        breadth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The search without a radius filter, query by query, reading the clusters nearest
        each query with the filters tested row by row
        (:func:`~embedrec.index.bounded.nearest_clusters_top_k`): the ``breadth`` lists the
        index itself reads first for these filters and queries, widened as it widens until a
        few times ``k`` rows passed, its rule for trusting its top ``k``."""
        part = self._fields
        order = structure.order
        tests = position_tests(filters, order, part.base, part.cache, lambda: np.arange(len(order)))

        def scan(
            query: np.ndarray, vectors: np.ndarray, live: np.ndarray, fetch: int
        ) -> tuple[np.ndarray, np.ndarray]:
            want = fetch + (TRUSTED - 1) * k
            return nearest_clusters_top_k(
                query, fetch, structure, tests, vectors, live, breadth, WIDEN, want
            )[:2]

        extra = self._added_allowed(part, filters)
        return index.search_scanned(queries, k, order, scan, extra, exclude)

    def _passes(self, filters: Sequence[Filter], rows: np.ndarray) -> np.ndarray:
        """Whether every filter holds at each of ``rows`` (-1: no), in time in their number."""
        part = self._fields
        base = len(part.base)
        passes = np.zeros(len(rows), dtype=bool)
        kept = np.flatnonzero((rows >= 0) & (rows < base))
        for f in filters:
            kept = kept[f.holds(part.base, rows[kept], part.cache)]
        passes[kept] = True
        later = np.flatnonzero(rows >= base)
        added, added_cache = part.added()
        if len(later) and added is not None:
            mask = allowed_mask(filters, added, added_cache)
            inside = later[rows[later] - base < len(mask)]
            passes[inside] = mask[rows[inside] - base]
        return passes

    def _excluded(
        self, filters: Sequence[Filter], exclude: Sequence[np.ndarray] | None, m: int
    ) -> tuple[list[Filter], Sequence[np.ndarray] | None]:
        """The filters without their exclusions of a few ids, which join each query's
        ``exclude`` as rows: found by id, they cost no pass over the catalogue."""
        drops = [f for f in filters if isinstance(f, ExcludeFilter) and len(f.ids) <= _FEW_IDS]
        if not drops:
            return list(filters), exclude
        part = self._fields
        rows = [f.rows(part.base, part.cache) for f in drops]
        added, added_cache = part.added()
        if added is not None:
            dropped = ~allowed_mask(drops, added, added_cache)
            rows.append(np.flatnonzero(dropped) + len(part.base))
        named = np.concatenate(rows)
        if exclude is None:
            exclude = [named] * m
        else:
            exclude = [np.concatenate([np.ravel(e).astype(np.int64), named]) for e in exclude]
        return [f for f in filters if all(f is not d for d in drops)], exclude

    # ------------------------------------------------------------------ changes
    def add(self, table: pd.DataFrame, vectors: np.ndarray, model_rows: np.ndarray) -> np.ndarray:
        """Append listings (replacing live ones with the same id); returns their rows."""
        with self._lock:
            self.remove(table["listing_id"].tolist())
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            start, count = self._n, len(vectors)
            self._reserve(start + count)
            stop = start + count
            self._vectors[start:stop] = vectors
            self._unit[start:stop] = _unit(vectors)
            self._model_rows[start:stop] = np.asarray(model_rows, dtype=np.int64)
            self._live[start:stop] = True
            self._n_live += count
            table = table.reset_index(drop=True)
            self._fields.append(table)
            if self._fields.n_added > max(MERGE_MIN_ROWS, len(self._fields.base) // MERGE_SHARE):
                # one table again (O(rows), every base/64 adds): filters over the added part
                # cost time in its size, which must not grow with the number of writes
                self._fields = _Fields(self._fields.table(), self._schema)
            rows = np.arange(start, stop)
            with _one_thread():
                for cosine, index in self._indexes.items():
                    index.add(_unit(vectors) if cosine else vectors)
            self._n = stop
            # the ids last: readers take no lock, and one that finds a new id must find its
            # row inside ``live`` and ``vectors`` (a follower thread adds while requests read)
            self._added_rows.update(zip(table["listing_id"].tolist(), rows.tolist(), strict=True))
            if self._row_of_model is not None:
                self._map_model_rows(rows)
            return rows

    def _reserve(self, size: int) -> None:
        """Grow the buffers geometrically, so n single adds cost O(n) copies in all."""
        capacity = len(self._vectors)
        if size <= capacity:
            return
        capacity = max(size, int(capacity * 1.5) + 16)

        def grow(array: np.ndarray) -> np.ndarray:
            bigger = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            bigger[: self._n] = array[: self._n]
            return bigger

        self._vectors, self._unit = grow(self._vectors), grow(self._unit)
        self._model_rows, self._live = grow(self._model_rows), grow(self._live)

    def remove(self, ids: Sequence) -> int:
        """Hide listings by id; returns how many were live."""
        with self._lock:
            rows = self.rows_of(list(ids))
            rows = np.unique(rows[rows >= 0])
            if len(rows) == 0:
                return 0
            self._live[rows] = False
            self._n_live -= len(rows)
            if self._row_of_model is not None:
                gone = self._model_rows[rows]
                self._row_of_model[gone[gone >= 0]] = -1
            with _one_thread():
                for index in self._indexes.values():
                    index.remove(rows)
            return len(rows)

    # ------------------------------------------------------------------ compaction
    def compaction_due(self) -> bool:
        """Whether dead rows (removed or replaced listings) exceed the share of live ones
        that :meth:`compacted` should drop (``COMPACT_SHARE``, at least ``COMPACT_MIN_DEAD``)."""
        return self.n_dead > max(COMPACT_MIN_DEAD, COMPACT_SHARE * self._n_live)

    def compacted(self) -> Catalogue:
        """A new catalogue of the live rows only (in row order), its vector indexes built.

        O(live rows). Row numbers change, so the owner swaps the new catalogue in for new
        requests while requests in flight finish on this one, which stays as it is: rows are
        never renumbered under a reader. Compacting when :meth:`compaction_due` keeps the cost
        amortised: at most one live-sized rebuild per ``COMPACT_SHARE`` x live writes.
        """
        with self._lock:
            live = np.flatnonzero(self.live)
            table = self.table.iloc[live]
            vectors, model_rows = self.vectors[live], self.model_rows[live]
            kinds = list(self._indexes)
        fresh = Catalogue(
            table,
            vectors,
            model_rows,
            self.normalized,
            self._exact_below,
            self.query_samples,
            schema=self._schema,
        )
        for cosine in kinds:  # the indexes this one had, built before anyone asks
            fresh.index(cosine)
        if self._row_of_model is not None:
            fresh.rows_of_model_rows(np.zeros(0, dtype=np.int64))
        return fresh


# Exclusions of up to this many ids are dropped from the top answers (found by id, fetching
# that many more) instead of being evaluated over every row.
_FEW_IDS = 1_000
# a filtered search reads the clusters in a compiled loop for up to this many queries (one at
# a time); more share one selection of the rows, or the index's own batched search
_SCANNED_QUERIES = 16
# cluster blocks pay where they hold this many rows on average (a grid ordered by cluster
# within each cell: 47 on the 1M car catalogue); a grid built without clusters holds 1 or 2
_ROWS_PER_BLOCK = 3
# the blocks of this many circles are kept (40 KB for 100 km on the 1M car catalogue, 160 KB
# for 300 km)
_CIRCLES_KEPT = 64


class _Fields:
    """The rows' fields: a base table (converted per column for :meth:`Catalogue.fields`,
    with its filter cache) and the rows added since, as frames and JSON-ready records.

    Readers take the catalogue's current ``_Fields`` once and use that object throughout: a
    merge swaps in a new one and leaves the old one intact for them.
    """

    def __init__(self, base: pd.DataFrame, schema: pd.DataFrame) -> None:
        self.base = base.reset_index(drop=True)
        # columns of integers in the catalogue's schema: answered as integers, whatever type
        # missing values gave the table (pandas makes such a column float64)
        self.integral = {
            c
            for c in schema.columns
            if pd.api.types.is_integer_dtype(schema[c].dtype)
            and not pd.api.types.is_bool_dtype(schema[c].dtype)
        }
        self.days = set(date_columns(base))
        self.columns = {
            c: _json_column(self.base[c], c in self.integral, c in self.days)
            for c in self.base.columns
        }
        self.cache = FilterCache()  # filters' converted columns, living as long as the table
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._frames: list[pd.DataFrame] = []
        self._added: tuple[pd.DataFrame | None, FilterCache] = (None, FilterCache())

    def _plain(self, column: str, value: Any) -> Any:
        if column in self.integral:
            return _integral(plain(value))
        if column in self.days and isinstance(value, pd.Timestamp) and not pd.isna(value):
            return value.date().isoformat()
        return plain(value)

    @property
    def n_added(self) -> int:
        return len(self.records)

    def append(self, table: pd.DataFrame) -> None:
        records = [{c: self._plain(c, v) for c, v in r.items()} for r in table.to_dict("records")]
        with self._lock:
            self._frames.append(table)
            self._added = (None, FilterCache())
            if len(self._frames) > 64:  # a one-row frame per PUT costs ~40 KB: merge them
                self._frames = [pd.concat(self._frames, ignore_index=True)]
        # the records last: a reader that finds a row past the base finds its record
        self.records += records

    def added(self) -> tuple[pd.DataFrame | None, FilterCache]:
        """The added rows as one frame (None: none) with its filter cache."""
        with self._lock:
            if self._frames and self._added[0] is None:
                frame = pd.concat(self._frames, ignore_index=True)
                frame = frame.reindex(columns=self.base.columns)
                self._frames = [frame]  # one frame, not one per add (memory)
                self._added = (frame, FilterCache())
            return self._added

    def table(self) -> pd.DataFrame:
        added = self.added()[0]
        return self.base if added is None else pd.concat([self.base, added], ignore_index=True)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """faiss on one OpenMP thread for a few rows: an IVF add or removal of one row took 10 ms
    with two threads on a busy machine (waking the team), 0.1 ms with one. The setting is the
    calling thread's own (a request thread does not inherit the main thread's)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# float32 rounding of a unit vector's norm stays far below this
UNIT_TOLERANCE = 1e-5


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 2 and len(vectors) == 1:
        # a request's one query: a float costs a fraction of numpy's reductions (5 calls,
        # 40 us of a 0.5 ms filtered search)
        norm = math.sqrt(float(vectors[0] @ vectors[0]))
        return vectors if abs(norm - 1) < UNIT_TOLERANCE else vectors / max(norm, 1e-12)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.all(np.abs(norms - 1) < UNIT_TOLERANCE):
        # unit already (a normalising model): the same array, not a copy of it, so vectors
        # mapped from a file stay one copy in memory for all workers (128 MB at 1M x 32)
        return vectors
    return vectors / np.maximum(norms, 1e-12)


def _integral(value: Any) -> Any:
    """A whole float as the integer it is (a value of an integer column)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _json_column(
    series: pd.Series, integral: bool = False, day: bool = False
) -> Callable[[np.ndarray], list]:
    """The function giving a column's JSON-ready values at an array of rows; ``integral``:
    the column holds integers, whole floats among them (the values a float64 column holds
    beside missing ones); ``day``: timestamps that stand for dates, written as dates."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        # one Python string per row held ~1 GB per worker for the text columns of 1M listings:
        # a column of few values (make, fuel, city) keeps each value once and codes per row,
        # one of many values (ids, titles) is decoded from its Arrow buffers row by row
        codes, uniques = pd.factorize(series, use_na_sentinel=False)
        codes = codes.astype(np.int32)  # half the default intp
        if len(uniques) <= len(series) // FEW_VALUES_SHARE:
            values = np.array([plain(v) for v in uniques], dtype=object)
            return lambda rows: values[codes[rows]].tolist()
        strings = pa.array(series.array)
        chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
        if all(pa.types.is_string(c.type) or pa.types.is_large_string(c.type) for c in chunks):
            return _ArrowStrings(chunks)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        # ISO 8601 strings made per slice by NumPy (pandas Timestamps cost ~10 us each)
        aware = getattr(series.dtype, "tz", None) is not None
        values = (series.dt.tz_convert("UTC").dt.tz_localize(None) if aware else series).to_numpy()
        suffix = "+00:00" if aware else ""

        def iso(rows: np.ndarray) -> list:
            v = values[rows]
            # whole seconds as Timestamp.isoformat writes them, finer units where present
            if day:
                text = np.datetime_as_string(v, unit="D").tolist()
                return [None if t == "NaT" else t for t in text]
            whole = (v.astype("datetime64[s]") == v) | np.isnat(v)
            text = np.datetime_as_string(v, unit="s" if whole.all() else "auto").tolist()
            return [None if t == "NaT" else t + suffix for t in text]

        return iso
    exact = pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype)
    if exact and not series.hasnans:
        values = series.to_numpy()
        return lambda rows: values[rows].tolist()
    if pd.api.types.is_float_dtype(series.dtype) and isinstance(series.dtype, np.dtype):
        values = series.to_numpy()

        def floats(rows: np.ndarray) -> list:
            return [None if x != x else x for x in values[rows].tolist()]  # NaN is missing

        def integers(rows: np.ndarray) -> list:
            return [None if x != x else _integral(x) for x in values[rows].tolist()]

        return integers if integral else floats
    values = series.to_numpy(dtype=object)
    return lambda rows: [x if type(x) is str else plain(x) for x in values[rows]]


class _ArrowStrings:
    """A string column's values at given rows, decoded from its Arrow buffers on demand (the
    buffers are the table's own: nothing is held per row)."""

    def __init__(self, chunks: list[pa.Array]) -> None:
        self._starts = np.cumsum([0, *(len(c) for c in chunks)]).tolist()
        # per chunk: its value offsets and bytes as memoryviews (indexing one gives a Python
        # int, ~3x faster than a NumPy scalar), its validity (None: no missing value)
        self._parts: list[tuple[memoryview, memoryview, np.ndarray | None]] = []
        for chunk in chunks:
            _, offsets, data = chunk.buffers()
            width = "q" if pa.types.is_large_string(chunk.type) else "i"
            offsets = memoryview(offsets).cast(width)[chunk.offset : chunk.offset + len(chunk) + 1]
            valid = chunk.is_valid().to_numpy(zero_copy_only=False) if chunk.null_count else None
            self._parts.append((offsets, memoryview(data if data is not None else b""), valid))

    def __call__(self, rows: np.ndarray) -> list:
        out: list = []
        starts, parts = self._starts, self._parts
        for row in rows.tolist():
            chunk = bisect.bisect_right(starts, row) - 1
            offsets, data, valid = parts[chunk]
            i = row - starts[chunk]
            if valid is not None and not valid[i]:
                out.append(None)
            else:
                out.append(str(data[offsets[i] : offsets[i + 1]], "utf-8"))
        return out
