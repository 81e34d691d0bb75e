"""The listing store in PostgreSQL, shared by the replicas of a service on several hosts.

Same interface and meaning as the SQLite :class:`~embedrec.serving.store.ListingStore`:

- ``embedrec_listings``: one row per listing id (``json.dumps`` of the id, so 7 and "7" stay
  apart), its last change sequence, its JSON fields (NULL: a tombstone) and its vector
  (float32 bytes) tagged with the model that embedded it;
- ``embedrec_counters``: the store-wide change sequence (``seq``) and reload ``generation``.
  A write increments ``seq`` in its own transaction: the row lock it takes is held until the
  commit, so writes commit in sequence order and a reader that has seen ``seq`` N has seen
  every change up to N. Catching up by sequence number therefore misses nothing;
- ``embedrec_reloads``: every recorded reload (generation, model directory), for rollbacks.

Each committed write or reload sends ``NOTIFY embedrec_changes`` (the payload is the new seq,
for logs only). :meth:`PostgresStore.wait` blocks on a LISTEN connection of its own; the
serving layer's follower thread then catches up with ``changes_since`` (by seq, never from
the payload), and on every new connection too, so a reconnect misses nothing either.

Connection failures raise :class:`~embedrec.serving.store.StoreUnavailable`. A connection
found broken is replaced on the next call; a statement that failed on a stale connection
before its transaction was committed is retried once on a fresh one. Every operation (a
read, a write's transaction, the LISTEN) has a deadline kept on the client, the statement
timeout and DEADLINE_GRACE_S more: one the database has not answered by then is cancelled,
and its connection shut down under it where the cancel does not end it, so that a database
that does not run (stopped, swapping) fails an operation in bounded time as one that went
away does.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from typing import Any

from embedrec.serving.store import (
    Change,
    Head,
    Row,
    StoreBase,
    StoreUnavailable,
    Watch,
    Watchdog,
    assign,
    changes_of,
    redact,
    redact_message,
)

CHANNEL = "embedrec_changes"
CONNECT_TIMEOUT_S = 5
# a statement waiting longer (on a lock held by a stuck writer, say) fails with 503
STATEMENT_TIMEOUT_MS = 30_000
# closing the store (the server's shutdown) waits this long for a statement in flight
CLOSE_WAIT_S = 2.0
# a store operation still waiting this long after its statement timeout would have ended it
# is stopped from here: a server whose host acknowledges the packets while its PostgreSQL
# does not run (stopped with SIGSTOP, swapping, stuck on a disk) answers nothing, and neither
# the statement timeout (the server's own) nor tcp_user_timeout and the keepalives (the
# kernel acknowledges) end the wait
DEADLINE_GRACE_S = 3.0
# the cancel request sent at the deadline may take this long, and the statement as long again
# to end once cancelled, before its connection is shut down under it
CANCEL_WAIT_S = 1.0
# libpq parameters given to every connection unless the store's URL sets them (or, for those
# libpq also reads from the environment, PGCONNECT_TIMEOUT and PGAPPNAME): a database host
# that stops answering (powered off, a network cut, a firewall dropping the connection) is
# noticed within about 20 s, so a write answers 503 and the follower reconnects, instead of
# waiting for the kernel's own limits (about 15 minutes of retransmissions, or forever on an
# idle connection). The keepalives probe an idle connection (the follower's LISTEN, a reader
# between requests) after 10 s of silence, every 3 s, and give up after 3 unanswered probes;
# tcp_user_timeout closes a connection whose data the peer has not acknowledged for 20 s (a
# statement sent to a host that vanished). Neither limits a slow statement on a live server:
# its statement_timeout does.
CONNECTION_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT_S),
    "application_name": "embedrec",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",  # milliseconds
}
_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME"}

_SCHEMA = [
    # the counters first: a writer locks the 'seq' row and then the listings table, so
    # creating them in the other order could deadlock with a running replica's write
    "CREATE TABLE IF NOT EXISTS embedrec_counters (name text PRIMARY KEY, value bigint NOT NULL)",
    "INSERT INTO embedrec_counters VALUES ('seq', 0), ('generation', 0) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS embedrec_listings (
        listing_id text PRIMARY KEY,  -- json.dumps of the id, so 7 and "7" stay different
        seq bigint NOT NULL,
        fields text,                  -- JSON object; NULL: deleted
        written_at timestamptz NOT NULL DEFAULT now()
    )""",
    # a store written before vectors were kept gets their columns; its rows stay
    "ALTER TABLE embedrec_listings ADD COLUMN IF NOT EXISTS vector bytea",
    "ALTER TABLE embedrec_listings ADD COLUMN IF NOT EXISTS vector_model text",
    "CREATE INDEX IF NOT EXISTS embedrec_listings_seq ON embedrec_listings (seq)",
    """CREATE TABLE IF NOT EXISTS embedrec_reloads (
        generation bigint PRIMARY KEY,
        model_dir text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )""",
]
# whether the schema above is complete: then a replica joining a running store takes no
# table lock at all (ALTER TABLE would lock the listings table even when it changes nothing)
_SCHEMA_COMPLETE = """
SELECT (SELECT count(*) FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'embedrec_listings'
        AND column_name IN ('vector', 'vector_model')) = 2
   AND to_regclass('embedrec_listings_seq') IS NOT NULL
   AND to_regclass('embedrec_reloads') IS NOT NULL
   AND (SELECT count(*) FROM embedrec_counters WHERE name IN ('seq', 'generation')) = 2
"""
# replicas starting together create the tables one after the other (any fixed number)
_SCHEMA_LOCK = 0x656D6265_64726563 >> 1

