"""Hogwild workers share the optimizer state with the parent, not only the weights.

training/parallel.py moves the weights and every optimizer state tensor (AdamW's step
counts and moments, row-wise Adagrad's sums) into shared memory before it forks the workers:
after a parallel epoch the parent's optimizers have seen every worker's steps. Without that,
each worker would update a private copy that dies with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from embedrec.data.io import load_interactions, load_listings
from embedrec.data.prepare import prepare
from embedrec.models.mf import MatrixFactorization
from embedrec.recommender import Recommender
from embedrec.training.parallel import fork_available
from embedrec.training.trainer import make_optimizers, train_epoch, training_pairs

pytestmark = pytest.mark.skipif(not fork_available(), reason="workers need fork")

BATCH = 128


class ScaledMF(MatrixFactorization):
    """Matrix factorisation with a dense layer on the user side, so that training has
    dense weights (AdamW) next to the sparse embedding tables (row-wise Adagrad)."""

    def __init__(self, n_users: int, n_listings: int, dim: int = 8):
        super().__init__(n_users, n_listings, dim=dim)
        self.user_layer = nn.Linear(dim, dim)

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_layer(self.user_embedding(users))


def sparse_events(n_users: int = 300, n_listings: int = 2000, per_user: int = 4):
    """Few pairs a listing: many listings are in the batches of one worker only."""
    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), per_user),
            "listing_id": rng.integers(0, n_listings, n_users * per_user),
            "timestamp": rng.integers(0, 10_000, n_users * per_user),
        }
    )
    return events, pd.DataFrame({"listing_id": np.arange(n_listings)})


def setup(workers: int = 2):
    events, listings = sparse_events()
    data = prepare(load_interactions(events), load_listings(listings))
    torch.manual_seed(0)
    model = ScaledMF(len(data.users), len(data.listings))
    config = Recommender(batch_size=BATCH, workers=workers, device="cpu", seed=0).train_config(0)
    pairs, log_q, trained = training_pairs(model, data, config, torch.device("cpu"))
    optimizers = make_optimizers(model, config)
    assert [type(o).__name__ for o in optimizers] == ["RowWiseAdagrad", "AdamW"]
    n_batches = -(-len(data) // BATCH)
    return model, config, (pairs, log_q, trained), optimizers, n_batches


def adamw_steps(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(state["step"]) for state in optimizer.state.values()]


def test_a_parallel_epoch_counts_every_workers_steps_in_the_parents_optimizer():
    model, config, (pairs, log_q, trained), optimizers, n_batches = setup()
    generator = torch.Generator().manual_seed(0)
    # the parent takes the first step (the state must exist before it is shared), the two
    # workers the other n_batches - 1
    train_epoch(model, optimizers, pairs, log_q, trained, config, generator, None)
    adagrad, adamw = optimizers
    assert len(adamw.state) == 2  # the dense layer's weight and bias
    assert adamw_steps(adamw) == [n_batches, n_batches]
    for name in ("exp_avg", "exp_avg_sq"):
        assert all(state[name].abs().sum() > 0 for state in adamw.state.values())
    sums = adagrad.state[model.listing_embedding.weight]["sum"]
    listings_trained = torch.unique(pairs[1])
    assert (sums[listings_trained] > 0).all()


def test_adagrad_sums_of_rows_only_one_worker_touched_reach_the_parent():
    model, config, (pairs, log_q, trained), optimizers, n_batches = setup()
    generator = torch.Generator().manual_seed(0)
    one_process = dataclasses.replace(config, workers=1)
    # a first epoch in this process: every optimizer state exists, so the next epoch's
    # batches all go to the workers, worker w taking batches w, w + 2, ...
    train_epoch(model, optimizers, pairs, log_q, trained, one_process, generator, None)
    adagrad, adamw = optimizers
    assert adamw_steps(adamw) == [n_batches, n_batches]
    table = model.listing_embedding.weight
    sums_before = adagrad.state[table]["sum"].clone()
    weights_before = table.detach().clone()

    # the next epoch's batch order: the generator's next draw
    replay = torch.Generator()
    replay.set_state(generator.get_state())
    order = torch.randperm(len(pairs[0]), generator=replay)
    touched = []
    for worker in range(2):
        batches = range(worker, n_batches, 2)
        rows = [pairs[1][order[b * BATCH : (b + 1) * BATCH]] for b in batches]
        touched.append(set(torch.cat(rows).tolist()))
    only = [sorted(touched[0] - touched[1]), sorted(touched[1] - touched[0])]
    untouched = sorted(set(range(len(table))) - touched[0] - touched[1])
    assert only[0] and only[1]  # the data gives each worker rows of its own

    train_epoch(model, optimizers, pairs, log_q, trained, config, generator, None, n_batches)
    assert adamw_steps(adamw) == [2 * n_batches, 2 * n_batches]
    sums_after = adagrad.state[table]["sum"]
    for worker in range(2):
        rows = torch.tensor(only[worker])
        assert (sums_after[rows] > sums_before[rows]).all(), f"worker {worker}'s sums"
        assert not torch.isclose(table[rows], weights_before[rows]).all(dim=1).any()
    if untouched:
        rows = torch.tensor(untouched)
        assert torch.equal(sums_after[rows], sums_before[rows])
        assert torch.equal(table[rows], weights_before[rows])


def test_state_stays_the_parents_own_memory_after_the_epoch():
    # unshared again: a later one-process epoch keeps counting in the same state
    model, config, (pairs, log_q, trained), optimizers, n_batches = setup()
    generator = torch.Generator().manual_seed(0)
    train_epoch(model, optimizers, pairs, log_q, trained, config, generator, None)
    one_process = dataclasses.replace(config, workers=1)
    train_epoch(model, optimizers, pairs, log_q, trained, one_process, generator, None)
    assert adamw_steps(optimizers[1]) == [2 * n_batches, 2 * n_batches]
    assert np.isfinite(model.user_layer.weight.detach().numpy()).all()
