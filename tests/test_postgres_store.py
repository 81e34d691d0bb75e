"""The PostgreSQL store (serving/pgstore.py) and service replicas sharing it.

The store's interface is checked against both back-ends (SQLite and a real PostgreSQL server
started for the session, see tests/postgres.py); then two real ``embedrec serve`` processes on
one database: writes, late starters, reloads and rollbacks, and the database going away.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import test_serving as serving
from test_serving_hardening import metric

from embedrec.serving.store import (
    Change,
    Head,
    ListingStore,
    StoreUnavailable,
    Write,
    open_store,
)

AUTH, NEW_CAR, Server = serving.AUTH, serving.NEW_CAR, serving.Server
cars, model_dir = serving.cars, serving.model_dir  # the session fixtures, made once
CAR = {"make": "Nissan", "model": "Qashqai", "price": 18_500, "lat": 51.05, "lon": 13.74}
# how long another replica may take to apply a write (normally milliseconds): a deadline
# that fails the test instead of hanging it, not a timing assertion
DEADLINE_S = 30


# ---------------------------------------------------------------------- the store interface
@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture
def store(location):
    opened = open_store(location)
    yield opened
    opened.close()


def test_open_store_picks_the_back_end_from_the_location(store, location):
    assert store.listens == location.startswith("postgresql://")
    assert isinstance(store, ListingStore) != store.listens
    assert store.head() == Head(seq=0, generation=0, model_dir=None)
    assert store.changes_since(0) == [] and store.counts() == {"live": 0, "deleted": 0}


def test_integer_and_string_ids_stay_apart_and_tombstones_are_kept(store):
    assert store.put(7, {**CAR, "price": 1}) == (1, True)
    assert store.put("7", {**CAR, "price": 2}) == (2, True)
    assert store.put("07", {**CAR, "price": 3}) == (3, True)
    changes = store.changes_since(0)
    assert [(c.listing_id, c.fields["price"]) for c in changes] == [(7, 1), ("7", 2), ("07", 3)]
    assert type(changes[0].listing_id) is int and type(changes[1].listing_id) is str
    assert store.delete(7) == 4
    assert store.changes_since(3) == [Change(4, 7, None)]  # a tombstone, not a missing row
    assert store.counts() == {"live": 2, "deleted": 1}
    # deleting a listing the store never held (one of the model's catalogue) is recorded too
    assert store.delete("from the catalogue") == 5
    assert store.counts() == {"live": 2, "deleted": 2}


def test_put_after_delete_is_new_again_and_sequence_numbers_increase(store):
    assert store.put("a", CAR) == (1, True)
    assert store.put("a", {**CAR, "price": 1}) == (2, False)  # an update
    assert store.delete("a") == 3
    assert store.put("a", CAR) == (4, True)  # back after a delete: new again
    assert store.changes_since(0) == [Change(4, "a", CAR)]
    assert store.record_reload("models/v2") == 1  # a reload moves the generation, not seq
    assert store.put("b", CAR)[0] == 5
    assert store.head() == Head(seq=5, generation=1, model_dir="models/v2")


def test_fields_come_back_as_written_and_bad_ones_take_no_number(store):
    fields = {"make": "Škoda", "tags": ["a", "b"], "price": 1.5, "nested": {"x": None}}
    store.put("ü 1\u0000", fields)  # NUL in an id is stored escaped, as JSON
    assert store.changes_since(0) == [Change(1, "ü 1\u0000", fields)]
    with pytest.raises(ValueError):
        store.put("a", {"price": float("nan")})  # not JSON
    assert store.head().seq == 1 and store.put("a", CAR) == (2, True)


def test_reload_history_first_model_and_rollback_target(store):
    assert store.previous_model_dir() is None
    assert store.record_first("models/v1") == Head(0, 1, "models/v1")
    assert store.record_first("models/other") == Head(0, 1, "models/v1")  # only the first
    assert store.record_reload("models/v2") == 2
    assert store.previous_model_dir() == "models/v1"
    assert store.record_reload("models/v2") == 3  # reloading the same directory again
    assert store.previous_model_dir() == "models/v1"
    assert store.record_reload("models/v1") == 4  # a rollback...
    assert store.previous_model_dir() == "models/v2"  # ...and the next one undoes it


def test_checking_writes_stores_nothing_and_fails_while_a_write_would(location, monkeypatch):
    import sqlite3

    import psycopg

    from embedrec.serving import pgstore

    monkeypatch.setattr(pgstore, "STATEMENT_TIMEOUT_MS", 300)
    store = open_store(location)
    try:
        store.put("a", CAR)
        store.check_writes()
        assert store.head().seq == 1 and store.changes_since(0) == [Change(1, "a", CAR)]
        # another session holds what a write locks first: the check waits for it as a write
        # would (SQLite's busy timeout, PostgreSQL's statement timeout), and is refused
        if store.listens:
            other = psycopg.connect(location)
            other.execute("SELECT 1 FROM embedrec_counters WHERE name = 'seq' FOR UPDATE")
        else:
            store.busy_timeout_s = 0.05  # (30 s)
            other = sqlite3.connect(location, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as refused:
            store.check_writes()
        assert refused.value.reason == ("timeout" if store.listens else "locked")
        other.rollback()
        other.close()
        store.check_writes()
        assert store.put("b", CAR) == (2, True)
    finally:
        store.close()


def test_a_sqlite_operation_past_its_deadline_is_stopped_as_a_timeout(tmp_path):
    """As the PostgreSQL store's: a statement still running at the deadline is interrupted,
    and a lock another process holds is waited for until the deadline only."""
    import sqlite3

    store = ListingStore(tmp_path / "store.sqlite")
    try:
        store.deadline_s = 0.3  # (the busy timeout, 30 s, and 3 s more)
        endless = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
        )
        with pytest.raises(StoreUnavailable, match="did not answer within 0.3 s") as refused:
            store._read(endless)
        assert refused.value.reason == "timeout"
        assert store.head().seq == 0  # the connection serves on
        other = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreUnavailable, match="did not answer within 0.3 s") as refused:
            store.put("a", CAR)
        assert refused.value.reason == "timeout"
        other.execute("ROLLBACK")
        other.close()
        assert store.put("a", CAR) == (1, True)  # nothing half written
    finally:
        store.close()


def test_reopening_keeps_everything(location):
    first = open_store(location)
    first.put(7, CAR)
    first.put("7", {**CAR, "price": 1})
    first.put("gone", CAR)
    first.delete("gone")
    first.record_reload("models/v2")
    before = first.changes_since(0)
    first.close()
    again = open_store(location)
    try:
        assert again.head() == Head(seq=4, generation=1, model_dir="models/v2")
        assert again.changes_since(0) == before
        assert again.counts() == {"live": 2, "deleted": 1}
        assert again.put("gone", CAR) == (5, True)  # numbering goes on; the tombstone held
        assert again.put(7, CAR) == (6, False)
    finally:
        again.close()


def test_of_concurrent_puts_of_one_new_id_exactly_one_is_new(location):
    """Two stores (two workers or replicas), three threads each, put the same new ids at once:
    whether a put is new is decided in its transaction, so each id is new exactly once."""
    stores = [open_store(location), open_store(location)]
    start = threading.Barrier(6)

    def put(worker: int) -> list[bool]:
        start.wait()
        return [stores[worker % 2].put(f"race-{i}", CAR)[1] for i in range(5)]

    try:
        with ThreadPoolExecutor(6) as pool:
            news = list(pool.map(put, range(6)))
        assert [sum(column) for column in zip(*news, strict=True)] == [1] * 5
        # a listing the catalogue serves without a stored row (a training listing) is
        # replaced, not created, unless the store says it was deleted since
        assert stores[0].put_many([Write("trained", CAR, served=True)]) == [(31, False)]
        stores[1].delete("trained")
        assert stores[0].put_many([Write("trained", CAR, served=True)]) == [(33, True)]
    finally:
        for store in stores:
            store.close()


def test_writers_in_parallel_commit_in_sequence_order_so_catching_up_misses_nothing(location):
    """Two stores (two replicas) write from four threads while a third catches up by seq
    as the service's follower does: what it applied equals the store's final state."""
    writers = [open_store(location), open_store(location)]
    reader = open_store(location)
    applied: dict = {}
    done = threading.Event()
    taken: list[int] = []

    def write(worker: int) -> None:
        store = writers[worker % 2]
        for i in range(25):
            key = f"{worker}-{i % 10}"  # ids written again and deleted: rows change seq
            if i % 7 == 6:
                taken.append(store.delete(key))
            else:
                taken.append(store.put(key, {**CAR, "price": i})[0])

    def follow() -> None:
        seq = 0
        while True:
            last_round = done.is_set()
            for change in reader.changes_since(seq):
                applied[change.listing_id] = change.fields
                seq = change.seq
            if last_round:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    follower.join()
    try:
        assert sorted(taken) == list(range(1, 101))
        final = {c.listing_id: c.fields for c in reader.changes_since(0)}
        assert applied == final
    finally:
        for store in (*writers, reader):
            store.close()


# ---------------------------------------------------------------------- PostgreSQL only
@pytest.fixture
def pg_url(postgres_cluster) -> str:
    return postgres_cluster.new_database()


def test_a_write_wakes_another_process_listening(pg_url):
    one, other = open_store(pg_url), open_store(pg_url)
    try:
        assert other.wait(0.01) is True  # a new LISTEN connection: catch up first
        assert other.wait(0.01) is False  # nothing announced
        seq, _ = one.put("a", CAR)
        assert other.wait(DEADLINE_S) is True
        assert other.changes_since(0) == [Change(seq, "a", CAR)]
        for i in range(20):  # a burst: one wake-up may cover many writes
            one.put(f"b{i}", CAR)
        assert other.wait(DEADLINE_S) is True
        deadline = time.monotonic() + DEADLINE_S
        while other.head().seq < 21:
            assert time.monotonic() < deadline
            other.wait(0.1)
        one.record_reload("models/v2")
        assert other.wait(DEADLINE_S) is True and other.head().generation == 1
    finally:
        one.close()
        other.close()


def test_a_replica_opens_the_store_while_another_is_inside_a_write(pg_url):
    """A replica (re)starting mid-traffic takes no lock a writer holds: once the schema
    exists, opening the store waits for nobody (it used to run ALTER TABLE and insert the
    counters, and deadlocked with a write holding the 'seq' row)."""
    import psycopg

    open_store(pg_url).close()  # the schema exists, as with replicas already running
    with psycopg.connect(pg_url) as writer:
        # what a write holds until its COMMIT: the counter row and the listings table
        writer.execute("UPDATE embedrec_counters SET value = value + 1 WHERE name = 'seq'")
        writer.execute("SELECT count(*) FROM embedrec_listings").fetchone()
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(open_store, pg_url)
            late = opening.result(timeout=DEADLINE_S)  # before the write commits
            assert late.head().seq == 0  # the open write is not visible yet
        writer.rollback()
    late.close()


def test_database_restart_store_reconnects_and_keeps_everything(pg_url, postgres_cluster):
    store = open_store(pg_url)
    try:
        store.put(7, CAR)
        store.put("7", CAR)
        store.delete(7)
        store.wait(0.01)  # listening
        postgres_cluster.stop()
        with pytest.raises(StoreUnavailable, match="PostgreSQL store postgresql://.* unavailable"):
            store.put("during", CAR)
        with pytest.raises(StoreUnavailable):
            store.head()
        with pytest.raises(StoreUnavailable):
            store.wait(0.01)
        postgres_cluster.start()
        # the first call after the restart finds its connection stale and takes a new one
        assert store.put("after", CAR) == (4, True)
        assert store.head().seq == 4
        assert [(c.listing_id, c.fields) for c in store.changes_since(0)] == [
            ("7", CAR),
            (7, None),
            ("after", CAR),
        ]
        assert store.wait(0.01) is True  # a new LISTEN connection: catch up again
    finally:
        if not postgres_cluster.running():
            postgres_cluster.start()
        store.close()


def test_a_write_the_statement_timeout_cancels_is_refused_once_not_repeated(pg_url, monkeypatch):
    import psycopg

    from embedrec.serving import pgstore

    monkeypatch.setattr(pgstore, "STATEMENT_TIMEOUT_MS", 700)
    store = open_store(pg_url)
    stuck = psycopg.connect(pg_url)  # a writer holding the sequence's row lock
    try:
        store.put("before", CAR)  # the write connection is open, not fresh
        stuck.execute("SELECT 1 FROM embedrec_counters WHERE name = 'seq' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="statement timeout") as refused:  # a 503
            store.put("stuck", CAR)
        assert refused.value.reason == "timeout"  # the failed-writes metric's label
        # cancelled on a live connection: not taken for a lost one and run again, which
        # waited for the timeout twice
        assert time.monotonic() - started < 1.3
        stuck.rollback()
        assert store.put("after", CAR) == (2, True)
    finally:
        stuck.close()
        store.close()


def test_connections_bound_a_silent_peer_unless_the_url_says_otherwise(pg_url, monkeypatch):
    monkeypatch.delenv("PGOPTIONS", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGAPPNAME", raising=False)
    store = open_store(pg_url)
    try:
        for connection in (store._writer(), store._read_connection()):
            given = connection.info.get_parameters()  # what libpq connected with
            assert {k: given.get(k) for k in ("keepalives", "keepalives_idle",
                    "keepalives_interval", "keepalives_count", "tcp_user_timeout")} == {
                "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "3",
                "keepalives_count": "3", "tcp_user_timeout": "20000"}  # fmt: skip
            assert connection.execute("SHOW statement_timeout").fetchone()[0] == "30s"
        store.wait(0)  # the follower's LISTEN connection too
        assert store._listener.info.get_parameters()["tcp_user_timeout"] == "20000"
    finally:
        store.close()
    # the URL's own values win (psycopg's keyword arguments would override them), and its
    # options keep the statement timeout added to them
    mine = (
        f"{pg_url}?tcp_user_timeout=5000&keepalives_idle=42&application_name=mine"
        "&options=-c%20search_path%3Dpublic"
    )
    store = open_store(mine)
    try:
        db = store._writer()
        given = db.info.get_parameters()
        assert given["tcp_user_timeout"] == "5000" and given["keepalives_idle"] == "42"
        assert given["keepalives_count"] == "3"  # not set by the URL: ours
        assert db.execute("SHOW application_name").fetchone()[0] == "mine"
        assert db.execute("SHOW statement_timeout").fetchone()[0] == "30s"
        assert db.execute("SHOW search_path").fetchone()[0] == "public"
    finally:
        store.close()


def test_the_deadline_follows_the_statement_timeout_the_url_sets(monkeypatch):
    from embedrec.serving.pgstore import operation_deadline_s

    monkeypatch.delenv("PGOPTIONS", raising=False)
    url = "postgresql://u@db:5432/d"
    assert operation_deadline_s(url) == 33  # 30 s statement timeout, 3 s more
    for options, seconds in [("1500", 4.5), ("5s", 8), ("2min", 123), ("0", 33)]:
        given = f"{url}?options=-c%20statement_timeout%3D{options}"
        assert operation_deadline_s(given) == seconds, options
    monkeypatch.setenv("PGOPTIONS", "--statement-timeout=10s")
    assert operation_deadline_s(url) == 13


def test_a_statement_past_the_deadline_on_a_live_server_is_cancelled_and_its_connection_kept(
    pg_url, monkeypatch
):
    """A server that runs but whose statement timeout is off (0 in the URL): the deadline's
    cancel ends the statement, and the connection lives on."""
    import psycopg

    from embedrec.serving import pgstore

    monkeypatch.setattr(pgstore, "STATEMENT_TIMEOUT_MS", 500)
    monkeypatch.setattr(pgstore, "DEADLINE_GRACE_S", 0.5)
    store = open_store(f"{pg_url}?options=-c%20statement_timeout%3D0")
    stuck = psycopg.connect(pg_url)  # a writer holding the sequence's row lock
    try:
        assert store.deadline_s == 1.0
        store.put("before", CAR)
        backend = store._writer().info.backend_pid
        stuck.execute("SELECT 1 FROM embedrec_counters WHERE name = 'seq' FOR UPDATE")
        with pytest.raises(StoreUnavailable, match="did not answer within 1 s") as refused:
            store.put("stuck", CAR)
        assert refused.value.reason == "timeout"
        stuck.rollback()
        assert store.put("after", CAR) == (2, True)
        assert store._writer().info.backend_pid == backend  # cancelled, not shut down
    finally:
        stuck.close()
        store.close()


def test_a_url_without_a_password_takes_it_from_pgpassfile_or_pgpassword(
    postgres_cluster, tmp_path, monkeypatch
):
    """What docs/serving.md advises instead of a password in --store (visible in ps and in
    the workers' environment): libpq reads it from PGPASSFILE (~/.pgpass) or PGPASSWORD."""
    import uuid

    import psycopg
    from psycopg import sql

    user, password = f"embedrec_pw_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(postgres_cluster.url(), autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(password)))  # fmt: skip
        db.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(user), sql.Identifier(user)))  # fmt: skip
        # this user alone must give a password (the cluster trusts the others)
        hba = postgres_cluster.data / "pg_hba.conf"
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        db.execute("SELECT pg_reload_conf()")
    url = f"postgresql://{user}@127.0.0.1:{postgres_cluster.port}/{user}"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the server reloads its configuration in the background
        try:
            open_store(url).close()
        except StoreUnavailable as exc:
            assert "password" in str(exc)
            break
        assert time.monotonic() < deadline, "the password is asked for"
        time.sleep(0.05)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_cluster.port}:{user}:{user}:{password}\n")
    passfile.chmod(0o600)  # libpq ignores a password file others may read
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = open_store(url)
    try:
        assert store.put("a", CAR) == (1, True)
    finally:
        store.close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))
    monkeypatch.setenv("PGPASSWORD", password)
    store = open_store(url)
    try:
        assert store.head().seq == 1
    finally:
        store.close()


