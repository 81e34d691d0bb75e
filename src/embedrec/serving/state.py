"""What a worker serves: a loaded model, its catalogue and the API's writes applied to it.

A :class:`ServingState` is built completely before it is used and is replaced as a whole on
reload (one reference swap in :class:`StateHolder`), so a request holds one state from start
to finish and never sees a mix of two models. Listing writes go to the store first and reach
the catalogue through :meth:`ServingState.catch_up`: that is how workers and replicas see each
other's writes. With a SQLite store every worker runs it before a request whenever the store's
change sequence moved; with a PostgreSQL store a follower thread per process runs it whenever
the database announces a change (LISTEN/NOTIFY), so requests never wait for the database and
reads go on being answered while it is away.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from safetensors import SafetensorError

from embedrec.bundle import BundleError
from embedrec.data.errors import DataError, shown
from embedrec.data.ids import MAX_ID_LENGTH, as_id_like, as_ids_like, id_problem, parse_id
from embedrec.data.io import MODEL_LISTINGS, load_listings
from embedrec.data.schema import column_kinds
from embedrec.index.catalogue import Catalogue
from embedrec.memory import release_free_memory
from embedrec.recommender import Recommender
from embedrec.retrieval.retriever import Retriever
from embedrec.serving.filter_params import (
    DESCRIBED_SAMPLE,
    QUERY_PARAMETERS,
    describe_columns,
    holds_booleans,
    location_columns,
)
from embedrec.serving.shared import model_tag, shared_recommender, shared_retriever
from embedrec.serving.store import Change, Head, Store, StoreUnavailable, Write

log = logging.getLogger("embedrec.serving")
# projections kept per model: each distinct ``sample`` value costs up to 100k points' fields,
# so a client asking for many values must not grow the server without bound
PROJECTIONS_KEPT = 4
FLOAT_MAX = sys.float_info.max
# the follower thread (PostgreSQL): how long one wait for an announcement lasts, how often it
# checks the store's head anyway, and how long it waits before reconnecting to a store away
FOLLOW_WAIT_S = 1.0
FOLLOW_POLL_S = 5.0
FOLLOW_RETRY_S = 1.0
# after a write the store refused, how often a worker checks whether it takes writes again
STORE_RECHECK_S = 5.0
# writes the store refuses for one cause are logged at most once per this many seconds (the
# first at once, later lines counting those refused since): an outage under load would
# otherwise write a line per request
REFUSAL_LOG_S = 10.0
T = TypeVar("T")


@functools.cache
def computed_fields() -> tuple[str, ...]:
    """What the API computes for an answer beside a listing's fields (a result's score and
    distance, a projected point's coordinates): no catalogue column may take these names.
    Read from the response models when first asked: importing them (pydantic) costs every
    command that only registers ``serve``, a training rank's among them."""
    from embedrec.serving import schemas

    return tuple(
        name
        for model in (schemas.ListingResult, schemas.ProjectionPoint)
        for name in model.model_fields
        if name not in schemas.ListingFields.model_fields
    )


@dataclass
class Settings:
    """Start-up settings of the service (the ``embedrec serve`` flags)."""

    model_dir: str
    listings: str | None = None
    store: str = "embedrec-store.sqlite"
    token: str | None = None
    max_body_bytes: int = 64 * 1024
    # POST /v1/listings:batch: up to schemas.MAX_BATCH listings in a body of at most this
    max_batch_bytes: int = 4 * 1024 * 1024
    # POST /v1/admin/reload loads only directories under it (None: MODEL_DIR's parent)
    model_root: str | None = None
    # workers started by uvicorn load the model directory recorded in the store, so a worker
    # respawned after a reload serves the reloaded model
    follow_store: bool = False
    # where workers and restarts share the model's tensors and the served catalogue's table,
    # vectors and index (serving/shared.py); None: each process loads and embeds its own
    cache_dir: str | None = None
    # the web origins whose pages may call the API from a browser (serving/cors.py); "*":
    # any page, reads only. Empty: no CORS headers
    cors_origins: tuple[str, ...] = ()


@dataclass
class Embedded:
    """Listings validated and embedded before they are written: applied without
    re-embedding. ``fields`` is one listing's fields, or a list of them (one per row)."""

    fields: dict[str, Any] | list[dict[str, Any]]
    table: pd.DataFrame
    vectors: np.ndarray
    model_rows: np.ndarray

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.fields if isinstance(self.fields, list) else [self.fields]


class BatchError(DataError):
    """Listings of a batch that cannot be written: ``errors`` holds (index, field, message)
    for every bad item, so that one answer names them all."""

    def __init__(self, errors: list[tuple[int, str | None, str]]) -> None:
        self.errors = errors
        index, field_name, message = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"listing {index}: {message}{more}", column=field_name)


