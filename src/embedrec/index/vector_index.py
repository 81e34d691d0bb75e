"""Top-k inner-product search over listing vectors, with filters, exclusions, add and remove.

Small catalogues are searched exactly with numpy; large ones with a faiss IVF-Flat index whose
``nprobe`` is calibrated at build time to reach a recall target against exact search, for
queries like the listing vectors and, apart, for each other kind of query given (a model's
user or similar-listing queries lie elsewhere in the space and need a wider search). Row ids
are the positions of the vectors as given to :meth:`VectorIndex.build` and :meth:`VectorIndex.add`
and stay stable across removals, saves and loads.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from embedrec.data.atomic import write_atomic
from embedrec.index.grid import OrderedRows
from embedrec.ranking import drop_excluded, empty_result, search_rows

KINDS = ("auto", "exact", "ivf", "hnsw")
FORMAT_VERSION = 1
_META = "index.json"
_VECTORS = "vectors.npy"
_FAISS = "index.faiss"
# faiss's OpenMP threads per search, where a program chose them (a server: one per request).
# OpenMP keeps the setting per thread, so each searching thread applies it itself: a request
# thread does not inherit what the main thread set.
_search_threads: int | None = None
# Scattered rows whose vectors stay in cache: up to this many, an exact search over a
# filter's rows (0.3-0.5 ms at 22-37k rows here) costs less than an IVF probe with the filter
# inside; 60,000 took 2.3 ms. The default of ``filter_exact_below``.
EXACT_CACHED = 32_768
# (query, vectors in an order, their rows' live flags or empty, fetch) -> the best fetch
# (rows, scores), padded with -1 / -inf: a search of an index's rows in that order
Scan = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def set_search_threads(threads: int | None) -> None:
    """Use ``threads`` OpenMP threads for every faiss search from any thread (None: faiss's
    default, per thread)."""
    global _search_threads
    _search_threads = threads
    if threads is not None:
        faiss.omp_set_num_threads(threads)


def _apply_search_threads() -> None:
    if _search_threads is not None and faiss.omp_get_max_threads() != _search_threads:
        faiss.omp_set_num_threads(_search_threads)


class _ReadWriteLock:
    """Many concurrent readers or one writer; a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class VectorIndex:
    """Inner-product top-k over float32 vectors (pass L2-normalised vectors for cosine).

    ``kind="auto"`` searches exactly below ``exact_below`` rows and uses IVF-Flat above;
    ``"exact"``, ``"ivf"`` and ``"hnsw"`` force one. Approximate kinds are tuned at build time
    so that recall@10 against exact search on vectors drawn from the data is at least
    ``recall_target``; other kinds of queries, given to :meth:`build` by name, get a search
    breadth of their own (``breadths``), chosen the same way, which ``search(kind=...)`` uses.
    Filtered searches that keep at most ``filter_exact_below`` rows (or that would scan about
    as many rows through the index) are answered exactly.
    Searches may run concurrently; add/remove/build take an exclusive lock.
    """

    def __init__(
        self,
        exact_below: int = 50_000,
        recall_target: float = 0.99,
        kind: str = "auto",
        seed: int = 0,
        *,
        filter_exact_below: int = EXACT_CACHED,
        calibration_queries: int = 500,
        hnsw_m: int = 16,
        nlist_factor: float = 2.0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not 0 < recall_target <= 1:
            raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
        self.exact_below = int(exact_below)
        self.recall_target = float(recall_target)
        self.kind = kind
        self.seed = int(seed)
        self.filter_exact_below = int(filter_exact_below)
        self.calibration_queries = int(calibration_queries)
        self.hnsw_m = int(hnsw_m)
        self.nlist_factor = float(nlist_factor)
        self.nprobe = 0  # IVF probes (HNSW: efSearch) chosen at build time; 0 for exact
        self.nlist = 0
        self.calibrated_recall = float("nan")
        # per named kind of query: its own probes, and the recall they reached at build time
        self.breadths: dict[str, int] = {}
        self.calibrated_recalls: dict[str, float] = {}
        self._lock = _ReadWriteLock()
        self._buffer = np.zeros((0, 0), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        self._n = 0
        self._n_deleted = 0
        self._index: faiss.Index | None = None
        self._resolved = "exact"
        # the vectors in a filter grid's order: (order, inverse, vectors, live), or None
        self._ordered: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._ordered_lock = threading.Lock()
        # an unfiltered search's parameters by breadth, made once: making them took about as
        # long as a tenth of the search of one query at 1M listings
        self._plain_params: dict[tuple[str, int], faiss.SearchParameters] = {}

    # ----------------------------------------------------------------- properties

    @property
    def resolved_kind(self) -> str:
        """The search structure in use: ``"exact"``, ``"ivf"`` or ``"hnsw"``."""
        return self._resolved

    @property
    def dim(self) -> int:
        return self._buffer.shape[1]

    @property
    def n_rows(self) -> int:
        """Rows ever stored, removed ones included: the next added row gets this id."""
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors (n_rows, d), float32, removed rows included; do not modify."""
        return self._buffer[: self._n]

    @property
    def live(self) -> np.ndarray:
        """Boolean mask over rows: False for removed rows."""
        return self._live[: self._n]

    def __len__(self) -> int:
        """Number of live (not removed) rows."""
        return self._n - self._n_deleted

    # ----------------------------------------------------------------- building

    def build(
        self, vectors: np.ndarray, queries: Mapping[str, np.ndarray] | None = None
    ) -> VectorIndex:
        """Index ``vectors`` (n, d) as rows 0..n-1, replacing any previous content.

        ``queries``: samples of other kinds of queries by name (e.g. ``"user"``); an
        approximate index calibrates a search breadth for each, which searches given that
        ``kind`` use."""
        x = _as_matrix(vectors)
        queries = {name: _as_matrix(q) for name, q in (queries or {}).items() if len(q)}
        n, d = x.shape
        for name, q in queries.items():
            if q.shape[1] != d:
                raise ValueError(f"queries {name!r} have {q.shape[1]} dimensions, vectors {d}")
        kind = self.kind
        if kind == "auto":
            kind = "exact" if n < self.exact_below else "ivf"
        if kind != "exact" and n < 2:
            kind = "exact"
        with self._lock.write():
            # a read-only array (vectors mapped from a file) is kept, not copied: no one
            # changes it, the first add copies it (``_reserve``), and workers mapping the same
            # file share its pages; a writable one is copied, as its owner may change it
            frozen = not x.flags.writeable and x.dtype == np.float32 and x.flags.c_contiguous
            self._buffer = x if frozen else np.array(x, dtype=np.float32, order="C", copy=True)
            self._live = np.ones(n, dtype=bool)
            self._n, self._n_deleted = n, 0
            self._resolved = kind
            self._ordered = None
            self.nprobe, self.nlist, self._index = 0, 0, None
            self.calibrated_recall = 1.0
            self.breadths, self.calibrated_recalls = {}, {}
            if kind == "ivf":
                self._build_ivf(self._buffer, queries)
            elif kind == "hnsw":
                self._build_hnsw(self._buffer, queries)
        return self

    def _build_ivf(self, x: np.ndarray, queries: Mapping[str, np.ndarray]) -> None:
        n, d = x.shape
        rng = np.random.default_rng(self.seed)
        # k-means training and assigning every row cost O(n * nlist): 2*sqrt(n) lists keep a
        # 1M-row build well under a minute on two cores while lists stay short enough (~500
        # rows) for sub-millisecond probes; ~40 training points per centroid suffice.
        nlist = max(1, min(int(self.nlist_factor * math.sqrt(n)), n // 40 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        n_train = min(n, 40 * nlist)
        sample = x[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else x
        index.train(sample)
        index.add_with_ids(x, np.arange(n, dtype=np.int64))
        self._index, self.nlist = index, nlist
        self._calibrate(x, rng, queries, lambda p: faiss.SearchParametersIVF(nprobe=p), nlist)
        index.nprobe = self.nprobe

    def _build_hnsw(self, x: np.ndarray, queries: Mapping[str, np.ndarray]) -> None:
        rng = np.random.default_rng(self.seed)
        index = faiss.IndexHNSWFlat(x.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        self._index = index
        self._calibrate(
            x, rng, queries, lambda p: faiss.SearchParametersHNSW(efSearch=p), 4096, start=16
        )
        index.hnsw.efSearch = self.nprobe

    def _calibrate(
        self, x, rng, queries: Mapping[str, np.ndarray], make_params, upper: int, start: int = 1
    ) -> None:
        """The smallest search breadth whose recall@10 meets the target: on sampled data
        vectors (``nprobe``) and on each kind of ``queries`` (``breadths``)."""
        n = len(x)
        k = min(10, n - 1)
        m = min(self.calibration_queries, n)
        picked = rng.choice(n, m, replace=False)
        sample = x[picked]
        # Each sampled row is left out of its own answers, so it acts like an unseen query
        # from the data's distribution (the row itself would be a trivially easy hit).
        exact, _ = search_rows(sample, x, k + 1)
        truth = _without_self(exact, picked, k)
        # Held-out rows read ~0.003 more optimistic than fresh queries (measured at 1M rows)
        # and a few hundred queries carry about as much noise: aim halfway to perfect recall.
        aim = min(1.0, self.recall_target + (1 - self.recall_target) / 2)

        def recall(p: int) -> float:
            _, found = self._index.search(sample, k + 1, params=make_params(p))
            return _recall(_without_self(found, picked, k), truth)

        self.nprobe, self.calibrated_recall = _smallest_breadth(recall, aim, upper, start)
        for name, q in queries.items():
            q = q[: self.calibration_queries]
            truth_q, _ = search_rows(q, x, k)

            def recall_q(p: int, q=q, truth_q=truth_q) -> float:
                _, found = self._index.search(q, k, params=make_params(p))
                return _recall(found, truth_q)

            found = _smallest_breadth(recall_q, aim, upper, start)
            self.breadths[name], self.calibrated_recalls[name] = found

    # ----------------------------------------------------------------- mutation

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append rows without a rebuild; returns their row ids (continuing the numbering)."""
        x = _as_matrix(vectors)
        with self._lock.write():
            if self._buffer.shape[1] == 0 and self._n == 0:
                self._buffer = np.zeros((0, x.shape[1]), dtype=np.float32)
            if x.shape[1] != self.dim:
                raise ValueError(f"vectors have {x.shape[1]} dims, the index has {self.dim}")
            start, stop = self._n, self._n + len(x)
            self._reserve(stop)
            self._buffer[start:stop] = x
            self._live[start:stop] = True
            rows = np.arange(start, stop, dtype=np.int64)
            if self._index is not None and len(x):
                if self._resolved == "ivf":
                    self._index.add_with_ids(self._buffer[start:stop], rows)
                else:  # HNSW numbers rows in insertion order, which is ours
                    self._index.add(self._buffer[start:stop])
            self._n = stop
        return rows

    def _reserve(self, size: int) -> None:
        writable = self._buffer.flags.writeable and not isinstance(self._buffer, np.memmap)
        capacity = len(self._buffer)
        if size <= capacity and writable and self._live.flags.writeable:
            return
        # Doubling keeps a stream of small adds amortised O(1) per row; a loaded memmap is
        # read-only, so the first add copies it into memory.
        new_capacity = max(size, 2 * capacity, 1024)
        buffer = np.zeros((new_capacity, self.dim), dtype=np.float32)
        buffer[: self._n] = self._buffer[: self._n]
        live = np.zeros(new_capacity, dtype=bool)
        live[: self._n] = self._live[: self._n]
        self._buffer, self._live = buffer, live

    def remove(self, rows: np.ndarray | Sequence[int]) -> int:
        """Remove rows without a rebuild; they are never returned again. Returns how many
        were live. Ids of other rows do not change."""
        rows = np.unique(np.asarray(rows, dtype=np.int64).ravel())
        with self._lock.write():
            if len(rows) and (rows[0] < 0 or rows[-1] >= self._n):
                raise IndexError(f"row ids must be in [0, {self._n}), got {rows[0]}..{rows[-1]}")
            rows = rows[self._live[rows]]
            if not len(rows):
                return 0
            if not self._live.flags.writeable:
                self._live = self._live.copy()
            self._live[rows] = False
            self._n_deleted += len(rows)
            if self._ordered is not None:
                order, inverse, _, live = self._ordered
                live[inverse[rows[rows < len(order)]]] = False
            if self._resolved == "ivf":
                self._index.remove_ids(rows)
            # HNSW cannot delete: removed rows are masked out at search time instead.
        return len(rows)

    # ----------------------------------------------------------------- search

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        exclude: Sequence[np.ndarray] | None = None,
        post_filter: float | None = None,
        kind: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product for each query.

        ``allowed`` (a filter) is a boolean mask over all rows, an array of row numbers (each
        at most once, any order) or :class:`~embedrec.index.grid.OrderedRows` (rows a map grid
        found, searched exactly from a copy of the vectors in the grid's order, made on first
        use); ``exclude`` gives, per query, rows to drop. Removed rows are never returned.
        Returns (rows int64, scores float32), each (m, k), best first, padded with -1 / -inf
        where fewer rows qualify. ``post_filter``: the share of rows a filter that the caller
        checks on the answer keeps; an approximate index then searches as wide as for such a
        filter and returns what it finds, ``k`` rows or fewer, for the caller to decide.
        ``kind``: the kind of query, whose breadth :meth:`build` calibrated (None or one it
        did not: the listing vectors' breadth).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        m = len(q)
        if exclude is not None and len(exclude) != m:
            raise ValueError(f"exclude has {len(exclude)} entries for {m} queries")
        with self._lock.read():
            n = self._n
            if q.ndim != 2 or (n and q.shape[1] != self.dim):
                raise ValueError(f"queries must be (m, {self.dim}), got {q.shape}")
            if k <= 0 or n == 0 or m == 0:
                return empty_result(m, max(k, 0))
            if isinstance(allowed, OrderedRows):
                # read in sequence, up to 100,000 rows score faster than through the index
                if len(allowed) <= _ORDERED_EXACT * self.filter_exact_below:
                    return self._search_ordered(q, k, allowed, _exclusions(exclude, m, n), n)
                allowed = allowed.rows()
            keep = None  # the rows a filter keeps, as a mask or as row numbers
            if allowed is not None:
                keep = self._live_allowed(np.asarray(allowed), n)
            elif self._n_deleted and self._resolved != "ivf":
                keep = self._live[:n]
            excl = _exclusions(exclude, m, n)
            if self._index is None:
                return search_rows(q, self._buffer[:n], k, _as_rows(keep), excl)
            n_keep = n - self._n_deleted if keep is None else _count(keep)
            if post_filter is not None:
                breadth = self.breadth(max(post_filter, 1 / n), kind)
                return self._approximate(q, k, keep, excl, breadth, n, 0)
            breadth = self.breadth(max(n_keep, 1) / n, kind)
            if allowed is not None and self._filter_is_exact(n_keep):
                return search_rows(q, self._buffer[:n], k, _as_rows(keep), excl)
            return self._approximate(q, k, keep, excl, breadth, n, n_keep)

    def _search_ordered(
        self, q: np.ndarray, k: int, allowed: OrderedRows, excl: list | None, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over ``allowed``: its positions scored from the vectors in its order,
        its extra rows where they lie, the two answers merged."""
        vectors, live = self._ordered_copy(allowed.order)
        positions, extra = allowed.positions, np.asarray(allowed.extra, dtype=np.int64)
        if len(extra) and (extra.min() < 0 or extra.max() >= n):
            raise ValueError(f"allowed rows must lie in [0, {n})")
        if self._n_deleted:
            positions, extra = positions[live[positions]], extra[self._live[extra]]
        fetch = k + (max(len(e) for e in excl) if excl else 0)
        found, scores = search_rows(q, vectors, fetch, positions)
        found = np.where(found >= 0, allowed.order[np.maximum(found, 0)], -1)
        return self._merged(q, k, found, scores, extra, excl, n)

    def search_scanned(
        self,
        queries: np.ndarray,
        k: int,
        order: np.ndarray,
        scan: Scan,
        extra: np.ndarray,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` per query of the rows that ``scan(query, vectors, live, fetch)``
        finds (its best ``fetch`` rows and their scores, reading the vectors and live flags
        of the rows in ``order``; live empty when every row is) and of the ``extra`` rows,
        minus each query's ``exclude``."""
        q = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
        if exclude is not None and len(exclude) != len(q):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(q)} queries")
        with self._lock.read():
            n = self._n
            if q.shape[1] != self.dim:
                raise ValueError(f"queries must be (m, {self.dim}), got {q.shape}")
            if k <= 0 or n == 0 or len(q) == 0:
                return empty_result(len(q), max(k, 0))
            excl = _exclusions(exclude, len(q), n)
            vectors, live = self._ordered_copy(order)
            if self._n_deleted:
                extra = extra[self._live[extra]]
            else:
                live = live[:0]
            fetch = k + (max(len(e) for e in excl) if excl else 0)
            # filled row by row: np.stack cost more than a small scan's set-up
            rows = np.empty((len(q), fetch), dtype=np.int64)
            scores = np.empty((len(q), fetch), dtype=np.float32)
            for i, query in enumerate(q):
                rows[i], scores[i] = scan(query, vectors, live, fetch)
            return self._merged(q, k, rows, scores, extra, excl, n)

    def _merged(
        self,
        q: np.ndarray,
        k: int,
        found: np.ndarray,
        scores: np.ndarray,
        extra: np.ndarray,
        excl: list | None,
        n: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``found`` rows (and ``scores``) merged with the best of ``extra`` rows, minus
        each query's exclusions: the top ``k``."""
        fetch = found.shape[1]
        if len(extra):
            more, more_scores = search_rows(q, self._buffer[:n], fetch, extra)
            found, scores = np.hstack([found, more]), np.hstack([scores, more_scores])
            best = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
            found = np.take_along_axis(found, best, 1)
            scores = np.take_along_axis(scores, best, 1)
        if excl:
            return drop_excluded(found, scores, excl, k)
        return found[:, :k], scores[:, :k]

    def _ordered_copy(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and live flags of rows ``order``, in that order: kept for the last
        order asked for (one grid per catalogue table), so each is copied once."""
        with self._ordered_lock:
            held = self._ordered
            if held is None or held[0] is not order:
                if len(order) and (order.min() < 0 or order.max() >= self._n):
                    raise ValueError(f"the order's rows must lie in [0, {self._n})")
                inverse = np.empty(len(order), dtype=np.int64)
                inverse[order] = np.arange(len(order))
                held = (order, inverse, self._buffer[order], self._live[order])
                self._ordered = held
            return held[2], held[3]

    def _live_allowed(self, allowed: np.ndarray, n: int) -> np.ndarray:
        """The live part of a filter given as a boolean mask or as distinct row numbers."""
        if allowed.dtype == bool:
            if allowed.shape != (n,):
                raise ValueError(f"allowed must be a mask of {n} rows, got {allowed.shape}")
            return allowed & self._live[:n] if self._n_deleted else allowed
        if not (np.issubdtype(allowed.dtype, np.integer) and allowed.ndim == 1):
            raise ValueError(f"allowed must be a boolean mask or row numbers, got {allowed.dtype}")
        if len(allowed) and (allowed.min() < 0 or allowed.max() >= n):
            raise ValueError(f"allowed rows must lie in [0, {n})")
        return allowed[self._live[allowed]] if self._n_deleted else allowed

    def clusters(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's IVF list (-1: removed) and the lists' centroids; None for an index
        without lists (exact, HNSW)."""
        with self._lock.read():
            if self._resolved != "ivf" or self._index is None:
                return None
            ivf = faiss.extract_index_ivf(self._index)
            of_row = np.full(self._n, -1, dtype=np.int64)
            for cluster in range(ivf.nlist):
                size = ivf.invlists.list_size(cluster)
                if size:
                    ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(cluster), size)
                    of_row[ids] = cluster
            return of_row, ivf.quantizer.reconstruct_n(0, ivf.nlist)

    def filter_path(self, n_allowed: int) -> str:
        """``"exact"`` or ``"index"``: how a filter keeping ``n_allowed`` rows is searched."""
        exact = self._index is None or self._filter_is_exact(n_allowed)
        return "exact" if exact else "index"

    def _filter_is_exact(self, n_keep: int) -> bool:
        # Few kept rows: exact search over them is cheap and complete. Otherwise the index with
        # the filter inside; its breadth is capped at all lists, where IVF is exact as well.
        return n_keep <= self.filter_exact_below

    def breadth(self, fraction: float, kind: str | None = None) -> int:
        """How many lists (HNSW: efSearch) a search of queries of ``kind`` with a filter
        keeping ``fraction`` of the rows reads first."""
        # A filter keeping a fraction f of rows leaves ~f of each probed list usable, so probing
        # ~1/sqrt(f) times more lists restores the candidate pool (checked in the benchmark).
        upper = self.nlist if self._resolved == "ivf" else 4096
        nprobe = self.breadths.get(kind, self.nprobe) if kind is not None else self.nprobe
        return min(upper, math.ceil(nprobe / math.sqrt(fraction)))

    def _approximate(self, q, k, keep, excl, breadth, n, n_keep):
        """The index's search, probing ``breadth`` lists at first, and wider for queries that
        found too few of the ``n_keep`` rows that qualify (0: no wider search)."""
        fetch = k + (max(len(e) for e in excl) if excl else 0)
        bits = None if keep is None else np.packbits(_as_mask(keep, n), bitorder="little")
        # The probed lists' best rows are trusted once they hold a few times k rows that
        # pass: a filter at odds with the query (old cars for a new one) leaves fewer in the
        # lists near it. Such a query probes four times as many lists (scanning only those it
        # adds), up to all of them, where IVF is exact; unless an exact search over the
        # filter's rows costs less (``_SCAN_PER_EXACT``): then, as for HNSW, which cannot
        # widen that far, its rows are searched exactly. Filters never cost completeness.
        want = fetch + (TRUSTED - 1) * k if keep is not None else fetch
        rows, scores = self._probe(q, want, bits, breadth, n)
        need = min(want if keep is not None else k, n_keep)
        while True:
            redo = np.flatnonzero((rows >= 0).sum(axis=1) < need)
            if not len(redo):
                break
            wider = min(self.nlist, WIDEN * breadth)
            scan = (wider - breadth) * n / max(self.nlist, 1)  # rows in the lists to add
            exact_cheaper = n_keep <= EXACT_CACHED and scan > _SCAN_PER_EXACT * n_keep
            if self._resolved == "ivf" and breadth < wider and not exact_cheaper:
                more = self._probe_further(q[redo], want, bits, breadth, wider, n)
                rows[redo], scores[redo] = _best_of(rows[redo], scores[redo], *more)
                breadth = wider
            else:
                rows[redo], scores[redo] = search_rows(
                    q[redo], self._buffer[:n], want, _as_rows(keep)
                )
                break
        if excl:
            return drop_excluded(rows, scores, excl, k)
        return rows[:, :k], scores[:, :k]

    def _probe(
        self, q: np.ndarray, fetch: int, bits: np.ndarray | None, breadth: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The index's top ``fetch`` over the rows set in ``bits`` (a little-endian bitmap of
        ``n`` rows; None: all), probing ``breadth`` lists (HNSW: efSearch)."""
        params = selector = None
        if bits is not None:
            selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
            params = self._search_params(breadth, fetch, selector)
        elif breadth != self.nprobe:
            key = (self._resolved, breadth if self._resolved == "ivf" else max(breadth, fetch))
            params = self._plain_params.get(key)
            if params is None:
                params = self._plain_params[key] = self._search_params(breadth, fetch, None)
        _apply_search_threads()
        scores, rows = self._index.search(q, fetch, params=params)
        del params, selector  # the selector reads ``bits``, which the caller keeps alive
        rows = rows.astype(np.int64, copy=False)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32, copy=False)
        return rows, scores

    def _search_params(
        self, breadth: int, fetch: int, selector: faiss.IDSelector | None
    ) -> faiss.SearchParameters:
        if self._resolved == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=breadth)
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(breadth, fetch))

    def _probe_further(
        self, q: np.ndarray, fetch: int, bits: np.ndarray | None, probed: int, breadth: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_probe` at ``breadth``, over only the lists beyond the nearest ``probed``
        (IVF): a query that widens never scans a list twice."""
        centroid_scores, lists = self._index.quantizer.search(q, breadth)
        lists = np.ascontiguousarray(lists[:, probed:])
        centroid_scores = np.ascontiguousarray(centroid_scores[:, probed:])
        selector = None if bits is None else faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=breadth - probed)
        scores = np.empty((len(q), fetch), dtype=np.float32)
        rows = np.empty((len(q), fetch), dtype=np.int64)
        _apply_search_threads()
        self._index.search_preassigned_c(
            len(q),
            faiss.swig_ptr(q),
            fetch,
            faiss.swig_ptr(lists),
            faiss.swig_ptr(centroid_scores),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(rows),
            False,
            params,
        )
        del params, selector  # the selector reads ``bits``, which the caller keeps alive
        return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32, copy=False)

    # ----------------------------------------------------------------- persistence

    def save(self, directory: Path | str) -> None:
        """Write the index to ``directory`` (faiss index, vectors .npy, JSON metadata).

        Each file is replaced atomically; the metadata is written last and records the row
        count, so a reader never pairs new vectors with an old description.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            n = self._n
            write_atomic(directory / _VECTORS, lambda path: np.save(path, self._buffer[:n]))
            if self._index is not None:
                write_atomic(
                    directory / _FAISS, lambda path: faiss.write_index(self._index, str(path))
                )
            elif (directory / _FAISS).exists():
                (directory / _FAISS).unlink()
            meta = {
                "format_version": FORMAT_VERSION,
                "kind": self._resolved,
                "requested_kind": self.kind,
                "n_rows": n,
                "dim": self.dim,
                "nprobe": self.nprobe,
                "nlist": self.nlist,
                "exact_below": self.exact_below,
                "filter_exact_below": self.filter_exact_below,
                "recall_target": self.recall_target,
                "calibrated_recall": self.calibrated_recall,
                "breadths": self.breadths,
                "calibrated_recalls": self.calibrated_recalls,
                "seed": self.seed,
                "hnsw_m": self.hnsw_m,
                "nlist_factor": self.nlist_factor,
                "deleted_rows": np.flatnonzero(~self._live[:n]).tolist(),
            }
            text = json.dumps(meta, indent=1)
            write_atomic(directory / _META, lambda path: path.write_bytes(text.encode()))

    @classmethod
    def load(cls, directory: Path | str, mmap: bool = True) -> VectorIndex:
        """Read an index written by :meth:`save`; ``mmap`` maps the vectors read-only."""
        directory = Path(directory)
        meta = json.loads((directory / _META).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported index format {meta.get('format_version')!r}")
        vectors = np.load(directory / _VECTORS, mmap_mode="r" if mmap else None)
        if vectors.shape != (meta["n_rows"], meta["dim"]) or vectors.dtype != np.float32:
            raise ValueError(
                f"{directory / _VECTORS} holds {vectors.shape} {vectors.dtype}, "
                f"metadata says ({meta['n_rows']}, {meta['dim']}) float32"
            )
        self = cls(
            exact_below=meta["exact_below"],
            recall_target=meta["recall_target"],
            kind=meta["requested_kind"],
            seed=meta["seed"],
            filter_exact_below=meta["filter_exact_below"],
            hnsw_m=meta["hnsw_m"],
            nlist_factor=meta["nlist_factor"],
        )
        self._buffer = vectors
        self._n = len(vectors)
        self._live = np.ones(self._n, dtype=bool)
        deleted = np.asarray(meta["deleted_rows"], dtype=np.int64)
        self._live[deleted] = False
        self._n_deleted = len(deleted)
        self._resolved, self.nprobe, self.nlist = meta["kind"], meta["nprobe"], meta["nlist"]
        self.calibrated_recall = meta["calibrated_recall"]
        self.breadths = {str(k): int(v) for k, v in meta.get("breadths", {}).items()}
        self.calibrated_recalls = meta.get("calibrated_recalls", {})
        if self._resolved != "exact":
            index = faiss.read_index(str(directory / _FAISS))
            if index.ntotal != self._n - (self._n_deleted if self._resolved == "ivf" else 0):
                raise ValueError(f"{directory / _FAISS} does not match {directory / _META}")
            if self._resolved == "ivf":
                faiss.extract_index_ivf(index).nprobe = self.nprobe
            else:
                index.hnsw.efSearch = self.nprobe
            self._index = index
        return self


# --------------------------------------------------------------------- helpers


# Rows given in a grid's order are searched exactly up to this many times
# ``filter_exact_below``: 100,000 rows read in sequence take ~0.5 ms for one query.
_ORDERED_EXACT = 3
# An IVF probe with a filter reads a row in about half the time an exact search over the
# filter's scattered rows scores one while their vectors stay in cache (``EXACT_CACHED``; 3
# to 5 times longer beyond): a filtered search keeping that few rows widens while the lists
# it would add hold fewer than this many times the filter's rows, else searches them exactly.
_SCAN_PER_EXACT = 1.8
# An approximate search's best k rows that pass a filter are trusted once it found this many
# times k that pass: a filter at odds with the query leaves few near it, and the best of those
# may be worse than rows a wider search finds.
TRUSTED = 8
# a filtered search short of rows that pass reads this many times as many lists
WIDEN = 4


def _smallest_breadth(
    recall: Callable[[int], float], aim: float, upper: int, start: int
) -> tuple[int, float]:
    """The smallest breadth in [start, upper] whose ``recall`` reaches ``aim`` (or ``upper``),
    by doubling then bisection; and its recall."""
    low, high = 0, min(start, upper)
    high_recall = recall(high)
    while high_recall < aim and high < upper:
        low, high = high, min(2 * high, upper)
        high_recall = recall(high)
    while high - low > 1 and high > start:
        mid = (low + high) // 2
        r = recall(mid)
        if r >= aim:
            high, high_recall = mid, r
        else:
            low = mid
    return high, high_recall


def _best_of(
    rows: np.ndarray, scores: np.ndarray, more: np.ndarray, more_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the best ``rows.shape[1]`` of two answers over disjoint rows."""
    rows, scores = np.hstack([rows, more]), np.hstack([scores, more_scores])
    best = np.argsort(-scores, axis=1, kind="stable")[:, : more.shape[1]]
    return np.take_along_axis(rows, best, 1), np.take_along_axis(scores, best, 1)


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity")
    return x


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    valid = truth >= 0
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1) & valid
    return float(hits.sum() / max(valid.sum(), 1))


def _without_self(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    # A stable sort on "is self" moves the query's own row to the end without reordering.
    order = np.argsort(rows == own[:, None], axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1)[:, :k]


def _exclusions(exclude: Sequence[np.ndarray] | None, m: int, n: int) -> list[np.ndarray] | None:
    if exclude is None:
        return None
    out = [np.unique(np.asarray(e, dtype=np.int64).ravel()) for e in exclude]
    out = [e[(e >= 0) & (e < n)] for e in out]
    return out if any(len(e) for e in out) else None


def _count(keep: np.ndarray) -> int:
    return int(np.count_nonzero(keep)) if keep.dtype == bool else len(keep)


def _as_rows(keep: np.ndarray | None) -> np.ndarray | None:
    return np.flatnonzero(keep) if keep is not None and keep.dtype == bool else keep


def _as_mask(keep: np.ndarray, n: int) -> np.ndarray:
    if keep.dtype == bool:
        return keep
    mask = np.zeros(n, dtype=bool)
    mask[keep] = True
    return mask