def test_closing_the_store_stops_a_statement_the_database_does_not_answer(pg_url, monkeypatch):
    import psycopg

    from embedrec.serving import pgstore

    # the server's shutdown closes the store: a write stuck on the database (here behind a
    # lock; a database that does not answer at all alike) must not hold it until it answers
    monkeypatch.setattr(pgstore, "STATEMENT_TIMEOUT_MS", 10_000)
    monkeypatch.setattr(pgstore, "CLOSE_WAIT_S", 0.2)
    store = open_store(pg_url)
    stuck = psycopg.connect(pg_url)
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            store.put("stuck", CAR)
        except BaseException as exc:  # noqa: BLE001 - what the request would have answered
            outcome.append(exc)

    try:
        store.put("before", CAR)
        stuck.execute("SELECT 1 FROM embedrec_counters WHERE name = 'seq' FOR UPDATE")
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)  # waiting on the lock
        started = time.monotonic()
        store.close()
        writer.join(5)
        assert time.monotonic() - started < 3 and not writer.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    finally:
        stuck.close()
        store.close()
    reopened = open_store(pg_url)
    assert [c.listing_id for c in reopened.changes_since(0)] == ["before"]  # nothing half done
    reopened.close()


# ---------------------------------------------------------------------- applying changes
def test_an_added_listing_is_published_only_once_its_row_can_be_read():
    """The follower thread adds listings while requests look them up without a lock: an id
    must never be found before its row is inside the catalogue's arrays (a reader hit
    ``IndexError`` there, answering 500, while the benchmark polled another replica)."""
    import numpy as np
    import pandas as pd

    from embedrec.index.catalogue import Catalogue

    table = pd.DataFrame({"listing_id": ["a", "b"], "price": [1.0, 2.0]})
    catalogue = Catalogue(table, np.eye(2, 4, dtype=np.float32), np.array([0, 1]))
    published = []

    class Watched(dict):
        def update(self, pairs):  # what a concurrent rows_of sees from here on
            pairs = list(pairs)
            for listing, row in pairs:
                assert row < catalogue.n_rows and catalogue.live[row], listing
                assert catalogue.fields(np.array([row]))[0]["listing_id"] == listing
            published.extend(listing for listing, _ in pairs)
            super().update(pairs)

    catalogue._added_rows = Watched()
    for i in range(3):
        new = pd.DataFrame({"listing_id": [f"n{i}", "a"], "price": [3.0, 4.0]})
        catalogue.add(new, np.ones((2, 4), dtype=np.float32), np.array([-1, 0]))
    assert published == ["n0", "a", "n1", "a", "n2", "a"]
    assert catalogue.rows_of(["a", "n2", "b"]).tolist() == [7, 6, 1]


