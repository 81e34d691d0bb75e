"""Retrieval over a catalogue: similar listings, recommendations, sessions, embeddings.

A :class:`Retriever` joins a fitted model to a :class:`~embedrec.index.catalogue.Catalogue`
(the listings a query may return, with their vectors, fields, filters and vector index). It
asks the model only what every model answers (see ``models/base.py``), so it never decides by
model type. Queries return :class:`Results` and raise :class:`UnknownIdError` for ids that
nobody knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from embedrec.data.errors import DataError, shown
from embedrec.data.ids import IdMap
from embedrec.data.jsonable import plain
from embedrec.index.bounded import compile_scan
from embedrec.index.catalogue import Catalogue
from embedrec.index.filters import Filter, filters_from_mapping, parse_filter
from embedrec.models.base import RecModel, positive_int
from embedrec.ranking import empty_result, top_k_of_scores
from embedrec.retrieval.batch import (
    CHUNK_SIZE,
    chunk_starts,
    hits_schema,
    hits_table,
    id_type,
    output_path,
    write_chunks,
)
from embedrec.retrieval.results import Hit, Results, UnknownListingError, UnknownUserError

FilterSpec = Sequence[str | Filter] | Mapping[str, Any] | None
# the kinds of queries whose vector-index breadth is calibrated apart from the listings' own
SIMILAR, USER = "similar", "user"
# a model that scores pairs ranks users in blocks of at most this many scores (64 MB)
MAX_SCORES = 2**24


class Written(NamedTuple):
    """What a batch output wrote: the file, the queries ranked and the rows written."""

    path: Path
    queries: int
    rows: int


def embed_table(
    model: RecModel, listing_ids: IdMap, table: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors of the listings in ``table`` that ``model`` can embed.

    Returns (vectors of the embeddable rows, their model rows (-1: new), a bool mask of the
    embeddable rows of ``table``): a feature model embeds every row, others only the listings
    they were trained on.
    """
    rows = listing_ids.indices(table["listing_id"])
    known = model.embeddable(rows)
    vectors = model.embed_listings(table[known] if not known.all() else table, rows[known])
    return vectors, rows[known], known