@dataclass
class ServingState:
    """One model, its catalogue and the store changes applied to it (up to ``seq``)."""

    recommender: Recommender
    retriever: Retriever
    model_dir: str
    generation: int
    seq: int = 0
    model_tag: str | None = None  # vectors stored with this tag are applied as they are
    loaded_at: float = field(default_factory=time.time)
    skipped: dict[Any, str] = field(default_factory=dict)  # stored listings it cannot embed
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _projections: OrderedDict[tuple[str, int], dict[str, Any]] = field(
        default_factory=OrderedDict, repr=False
    )
    _projections_seq: int = field(default=0, repr=False)  # the seq they were computed at
    _described: tuple[int, dict[str, Any]] | None = field(default=None, repr=False)  # (seq, it)

    # ------------------------------------------------------------------ ids and listings
    @property
    def catalogue(self) -> Catalogue:
        return self.retriever.catalogue

    @property
    def columns(self) -> list[str]:
        return [c for c in self.catalogue.schema.columns if c != "listing_id"]

    @functools.cached_property
    def boolean_columns(self) -> frozenset[str]:
        """The columns of true and false, those with missing values (objects) included: a
        write takes JSON's true and false there, nothing else, and so does a JSON filter.
        Read from a sample of live listings, as ``GET /v1/catalogue`` describes them."""
        catalogue, schema = self.catalogue, self.catalogue.schema
        booleans = {c for c in self.columns if pd.api.types.is_bool_dtype(schema[c].dtype)}
        objects = [c for c in self.columns if schema[c].dtype == object]
        if objects:
            sample = catalogue.frame(np.flatnonzero(catalogue.live)[:DESCRIBED_SAMPLE])
            booleans |= {c for c in objects if holds_booleans(sample[c])}
        return frozenset(booleans)

    def listing_id(self, raw: str) -> Any:
        """The id as the catalogue stores it: an int when its ids are ints, else the string."""
        return parse_id(raw, self.catalogue.id_dtype)

    def user_id(self, raw: str) -> Any:
        return parse_id(raw, self.retriever.users.ids.dtype)

    def listing_frame(self, listing_id: Any, fields: dict[str, Any]) -> pd.DataFrame:
        """A validated one-row listings table with the catalogue's columns and types.

        Raises DataError naming the column for unknown columns or values of the wrong type;
        columns not given are missing values.
        """
        try:
            return self.listing_table([(listing_id, fields)])
        except BatchError as exc:
            _, column, message = exc.errors[0]
            raise DataError(message, column=column) from None

    def listing_table(
        self,
        items: list[tuple[Any, dict[str, Any]]],
        validated: bool = False,
        places: list[int] | None = None,
    ) -> pd.DataFrame:
        """A validated listings table of (id, fields) items, one row each, with the
        catalogue's columns and types. BatchError names every bad item (index and field);
        an id given twice is an error too. ``validated``: the items passed ``load_listings``
        in a worker of the same model (stored with its vectors), so only their types are
        checked here (load_listings' fixed cost was most of a write's validation).
        ``places``: each item's index in the request, as errors name it (default: its own)."""
        places = places or list(range(len(items)))
        schema = self.catalogue.schema
        id_dtype = schema["listing_id"].dtype
        integer_ids = pd.api.types.is_integer_dtype(id_dtype)
        names, errors = self.columns, []
        # once: a column lookup costs ~50 us. A column of true and false with missing values
        # is one of objects, which took any text ("yes") and refused JSON's true
        booleans, boolean = self.boolean_columns, np.dtype(bool)
        dtypes = [boolean if name in booleans else schema[name].dtype for name in names]
        values: dict[str, list] = {name: [] for name in names}
        ids, seen = [], {}
        for index, (listing_id, fields) in enumerate(items):
            # as the library matches ids: "64" is 64 where the ids are integers, and the
            # reverse; a store replayed into a model with the other type of id holds such ids
            listing_id = as_id_like(listing_id, id_dtype)
            try:
                if isinstance(fields.get("listing_id"), bool):
                    # True == 1: an integer catalogue would take it for listing 1
                    raise DataError(
                        f"listing_id {fields['listing_id']!r} in the body is no string or "
                        "integer id",
                        column="listing_id",
                    )
                if (
                    "listing_id" in fields
                    and as_id_like(fields["listing_id"], id_dtype) != listing_id
                ):
                    raise DataError(
                        f"listing_id {fields['listing_id']!r} in the body differs from the "
                        f"path ({listing_id!r})",
                        column="listing_id",
                    )
                if integer_ids and (
                    not isinstance(listing_id, int) or isinstance(listing_id, bool)
                ):
                    raise DataError(
                        f"listing ids of this catalogue are integers, got {listing_id!r}",
                        column="listing_id",
                    )
                problem = None if integer_ids or validated else id_problem(str(listing_id))
                if problem is not None:
                    text = str(listing_id)
                    raise DataError(
                        f"listing_id {text if len(text) <= 40 else text[:40] + '...'!r} "
                        f"{problem}; ids have 1 to {MAX_ID_LENGTH} characters, no '/' and no "
                        "control characters, and are not '.' or '..'",
                        column="listing_id",
                    )
                if listing_id in seen:
                    raise DataError(
                        f"listing_id {listing_id!r} is also item {seen[listing_id]}",
                        column="listing_id",
                    )
                for name in fields:
                    if name != "listing_id" and name not in schema.columns:
                        raise DataError(
                            f"unknown field; the listings have: {', '.join(names)}", column=name
                        )
                row = [_value(n, fields.get(n), t) for n, t in zip(names, dtypes, strict=True)]
            except DataError as exc:
                errors.append((places[index], exc.column, exc.message))
                continue
            seen[listing_id] = places[index]
            ids.append(listing_id)
            for name, value in zip(names, row, strict=True):
                values[name].append(value)
        if errors:
            raise BatchError(errors)
        # arrays, not Series: a frame of Series aligns their indexes, most of a one-row
        # table's cost
        columns = {"listing_id": pd.array(ids, dtype=id_dtype)}
        for name, dtype in zip(names, dtypes, strict=True):
            columns[name] = _column(values[name], dtype)
        if validated:
            return pd.DataFrame(columns)
        frame = pd.DataFrame(columns)
        try:
            return load_listings(frame)
        except DataError as exc:  # coordinates and finiteness, checked column by column
            first = [((exc.row or 1) - 1, exc.column, exc.message)]
        # the table stops at its first bad row: each item alone names every bad one
        raise BatchError([(places[i], c, m) for i, c, m in _row_errors(frame) or first])

    def embed(self, frame: pd.DataFrame, fields: dict[str, Any] | None = None) -> Embedded:
        """Vectors of new listings; DataError when the model cannot embed them (``mf``)."""
        vectors, model_rows, known = self.retriever.embed_listings(frame)
        if not known.all():
            raise DataError(
                f"model {self.recommender.model!r} cannot embed listings it was not trained on; "
                "serve a feature model (hybrid or deep) to add new listings",
                column="listing_id",
            )
        return Embedded({} if fields is None else fields, frame, vectors, model_rows)

    # ------------------------------------------------------------------ store changes
    def catch_up(self, store: Store, ready: dict[int, tuple[Embedded, int]] | None = None) -> None:
        """Apply the store's changes after ``seq``; ``ready`` holds pre-embedded writes by seq
        (the listing's Embedded and its row there)."""
        with self._lock:
            changes = store.changes_since(self.seq)
            if changes:
                self._apply(changes, ready or {})
                self.seq = changes[-1].seq
                if self.catalogue.compaction_due():
                    self._compact()

    def _apply(self, changes: list[Change], ready: dict[int, tuple[Embedded, int]]) -> None:
        changes = self._latest(changes)
        deleted = [c.listing_id for c in changes if c.fields is None]
        if deleted:
            self.catalogue.remove(deleted)
        mine: dict[int, tuple[Embedded, list[int]]] = {}  # id(Embedded) -> it and its rows
        stored, others = [], []
        for change in changes:
            self.skipped.pop(change.listing_id, None)  # its newest change decides
            if change.fields is None:
                continue
            if change.unreadable is not None:
                self._skip(change.listing_id, DataError(change.unreadable))
                continue
            if change.seq in ready:
                part, row = ready[change.seq]
                mine.setdefault(id(part), (part, []))[1].append(row)
            elif self._reusable(change):
                stored.append(change)
            else:
                others.append(change)
        for part, rows in mine.values():
            whole = rows == list(range(len(part.table)))
            table = part.table if whole else part.table.iloc[rows]
            self.catalogue.add(table, part.vectors[rows], part.model_rows[rows])
        if stored:  # embedded by a worker of the same model: its vectors, not ours
            try:
                items = [(c.listing_id, c.fields) for c in stored]
                table = self.listing_table(items, validated=True)
                vectors = np.stack([np.frombuffer(c.vector, dtype="<f4") for c in stored])
                model_rows = self.retriever.listing_ids.indices(table["listing_id"])
                self.catalogue.add(table, vectors, model_rows)
            except DataError:  # one by one below, so that only the bad ones are skipped
                others = stored + others
        frames = []
        for change in others:
            try:
                frames.append(self.listing_frame(change.listing_id, change.fields))
            except DataError as exc:  # e.g. a reloaded model with other columns
                self._skip(change.listing_id, exc)
        if frames:
            try:
                part = self.embed(pd.concat(frames, ignore_index=True))
            except DataError as exc:
                for frame in frames:
                    self._skip(frame["listing_id"].iloc[0], exc)
            else:
                self.catalogue.add(part.table, part.vectors, part.model_rows)

    def _latest(self, changes: list[Change]) -> list[Change]:
        """The last of ``changes`` (in sequence order) to each listing, its id in the
        catalogue's type. The store keys an id as the model then served typed it (7 and "7"
        apart), so after a reload to a model with the other type of id two keys name one
        listing, and the older must not undo the newer (a delete, a new price)."""
        given = pd.Series([change.listing_id for change in changes], dtype=object)
        typed = as_ids_like(pd.Index([], dtype=self.catalogue.id_dtype), given)
        if typed is given:  # all of the catalogue's type: one key, one listing
            return changes
        latest: dict[Any, Change] = {}
        for change, listing_id in zip(changes, typed.tolist(), strict=True):
            latest.pop(listing_id, None)  # kept in the order of the last change
            latest[listing_id] = replace(change, listing_id=listing_id)
        return list(latest.values())

    def _reusable(self, change: Change) -> bool:
        """Whether the change's stored vector came from this model and fits the catalogue."""
        if change.vector is None or self.model_tag is None or change.vector_model != self.model_tag:
            return False
        return len(change.vector) == 4 * self.catalogue.vectors.shape[1]

    def _compact(self) -> None:
        """Swap in a catalogue without the rows of replaced and deleted listings; requests in
        flight keep the retriever (and catalogue) they started with."""
        started, before = time.perf_counter(), self.catalogue.n_rows
        retriever = copy.copy(self.retriever)
        retriever.catalogue = self.catalogue.compacted()
        self.retriever = retriever
        log.info("catalogue compacted from %d to %d rows in %.2fs", before,
                 retriever.catalogue.n_rows, time.perf_counter() - started)  # fmt: skip

    def _skip(self, listing_id: Any, exc: Exception) -> None:
        """A stored listing this model cannot serve: not served at all, rather than as the
        training table had it before the write (which the write replaced)."""
        self.skipped[listing_id] = str(exc)
        with contextlib.suppress(TypeError, ValueError):  # an id of no type the catalogue has
            self.catalogue.remove([listing_id])
        log.warning("stored listing %r not served by this model: %s", listing_id, exc)

    # ------------------------------------------------------------------ projection
    def projection(self, method: str, sample: int) -> dict[str, Any]:
        """2-D coordinates of a sample of live listing vectors; the last few answers are
        kept (``PROJECTIONS_KEPT``) until the next store change, computed outside the lock
        that writes take."""
        from embedrec.viz.projection import project

        key = (method, sample)
        with self._lock:
            if self._projections_seq != self.seq:  # a removed listing must not be shown
                self._projections.clear()
                self._projections_seq = self.seq
            seq = self.seq
            if key in self._projections:
                self._projections.move_to_end(key)
                return self._projections[key]
        catalogue = self.catalogue  # once: a compaction swaps in another
        live = np.flatnonzero(catalogue.live)
        rows, coords = project(catalogue.vectors[live], method, sample, seed=0)
        records = catalogue.fields(live[rows])
        points = [  # no field is named x or y: check_column_names
            {"x": float(x), "y": float(y), **record}
            for (x, y), record in zip(coords, records, strict=True)
        ]
        answer = {"method": method, "points": points}
        with self._lock:
            if self.seq != seq:  # changed meanwhile: answered, not kept
                return answer
            self._projections[key] = answer
            while len(self._projections) > PROJECTIONS_KEPT:
                self._projections.popitem(last=False)  # the least recently asked for
        return answer

    # ------------------------------------------------------------------ catalogue description
    def describe(self, reserved: Collection[str] = ()) -> dict[str, Any]:
        """The catalogue's columns, their kinds and filters, and their most frequent values in
        a sample of live listings (``DESCRIBED_SAMPLE``): kept until the next store change."""
        with self._lock:
            if self._described is not None and self._described[0] == self.seq:
                return self._described[1]
            seq = self.seq
        catalogue = self.catalogue  # once: a compaction swaps in another
        live = np.flatnonzero(catalogue.live)
        if len(live) > DESCRIBED_SAMPLE:
            rng = np.random.default_rng(0)
            live = np.sort(rng.choice(live, DESCRIBED_SAMPLE, replace=False))
        schema = catalogue.schema
        kinds = column_kinds(getattr(self.recommender, "feature_specs_", None))
        answer = {
            "listings": len(catalogue),
            "id_column": "listing_id",
            "location": location_columns(schema.columns),
            "sample": len(live),
            "columns": describe_columns(catalogue.frame(live), schema, kinds, reserved),
        }
        with self._lock:
            if self.seq == seq:
                self._described = (seq, answer)
        return answer