# ---------------------------------------------------------------------- replicas
def wait_ready(server: Server) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        answer = server.get("/healthz/ready")
        if answer.status_code == 200:
            return answer.json()
        assert answer.json()["status"] == "catching up"
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)


def eventually(check, what: str) -> None:
    """Wait until ``check()`` is true: fails after DEADLINE_S rather than hanging."""
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.02)


def snapshot(server: Server, ids: list[str]) -> tuple[int, dict]:
    """The replica's live listing count and the fields of ``ids`` (None: not served)."""
    count = server.get("/healthz").json()["listings"]
    fields = {}
    for listing in ids:
        answer = server.get(f"/v1/listings/{listing}")
        fields[listing] = answer.json() if answer.status_code == 200 else None
    return count, fields


@pytest.fixture
def replicas(model_dir, pg_url):
    """Two replicas (two ``embedrec serve`` processes, as on two hosts) on one database."""
    with ThreadPoolExecutor(2) as pool:  # started together, as after a deployment
        starting = [pool.submit(Server, model_dir, pg_url) for _ in range(2)]
        failed = [f.exception() for f in starting if f.exception() is not None]
        if failed:
            for future in starting:
                if future.exception() is None:
                    future.result().stop()
            raise failed[0]
        started = [future.result() for future in starting]
    for server in started:
        wait_ready(server)
    yield started
    for server in started:
        server.stop()


