"""The durable store of listings written through the API (serving/store.py), used directly.

One row per listing id holds its latest state (fields, or a tombstone after a delete), every
write takes the next change sequence number, and all of it survives closing and reopening.
"""

from __future__ import annotations

import threading

import pytest

from embedrec.serving.store import Change, Head, ListingStore, StoreUnavailable

CAR = {"make": "Nissan", "model": "Qashqai", "price": 18_500, "lat": 51.05, "lon": 13.74}


@pytest.fixture
def store(tmp_path):
    opened = ListingStore(tmp_path / "state" / "store.sqlite")  # the folder is created
    yield opened
    opened.close()


def test_a_new_store_is_empty_at_sequence_zero(store, tmp_path):
    assert (tmp_path / "state" / "store.sqlite").exists()
    assert store.head() == Head(seq=0, generation=0, model_dir=None)
    assert store.changes_since(0) == []
    assert store.counts() == {"live": 0, "deleted": 0}


def test_each_write_takes_the_next_sequence_number(store):
    seqs = [
        store.put("a", CAR)[0],
        store.put("b", CAR)[0],
        store.put("a", {**CAR, "price": 1})[0],
        store.delete("b"),
        store.put("c", CAR)[0],
    ]
    assert seqs == [1, 2, 3, 4, 5]
    assert store.head().seq == 5
    # a reload is not a listing change: it moves the generation, not the sequence
    assert store.record_reload("models/v2") == 1
    assert store.put("d", CAR)[0] == 6


def test_changes_hold_each_listings_latest_state_in_sequence_order(store):
    store.put("a", CAR)
    store.put("b", CAR)
    store.put("a", {**CAR, "price": 9_999})  # a moves behind b
    assert store.changes_since(0) == [
        Change(2, "b", CAR),
        Change(3, "a", {**CAR, "price": 9_999}),
    ]
    assert store.changes_since(2) == [Change(3, "a", {**CAR, "price": 9_999})]
    assert store.changes_since(3) == []


def test_delete_leaves_a_tombstone_that_changes_report(store):
    store.put("gone", CAR)
    seq = store.delete("gone")
    assert seq == 2
    assert store.changes_since(1) == [Change(2, "gone", None)]
    assert store.counts() == {"live": 0, "deleted": 1}
    # deleting a listing the store never held (one of the model's catalogue) is recorded too
    assert store.delete("from the catalogue") == 3
    assert store.changes_since(2) == [Change(3, "from the catalogue", None)]
    assert store.counts() == {"live": 0, "deleted": 2}


def test_put_says_whether_the_listing_is_new(store):
    assert store.put("a", CAR) == (1, True)
    assert store.put("a", {**CAR, "price": 1}) == (2, False)  # an update
    store.delete("a")
    assert store.put("a", CAR) == (4, True)  # back after a delete: new again
    assert store.changes_since(0) == [Change(4, "a", CAR)]
    assert store.counts() == {"live": 1, "deleted": 0}


def test_fields_come_back_as_written(store):
    fields = {"make": "Škoda", "tags": ["a", "b"], "price": 1.5, "nested": {"x": None}}
    store.put("ü 1", fields)
    [change] = store.changes_since(0)
    assert change.listing_id == "ü 1" and change.fields == fields


def test_a_write_that_cannot_be_stored_takes_no_sequence_number(store):
    with pytest.raises(ValueError):
        store.put("a", {"price": float("nan")})  # not JSON
    assert store.head().seq == 0 and store.changes_since(0) == []
    assert store.put("a", CAR) == (1, True)


def test_reloads_count_generations_and_keep_the_model_directory(store):
    assert store.record_reload("models/v2") == 1
    assert store.record_reload("models/v3") == 2
    assert store.head() == Head(seq=0, generation=2, model_dir="models/v3")


def test_two_stores_on_one_file_see_each_others_writes(tmp_path):
    # as two server worker processes do
    one, other = ListingStore(tmp_path / "s.sqlite"), ListingStore(tmp_path / "s.sqlite")
    try:
        one.put("a", CAR)
        assert other.changes_since(0) == [Change(1, "a", CAR)]
        assert other.put("b", CAR) == (2, True)
        other.record_reload("models/v2")
        assert one.head() == Head(seq=2, generation=1, model_dir="models/v2")
    finally:
        one.close()
        other.close()


def test_writes_from_many_threads_get_distinct_consecutive_numbers(store):
    taken: list[int] = []

    def write(worker: int) -> None:
        for i in range(10):
            seq, new = store.put(f"{worker}-{i}", CAR)
            assert new
            taken.append(seq)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == list(range(1, 41))
    changes = store.changes_since(0)
    assert [c.seq for c in changes] == list(range(1, 41))
    assert len({c.listing_id for c in changes}) == 40


def test_a_store_file_removed_under_the_server_refuses_writes_instead_of_losing_them(
    store, tmp_path
):
    store.put("a", CAR)
    (tmp_path / "state" / "store.sqlite").unlink()
    with pytest.raises(StoreUnavailable, match="was removed or replaced"):
        store.head()
    with pytest.raises(StoreUnavailable, match="was removed or replaced"):
        store.put("b", CAR)


def test_a_stored_row_that_cannot_be_read_is_a_change_that_says_so(store):
    store.put("a", CAR)
    store.put("b", CAR)
    with store._lock:  # a row damaged by hand
        store._db.execute("UPDATE listings SET fields = '{not json' WHERE seq = 1")
    first, second = store.changes_since(0)
    assert first.seq == 1 and first.fields == {}
    assert first.unreadable.startswith("stored row 1 cannot be read")
    assert second == Change(2, "b", CAR)


def test_a_file_that_is_no_store_is_one_line_naming_it(tmp_path):
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StoreUnavailable, match=f"SQLite store {path}: file is not a database"):
        ListingStore(path)


@pytest.mark.parametrize(
    "location",
    [
        "postgresql://er:s3cr3t@[::1:5432/db",  # libpq quotes the URL it cannot parse
        "postgresql://er@[::1:5432/db?password=s3cr3t",
        "postgresql://er:s3cr3t%@127.0.0.1:1/db",  # ... and the escape it cannot decode
        "postgresql://er:s3%2Fcr3t@[::1:5432/db",  # percent-decoded too
        "postgresql://er:s3@cr3t@127.0.0.1:1/db",  # libpq would resolve 'cr3t@127.0.0.1'
        "postgresql://er:s3/cr3t@127.0.0.1:1/db",
    ],
)
def test_no_message_about_a_store_shows_its_password(location):
    from embedrec.serving.store import open_store, redact

    with pytest.raises((StoreUnavailable, ValueError)) as refused:
        open_store(location)
    message = str(refused.value)
    assert "***" in message and not any(part in message for part in ("s3", "cr3t", "3%2F"))
    assert "s3" not in redact(location) and "cr3t" not in redact(location)