def build_state(
    model_dir: str | Path,
    listings: str | None,
    store: Store,
    generation: int,
    cache_dir: str | None = None,
) -> ServingState:
    """Load a model directory and its catalogue, then replay every stored write into it;
    with ``cache_dir``, the model and the catalogue (of ``listings``, else of the model's own
    listings) are the ones all workers map (``serving/shared.py``)."""
    started = time.perf_counter()
    recommender = _load(model_dir, cache_dir)
    if listings is None:  # the model's own: refused before its catalogue is embedded
        check_column_names(recommender.listing_table_.columns, MODEL_LISTINGS)
    tag = model_tag(recommender)
    retriever: Retriever | None = None
    if cache_dir and tag:
        try:
            retriever = shared_retriever(recommender, listings, cache_dir, tag)
        except OSError as exc:  # e.g. a read-only home directory: served all the same
            log.warning("cannot share the catalogue in %s (%s): loading it here", cache_dir, exc)
    if retriever is None:
        retriever = recommender.retriever(listings)
    if listings is not None:
        check_column_names(retriever.catalogue.schema.columns, listings)
    unknown = retriever.unknown
    if unknown:
        log.warning(
            "%d listings of %s cannot be embedded by model %r and are not served (e.g. %r)",
            len(unknown),
            listings or f"the model's listings table ({model_dir}/listings.parquet)",
            recommender.model,
            unknown[0],
        )
    retriever.warm_up()
    # the model's copies replaced by mapped tensors, the index build's buffers and the
    # listings table read before the mapped one replaced it: at 1M listings about 200 MB of
    # a worker's private memory in Arrow's pool alone, varying by hundreds of MB per start
    release_free_memory()
    state = ServingState(recommender, retriever, str(model_dir), generation, model_tag=tag)
    state.catch_up(store)
    log.info(
        "loaded %s: %d listings (%d stored writes replayed) in %.1fs",
        model_dir,
        len(retriever.catalogue),
        state.seq,
        time.perf_counter() - started,
    )
    return state