@pytest.mark.server
def test_a_write_on_one_replica_is_served_by_the_other(replicas):
    one, other = replicas
    victim = serving.some_ids(one, 1)[0]
    for i, (writer, reader) in enumerate([(one, other), (other, one)] * 3):
        car = {**NEW_CAR, "price": 10_000 + i}
        answer = writer.client.put(f"/v1/listings/r{i}", json=car, headers=AUTH)
        assert answer.status_code == 201
        eventually(lambda i=i, r=reader: r.get(f"/v1/listings/r{i}").status_code == 200, "seen")
        assert reader.get(f"/v1/listings/r{i}").json()["price"] == 10_000 + i
        similar = reader.get(f"/v1/listings/r{i}/similar", params={"k": 3})
        assert similar.status_code == 200 and len(similar.json()["results"]) == 3
    assert one.client.delete(f"/v1/listings/{victim}", headers=AUTH).status_code == 200
    eventually(lambda: other.get(f"/v1/listings/{victim}").status_code == 404, "DELETE seen")
    ids = [f"r{i}" for i in range(6)] + [victim]
    eventually(lambda: snapshot(one, ids) == snapshot(other, ids), "same listings")
    ready = [server.get("/healthz/ready").json() for server in replicas]
    assert ready[0]["seq"] == ready[1]["seq"] == 7 and ready[0]["store_error"] is None


