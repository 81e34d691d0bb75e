"""The durable store of listings written through the API: one interface, two back-ends.

One row per listing id holds its latest state: the JSON fields of a PUT, or NULL for a
DELETE (a tombstone, so deleting a listing of the model's catalogue survives a restart).
Every write takes the next value of a store-wide change sequence, so a worker that applied
changes up to ``seq`` catches up with ``changes_since(seq)``. Reloads are recorded the same
way (a generation number and the model directory, with the history of earlier ones for a
rollback), so every worker reloads.

:class:`ListingStore` keeps it in a SQLite file (WAL, synchronous=FULL): one host, its
workers check the head before each request. ``serving/pgstore.py``'s ``PostgresStore`` keeps
it in PostgreSQL, shared by replicas on several hosts, which LISTEN for the changes of the
others. :func:`open_store` picks the back-end from the ``--store`` location.

A put may carry the listing's vector (raw float32 bytes, never pickled) with the tag of the
model that embedded it, so that workers and replicas serving the same model apply it
without embedding the listing again. Writes that arrive while a commit is in flight are
committed together in the next transaction (one fsync for all), and each is acknowledged
only once its transaction has committed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import unquote

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listings (
    listing_id TEXT PRIMARY KEY,  -- json.dumps of the id, so 7 and "7" stay different
    seq INTEGER NOT NULL,
    fields TEXT,                  -- JSON object; NULL: deleted
    written_at REAL NOT NULL,
    vector BLOB,                  -- float32 bytes embedded by vector_model; NULL: none
    vector_model TEXT
);
CREATE INDEX IF NOT EXISTS listings_seq ON listings (seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
INSERT OR IGNORE INTO meta VALUES ('seq', 0), ('generation', 0), ('model_dir', NULL);
CREATE TABLE IF NOT EXISTS reloads (
    generation INTEGER PRIMARY KEY,
    model_dir TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
-- a store written before the history was kept: its current reload starts the history
INSERT OR IGNORE INTO reloads
    SELECT g.value, d.value, 0 FROM meta g, meta d
    WHERE g.key = 'generation' AND d.key = 'model_dir' AND g.value > 0 AND d.value IS NOT NULL;
"""


@dataclass(frozen=True)
class Change:
    """The latest state of one listing: ``fields`` None means deleted."""

    seq: int
    listing_id: Any
    fields: dict[str, Any] | None
    vector: bytes | None = None  # float32, embedded by the model tagged ``vector_model``
    vector_model: str | None = None
    unreadable: str | None = None  # why the stored row cannot be read (then ``fields`` is {})


@dataclass(frozen=True)
class Write:
    """One listing write: ``fields`` None deletes; ``vector`` as embedded by ``model``."""

    listing_id: Any
    fields: dict[str, Any] | None
    vector: np.ndarray | None = None
    model: str | None = None
    # whether the served catalogue holds the listing without a row in the store (a training
    # listing): where the store has no row of it, a put replaces it rather than creates it
    served: bool = False


# one stored row: key (JSON id), JSON fields or None, vector bytes or None, model tag, and
# whether the listing is served without a stored row (``Write.served``; not stored)
Row = tuple[str, str | None, bytes | None, str | None, bool]


@dataclass(frozen=True)
class Head:
    """Where the store stands: last change sequence, reload generation and its model dir."""

    seq: int
    generation: int
    model_dir: str | None