def check_column_names(columns: Any, source: str | Path) -> None:
    """DataError naming a column of the served catalogue (read from ``source``) that the
    API's own names would hide: a computed field of the answers (``computed_fields``), which
    the column would replace, or a query parameter that is no filter (``QUERY_PARAMETERS``),
    so that the column could never be filtered."""
    for name in map(str, columns):
        if name in computed_fields():
            why = f"the API computes a {name!r} for its answers, which this column would replace"
        elif name in QUERY_PARAMETERS:
            why = f"{name!r} is a query parameter of the API, so this column could not be filtered"
        else:
            continue
        raise DataError(
            f"{why}; rename the column (the API's own names: "
            f"{', '.join((*computed_fields(), *QUERY_PARAMETERS))})",
            file=str(source),
            column=name,
        )


def _load(model_dir: str | Path, cache_dir: str | None) -> Recommender:
    """The model, with ``cache_dir`` mapped from the files all workers share; loaded here
    alone when they cannot be (a read-only home directory, a damaged cache file), so that a
    bad cache costs memory, never a worker. A bad model directory fails here all the same."""
    if cache_dir:
        try:
            return shared_recommender(model_dir, cache_dir)
        except BundleError:  # the model directory itself (a ValueError): loading it again fails
            raise
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            log.warning("cannot share the model in %s (%s): loading it here", cache_dir, exc)
    return Recommender.load(model_dir)