_HEAD = """
SELECT s.value, g.value, r.model_dir
FROM embedrec_counters s
JOIN embedrec_counters g ON g.name = 'generation'
LEFT JOIN embedrec_reloads r ON r.generation = g.value
WHERE s.name = 'seq'
"""


def _psycopg():  # noqa: ANN202 - the module, imported when a PostgreSQL store is opened
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of embedrec
        raise RuntimeError(
            "a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'"
        ) from None
    return psycopg


def _options(location: str) -> str:
    """The ``options`` the server is sent: the URL's, else PGOPTIONS'."""
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(location).get("options") or os.environ.get("PGOPTIONS") or ""


# the setting as options may spell it (-c statement_timeout=5s, --statement-timeout=5000)
_STATEMENT_TIMEOUT_NAME = re.compile(r"statement[_-]timeout", re.IGNORECASE)
_STATEMENT_TIMEOUT = re.compile(
    r"statement[_-]timeout\s*=\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?(?![\w.])", re.IGNORECASE
)
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def operation_deadline_s(location: str) -> float:
    """How long a store operation may wait for the database before it is stopped: the
    connections' statement timeout (the one the URL's or PGOPTIONS' ``options`` set, else
    STATEMENT_TIMEOUT_MS; with none, 0, that default all the same) plus DEADLINE_GRACE_S."""
    options = connection_parameters(location).get("options") or _options(location)
    seconds = 0.0
    for value, unit in _STATEMENT_TIMEOUT.findall(options)[-1:]:  # the last one holds
        seconds = float(value) * _SECONDS_PER_UNIT[(unit or "ms").lower()]  # bare: ms
    return (seconds or STATEMENT_TIMEOUT_MS / 1000) + DEADLINE_GRACE_S