class Retriever:
    """Similar listings, recommendations and session recommendations over ``catalogue``.

    Parameters
    ----------
    model : RecModel
        The fitted model (in eval mode).
    catalogue : Catalogue
        The listings queries may return, with their vectors.
    users, listing_ids : IdMap
        The model's user and listing rows.
    seen : scipy.sparse.csr_matrix
        Users x model listing rows: what each user interacted with in training; excluded
        from their recommendations.
    listings : pandas.DataFrame
        Fields of the model's listing rows, in row order: a query listing outside the
        catalogue is embedded from them.
    name : str
        The model's name, for messages.
    unknown : list
        Ids of the listings given for the catalogue that the model cannot embed.
    """

    def __init__(
        self,
        model: RecModel,
        catalogue: Catalogue,
        users: IdMap,
        listing_ids: IdMap,
        seen: sp.csr_matrix,
        listings: pd.DataFrame,
        name: str = "",
        unknown: list | None = None,
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self.users = users
        self.listing_ids = listing_ids
        self.seen = seen
        self.listings = listings
        self.name = name
        self.unknown = unknown or []
        # the catalogue, its rows without a model row and the model's cold_inputs of them
        self._cold: tuple[Catalogue, np.ndarray, np.ndarray | None] | None = None

    @classmethod
    def build(
        cls,
        model: RecModel,
        users: IdMap,
        listing_ids: IdMap,
        seen: sp.csr_matrix,
        listings: pd.DataFrame,
        catalogue: pd.DataFrame | None = None,
        name: str = "",
    ) -> Retriever:
        """A retriever over ``catalogue`` (a listings table; default: the model's own)."""
        table = listings if catalogue is None else catalogue
        vectors, rows, known = embed_table(model, listing_ids, table)
        unknown = table.loc[~known, "listing_id"].tolist()
        searchable = Catalogue(
            table[known],
            vectors,
            rows,
            normalized=bool(model.normalized),
            query_samples=query_samples_of(model, len(users)),
        )
        return cls(model, searchable, users, listing_ids, seen, listings, name, unknown)

    # ------------------------------------------------------------------ queries
    def _bounded_k(self, k: int) -> int:
        """``k`` checked, and at most the catalogue's rows, which no answer can exceed: the
        search holds k slots per query, so k=10**9 asked for 7 GiB and killed a notebook."""
        return min(positive_int("k", k), max(self.catalogue.n_rows, 1))

    def similar(
        self, listing_ids: Sequence, k: int = 10, filters: FilterSpec = None
    ) -> list[Results]:
        """Top-``k`` listings most like each query listing: those a visitor who viewed it
        would view next, as the model predicts them (``search_similar``).

        A query listing outside the catalogue but known to the model is embedded from its
        training fields. Raises UnknownListingError, naming every unknown id, before any
        search. ``filters`` are a sequence of expressions (``["price<=25000"]``) or Filter
        objects (a list, tuple, array or Series), or an API-style mapping
        (``{"price_max": 25000}``). ValueError for a ``k`` that is not a whole number from 1
        up; TypeError for a single id or filter not in a list (a str would be read as its
        characters) and for a filter that is neither an expression nor a Filter.
        """
        ids = id_list("listing_ids", listing_ids)
        k = self._bounded_k(k)
        parsed = as_filters(filters)
        if not ids:
            return []
        queries, rows, known = self.query_listings(ids, unit=True)
        if not known.all():
            raise UnknownListingError([ids[p] for p in np.flatnonzero(~known)])
        exclude = [rows[p : p + 1][rows[p : p + 1] >= 0] for p in range(len(ids))]
        found, scores = self.search_similar(queries, k, parsed, exclude)
        return [self._results(q, f, s) for q, f, s in zip(ids, found, scores, strict=True)]

    def query_listings(
        self, ids: Sequence, unit: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectors of listings given by id, as queries look them up: the catalogue's first,
        then, for a listing outside it that the model knows (sold since training), the
        model's vector from its training fields, so that a query answers the same whether or
        not today's catalogue still holds it.

        Returns (a vector per id, zero where unknown; unit length with ``unit`` for catalogue
        rows, the model's own vector otherwise), the catalogue rows (-1 outside it) and a bool
        mask of the known ids."""
        catalogue = self.catalogue
        rows = catalogue.rows_of(ids)
        model_rows = self.listing_ids.indices(ids)
        outside = np.flatnonzero(rows < 0)
        model_outside = model_rows[outside]
        embeddable = (model_outside >= 0) & self.model.embeddable(model_outside)
        outside, model_outside = outside[embeddable], model_outside[embeddable]
        known = rows >= 0
        known[outside] = True
        vectors = np.zeros((len(rows), catalogue.vectors.shape[1]), dtype=np.float32)
        inside = rows >= 0
        vectors[inside] = (catalogue.unit_vectors if unit else catalogue.vectors)[rows[inside]]
        if len(outside):
            vectors[outside] = self.model.embed_listings(
                self.listings.iloc[model_outside], model_outside
            )
        return vectors, rows, known

    def search_similar(
        self,
        unit_vectors: np.ndarray,
        k: int,
        filters: Sequence[Filter] | None = None,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue rows and scores of the ``k`` listings most like each listing given by
        its unit vector: by the model's query for it (``RecModel.similar_queries``: a
        session of that one listing for ``hybrid``, the vector itself for models that learn
        no order of views), by cosine."""
        queries = self.model.similar_queries(unit_vectors)
        return self.catalogue.search(queries, k, True, filters, exclude, SIMILAR)

    def recommend(
        self, user_ids: Sequence, k: int = 10, filters: FilterSpec = None
    ) -> list[Results]:
        """Top-``k`` listings for each known user, excluding listings they have seen.

        Raises UnknownUserError naming every unknown user, before any ranking; bad
        arguments as :meth:`similar`."""
        ids = id_list("user_ids", user_ids)
        k = self._bounded_k(k)
        parsed = as_filters(filters)
        user_rows = self.users.indices(ids) if ids else np.zeros(0, dtype=np.int64)
        if (user_rows < 0).any():
            raise UnknownUserError([u for u, r in zip(ids, user_rows, strict=True) if r < 0])
        if not ids:
            return []
        found, scores = self.rank_users(user_rows, k, parsed)
        return [self._results(q, f, s) for q, f, s in zip(ids, found, scores, strict=True)]

    def recommend_session(
        self, session: Sequence, k: int = 10, filters: FilterSpec = None
    ) -> Results:
        """Recommendations for an anonymous visitor from the listings viewed in a session.

        Session listings are looked up as :meth:`similar` looks up its query: in the
        catalogue (new ones there were embedded from their features), then among the model's
        own listings (one sold since training still says what the visitor liked). Unknown
        ones are listed in ``Results.unknown``; when none is known, UnknownListingError.
        ValueError for an empty ``session``; other bad arguments as :meth:`similar`.
        """
        session = id_list("session", session)
        k = self._bounded_k(k)
        parsed = as_filters(filters)
        if not session:
            raise ValueError("session must name at least one listing, got none")
        vectors, rows, known = self.query_listings(session)
        unknown = [plain(s) for s, seen in zip(session, known, strict=True) if not seen]
        if not known.any():
            raise UnknownListingError(session, "none of the session's listings is known")
        query, cosine = self.model.session_vector(vectors[known])
        # a model whose session query is its user tower's (dot product) asks like a user
        kind = None if cosine else USER
        inside = rows[rows >= 0]
        found, scores = self.catalogue.search(query, k, cosine, parsed, [inside], kind)
        hits = self._results(None, found[0], scores[0]).hits
        return Results([plain(s) for s in session], hits, unknown)

    def rank_users(
        self, user_rows: np.ndarray, k: int, filters: Sequence[Filter] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue rows and scores of the top ``k`` for model user rows, seen excluded."""
        catalogue = self.catalogue
        seen = self.seen_in(user_rows)
        queries = self.model.query_vectors(user_rows)
        if queries is not None:  # searchable by dot product: the vector index ranks
            exclude = [
                seen.indices[seen.indptr[i] : seen.indptr[i + 1]]
                for i in range(len(seen.indptr) - 1)
            ]
            return catalogue.search(queries, k, False, filters, exclude, USER)
        blocked = ~catalogue.live
        if filters:
            blocked |= ~catalogue.allowed(filters)
        # in blocks, so that ranking all users holds one block of scores, not users x listings
        step = max(1, MAX_SCORES // max(catalogue.n_rows, 1))
        found, scores = empty_result(len(user_rows), k)
        for start in range(0, len(user_rows), step):
            stop = start + step
            block = self.score_catalogue(user_rows[start:stop])
            block[:, blocked] = -np.inf
            found[start:stop], scores[start:stop] = top_k_of_scores(block, k, seen[start:stop])
        return found, scores

    def score_catalogue(self, user_rows: np.ndarray, strict: bool = True) -> np.ndarray:
        """The model's scores (``score_listings``) of model user rows against every catalogue
        row; a model that scores pairs scores the listings it has no row for (new ones)
        from their ``cold_inputs``."""
        catalogue = self.catalogue
        model_rows = catalogue.model_rows
        vectors = catalogue.vectors[: len(model_rows)]
        cold = self.cold_inputs(catalogue, model_rows)
        return self.model.score_listings(user_rows, vectors, model_rows, strict, cold)

    def cold_inputs(self, catalogue: Catalogue, model_rows: np.ndarray) -> np.ndarray | None:
        """The model's ``cold_inputs`` of the catalogue rows among ``model_rows`` (the first
        rows' model rows) that have none, in row order; None where there are none or the
        model needs none. Each listing's are computed once: rows only grow, and a model row
        never changes, so later calls add the new rows' to what earlier ones computed."""
        cold_rows = np.flatnonzero(model_rows < 0)
        if not len(cold_rows):
            return None
        cached = self._cold
        if cached is None or cached[0] is not catalogue:  # compaction swaps in another
            cached = (catalogue, cold_rows[:0], None)
        _, done_rows, done = cached
        if len(done_rows) < len(cold_rows):  # else a request that began before the last add
            inputs = self.model.cold_inputs(catalogue.frame(cold_rows[len(done_rows) :]))
            if inputs is not None and done is not None:
                inputs = np.concatenate([done, inputs])
            done = inputs
            self._cold = (catalogue, cold_rows, done)  # one assignment: readers take no lock
        return None if done is None else done[: len(cold_rows)]

    def seen_in(self, user_rows: np.ndarray) -> sp.csr_matrix:
        """Users x catalogue rows: the listings each user interacted with in training."""
        seen = self.seen[user_rows].tocoo()
        columns = self.catalogue.rows_of_model_rows(seen.col)
        keep = columns >= 0
        return sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.float32), (seen.row[keep], columns[keep])),
            shape=(len(user_rows), self.catalogue.n_rows),
        )

    # ------------------------------------------------------------------ batch outputs
    def recommend_all(
        self,
        out: str | Path,
        k: int = 10,
        filters: FilterSpec = None,
        chunk_size: int = CHUNK_SIZE,
        part: tuple[int, int] | None = None,
        progress: bool | None = None,
    ) -> Written:
        """The top ``k`` of every user, as :meth:`recommend` answers each (seen listings
        excluded, ``filters`` applied), written to the Parquet file ``out`` as rows
        ``user_id, rank, listing_id, score``, ``chunk_size`` users at a time. ``part=(rank,
        world_size)`` ranks this process's share into ``out/part-{rank:05d}.parquet``
        (``retrieval/batch.py``). ``progress``: a bar on stderr (None: on a terminal).
        Bad arguments as :meth:`similar`."""
        k = self._bounded_k(k)
        parsed = as_filters(filters)
        users = self.users.ids.to_numpy()
        return self._write_all(
            out,
            "user_id",
            users,
            np.arange(len(users)),
            k,
            chunk_size,
            part,
            progress,
            lambda rows: self.rank_users(rows, k, parsed),
        )

    def similar_all(
        self,
        out: str | Path,
        k: int = 10,
        filters: FilterSpec = None,
        chunk_size: int = CHUNK_SIZE,
        part: tuple[int, int] | None = None,
        progress: bool | None = None,
    ) -> Written:
        """The ``k`` most similar listings to every catalogue listing, as :meth:`similar`
        answers each (the listing itself excluded, ``filters`` applied), written as rows
        ``query_id, rank, listing_id, score``; otherwise as :meth:`recommend_all`."""
        k = self._bounded_k(k)
        parsed = as_filters(filters)
        catalogue = self.catalogue
        live = np.flatnonzero(catalogue.live)
        ids = catalogue.table["listing_id"].to_numpy()[live]

        def rank(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            own = [rows[i : i + 1] for i in range(len(rows))]
            return self.search_similar(catalogue.unit_vectors[rows], k, parsed, own)

        return self._write_all(out, "query_id", ids, live, k, chunk_size, part, progress, rank)

    def _write_all(
        self,
        out: str | Path,
        column: str,
        query_ids: np.ndarray,
        query_rows: np.ndarray,
        k: int,
        chunk_size: int,
        part: tuple[int, int] | None,
        progress: bool | None,
        rank: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> Written:
        starts = chunk_starts(len(query_rows), chunk_size, *(part or (0, 1)))
        path = output_path(out, part)
        listing_ids = self.catalogue.table["listing_id"].to_numpy()
        schema = hits_schema(column, id_type(query_ids), id_type(listing_ids))
        n = sum(min(chunk_size, len(query_rows) - s) for s in starts)

        def chunks() -> Iterator[pa.Table]:
            disable = None if progress is None else not progress
            with tqdm(total=n, unit=column.split("_")[0], disable=disable) as bar:
                for start in starts:
                    stop = start + chunk_size
                    found, scores = rank(query_rows[start:stop])
                    bar.update(len(found))
                    yield hits_table(schema, query_ids[start:stop], found, scores, listing_ids)

        return Written(path, n, write_chunks(path, schema, chunks()))

    # ------------------------------------------------------------------ vectors
    def embed(self) -> pd.DataFrame:
        """The vector of every catalogue listing: a frame with ``listing_id`` and
        ``embedding`` (a float32 array per row). DataError when the model could not embed
        some of the listings given for the catalogue."""
        if self.unknown:
            raise DataError(
                f"model {self.name!r} cannot embed listings it was not trained on "
                f"({len(self.unknown)}, e.g. {self.unknown[0]!r}); use a feature model "
                "(hybrid or deep)"
            )
        return pd.DataFrame(
            {
                "listing_id": self.catalogue.table["listing_id"].to_numpy(),
                "embedding": list(self.catalogue.vectors),
            }
        )

    def embed_listings(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``embed_table`` with this retriever's model (vectors, model rows, embeddable)."""
        return embed_table(self.model, self.listing_ids, table)

    def warm_up(self) -> None:
        """Build now what the first queries would otherwise build: the vector indexes, the
        map from model rows to catalogue rows, the model's caches, the compiled loops of
        filtered searches and what the model's similar-listing queries import. At 1M
        listings several seconds, which a server should spend before it answers, not in its
        first requests."""
        compile_scan()
        for cosine in (True, False):
            self.catalogue.index(cosine)
        self.catalogue.rows_of_model_rows(np.zeros(0, dtype=np.int64))
        self.model.fill_cache()
        # a model's first similar query may import what its query needs (scipy.special)
        self.model.similar_queries(self.catalogue.unit_vectors[:1])

    def _results(self, query: Any, rows: np.ndarray, scores: np.ndarray) -> Results:
        keep = rows >= 0
        records = self.catalogue.fields(rows[keep])
        hits = [
            Hit(record.pop("listing_id"), round(float(score), 6), record)
            for record, score in zip(records, scores[keep], strict=True)
        ]
        return Results(plain(query), hits)


def query_samples_of(
    model: RecModel, n_users: int, size: int = 500, seed: int = 0
) -> Callable[[bool, np.ndarray], dict[str, np.ndarray]]:
    """What a catalogue's vector index calibrates its search breadths on (``Catalogue``'s
    ``query_samples``): ``size`` of the model's similar-listing queries (when they are not
    the listing vectors themselves) and of its users' queries, drawn with ``seed``."""

    def draw(cosine: bool, unit_vectors: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        if cosine:
            rows = np.sort(rng.choice(len(unit_vectors), min(size, len(unit_vectors)), False))
            listings = np.asarray(unit_vectors[rows])
            queries = model.similar_queries(listings)
            # the listing vectors themselves are what the index calibrates on anyway
            return {} if queries is listings else {SIMILAR: queries}
        users = np.sort(rng.choice(n_users, min(size, n_users), replace=False))
        queries = model.query_vectors(users) if len(users) else None
        return {} if queries is None else {USER: queries}

    return draw


def id_list(name: str, ids: Sequence) -> list:
    """``ids`` as a list. TypeError for a single id: a str would be read as its characters,
    a number is not a sequence."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise TypeError(
            f"{name} must be a list of ids, got the single {type(ids).__name__} {shown(ids)}; "
            f"pass [{shown(ids)}]"
        )
    return list(ids)


def as_filters(filters: FilterSpec) -> list[Filter]:
    """Filters from a sequence of expressions or Filter objects (a list, tuple, NumPy array
    or pandas Series), or an API-style mapping. TypeError for a single expression or Filter
    (a str would be read as its characters), and for an item that is neither, naming it."""
    if isinstance(filters, str | bytes | Filter):
        raise TypeError(
            f"filters must be a list of filters or a mapping, got the single "
            f"{type(filters).__name__} {shown(filters)}; pass [{shown(filters)}]"
        )
    if filters is None:
        return []
    if isinstance(filters, Mapping):
        return filters_from_mapping(filters) if filters else []
    if not isinstance(filters, Iterable):
        raise TypeError(
            f"filters must be a list of filters or a mapping, got the "
            f"{type(filters).__name__} {shown(filters)}"
        )
    # item by item, never ``not filters``: an array or a Series has no truth value
    parsed = []
    for item in filters:
        if isinstance(item, Filter):
            parsed.append(item)
        elif isinstance(item, str):
            parsed.append(parse_filter(item))
        else:
            raise TypeError(
                f"filters must hold filter expressions (str, e.g. 'price<=25000') or Filter "
                f"objects, got the {type(item).__name__} {shown(item)}"
            )
    return parsed