@pytest.mark.server
def test_a_replica_started_after_writes_has_them_once_ready(model_dir, pg_url):
    first = Server(model_dir, pg_url)
    late = None
    try:
        wait_ready(first)
        victim = serving.some_ids(first, 1)[0]
        for i in range(5):
            put = first.client.put(f"/v1/listings/early{i}", json=NEW_CAR, headers=AUTH)
            assert put.status_code == 201
        assert first.client.delete(f"/v1/listings/{victim}", headers=AUTH).status_code == 200
        late = Server(model_dir, pg_url)
        ready = wait_ready(late)
        assert ready["seq"] == 6
        # ready means caught up: no waiting from here on
        for i in range(5):
            assert late.get(f"/v1/listings/early{i}").json()["make"] == "Nissan"
        assert late.get(f"/v1/listings/{victim}").status_code == 404
        ids = [f"early{i}" for i in range(5)] + [victim]
        assert snapshot(late, ids) == snapshot(first, ids)
    finally:
        first.stop()
        if late is not None:
            late.stop()


@pytest.mark.server
def test_a_reload_reaches_every_replica_and_a_rollback_returns_both(replicas, tmp_path):
    one, other = replicas
    before = one.get("/v1/model", headers=AUTH).json()
    info = other.get("/v1/model", headers=AUTH).json()
    assert before == {**info, "loaded_at": before["loaded_at"]}
    # a new model version, beside the first: under the model root (MODEL_DIR's parent)
    v2 = shutil.copytree(before["model_dir"], Path(before["model_dir"]).with_name(tmp_path.name))
    answer = one.client.post("/v1/admin/reload", json={"model_dir": str(v2)}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["model_dir"] == str(v2)
    generation = answer.json()["generation"]
    assert generation == before["generation"] + 1

    def serves(server: Server, model: str, generation: int) -> bool:
        info = server.get("/v1/model", headers=AUTH).json()
        return info["model_dir"] == model and info["generation"] == generation

    eventually(lambda: serves(other, str(v2), generation), "the other replica reloads")
    # writes made before the reload are served by the new model on both
    assert one.client.put("/v1/listings/after-v2", json=NEW_CAR, headers=AUTH).status_code == 201
    eventually(lambda: other.get("/v1/listings/after-v2").status_code == 200, "PUT seen")

    back = other.client.post("/v1/admin/rollback", headers=AUTH)
    assert back.status_code == 200 and back.json()["model_dir"] == before["model_dir"]
    assert back.json()["generation"] == generation + 1
    for server in replicas:
        eventually(lambda s=server: serves(s, before["model_dir"], generation + 1), "rolled back")
        assert server.get("/v1/listings/after-v2").status_code == 200
        assert server.get("/healthz/ready").json()["reload_error"] is None
    assert one.client.post("/v1/admin/rollback").status_code == 401  # token required


@pytest.mark.server
def test_rollback_with_nothing_before_is_refused(model_dir, tmp_path):
    server = Server(model_dir, tmp_path / "store.sqlite")  # SQLite: the same endpoint
    try:
        answer = server.client.post("/v1/admin/rollback", headers=AUTH)
        assert answer.status_code == 409 and "nothing to roll back to" in answer.json()["error"]
    finally:
        server.stop()


@pytest.mark.server
def test_database_away_reads_answered_writes_503_then_both_converge(replicas, postgres_cluster):
    one, other = replicas
    ids = serving.some_ids(one, 3)
    assert one.client.put("/v1/listings/before", json=NEW_CAR, headers=AUTH).status_code == 201
    eventually(lambda: other.get("/v1/listings/before").status_code == 200, "PUT seen")
    postgres_cluster.stop()
    try:
        for server in replicas:
            for listing in ids:
                assert server.get(f"/v1/listings/{listing}/similar").status_code == 200
            assert server.get("/v1/listings/before").status_code == 200
            refused = server.client.put("/v1/listings/during", json=NEW_CAR, headers=AUTH)
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            error = refused.json()["error"]
            assert "PostgreSQL store postgresql://" in error and "unavailable" in error
            gone = server.client.delete("/v1/listings/before", headers=AUTH)
            assert gone.status_code == 503
            reload = server.client.post("/v1/admin/reload", json={}, headers=AUTH)
            assert reload.status_code == 503
            eventually(
                lambda s=server: s.get("/healthz/ready").json()["store_error"] is not None,
                "readiness names the store error",
            )
            assert server.get("/healthz/ready").status_code == 200  # reads go on: ready
    finally:
        postgres_cluster.start()
    acknowledged = []
    for i, server in enumerate([one, other, one, other]):
        # the first write after the restart may still find the database starting: retry
        # as a client told Retry-After would
        deadline = time.monotonic() + DEADLINE_S
        while True:
            put = server.client.put(f"/v1/listings/a{i}", json=NEW_CAR, headers=AUTH)
            if put.status_code != 503:
                break
            assert time.monotonic() < deadline, put.text
            time.sleep(0.1)
        assert put.status_code == 201, put.text
        acknowledged.append(f"a{i}")
    assert other.client.delete(f"/v1/listings/{ids[0]}", headers=AUTH).status_code == 200
    everything = ["before", "during", *acknowledged, *ids]
    eventually(lambda: snapshot(one, everything) == snapshot(other, everything), "converged")
    count, fields = snapshot(one, everything)
    assert fields["during"] is None and fields[ids[0]] is None
    missing = [i for i in ["before", *acknowledged, *ids[1:]] if fields[i] is None]
    assert not missing, (missing, snapshot(one, everything), snapshot(other, everything))
    for server in replicas:
        eventually(
            lambda s=server: s.get("/healthz/ready").json()["store_error"] is None, "store back"
        )


def store_backends(pg_url: str) -> list[int]:
    """The process ids of the database's backends that serve a store (``embedrec``'s
    connections: a server's writes, reads and LISTEN)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'embedrec' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.server
def test_a_write_to_a_database_that_does_not_run_answers_503_within_the_deadline(model_dir, pg_url):
    """Backends stopped with SIGSTOP: their host's kernel still acknowledges every packet, so
    neither tcp_user_timeout nor the keepalives notice, and the statement timeout is the
    stopped server's own. The store's deadline (the statement timeout, here the URL's 0.5 s,
    and DEADLINE_GRACE_S more) cancels the write, gets no answer and shuts the connection
    down: a 503, where the write used to wait for the server (or the shutdown)."""
    from embedrec.serving.pgstore import CANCEL_WAIT_S, DEADLINE_GRACE_S

    deadline_s = 0.5 + DEADLINE_GRACE_S
    server = Server(model_dir, f"{pg_url}?options=-c%20statement_timeout%3D500")
    frozen: list[int] = []
    try:
        wait_ready(server)
        assert server.client.put("/v1/listings/a", json=NEW_CAR, headers=AUTH).status_code == 201
        frozen = store_backends(pg_url)
        assert len(frozen) == 3  # the server's write, read and LISTEN connections
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        # a limit that fails the test instead of hanging it, well above the bound
        limit = deadline_s + 2 * CANCEL_WAIT_S + 10
        refused = server.client.put("/v1/listings/b", json=NEW_CAR, headers=AUTH, timeout=limit)
        assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
        assert f"did not answer within {deadline_s:g} s" in refused.json()["error"]
        ready = server.get("/healthz/ready").json()
        assert f"did not answer within {deadline_s:g} s" in ready["store_error"]
        assert metric(server.client, "embedrec_store_error") == 1
        assert metric(server.client, "embedrec_store_write_failures_total", reason="timeout") == 1
        assert server.get("/v1/listings/a").status_code == 200  # reads from memory
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    try:
        answer = server.client.put("/v1/listings/c", json=NEW_CAR, headers=AUTH)
        assert answer.status_code == 201, answer.text
        eventually(lambda: server.get("/healthz/ready").json()["store_error"] is None, "healthy")
        assert metric(server.client, "embedrec_store_error") == 0
        assert server.get("/v1/listings/b").status_code == 404  # nothing of it was stored
    finally:
        server.stop()


@pytest.mark.server
def test_two_workers_on_postgresql_follow_each_other(model_dir, pg_url):
    server = Server(model_dir, pg_url, "--workers", "2")
    clients: dict[str, httpx.Client] = {}
    try:
        wait_ready(server)
        # connections are spread over the workers by the kernel: open some until both answer
        for _ in range(64):
            client = httpx.Client(base_url=server.url, timeout=30)
            clients.setdefault(serving.worker_of(client), client)
            if len(clients) == 2:
                break
        assert len(clients) == 2, "both workers answer"
        one, other = clients.values()
        for i, (writer, reader) in enumerate([(one, other), (other, one)] * 2):
            assert writer.put(f"/v1/listings/w{i}", json=NEW_CAR, headers=AUTH).status_code == 201
            eventually(
                lambda i=i, r=reader: r.get(f"/v1/listings/w{i}").status_code == 200, "PUT seen"
            )
            assert writer.delete(f"/v1/listings/w{i}", headers=AUTH).status_code == 200
            eventually(
                lambda i=i, r=reader: r.get(f"/v1/listings/w{i}").status_code == 404, "DELETE seen"
            )
    finally:
        for client in clients.values():
            client.close()
        server.stop()


@pytest.mark.slow
@pytest.mark.server
def test_replicas_benchmark_smoke(model_dir, pg_url, tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "replicas.py"
    out = tmp_path / "serving.md"
    command = [sys.executable, str(script), "--smoke", "--model", str(model_dir)]
    command += ["--store", pg_url, "--out", str(out), "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "<!-- replicas:start -->" in text and "delay p50 ms" in text
