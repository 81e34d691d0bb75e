"""The files a server's workers share (serving/shared.py): the model's weights, feature
tensors and listings mapped from one cache entry, answering as the model loaded alone; the
file stays intact when a worker writes to a mapped tensor; entries unused for a week go; a
damaged entry makes a worker load the model alone instead of failing."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_serving as serving
import torch

from embedrec.index.vector_index import VectorIndex
from embedrec.recommender import Recommender
from embedrec.serving.shared import STALE_AFTER_S, shared_recommender
from embedrec.serving.state import build_state
from embedrec.serving.store import open_store

cars, model_dir = serving.cars, serving.model_dir  # the session fixtures, made once


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def backed_by(tensor: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's memory lies in a mapping of ``path``."""
    for line in mapped_files().splitlines():
        if line.endswith(str(path)):
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= tensor.data_ptr() < high:
                return True
    return False


def test_workers_map_the_model_from_one_entry_and_answer_as_the_model_alone(
    model_dir: Path, tmp_path: Path
) -> None:
    alone = Recommender.load(model_dir)
    first = shared_recommender(model_dir, tmp_path)
    (weights,) = tmp_path.glob("model-*.safetensors")
    (table,) = tmp_path.glob("model-*.arrow")
    written = weights.stat().st_mtime_ns
    second = shared_recommender(model_dir, tmp_path)
    assert weights.stat().st_mtime_ns == written  # mapped, not written again
    assert str(weights) in mapped_files() and str(table) in mapped_files()
    for shared in (first, second):
        pd.testing.assert_frame_equal(shared.listing_table_, alone.listing_table_)
        for name, tensor in alone.model_.input_tensors().items():
            assert np.array_equal(shared.model_.input_tensors()[name].numpy(), tensor.numpy())
        ids = alone.listing_table_["listing_id"].tolist()[:5]
        expected = alone.similar(ids, k=5)
        got = shared.similar(ids, k=5)
        assert [[h.listing_id for h in r.hits] for r in got] == [
            [h.listing_id for h in r.hits] for r in expected
        ]
        np.testing.assert_allclose(
            [[h.score for h in r.hits] for r in got],
            [[h.score for h in r.hits] for r in expected],
            atol=1e-6,
        )
    # the parameters and feature tensors are the mapped file's pages, not copies
    for shared in (first, second):
        assert all(backed_by(p, weights) for p in shared.model_.parameters())
        assert all(backed_by(t, weights) for t in shared.model_.input_tensors().values())
    parameter = next(iter(first.model_.parameters()))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    with torch.no_grad():
        parameter.fill_(7.0)  # copy-on-write: this process's page, not the file's
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    assert not (next(iter(second.model_.parameters())) == 7.0).all()


def test_entries_unused_for_a_week_are_removed_when_another_is_written(
    model_dir: Path, tmp_path: Path
) -> None:
    old = time.time() - STALE_AFTER_S - 60
    for stem, when in (("catalogue-old", old), ("catalogue-recent", time.time() - 60)):
        for suffix in (".json", ".arrow", ".vectors.npy", ".lock"):
            path = tmp_path / f"{stem}{suffix}"
            path.write_text("{}")
            os.utime(path, (when, when))
        (tmp_path / f"{stem}.index-cosine").mkdir()  # a saved vector index
        (tmp_path / f"{stem}.index-cosine" / "index.json").write_text("{}")
    shared_recommender(model_dir, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.startswith("catalogue-old")], names
    assert len([n for n in names if n.startswith("catalogue-recent")]) == 5, names
    assert len([n for n in names if n.startswith("model-")]) == 4, names  # json, lock, 2 files