class StoreUnavailable(Exception):
    """The store cannot be reached (a database that went away) or cannot take a write now (a
    full disk, a locked database): writes are refused with 503 and Retry-After, reads are
    answered from memory, catching up resumes when it is back. ``reason`` is one word of
    :data:`FAILURE_REASONS` (the label of the failed-writes metric)."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason if reason in FAILURE_REASONS else "error"


# why a store refused a write, as the ``reason`` label of embedrec_store_write_failures_total
FAILURE_REASONS = (
    "unavailable",  # the database cannot be reached (connection lost, refused, closed)
    "timeout",  # the statement timeout cancelled it (a stuck lock), or the store's deadline did
    "locked",  # SQLite's busy timeout passed, a PostgreSQL deadlock or lock not available
    "disk_full",
    "read_only",  # a read-only file or file system, a PostgreSQL standby
    "io_error",
    "corrupt",  # the file is no (longer a) database
    "removed",  # the SQLite file was removed or replaced under the server
    "commit_unknown",  # the connection was lost during the commit
    "error",  # any other error of the store
)
# SQLite's primary result codes (``sqlite3.Error.sqlite_errorname`` up to its first "_")
_SQLITE_REASONS = {
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_FULL": "disk_full",
    "SQLITE_READONLY": "read_only",
    "SQLITE_IOERR": "io_error",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
    "SQLITE_CANTOPEN": "removed",
}


def sqlite_reason(exc: BaseException) -> str:
    """The FAILURE_REASONS word for a sqlite3 error."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    primary = "_".join(name.split("_")[:2])  # SQLITE_READONLY_DBMOVED: SQLITE_READONLY
    if not primary and "locked" in str(exc):  # Python before 3.11 names no code
        return "locked"
    return _SQLITE_REASONS.get(primary, "error")


class Store(Protocol):
    """What the serving layer asks of a store; :class:`ListingStore` (SQLite) and
    ``pgstore.PostgresStore`` answer it. Methods raise :class:`StoreUnavailable` when the
    store cannot be reached."""

    #: True: other processes' changes are announced (``wait``), a background thread follows
    #: them; False: a worker checks ``head()`` before each request
    listens: bool

    def describe(self) -> str: ...

    def head(self) -> Head: ...

    def put(
        self,
        listing_id: Any,
        fields: dict[str, Any],
        vector: np.ndarray | None = None,
        model: str | None = None,
    ) -> tuple[int, bool]: ...

    def put_many(self, writes: Sequence[Write]) -> list[tuple[int, bool]]: ...

    def delete(self, listing_id: Any) -> int: ...

    def changes_since(self, seq: int) -> list[Change]: ...

    def record_reload(self, model_dir: str) -> int: ...

    def record_first(self, model_dir: str) -> Head: ...

    def previous_model_dir(self) -> str | None: ...

    def wait(self, timeout: float) -> bool: ...

    def counts(self) -> dict[str, int]: ...

    def check_writes(self) -> None: ...

    def close(self) -> None: ...


# "postgresql://...", "s3://...": a URL, not a file name (a Windows drive "C:\\" is no URL)
URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def check_store_location(location: str | Path) -> str:
    """The back-end of a store location: ``"sqlite"`` for a file path, ``"postgresql"`` for a
    ``postgresql://`` (or ``postgres://``) URL. Raises ValueError for any other URL, which
    would otherwise become a SQLite file under a folder named after its scheme."""
    found = URL.match(str(location))
    if not found:
        return "sqlite"
    if found.group(1).lower() in POSTGRES_SCHEMES:
        userinfo = _USERINFO.match(str(location))
        if userinfo and any(c in userinfo.group(1) for c in "@/"):
            # libpq ends the user name and password at the first "@" or "/": it would take
            # the rest of the password for the host (and print it in its errors)
            raise ValueError(
                f"store {redact(str(location))!r}: the user name or password holds '@' or "
                "'/'; percent-encode them in a URL (%40, %2F)"
            )
        return "postgresql"
    raise ValueError(
        f"store {redact(str(location))!r}: {found.group(1)}:// stores are not supported; "
        "give the path of a SQLite file or a postgresql://USER@HOST:PORT/DB URL"
    )


