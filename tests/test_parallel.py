"""Hogwild training: batches shared out among forked workers on shared weights."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from embedrec import Recommender, load
from embedrec.training.parallel import run_workers, shared_zeros, to_shared
from embedrec.training.trainer import refresh_due


@pytest.mark.parametrize("model", ["mf", "hybrid"])
def test_two_workers_learn_the_groups(blocks, tmp_path, model):
    events, listings, listing_group, _ = blocks
    rec = Recommender(model=model, epochs=8, batch_size=128, workers=2, progress=False).fit(
        events, listings
    )
    for query, group in zip(rec.similar(["Wagen 0 ä", "Wagen 1 ä"], k=10), (0, 1), strict=True):
        found = [int(r.listing_id.split()[1]) for r in query.hits]
        assert np.mean(listing_group[found] == group) >= 0.8
    again = load(rec.save(tmp_path / model))
    assert again.get_params()["workers"] == 2
    assert again.similar(["Wagen 0 ä"], k=5) == rec.similar(["Wagen 0 ä"], k=5)


def test_workers_without_fork_are_refused_before_any_work(blocks, monkeypatch):
    # as on a system whose processes cannot be started by fork
    monkeypatch.setattr("embedrec.training.trainer.fork_available", lambda: False)
    events, listings, _, _ = blocks
    rec = Recommender(workers=2, progress=False)
    with pytest.raises(ValueError, match="workers=2 needs the CPU and processes started by fork"):
        rec.check_params()
    with pytest.raises(ValueError, match="fork is not available"):
        rec.fit(events, listings)
    assert not hasattr(rec, "model_")


def test_each_batch_runs_once_in_its_workers_turn_and_writes_reach_the_parent():
    written = shared_zeros(8, torch.int64)

    def step(batch: int, worker: int) -> float:
        written[batch] = worker + 1
        return float(batch)

    total = run_workers(step, range(1, 8), 2, None)
    assert total == sum(range(1, 8))
    # worker w takes the batches w, w + 2, ... of the range
    assert written.tolist() == [0, 1, 2, 1, 2, 1, 2, 1]


def test_shared_copies_keep_shape_dtype_and_values():
    for tensor in (torch.arange(6.0).view(2, 3), torch.tensor(4.0), torch.zeros(0, 8)):
        shared = to_shared(tensor)
        assert shared.shape == tensor.shape and shared.dtype == tensor.dtype
        assert torch.equal(shared, tensor)


def test_a_failing_worker_stops_training_with_its_error():
    def step(batch: int, worker: int) -> float:
        if batch == 3:
            raise ValueError("listing row 3 has no features")
        return 0.0

    with pytest.raises(RuntimeError, match="training worker 1 failed") as error:
        run_workers(step, range(6), 2, [0, 1], None)
    assert "ValueError: listing row 3 has no features" in str(error.value)


def test_a_killed_worker_stops_training():
    def step(batch: int, worker: int) -> float:
        if batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0.0

    with pytest.raises(RuntimeError, match=r"worker 0 stopped with exit code -9 \(killed"):
        run_workers(step, range(6), 2, [0, 1], None)


def test_the_cache_is_refreshed_once_per_doubling_whoever_passes_it():
    # one process: at steps 64, 128, ...; two workers: by the one whose step passes them
    assert [s for s in range(1, 300) if refresh_due(s - 1, s)] == [64, 128, 256]
    assert [s for s in range(2, 300, 2) if refresh_due(s - 2, s)] == [64, 128, 256]
    assert [s for s in range(3, 300, 2) if refresh_due(s - 2, s)] == [65, 129, 257]
    assert not refresh_due(0, 63)