class RefusalLog:
    """The log lines of writes the store refused: for each cause (``StoreUnavailable.reason``)
    the first at once, then at most one line per ``interval_s``, counting the refusals not
    logged since. The metrics count every refusal; these lines only say what happens."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._logged_at: dict[str, float] = {}  # cause: when its last line was written
        self._unlogged: dict[str, tuple[int, str]] = {}  # cause: (refused since, the last)

    @property
    def pending(self) -> bool:
        """Whether refusals wait to be counted in a line (read without the lock: a hint)."""
        return bool(self._unlogged)

    def refused(self, what: str, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._logged_at.get(exc.reason)
            if last is not None and now - last < self.interval_s:
                count, _ = self._unlogged.get(exc.reason, (0, ""))
                self._unlogged[exc.reason] = (count + 1, f"{what} refused: {exc}")
                return
            self._logged_at[exc.reason] = now
            count, _ = self._unlogged.pop(exc.reason, (0, ""))
        more = f"; {count} more refused ({exc.reason}) since the last line" if count else ""
        log.warning("%s refused (%s): %s%s", what, exc.reason, exc, more)

    def flush(self, *, now_or_never: bool = False) -> None:
        """One line per cause counting the refusals not logged yet, where its interval has
        passed (every cause with ``now_or_never``: the store takes writes again)."""
        now = time.monotonic()
        with self._lock:
            due = {
                reason: unlogged
                for reason, unlogged in self._unlogged.items()
                if now_or_never or now - self._logged_at[reason] >= self.interval_s
            }
            for reason in due:
                del self._unlogged[reason]
                self._logged_at[reason] = now
        for reason, (count, last) in sorted(due.items()):
            plural = "s" if count > 1 else ""
            log.warning("%d more write%s refused (%s) since the last line; the last: %s",
                        count, plural, reason, last)  # fmt: skip


class StateHolder:
    """The current state, swapped atomically; keeps it in step with the store.

    With a store that announces changes (``store.listens``: PostgreSQL, shared by replicas)
    the holder follows the store's model (the first replica records its command line's model
    as generation 1) and a background thread applies other processes' writes and reloads;
    call :meth:`close` to stop it. Otherwise :meth:`get` checks the store before each request.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        # a model directory named by a link (models/current) is served as the directory it
        # points to now: a worker replaced after the link moved loads what its siblings serve
        self.settings = replace(settings, model_dir=os.path.realpath(settings.model_dir))
        self.store = store
        self._reload_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._failed_generation = -1
        self.reload_error: str | None = None  # the last failed reload, for readiness
        # the directory that reload tried, which readiness names by its name alone to a
        # caller without the token
        self.reload_error_dir: str | None = None
        self.store_error: str | None = None  # why the store cannot be reached now
        # why the last write (or reload record) failed, while the store has taken none since
        # (a write, or the check every STORE_RECHECK_S): a store that answers reads but takes
        # no write (full, locked, read-only), or one that went away
        self.write_error: str | None = None
        self._write_failures = 0  # counted: a check clears only the failures before it
        self._recheck_lock = threading.Lock()
        self._rechecking = False
        self._refusals = RefusalLog(REFUSAL_LOG_S)
        # called with the reason (StoreUnavailable.reason) of each write the store refused
        self.on_write_failure: Callable[[str], None] | None = None
        # caught up once the follower has listened and applied the store's changes (at once
        # for a store without a follower: each request catches up)
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        follow = settings.follow_store or store.listens
        head = store.record_first(settings.model_dir) if store.listens else store.head()
        self._state = self._initial_state(head, follow)
        if store.listens:
            self._follower = threading.Thread(
                target=self._follow, name="embedrec-follower", daemon=True
            )
            self._follower.start()
        else:
            self.caught_up.set()

    def _initial_state(self, head: Head, follow: bool) -> ServingState:
        settings, store = self.settings, self.store
        if follow and head.model_dir and head.model_dir != settings.model_dir:
            try:
                return build_state(
                    head.model_dir, settings.listings, store, head.generation, settings.cache_dir
                )
            except (BundleError, DataError, OSError) as exc:
                # a worker started after the reloaded model's directory went away serves the
                # command line's model instead of failing its start again and again
                log.error("cannot load %s, recorded by a reload: %s", head.model_dir, exc)
                self._failed_generation = head.generation
                self.reload_error = f"generation {head.generation} ({head.model_dir}): {exc}"
                self.reload_error_dir = head.model_dir
        return build_state(
            settings.model_dir, settings.listings, store, head.generation, settings.cache_dir
        )

    @property
    def current(self) -> ServingState:
        return self._state

    def get(self) -> ServingState:
        """The state to serve a request with, after applying other workers' changes (with a
        follower thread: as applied so far, without asking the store)."""
        state = self._state
        if self._follower is not None:
            return state
        try:
            head = self.store.head()
        except StoreUnavailable as exc:  # reads go on from memory; writes answer 503
            if self.store_error is None:
                log.warning("store unavailable, serving from memory: %s", exc)
            self.store_error = str(exc)
            return state
        self.store_error = None
        if head.generation > state.generation and head.model_dir:
            self._reload_in_background(head.generation, head.model_dir)
        if head.seq > state.seq:
            state.catch_up(self.store)
        return state

    def write(self, state: ServingState, listing_id: Any, embedded: Embedded | None) -> int:
        """Commit a put (``embedded``) or delete to the store, then apply it; returns seq."""
        return self.write_many(state, [listing_id], embedded)[0][0]

    def write_many(
        self, state: ServingState, ids: list[Any], embedded: Embedded | None
    ) -> list[tuple[int, bool]]:
        """Commit puts of ``embedded``'s rows (``ids`` in its order) or deletes of ``ids``, in
        one transaction, then apply them; returns (seq, new) per id.

        ``new`` (a put of a listing not live before it) is decided by the store inside its
        transaction, so of concurrent puts of one new id exactly one is new; the catalogue is
        asked only about ids the store has never held (listings served from the model's or
        the ``--listings`` table), which no write can have changed meanwhile.

        The vectors are stored with the model's tag, so other workers apply them without
        embedding again. The commit runs outside the state's lock: writes of concurrent
        requests are committed together (``Store.put_many``'s group commit).
        """
        if embedded is None:
            writes = [Write(i, None) for i in ids]
        else:
            served = (state.catalogue.rows_of(ids) >= 0).tolist()
            rows = zip(ids, embedded.records, embedded.vectors, served, strict=True)
            writes = [Write(i, f, v, state.model_tag, s) for i, f, v, s in rows]
        what = f"write of {len(writes)} listing{'s' if len(writes) > 1 else ''}"
        results = self._store_write(what, lambda: self.store.put_many(writes))
        ready = {}
        if embedded is not None:
            ready = {seq: (embedded, row) for row, (seq, _) in enumerate(results)}
        try:
            state.catch_up(self.store, ready)
        except StoreUnavailable as exc:
            # committed, so acknowledged all the same; the follower applies it once the
            # store is back
            log.warning("write %d committed, not yet applied here: %s", results[-1][0], exc)
            return results
        if self._state is not state:  # swapped meanwhile: the new state must see it too
            with contextlib.suppress(StoreUnavailable):
                self._state.catch_up(self.store)
        return results

    def _store_write(self, what: str, write: Callable[[], T]) -> T:
        """``write()``: a write the store refuses (StoreUnavailable: 503) is logged naming
        the store and why (no traceback: full, locked, read-only and unreachable stores are
        expected; at most a line per cause and REFUSAL_LOG_S), is counted by reason, and
        makes ``write_error`` say so until a write succeeds."""
        try:
            result = write()
        except StoreUnavailable as exc:
            self._refusals.refused(what, exc)
            with self._recheck_lock:
                self.write_error = f"the last write failed: {exc}"
                self._write_failures += 1
                if not self._rechecking:
                    self._rechecking = True
                    threading.Thread(
                        target=self._recheck_writes, name="embedrec-store-check", daemon=True
                    ).start()
            if self.on_write_failure is not None:
                self.on_write_failure(exc.reason)
            raise
        self.write_error = None
        if self._refusals.pending:
            self._refusals.flush()
        return result

    def _recheck_writes(self) -> None:
        """After a refused write: check every STORE_RECHECK_S whether the store takes writes
        again (``Store.check_writes``, which stores nothing), and clear ``write_error`` when
        it does, so that a service that gets no writes does not report a store that is back
        as failing for ever. Ends then, at the next stored write, or when the holder closes."""
        while not self._stop.wait(STORE_RECHECK_S):
            self._refusals.flush()
            with self._recheck_lock:
                if self.write_error is None:  # a write was stored meanwhile
                    if self._refusals.pending:  # counted in a line once its interval passed
                        continue
                    self._rechecking = False
                    return
                failures = self._write_failures
            try:
                self.store.check_writes()
            except StoreUnavailable:
                continue  # still refused: write_error says why
            except Exception:  # noqa: BLE001 - the check must outlive any one failure
                if self._stop.is_set():  # the store closed under it: the server stops
                    return
                log.exception("checking whether the store takes writes failed")
                continue
            with self._recheck_lock:
                if self._write_failures == failures:  # no write failed during the check
                    self._refusals.flush(now_or_never=True)
                    log.warning("store takes writes again: %s", self.store.describe())
                    self.write_error = None
                    self._rechecking = False
                    return

    @property
    def store_problem(self) -> str | None:
        """Why the store cannot be reached now, else why the last write failed (while the
        store has taken none since), else None: readiness's ``store_error``."""
        return self.store_error or self.write_error

    def reload(self, model_dir: str) -> ServingState:
        """Build a state for ``model_dir`` off to the side, record it, swap it in. A link is
        recorded as the directory it points to: every worker and replica loads that one, and
        a rollback after the link moved returns to the directory served before."""
        model_dir = os.path.realpath(model_dir)
        with self._reload_lock:
            state = build_state(
                model_dir, self.settings.listings, self.store, -1, self.settings.cache_dir
            )
            state.generation = self._store_write(
                f"recording the reload of {model_dir}",
                lambda: self.store.record_reload(model_dir),
            )
            with contextlib.suppress(StoreUnavailable):  # recorded: the follower goes on
                state.catch_up(self.store)
            self._state = state
            self.reload_error = None
        return state

    def rollback(self) -> ServingState:
        """Reload the model directory served before the current one (recorded in the store,
        else the command line's): every worker and replica follows, as for a reload. A second
        rollback undoes the first. LookupError when there is nothing to go back to."""
        head = self.store.head()
        current = head.model_dir or self._state.model_dir
        target = self.store.previous_model_dir()
        if target is None and self.settings.model_dir != current:
            target = self.settings.model_dir
        if target is None:
            raise LookupError(
                f"no model directory before {current!r} is recorded in the store: "
                "nothing to roll back to"
            )
        log.info("rolling back from %s to %s", current, target)
        return self.reload(target)

    # ------------------------------------------------------------------ following the store
    def _follow(self) -> None:
        """The follower thread: wait for the store to announce a change, then catch up by
        sequence number (also after every reconnect, so nothing announced meanwhile is
        missed); reconnect every FOLLOW_RETRY_S while the store is away."""
        next_poll = 0.0
        while not self._stop.is_set():
            try:
                woke = self.store.wait(FOLLOW_WAIT_S)
                if self._stop.is_set():
                    return
                if woke or time.monotonic() >= next_poll:
                    self.sync()
                    next_poll = time.monotonic() + FOLLOW_POLL_S
                if self.store_error is not None:
                    log.warning("store back: %s; caught up to seq %d", self.store.describe(),
                                self._state.seq)  # fmt: skip
                    self.store_error = None
                self.caught_up.set()
            except StoreUnavailable as exc:
                if self._stop.is_set():  # the store closed under it: the server stops
                    return
                if self.store_error is None:
                    log.warning("%s; reads are answered from memory, writes refused", exc)
                self.store_error = str(exc)
                self._stop.wait(FOLLOW_RETRY_S)
            except Exception:  # noqa: BLE001 - the follower must outlive any one failure
                log.exception("following the store failed; trying again")
                self._stop.wait(FOLLOW_RETRY_S)

    def sync(self) -> None:
        """Apply the store's new changes and start a reload it recorded (follower thread)."""
        head = self.store.head()
        if head.generation > self._state.generation and head.model_dir:
            self._reload_in_background(head.generation, head.model_dir)
        if head.seq > self._state.seq:
            self._state.catch_up(self.store)

    def close(self) -> None:
        """Stop the follower thread, if any (the store is closed by its owner)."""
        self._stop.set()
        if self._follower is not None and self._follower is not threading.current_thread():
            # a sync in progress ends within seconds; one stuck on a database that does not
            # answer ends when the store is closed (its connections shut down under it)
            self._follower.join(FOLLOW_WAIT_S + 5)

    def _reload_in_background(self, generation: int, model_dir: str) -> None:
        """Another worker reloaded: build the same model here without blocking requests."""
        if generation == self._failed_generation:
            return
        # a request's thread (or the event loop) never waits here: while this worker builds
        # a reload of its own, the next request asks again
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            if self._background is not None and self._background.is_alive():
                return
            if self._state.generation >= generation:
                return

            def run() -> None:
                try:
                    state = build_state(
                        model_dir,
                        self.settings.listings,
                        self.store,
                        generation,
                        self.settings.cache_dir,
                    )
                except StoreUnavailable as exc:  # not the model's fault: tried again later
                    log.warning("reload of %s waits for the store: %s", model_dir, exc)
                    return
                except Exception as exc:  # noqa: BLE001 - keep serving the old model, say why
                    if isinstance(exc, BundleError | DataError | OSError):
                        # expected (a model directory damaged or gone here): one line
                        log.error("reload of %s (generation %d) failed: %s", model_dir,
                                  generation, exc)  # fmt: skip
                    else:
                        log.exception("reload of %s (generation %d) failed", model_dir, generation)
                    self._failed_generation = generation
                    self.reload_error = f"generation {generation} ({model_dir}): {exc}"
                    self.reload_error_dir = model_dir
                    return
                with self._reload_lock:
                    if state.generation > self._state.generation:
                        with contextlib.suppress(StoreUnavailable):
                            state.catch_up(self.store)
                        self._state = state
                        self.reload_error = None
                        log.info("now serving %s (generation %d)", model_dir, generation)

            self._background = threading.Thread(target=run, name="embedrec-reload", daemon=True)
            self._background.start()
        finally:
            self._reload_lock.release()


