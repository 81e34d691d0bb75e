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
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listings (
    listing_id TEXT PRIMARY KEY,  -- json.dumps of the id, so 7 and "7" stay different
    seq INTEGER NOT NULL,
    fields TEXT,                  -- JSON object; NULL: deleted
    written_at REAL NOT NULL
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


@dataclass(frozen=True)
class Head:
    """Where the store stands: last change sequence, reload generation and its model dir."""

    seq: int
    generation: int
    model_dir: str | None


class StoreUnavailable(Exception):
    """The store cannot be reached (a database that went away): writes are refused with 503
    and Retry-After, reads are answered from memory, catching up resumes when it is back."""


class Store(Protocol):
    """What the serving layer asks of a store; :class:`ListingStore` (SQLite) and
    ``pgstore.PostgresStore`` answer it. Methods raise :class:`StoreUnavailable` when the
    store cannot be reached."""

    #: True: other processes' changes are announced (``wait``), a background thread follows
    #: them; False: a worker checks ``head()`` before each request
    listens: bool

    def describe(self) -> str: ...

    def head(self) -> Head: ...

    def put(self, listing_id: Any, fields: dict[str, Any]) -> tuple[int, bool]: ...

    def delete(self, listing_id: Any) -> int: ...

    def changes_since(self, seq: int) -> list[Change]: ...

    def record_reload(self, model_dir: str) -> int: ...

    def record_first(self, model_dir: str) -> Head: ...

    def previous_model_dir(self) -> str | None: ...

    def wait(self, timeout: float) -> bool: ...

    def counts(self) -> dict[str, int]: ...

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
        return "postgresql"
    raise ValueError(
        f"store {redact(str(location))!r}: {found.group(1)}:// stores are not supported; "
        "give the path of a SQLite file or a postgresql://USER@HOST:PORT/DB URL"
    )


def redact(location: str) -> str:
    """A store location fit for messages and logs: a password in a URL replaced by ***."""
    location = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^@/?#]*@", r"\1:***@", location)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", location)


def open_store(location: str | Path) -> Store:
    """The store at ``location``: a SQLite file path or a ``postgresql://`` URL."""
    if check_store_location(location) == "postgresql":
        from embedrec.serving.pgstore import PostgresStore

        return PostgresStore(str(location))
    return ListingStore(location)


class StoreBase:
    """What both back-ends share, on top of their ``_write`` (one transaction storing a
    listing's JSON fields, or None for a delete, under the next sequence number), ``_record``
    (one bumping the reload generation, optionally only from 0) and ``head``."""

    def put(self, listing_id: Any, fields: dict[str, Any]) -> tuple[int, bool]:
        """Store a listing's fields; returns (seq, whether the id was new or deleted)."""
        return self._write(listing_id, json.dumps(fields, allow_nan=False))

    def delete(self, listing_id: Any) -> int:
        """Record that a listing is gone; returns its seq."""
        return self._write(listing_id, None)[0]

    def record_reload(self, model_dir: str) -> int:
        """Record a reload so every worker and replica applies it; returns the generation."""
        return self._record(model_dir, only_first=False) or 0

    def record_first(self, model_dir: str) -> Head:
        """Record ``model_dir`` as generation 1 if the store has no reload yet (the first
        server of a shared store names the model all follow); returns the head after."""
        self._record(model_dir, only_first=True)
        return self.head()


class ListingStore(StoreBase):
    """Listings written through the API in a SQLite file; safe to share between threads and
    the processes of one host."""

    listens = False

    def __init__(self, path: str | Path) -> None:
        if check_store_location(path) != "sqlite":
            raise ValueError(
                f"store {redact(str(path))!r}: ListingStore keeps a SQLite file; "
                "open_store opens postgresql:// stores"
            )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two connections, each serialised by its own lock: reads (one before every request)
        # must not wait for a write's fsync, and in WAL mode they need not.
        self._db, self._lock = self._connect(), threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before we answer, even if the machine loses power
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self._reader, self._read_lock = self._connect(), threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def describe(self) -> str:
        return f"SQLite store {self.path}"

    def wait(self, timeout: float) -> bool:
        """No announcements between processes here: sleep, then say a change may be there."""
        time.sleep(timeout)
        return True

    def head(self) -> Head:
        """The current sequence and generation: one cheap query, run before each request."""
        with self._read_lock:
            rows = dict(self._reader.execute("SELECT key, value FROM meta").fetchall())
        return Head(int(rows["seq"]), int(rows["generation"]), rows["model_dir"])

    def _write(self, listing_id: Any, fields: str | None) -> tuple[int, bool]:
        key = json.dumps(listing_id)
        with self._lock:
            # IMMEDIATE takes the write lock first, so sequence numbers commit in order
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._db.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value"
                ).fetchone()[0]
                before = self._db.execute(
                    "SELECT fields IS NOT NULL FROM listings WHERE listing_id = ?", (key,)
                ).fetchone()
                self._db.execute(
                    "INSERT INTO listings VALUES (?, ?, ?, ?) ON CONFLICT (listing_id) DO "
                    "UPDATE SET seq = excluded.seq, fields = excluded.fields, "
                    "written_at = excluded.written_at",
                    (key, seq, fields, time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(seq), not (before and before[0])

    def changes_since(self, seq: int) -> list[Change]:
        """The latest state of every listing changed after ``seq``, in sequence order."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT seq, listing_id, fields FROM listings WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [
            Change(int(s), json.loads(i), json.loads(f) if f is not None else None)
            for s, i, f in rows
        ]

    def _record(self, model_dir: str, only_first: bool) -> int | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
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
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return generation

    def previous_model_dir(self) -> str | None:
        """The newest recorded model directory other than the current one (what a rollback
        returns to), or None."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT model_dir FROM reloads WHERE model_dir IS NOT "
                "(SELECT value FROM meta WHERE key = 'model_dir') "
                "ORDER BY generation DESC LIMIT 1"
            ).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        """How many stored listings are live and how many are tombstones."""
        with self._read_lock:
            live, dead = self._reader.execute(
                "SELECT count(fields), count(*) - count(fields) FROM listings"
            ).fetchone()
        return {"live": int(live), "deleted": int(dead)}