def connection_parameters(location: str) -> dict[str, str]:
    """The libpq parameters added to ``location``'s: CONNECTION_DEFAULTS that neither the URL
    nor the environment sets, and the statement timeout added to the URL's (or PGOPTIONS')
    ``options`` unless they set one. Keyword arguments override the URL's own values in
    psycopg, so what the URL sets is left out here."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(location)
    added = {
        key: value
        for key, value in CONNECTION_DEFAULTS.items()
        if key not in given and not os.environ.get(_ENVIRONMENT.get(key, ""))
    }
    options = _options(location)
    if not _STATEMENT_TIMEOUT_NAME.search(options):
        added["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return added


def _shut_down(connection: Any) -> None:
    """Shut the socket of a connection in use by another thread down: its statement fails at
    once. (Closing the connection would free what that thread is using.)"""
    # (suppressed: closed meanwhile, no socket any more)
    with (
        contextlib.suppress(Exception),
        socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)


class PostgresStore(StoreBase):
    """Listings written through the API in PostgreSQL; safe to share between threads,
    processes and hosts. ``location`` is a libpq URL, ``postgresql://USER@HOST:PORT/DB``."""

    listens = True

    def __init__(self, location: str) -> None:
        super().__init__()
        self._pg = _psycopg()
        self.location = location
        # as for SQLite: writes on one connection, reads on another, each with its lock, and
        # the LISTEN connection used by the follower thread alone
        self._lock, self._read_lock = threading.Lock(), threading.Lock()
        self._db: Any = None
        self._reader: Any = None
        self._listener: Any = None
        self._closed = False
        self._watchdog = Watchdog(self._stop_unanswered)
        with self._lock:
            db = self._writer()
            # read once the URL has connected: a URL libpq cannot parse is refused by the
            # connection, in a message without its password
            self.deadline_s = operation_deadline_s(location)
            try:
                with self._watch(db) as watch:
                    if not self._schema_complete(db):
                        with db.transaction():
                            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                            for statement in _SCHEMA:
                                db.execute(statement)
            except self._pg.Error as exc:  # unreachable, or no right to create the tables
                self._drop("_db")
                raise self._failed(exc, watch) from None

    def _schema_complete(self, db: Any) -> bool:
        if db.execute("SELECT to_regclass('embedrec_counters')").fetchone()[0] is None:
            return False
        return bool(db.execute(_SCHEMA_COMPLETE).fetchone()[0])

    # ------------------------------------------------------------------ connections
    def describe(self) -> str:
        return f"PostgreSQL store {redact(self.location)}"

    def _connect(self) -> Any:
        if self._closed:
            raise StoreUnavailable(f"{self.describe()} is closed", "unavailable")
        try:
            return self._pg.connect(
                self.location, autocommit=True, **connection_parameters(self.location)
            )
        except self._pg.Error as exc:
            raise self._unavailable(exc) from None

    def _cause(self, exc: Exception) -> str:
        """The driver's message on one line, without the password (libpq quotes the URL, or
        a part of it that it cannot parse, in some of its messages)."""
        return redact_message(" ".join(str(exc).split()), self.location) or type(exc).__name__

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(
            f"{self.describe()} is unavailable: {self._cause(exc)}", self._reason(exc)
        )

    def _reason(self, exc: Exception) -> str:
        """The FAILURE_REASONS word for a driver's error (its SQLSTATE, where the server
        sent one): a cancelled statement, a lock, a full disk, a standby; else unreachable."""
        state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
        if state == "57014":  # query_canceled: the statement timeout
            return "timeout"
        if state in ("40P01", "55P03"):  # deadlock_detected, lock_not_available
            return "locked"
        if state == "53100":  # disk_full
            return "disk_full"
        if state == "25006":  # read_only_sql_transaction: a standby, a read-only database
            return "read_only"
        return "unavailable"

    def _unanswered(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"{self.describe()} did not answer within {self.deadline_s:g} s (the statement "
            f"timeout and {DEADLINE_GRACE_S:g} s more): the operation was stopped",
            "timeout",
        )

    def _failed(self, exc: Exception, watch: Watch) -> StoreUnavailable:
        """What an operation that failed with ``exc`` on a connection that is gone raises."""
        return self._unanswered() if watch.expired else self._unavailable(exc)

    def _watch(self, connection: Any) -> contextlib.AbstractContextManager[Watch]:
        """The deadline of one operation on ``connection``."""
        return self._watchdog.watch(connection, self.deadline_s)

    def _stop_unanswered(self, watch: Watch) -> None:
        """At an operation's deadline (the watchdog's thread): cancel its statement (a live
        server whose statement timeout is off ends it, the connection lives on), and where
        that does not end it within CANCEL_WAIT_S (a server that does not run), shut its
        connection down under it."""
        with watch.lock:
            if watch.ended:
                return
            watch.expired = True
            with contextlib.suppress(Exception):  # no answer to the cancel either
                watch.connection.cancel_safe(timeout=CANCEL_WAIT_S)
        if watch.done.wait(CANCEL_WAIT_S):
            return
        with watch.lock:
            if not watch.ended:
                _shut_down(watch.connection)

    def _writer(self) -> Any:
        if self._db is None or self._db.closed:
            self._db = self._connect()
        return self._db

    def _read_connection(self) -> Any:
        if self._reader is None or self._reader.closed:
            self._reader = self._connect()
        return self._reader

    def _drop(self, name: str) -> None:
        connection = getattr(self, name)
        setattr(self, name, None)
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                connection.close()

    def _lost(self, exc: Exception, connection: Any) -> bool:
        """Whether ``exc`` says the connection (or the server) is gone, not the statement: a
        statement the server cancelled on a connection that lives on (its statement timeout,
        a lock it could not have) is an OperationalError too, and repeating it would wait as
        long again."""
        return isinstance(exc, self._pg.OperationalError | self._pg.InterfaceError) and (
            connection.closed or connection.broken
        )

    def _refused(self, exc: Exception) -> Exception:
        """What a failed statement on a live connection raises: StoreUnavailable (503, retry
        later) where the server refused it for now (OperationalError: cancelled by the
        statement timeout, a deadlock), else the error itself."""
        return self._unavailable(exc) if isinstance(exc, self._pg.OperationalError) else exc

    def close(self) -> None:
        """Close the connections. One that is still running a statement after CLOSE_WAIT_S
        (a database that does not answer) is shut down under it, so that the statement fails
        (StoreUnavailable) instead of holding the server's shutdown until the database
        answers, if ever."""
        self._closed = True
        for lock, name in ((self._lock, "_db"), (self._read_lock, "_reader")):
            if not lock.acquire(timeout=CLOSE_WAIT_S):
                self._interrupt(name)
                if not lock.acquire(timeout=CLOSE_WAIT_S):
                    continue  # left to the process's exit
            try:
                self._drop(name)
            finally:
                lock.release()
        self._drop("_listener")
        self._watchdog.close()

    def _interrupt(self, name: str) -> None:
        """Shut down the socket of the connection ``name``, in use by another thread."""
        _shut_down(getattr(self, name))

    # ------------------------------------------------------------------ reads
    def _read(self, query: str, params: tuple = ()) -> list[tuple]:
        with self._read_lock:
            fresh = self._reader is None or self._reader.closed
            for attempt in range(2):
                db = self._read_connection()
                try:
                    with self._watch(db) as watch:
                        cursor = db.execute(query, params)
                    return cursor.fetchall()  # converting the rows received waits for no one
                except self._pg.Error as exc:
                    if not self._lost(exc, db):
                        raise (
                            self._unanswered() if watch.expired else self._refused(exc)
                        ) from None
                    self._drop("_reader")
                    # reads are safe to repeat: once, on a fresh connection, when the old
                    # one had gone stale (a restarted server), not when it did not answer
                    if fresh or attempt or watch.expired:
                        raise self._failed(exc, watch) from None
                    fresh = True
        raise AssertionError("unreachable")

    def head(self) -> Head:
        """The current sequence, generation and the generation's model directory."""
        seq, generation, model_dir = self._read(_HEAD)[0]
        return Head(int(seq), int(generation), model_dir)

    def changes_since(self, seq: int) -> list[Change]:
        """The latest state of every listing changed after ``seq``, in sequence order."""
        rows = self._read(
            "SELECT seq, listing_id, fields, vector, vector_model FROM embedrec_listings "
            "WHERE seq > %s ORDER BY seq",
            (seq,),
        )
        return changes_of(rows)

    def counts(self) -> dict[str, int]:
        """How many stored listings are live and how many are tombstones."""
        live, dead = self._read(
            "SELECT count(fields), count(*) - count(fields) FROM embedrec_listings"
        )[0]
        return {"live": int(live), "deleted": int(dead)}

    def previous_model_dir(self) -> str | None:
        """The newest recorded model directory other than the current one, or None."""
        rows = self._read(
            "SELECT r.model_dir FROM embedrec_reloads r WHERE r.model_dir IS DISTINCT FROM ("
            "SELECT c.model_dir FROM embedrec_reloads c JOIN embedrec_counters g "
            "ON g.name = 'generation' AND c.generation = g.value) "
            "ORDER BY r.generation DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ writes
    def _transaction(self, body: Any) -> Any:
        """Run ``body(connection)`` in a transaction on the write connection and commit it.

        On a lost connection before the commit nothing was written: a stale connection (the
        server restarted since its last use) is replaced and the transaction run once more.
        A connection lost during the commit leaves the outcome unknown: StoreUnavailable says
        so, and the client's retry (PUT and DELETE are idempotent) settles it. A transaction
        the database has not answered by its deadline is stopped and not run again.
        """
        with self._lock:
            fresh = self._db is None or self._db.closed
            for attempt in range(2):
                db = self._writer()
                committing = False
                try:
                    with self._watch(db) as watch:
                        db.execute("BEGIN")
                        result = body(db)
                        committing = True
                        db.execute("COMMIT")
                    return result
                except self._pg.Error as exc:
                    if not self._lost(exc, db):
                        try:
                            with self._watch(db):
                                db.execute("ROLLBACK")
                        except self._pg.Error:
                            self._drop("_db")
                        raise (
                            self._unanswered() if watch.expired else self._refused(exc)
                        ) from None
                    self._drop("_db")
                    if committing:
                        why = self._cause(exc)
                        if watch.expired:
                            why = f"no answer within {self.deadline_s:g} s"
                        raise StoreUnavailable(
                            f"{self.describe()}: the connection was lost while committing, so "
                            f"the write may or may not be stored; repeat it ({why})",
                            "commit_unknown",
                        ) from None
                    if fresh or attempt or watch.expired:
                        raise self._failed(exc, watch) from None
                    fresh = True
                except BaseException:
                    self._drop("_db")  # interrupted mid-transaction: start afresh
                    raise
        raise AssertionError("unreachable")

    def _write_rows(self, rows: list[Row]) -> list[tuple[int, bool]]:
        keys = list({row[0]: None for row in rows})

        def body(db: Any) -> list[tuple[int, bool]]:
            # the counter row stays locked until COMMIT: writes commit in sequence order
            last = db.execute(
                "UPDATE embedrec_counters SET value = value + %s WHERE name = 'seq' "
                "RETURNING value",
                (len(rows),),
            ).fetchone()[0]
            live = dict(
                db.execute(
                    "SELECT listing_id, fields IS NOT NULL FROM embedrec_listings "
                    "WHERE listing_id = ANY(%s)",
                    (keys,),
                ).fetchall()
            )
            params = assign(int(last) - len(rows) + 1, rows, live)
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO embedrec_listings (listing_id, seq, fields, vector, "
                    "vector_model) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (listing_id) DO "
                    "UPDATE SET seq = excluded.seq, fields = excluded.fields, "
                    "vector = excluded.vector, vector_model = excluded.vector_model, "
                    "written_at = now()",
                    [(k, q, f, v, m) for k, q, f, v, m, _ in params],
                )
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))
            return [(q, new) for _, q, _, _, _, new in params]

        return self._transaction(body)

    def check_writes(self) -> None:
        """StoreUnavailable unless the store takes a write now: a transaction that takes the
        row lock a write takes first and rewrites the sequence with its own value, committed."""
        self._transaction(
            lambda db: db.execute("UPDATE embedrec_counters SET value = value WHERE name = 'seq'")
        )

    def _record(self, model_dir: str, only_first: bool) -> int | None:
        def body(db: Any) -> int | None:
            row = db.execute(
                "UPDATE embedrec_counters SET value = value + 1 WHERE name = 'generation' "
                + ("AND value = 0 " if only_first else "")
                + "RETURNING value"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "INSERT INTO embedrec_reloads (generation, model_dir) VALUES (%s, %s) "
                "ON CONFLICT (generation) DO UPDATE SET model_dir = excluded.model_dir, "
                "recorded_at = now()",
                (row[0], model_dir),
            )
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"generation {row[0]}"))
            return int(row[0])

        return self._transaction(body)

    # ------------------------------------------------------------------ announcements
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for another process's change; True when one was announced,
        or when the LISTEN connection is new (changes may have been made while there was
        none: the caller catches up by seq either way). Called by one thread only."""
        if self._listener is None or self._listener.closed:
            listener = self._connect()
            try:
                with self._watch(listener) as watch:
                    listener.execute(f"LISTEN {CHANNEL}")
            except self._pg.Error as exc:
                listener.close()
                raise self._failed(exc, watch) from None
            self._listener = listener
            return True
        try:
            woke = False
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                woke = True
            if woke:  # a burst of writes: one catch-up for all that arrived
                for _ in self._listener.notifies(timeout=0):
                    pass
            return woke
        except self._pg.Error as exc:
            self._drop("_listener")
            raise self._unavailable(exc) from None