def _row_errors(frame: pd.DataFrame) -> list[tuple[int, str | None, str]]:
    """(index, column, message) of each row of ``frame`` that ``load_listings`` refuses."""
    errors = []
    for index in range(len(frame)):
        try:
            load_listings(frame.iloc[index : index + 1].reset_index(drop=True))
        except DataError as exc:
            errors.append((index, exc.column, exc.message))
    return errors


def _column(values: list, dtype: Any) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Values checked by :func:`_value` as a column (None: missing) of the catalogue's type,
    or of the type pandas gives a one-value column (ints with a missing one: float)."""
    missing = any(v is None for v in values)
    if pd.api.types.is_bool_dtype(dtype):
        return np.array(values, dtype=object if missing else bool)
    if pd.api.types.is_numeric_dtype(dtype):
        if not missing and all(type(v) is int for v in values):
            return np.array(values, dtype=np.int64)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return pd.array([pd.NaT if v is None else v for v in values], dtype=dtype)
    if pd.api.types.is_string_dtype(dtype) and not isinstance(dtype, np.dtype):
        return pd.array(values, dtype=dtype)
    return np.array(values, dtype=object)


_ISO_START = re.compile(r"\s*[+-]?\d{4}")


def _value(name: str, value: Any, dtype: Any) -> Any:
    """One value checked against the column's type (None: missing); DataError when it cannot
    be stored there."""
    if value is None:
        return None
    if pd.api.types.is_bool_dtype(dtype):
        if not isinstance(value, bool):
            raise DataError(f"expected true or false, got {value!r}", column=name)
        return value
    if pd.api.types.is_numeric_dtype(dtype):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"expected a number, got {value!r}", column=name)
        integer_column = pd.api.types.is_integer_dtype(dtype)
        # JSON integers have no bound: past int64 they fit no integer column, past the
        # largest float no column at all
        if isinstance(value, int) and (
            abs(value) >= 2**63 if integer_column else abs(value) > FLOAT_MAX
        ):
            raise DataError(f"number out of range: {shown(value)}", column=name)
        if not math.isfinite(value):
            raise DataError(f"expected a finite number, got {value!r}", column=name)
        if not integer_column:
            return float(value)
        # a column of integers takes a whole number written as a float (2018.0), no other
        if isinstance(value, float) and not (value.is_integer() and abs(value) < 2**63):
            raise DataError(f"expected an integer, got {value!r}", column=name)
        return int(value)
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        # ISO 8601 begins with the year: pandas would also read words ("now", "today")
        if not isinstance(value, str) or not _ISO_START.match(value):
            raise DataError(f"expected an ISO-8601 date-time string, got {value!r}", column=name)
        try:
            stamp = pd.Timestamp(value)
            if stamp is pd.NaT:
                raise ValueError(value)
            tz = getattr(dtype, "tz", None)
            if tz is not None:
                stamp = stamp.tz_localize(tz) if stamp.tzinfo is None else stamp.tz_convert(tz)
            elif stamp.tzinfo is not None:
                stamp = stamp.tz_convert(None)
            pd.Series([stamp], dtype=dtype)  # out of the dtype's range raises here
            return stamp
        except (ValueError, OverflowError, TypeError):
            raise DataError(f"cannot parse date-time {value!r}", column=name) from None
    if isinstance(value, list) and all(isinstance(v, str) or v is None for v in value):
        # as load_listings reads a list column (Parquet's list type): the a|b|c of a
        # multi-valued feature, an empty list a missing value
        parts = [v for v in value if v is not None]
        return "|".join(parts) if parts else None
    if not isinstance(value, str):
        raise DataError(f"expected a string or a list of strings, got {value!r}", column=name)
    return value
