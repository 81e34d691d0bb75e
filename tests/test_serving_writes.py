"""Cheap writes: group commits, vectors stored once for every worker, the batch endpoint and
a catalogue whose size follows the live listings, not the number of writes."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
import test_serving as serving

from embedrec.serving.state import Settings, StateHolder
from embedrec.serving.store import Change, ListingStore, Write

AUTH, NEW_CAR, Server = serving.AUTH, serving.NEW_CAR, serving.Server
cars, model_dir, server = serving.cars, serving.model_dir, serving.server  # made once


# ---------------------------------------------------------------------- the store
def test_put_many_commits_all_or_nothing_with_vectors_as_float32(tmp_path):
    store = ListingStore(tmp_path / "s.sqlite")
    vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    results = store.put_many(
        [Write("a", {"price": 1}, vector, "m1"), Write("b", {"price": 2}), Write("a", {"price": 3})]
    )
    assert results == [(1, True), (2, True), (3, False)]
    assert store.changes_since(0) == [Change(2, "b", {"price": 2}), Change(3, "a", {"price": 3})]
    store.put("c", {"price": 4}, vector, "m1")
    (change,) = store.changes_since(3)
    assert change.vector_model == "m1"
    np.testing.assert_array_equal(np.frombuffer(change.vector, dtype="<f4"), vector)
    with pytest.raises(ValueError):  # NaN is no JSON: the whole batch is refused
        store.put_many([Write("d", {"price": 5}), Write("e", {"price": float("nan")})])
    assert store.head().seq == 4 and store.counts() == {"live": 3, "deleted": 0}
    store.close()


def test_a_store_written_before_vectors_gets_their_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema of the previous release
        db.executescript(
            "CREATE TABLE listings (listing_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
            "fields TEXT, written_at REAL NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value);"
            "INSERT INTO meta VALUES ('seq', 2), ('generation', 0), ('model_dir', NULL);"
            """INSERT INTO listings VALUES ('"a"', 1, '{"price": 1}', 0), ('"b"', 2, NULL, 0);"""
        )
    store = ListingStore(path)
    assert store.changes_since(0) == [Change(1, "a", {"price": 1}), Change(2, "b", None)]
    assert store.put("c", {"price": 2}, np.ones(2), "m") == (3, True)
    assert store.changes_since(2)[0].vector == np.ones(2, dtype="<f4").tobytes()
    store.close()


class HeldStore(ListingStore):
    """A real SQLite store whose first transaction waits until ``release`` is set, so that
    the writes arriving meanwhile queue up behind it (a slow fsync, made deterministic)."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.transactions: list[int] = []

    def _write_rows(self, rows):
        if not self.transactions:
            self.release.wait(30)
        self.transactions.append(len(rows))
        return super()._write_rows(rows)


def test_writes_arriving_during_a_commit_are_committed_together(tmp_path):
    store = HeldStore(tmp_path / "g.sqlite")
    results: dict[int, tuple[int, bool]] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.update({i: store.put(f"k{i}", {"i": i})}))
        for i in range(8)
    ]
    threads[0].start()
    while not store._commits._busy:  # the first write is committing
        threading.Event().wait(0.001)
    for thread in threads[1:]:
        thread.start()
    while len(store._commits._queue) < 7:  # the other seven wait for it
        threading.Event().wait(0.001)
    store.release.set()
    for thread in threads:
        thread.join()
    assert store.transactions == [1, 7]  # two transactions for eight writes
    assert sorted(seq for seq, _ in results.values()) == list(range(1, 9))
    assert all(new for _, new in results.values())
    assert {c.listing_id: c.fields for c in store.changes_since(0)} == {
        f"k{i}": {"i": i} for i in range(8)
    }
    store.close()


# ---------------------------------------------------------------------- the serving state
@pytest.fixture
def holder(model_dir, tmp_path):
    store = ListingStore(tmp_path / "store.sqlite")
    made = StateHolder(Settings(str(model_dir), store=str(tmp_path / "store.sqlite")), store)
    yield made
    made.close()
    store.close()


def put(holder: StateHolder, listing_id: str, fields: dict) -> int:
    state = holder.get()
    embedded = state.embed(state.listing_frame(listing_id, fields), fields)
    return holder.write(state, listing_id, embedded)