def test_temporaries_of_a_writer_killed_mid_write_are_removed(
    model_dir: Path, tmp_path: Path
) -> None:
    shared_recommender(model_dir, tmp_path)
    (marker,) = tmp_path.glob("model-*.json")
    stem = marker.name.removesuffix(".json")
    # a writer killed mid-write (SIGKILL, the OOM killer) leaves its temporaries and no mark
    marker.unlink()
    orphans = [tmp_path / f".{stem}.safetensors.0123456789ab.tmp.safetensors"]
    orphans.append(tmp_path / f".{stem}.index-cosine.k1ll3d")  # a vector index's folder
    orphans[0].write_bytes(bytes(1000))
    orphans[1].mkdir()
    (orphans[1] / "index.faiss").write_bytes(bytes(1000))
    # one of an entry never written again, a week old; one of a writer that may be alive
    old = time.time() - STALE_AFTER_S - 60
    abandoned = tmp_path / ".catalogue-0f-a-gone-model.arrow.0123456789ab.tmp.arrow"
    abandoned.write_bytes(bytes(1000))
    os.utime(abandoned, (old, old))
    recent = tmp_path / ".catalogue-being-written.arrow.0123456789ab.tmp.arrow"
    recent.write_bytes(bytes(1000))
    shared_recommender(model_dir, tmp_path)  # the entry is written again
    assert marker.exists()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [recent.name]


@pytest.mark.parametrize("damage", ["garbled weights", "table gone"])
def test_a_damaged_cache_entry_costs_memory_not_the_worker(
    model_dir: Path, tmp_path: Path, caplog, damage: str
) -> None:
    cache = tmp_path / "cache"
    shared_recommender(model_dir, cache)
    if damage == "garbled weights":
        (weights,) = cache.glob("model-*.safetensors")
        weights.write_bytes(b"not a safetensors file" * 100)
    else:
        (table,) = cache.glob("model-*.arrow")
        table.unlink()
    store = open_store(tmp_path / "store.sqlite")
    try:
        with caplog.at_level(logging.WARNING, logger="embedrec.serving"):
            state = build_state(model_dir, None, store, 0, str(cache))
        assert "cannot share the model" in caplog.text
        assert not list(cache.glob("model-*")), "the damaged entry is removed"
        shared_recommender(model_dir, cache)  # and written again by the next worker
        assert len(list(cache.glob("model-*.safetensors"))) == 1
        listing = state.recommender.listing_table_["listing_id"].iloc[0]
        (answer,) = state.retriever.similar([listing], 5)
        assert len(answer.hits) == 5
    finally:
        store.close()


def neighbours(state, ids: list) -> list[list]:
    return [[h.listing_id for h in r.hits] for r in state.retriever.similar(ids, 5)]


@pytest.mark.parametrize("served", ["a listings file", "the model's own listings"])
def test_the_first_worker_saves_the_vector_index_and_the_others_load_it(
    model_dir: Path, cars: Path, tmp_path: Path, monkeypatch, caplog, served: str
) -> None:
    cache = tmp_path / "cache"
    listings = str(cars / "listings.parquet") if served == "a listings file" else None
    store = open_store(tmp_path / "store.sqlite")
    try:
        first = build_state(model_dir, listings, store, 0, str(cache))
        (folder,) = cache.glob("catalogue-*.index-*")
        saved = (folder / "index.json").read_bytes()
        ids = first.catalogue.table["listing_id"].tolist()[:4]
        expected = neighbours(first, ids)
        alone = Recommender.load(model_dir).retriever(listings)  # no shared files
        assert [[h.listing_id for h in r.hits] for r in alone.similar(ids, 5)] == expected

        def no_build(*args, **kwargs):
            raise AssertionError("a second worker built the index again")

        with monkeypatch.context() as patched:
            patched.setattr(VectorIndex, "build", no_build)
            second = build_state(model_dir, listings, store, 0, str(cache))
        assert neighbours(second, ids) == expected
        assert (folder / "index.json").read_bytes() == saved
        # writes go to the loaded index (its vectors copied on the first add), not its files
        catalogue = second.catalogue
        # a copy of ids[0]'s nearest neighbour scores as high: it must be found too
        row = catalogue.rows_of([expected[0][0]])
        copy = catalogue.table.iloc[row].assign(listing_id="a-copy")
        catalogue.add(copy, catalogue.vectors[row], catalogue.model_rows[row])
        catalogue.remove([ids[1]])
        found = neighbours(second, [ids[0]])[0]
        assert "a-copy" in found and ids[1] not in found
        assert (folder / "index.json").read_bytes() == saved

        (folder / "index.json").write_text("{")  # damaged: built and saved again
        with caplog.at_level(logging.WARNING, logger="embedrec.serving"):
            third = build_state(model_dir, listings, store, 0, str(cache))
        assert "cannot load the shared index" in caplog.text
        assert neighbours(third, ids) == expected
        assert (folder / "index.json").read_bytes() == saved
    finally:
        store.close()