# a URL's user information: up to its last "@" before a query (a password holding "@" or "/"
# that should have been percent-encoded is hidden whole)
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^?#]*)@")
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):([^?#]*)@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)([^&#]*)")


def redact(location: str) -> str:
    """A store location fit for messages and logs: a password in a URL replaced by ***."""
    location = _PASSWORD.sub(r"\1:***@", location)
    return _PASSWORD_PARAMETER.sub(r"\1***", location)


def redact_message(message: str, location: str) -> str:
    """``message`` (a database driver's, which may quote the URL or a password it could not
    decode) with ``location`` redacted and its passwords, as written and percent-decoded,
    replaced by ***."""
    message = message.replace(location, redact(location))
    secrets = [m.group(2) for m in (_PASSWORD.match(location),) if m]
    secrets += [m.group(2) for m in _PASSWORD_PARAMETER.finditer(location)]
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            if form:
                message = message.replace(form, "***")
    return message


def open_store(location: str | Path) -> Store:
    """The store at ``location``: a SQLite file path or a ``postgresql://`` URL."""
    if check_store_location(location) == "postgresql":
        from embedrec.serving.pgstore import PostgresStore

        return PostgresStore(str(location))
    return ListingStore(location)


class StoreBase:
    """What both back-ends share, on top of their ``_write_rows`` (one transaction storing
    rows under the next sequence numbers, returning (seq, new) per row), ``_record`` (one
    bumping the reload generation, optionally only from 0) and ``head``."""

    def __init__(self) -> None:
        self._commits = GroupCommit(self._write_rows)

    def put(
        self,
        listing_id: Any,
        fields: dict[str, Any],
        vector: np.ndarray | None = None,
        model: str | None = None,
    ) -> tuple[int, bool]:
        """Store a listing's fields (and its vector as embedded by ``model``); returns (seq,
        whether the id was new or deleted: decided inside the transaction, so of concurrent
        puts of one new id exactly one is new)."""
        return self.put_many([Write(listing_id, fields, vector, model)])[0]

    def put_many(self, writes: Sequence[Write]) -> list[tuple[int, bool]]:
        """Store several writes in one transaction, all or none; (seq, new) for each."""
        return self._commits.commit([_row(w) for w in writes])

    def delete(self, listing_id: Any) -> int:
        """Record that a listing is gone; returns its seq."""
        return self.put_many([Write(listing_id, None)])[0][0]

    def _write_rows(self, rows: list[Row]) -> list[tuple[int, bool]]:
        raise NotImplementedError

    def record_reload(self, model_dir: str) -> int:
        """Record a reload so every worker and replica applies it; returns the generation."""
        return self._record(model_dir, only_first=False) or 0

    def record_first(self, model_dir: str) -> Head:
        """Record ``model_dir`` as generation 1 if the store has no reload yet (the first
        server of a shared store names the model all follow); returns the head after."""
        self._record(model_dir, only_first=True)
        return self.head()


def _row(write: Write) -> Row:
    fields = None if write.fields is None else json.dumps(write.fields, allow_nan=False)
    vector = None
    if write.vector is not None and write.fields is not None:
        vector = np.ascontiguousarray(write.vector, dtype="<f4").tobytes()
    model = write.model if vector else None
    return json.dumps(write.listing_id), fields, vector, model, write.served


def changes_of(rows: Sequence[tuple]) -> list[Change]:
    """Changes from (seq, key, fields, vector, vector_model) rows as both back-ends read them.
    A row whose JSON cannot be read (written by hand, damaged) is a Change that says so:
    skipped and reported where it is applied, and passed like any other."""
    changes = []
    for s, i, f, v, m in rows:
        listing_id = i
        try:
            listing_id = json.loads(i)
            fields = None if f is None else json.loads(f)
        except (TypeError, ValueError) as exc:
            why = f"stored row {s} cannot be read: {exc}"
            changes.append(Change(int(s), listing_id, {}, unreadable=why))
            continue
        changes.append(Change(int(s), listing_id, fields, None if v is None else bytes(v), m))
    return changes


def assign(first_seq: int, rows: Sequence[Row], live: dict[str, bool]) -> list[tuple]:
    """Sequence numbers and "new" flags for ``rows`` written in order, given whether each key
    was live before (``live``, read in the writing transaction, updated; a key without a
    stored row is live where the catalogue serves it): the parameters (key, seq, fields,
    vector, model, new) of each row's upsert."""
    out = []
    for offset, (key, fields, vector, model, served) in enumerate(rows):
        out.append((key, first_seq + offset, fields, vector, model, not live.get(key, served)))
        live[key] = fields is not None
    return out


class GroupCommit:
    """Commits writes that arrive while another commit is in flight together, in one
    transaction (one fsync) run by the first of them; each caller returns once its own
    writes have committed, with their results, or raises the commit's error."""

    def __init__(self, write: Callable[[list[Row]], list[tuple[int, bool]]]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False

    def commit(self, rows: list[Row]) -> list[tuple[int, bool]]:
        mine = _Pending(rows)
        with self._cond:
            self._queue.append(mine)
            while not mine.done and self._busy:
                self._cond.wait()
            if mine.done:
                return mine.outcome()
            self._busy = True  # this caller commits the queue, its own writes included
            group, self._queue = self._queue, []
        try:
            self._run(group)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return mine.outcome()

    def _run(self, group: list[_Pending]) -> None:
        try:
            results = self._write([row for pending in group for row in pending.rows])
        except BaseException as exc:
            if len(group) == 1 or isinstance(exc, StoreUnavailable):
                for pending in group:
                    pending.error, pending.done = exc, True
                return
            for pending in group:  # one caller's bad write must not fail the others
                self._run([pending])
            return
        start = 0
        for pending in group:
            pending.results = results[start : start + len(pending.rows)]
            pending.done, start = True, start + len(pending.rows)


class _Pending:
    def __init__(self, rows: list[Row]) -> None:
        self.rows, self.done = rows, False
        self.results: list[tuple[int, bool]] = []
        self.error: BaseException | None = None

    def outcome(self) -> list[tuple[int, bool]]:
        if self.error is not None:
            raise self.error
        return self.results


class Watch:
    """One operation on ``connection`` and its deadline (``time.monotonic()``)."""

    def __init__(self, connection: Any, due: float) -> None:
        self.connection, self.due = connection, due
        # held while the operation ends and while the watchdog stops it, so that the
        # watchdog never touches a connection its operation has finished with (and may close)
        self.lock = threading.Lock()
        self.ended = False
        self.done = threading.Event()
        self.expired = False  # the watchdog stopped it (or tried to)


class Watchdog:
    """One thread that stops the operations still running at their deadline (``stop``, on a
    thread of its own, so that one stuck cancel delays no other)."""

    # how often the thread looks, at most: an operation's deadline is seconds away
    TICK_S = 0.5

    def __init__(self, stop: Callable[[Watch], None]) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @contextlib.contextmanager
    def watch(self, connection: Any, seconds: float) -> Iterator[Watch]:
        watch = Watch(connection, time.monotonic() + seconds)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="embedrec-store-deadlines", daemon=True
                )
                self._thread.start()
        try:
            yield watch
        finally:
            with self._lock:
                self._watches.discard(watch)
            with watch.lock:
                watch.ended = True
            watch.done.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            now = time.monotonic()
            with self._lock:
                due = [watch for watch in self._watches if watch.due <= now]
                self._watches.difference_update(due)
                nearest = min((watch.due for watch in self._watches), default=now + self.TICK_S)
            for watch in due:
                threading.Thread(
                    target=self._stop, args=(watch,), name="embedrec-store-stop", daemon=True
                ).start()
            self._closed.wait(min(self.TICK_S, max(0.0, nearest - now)))

    def close(self) -> None:
        self._closed.set()


# SQLite waits this long for a lock another connection holds (a write transaction of another
# process) before it refuses the operation as locked
BUSY_TIMEOUT_S = 30.0
# an operation still running this long after the busy timeout would have ended it is stopped
# from here, as the PostgreSQL store stops one its database does not answer: the time spent
# waiting for this process's own connection (another thread's operation on it) counts, and
# SQLite's busy timeout bounds only one lock wait, never a statement that runs on
DEADLINE_GRACE_S = 3.0
# how often the watchdog interrupts an operation past its deadline until it ends (an
# interrupt between two statements of a transaction is lost)
INTERRUPT_EVERY_S = 0.1


class ListingStore(StoreBase):
    """Listings written through the API in a SQLite file; safe to share between threads and
    the processes of one host.

    Every operation has a deadline, ``deadline_s`` (the busy timeout and DEADLINE_GRACE_S
    more), counted from its call: waiting for the connection, for SQLite's lock (the busy
    timeout, cut to what is left) and running. One still running then is interrupted and
    raises StoreUnavailable("timeout"), as the PostgreSQL store's deadline does."""

    listens = False

    def __init__(self, path: str | Path) -> None:
        if check_store_location(path) != "sqlite":
            raise ValueError(
                f"store {redact(str(path))!r}: ListingStore keeps a SQLite file; "
                "open_store opens postgresql:// stores"
            )
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = BUSY_TIMEOUT_S
        self.deadline_s = BUSY_TIMEOUT_S + DEADLINE_GRACE_S
        self._watchdog = Watchdog(_interrupt_until_done)
        self._busy_ms: dict[int, int] = {}  # the busy timeout each connection has now
        # Two connections, each serialised by its own lock: reads (one before every request)
        # must not wait for a write's fsync, and in WAL mode they need not.
        try:
            self._db, self._lock = self._connect(), threading.Lock()
            with self._operation(self._db, self._lock):
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk before we answer, even if the machine loses power
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            self._add_vector_columns()
            self._reader, self._read_lock = self._connect(), threading.Lock()
        except sqlite3.Error as exc:  # not a database, read-only, ...: one line at start
            raise StoreUnavailable(f"{self.describe()}: {exc}", sqlite_reason(exc)) from None
        stat = os.stat(self.path)
        self._file = (stat.st_dev, stat.st_ino)

    @contextlib.contextmanager
    def _operation(self, db: sqlite3.Connection, lock: threading.Lock) -> Iterator[Watch]:
        """One operation on ``db`` (guarded by ``lock``) within the deadline: StoreUnavailable
        ("timeout") when the connection is not free in time, SQLite's busy timeout cut to
        the time left, and the watchdog interrupting it at the deadline."""
        due = time.monotonic() + self.deadline_s
        if not lock.acquire(timeout=self.deadline_s):
            raise self._unanswered()
        try:
            left = due - time.monotonic()
            busy_ms = max(1, math.ceil(1000 * min(self.busy_timeout_s, left)))
            if self._busy_ms.get(id(db)) != busy_ms:  # a statement only when it changes
                db.execute(f"PRAGMA busy_timeout={busy_ms}")
                self._busy_ms[id(db)] = busy_ms
            with self._watchdog.watch(db, max(0.0, left)) as watch:
                yield watch
        finally:
            lock.release()

    def _unanswered(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"{self.describe()} did not answer within {self.deadline_s:g} s (the busy timeout "
            f"and {DEADLINE_GRACE_S:g} s more): the operation was stopped",
            "timeout",
        )

    def _rolled_back(self, exc: BaseException, watch: Watch) -> NoReturn:
        """Roll the open transaction back (SQLite may have done so itself: a full disk, an
        interrupt) and raise: a store that cannot take the write now (full, locked, gone, no
        answer by the deadline) as StoreUnavailable, which a request answers with 503 and
        Retry-After."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error below says what happened
                self._db.execute("ROLLBACK")
        self._refused(exc, watch)

    def _refused(self, exc: BaseException, watch: Watch) -> NoReturn:
        if isinstance(exc, sqlite3.Error) and (watch.expired or time.monotonic() >= watch.due):
            raise self._unanswered() from exc  # interrupted, or the busy wait cut to the deadline
        # OperationalError: locked, full, read-only, I/O; a bare DatabaseError: the file is
        # no database (any more); the others (IntegrityError, ...) are errors of the write
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
            raise StoreUnavailable(f"{self.describe()}: {exc}", sqlite_reason(exc)) from exc
        raise exc

    def _read(self, query: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query on the read connection, within the deadline."""
        with self._operation(self._reader, self._read_lock) as watch:
            try:
                return self._reader.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                self._refused(exc, watch)

    def _check_file(self) -> None:
        """StoreUnavailable when the store's file is no longer the one opened (removed, or
        its folder replaced): writes would go to a file nobody reads again."""
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._file:
            raise StoreUnavailable(
                f"{self.describe()} was removed or replaced since the server opened it; "
                "restore it and restart",
                "removed",
            )

    def _connect(self) -> sqlite3.Connection:
        # the busy timeout is set per operation (_operation)
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()
        self._watchdog.close()

    def describe(self) -> str:
        return f"SQLite store {self.path}"

    def wait(self, timeout: float) -> bool:
        """No announcements between processes here: sleep, then say a change may be there."""
        time.sleep(timeout)
        return True

    def head(self) -> Head:
        """The current sequence and generation: one cheap query, run before each request."""
        self._check_file()
        rows = dict(self._read("SELECT key, value FROM meta"))
        return Head(int(rows["seq"]), int(rows["generation"]), rows["model_dir"])

    def _add_vector_columns(self) -> None:
        """A store written before vectors were kept gets their columns; its rows stay."""
        with self._operation(self._db, self._lock) as watch:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # workers starting together: one adds them
                have = {row[1] for row in self._db.execute("PRAGMA table_info(listings)")}
                for name, kind in (("vector", "BLOB"), ("vector_model", "TEXT")):
                    if name not in have:
                        self._db.execute(f"ALTER TABLE listings ADD COLUMN {name} {kind}")
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rolled_back(exc, watch)

    def _write_rows(self, rows: list[Row]) -> list[tuple[int, bool]]:
        keys = list({row[0]: None for row in rows})
        self._check_file()
        with self._operation(self._db, self._lock) as watch:
            try:
                # IMMEDIATE takes the write lock first, so sequence numbers commit in order;
                # a database locked past the busy timeout fails here
                self._db.execute("BEGIN IMMEDIATE")
                last = self._db.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'seq' RETURNING value",
                    (len(rows),),
                ).fetchone()[0]
                live: dict[str, bool] = {}
                for start in range(0, len(keys), 500):  # SQLite's limit on parameters
                    chunk = keys[start : start + 500]
                    live.update(self._db.execute(
                        "SELECT listing_id, fields IS NOT NULL FROM listings WHERE listing_id "
                        f"IN ({','.join('?' * len(chunk))})", chunk
                    ).fetchall())  # fmt: skip
                params = assign(int(last) - len(rows) + 1, rows, live)
                now = time.time()
                self._db.executemany(
                    "INSERT INTO listings (listing_id, seq, fields, written_at, vector, "
                    "vector_model) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (listing_id) DO "
                    "UPDATE SET seq = excluded.seq, fields = excluded.fields, written_at = "
                    "excluded.written_at, vector = excluded.vector, "
                    "vector_model = excluded.vector_model",
                    [(k, q, f, now, v, m) for k, q, f, v, m, _ in params],
                )
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rolled_back(exc, watch)
        return [(q, new) for _, q, _, _, _, new in params]

    def check_writes(self) -> None:
        """StoreUnavailable unless the store takes a write now: a transaction that takes the
        lock a write takes and rewrites the sequence with its own value, committed."""
        self._check_file()
        with self._operation(self._db, self._lock) as watch:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE meta SET value = value WHERE key = 'seq'")
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rolled_back(exc, watch)

    def changes_since(self, seq: int) -> list[Change]:
        """The latest state of every listing changed after ``seq``, in sequence order."""
        rows = self._read(
            "SELECT seq, listing_id, fields, vector, vector_model FROM listings "
            "WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        return changes_of(rows)

    def _record(self, model_dir: str, only_first: bool) -> int | None:
        with self._operation(self._db, self._lock) as watch:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                generation = self._db.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'generation' "
                    + ("AND value = 0 " if only_first else "")
                    + "RETURNING value"
                ).fetchone()
                if generation is not None:
                    generation = int(generation[0])
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'model_dir'", (model_dir,)
                    )
                    self._db.execute(
                        "INSERT OR REPLACE INTO reloads VALUES (?, ?, ?)",
                        (generation, model_dir, time.time()),
                    )
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rolled_back(exc, watch)
        return generation

    def previous_model_dir(self) -> str | None:
        """The newest recorded model directory other than the current one (what a rollback
        returns to), or None."""
        rows = self._read(
            "SELECT model_dir FROM reloads WHERE model_dir IS NOT "
            "(SELECT value FROM meta WHERE key = 'model_dir') "
            "ORDER BY generation DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    def counts(self) -> dict[str, int]:
        """How many stored listings are live and how many are tombstones."""
        ((live, dead),) = self._read("SELECT count(fields), count(*) - count(fields) FROM listings")
        return {"live": int(live), "deleted": int(dead)}


def _interrupt_until_done(watch: Watch) -> None:
    """At an operation's deadline (a thread of the watchdog's): interrupt its SQLite
    statement, again every INTERRUPT_EVERY_S until the operation ends (an interrupt while no
    statement runs, between two of a transaction, does nothing)."""
    while True:
        with watch.lock:
            if watch.ended:
                return
            watch.expired = True
            watch.connection.interrupt()
        if watch.done.wait(INTERRUPT_EVERY_S):
            return