def test_replacing_one_listing_many_times_keeps_the_catalogue_bounded(holder):
    state = holder.get()
    live, rows = len(state.catalogue), state.catalogue.n_rows
    query = state.catalogue.table["listing_id"].iloc[0]
    before = state.retriever.similar([query], 10, {"make": "Nissan"})[0].to_dict()
    put(holder, "same", NEW_CAR)
    for i in range(800):  # the dead rows pass the threshold (256) more than once
        put(holder, "same", {**NEW_CAR, "price": 20_000 + i % 7})
    put(holder, "same", NEW_CAR)
    catalogue = holder.get().catalogue
    assert len(catalogue) == live + 1
    # dead rows are dropped once they exceed a quarter of the live ones (at least 256)
    assert catalogue.n_rows <= rows + 1 + max(256, (live + 1) // 4) + 1
    assert catalogue.vectors.nbytes < 2 * (rows + 300) * catalogue.vectors.shape[1] * 4
    assert (catalogue.rows_of(["same"]) >= 0).all()
    after = holder.get().retriever.similar([query], 10, {"make": "Nissan"})[0].to_dict()
    ours = [h for h in after["results"] if h["listing_id"] != "same"]
    assert ours == [h for h in before["results"] if h in ours] and len(ours) >= 9
    assert holder.get().catalogue.fields(catalogue.rows_of(["same"]))[0]["price"] == 23221


def test_other_workers_apply_the_stored_vector_only_when_they_serve_the_same_model(
    holder, model_dir, tmp_path
):
    state = holder.get()
    assert state.model_tag is not None
    dim = state.catalogue.vectors.shape[1]
    planted = np.linspace(-1, 1, dim).astype(np.float32)  # not what the model would embed
    holder.store.put("planted", NEW_CAR, planted, state.model_tag)
    holder.store.put("other", NEW_CAR, planted, "another model")
    second = StateHolder(
        Settings(str(model_dir), store=str(tmp_path / "store.sqlite")), holder.store
    )
    try:
        catalogue = second.get().catalogue
        planted_row, other_row = catalogue.rows_of(["planted", "other"])
        np.testing.assert_array_equal(catalogue.vectors[planted_row], planted)
        embedded = state.embed(state.listing_frame("x", NEW_CAR)).vectors[0]
        np.testing.assert_allclose(catalogue.vectors[other_row], embedded, rtol=1e-5)
    finally:
        second.close()


# ---------------------------------------------------------------------- the batch endpoint


@pytest.mark.server
def test_batch_writes_all_or_nothing_and_names_every_bad_listing(server):
    batch = [{"listing_id": f"batch-{i}", **NEW_CAR, "price": 10_000 + i} for i in range(50)]
    answer = server.client.post("/v1/listings:batch", json={"listings": batch}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == 50 and body["created"] == 50
    assert body["seqs"] == list(range(body["seqs"][0], body["seqs"][0] + 50))
    assert server.get("/v1/listings/batch-7").json()["price"] == 10_007
    similar = server.get("/v1/listings/batch-7/similar", params={"k": 3}).json()
    assert similar["query"] == "batch-7"

    bad = [
        {"listing_id": "ok-1", **NEW_CAR},
        {"listing_id": "bad-1", "price": "cheap"},
        {"listing_id": "bad-2", "colour": "red"},
        {"listing_id": "ok-2", "lat": 95.0},
    ]
    answer = server.client.post("/v1/listings:batch", json={"listings": bad}, headers=AUTH)
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "price"), (2, "colour")]
    assert answer.json()["field"] == "listings.1.price"
    assert server.get("/v1/listings/ok-1").status_code == 404  # nothing written
    answer = server.client.post(
        "/v1/listings:batch", json={"listings": [{"listing_id": "ok-2", "lat": 95.0}]}, headers=AUTH
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "lat"

    assert server.client.post("/v1/listings:batch", json={"listings": batch}).status_code == 401
    too_many = {"listings": [{"listing_id": f"n{i}"} for i in range(1001)]}
    answer = server.client.post("/v1/listings:batch", json=too_many, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["field"] == "listings"
    # a batch may be larger than a PUT's 64 KiB, up to its own limit
    big = [{"listing_id": f"big-{i}", **NEW_CAR, "model": "x" * 100} for i in range(1000)]
    answer = server.client.post("/v1/listings:batch", json={"listings": big}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["count"] == 1000
    huge = {"listings": [{"listing_id": "h", "model": "x" * (5 * 2**20)}]}
    answer = server.client.post("/v1/listings:batch", json=huge, headers=AUTH)
    assert answer.status_code == 413
    assert "/v1/listings:batch" in server.get("/openapi.json").json()["paths"]
