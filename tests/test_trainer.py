"""The training loop's parts (training/trainer.py), each on its own: settings, devices, the
pairs handed to training, the optimizers, and the validation sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from embedrec.data.ids import IdMap
from embedrec.data.io import load_interactions, load_listings
from embedrec.data.prepare import prepare
from embedrec.models.mf import MatrixFactorization
from embedrec.recommender import Recommender
from embedrec.training.optim import RowWiseAdagrad
from embedrec.training.trainer import (
    TrainConfig,
    check_workers,
    make_optimizers,
    resolve_device,
    train,
    training_pairs,
    validation_recall,
    validation_sample,
)

CPU = torch.device("cpu")
# the Recommender's defaults (their one source) for 131,072 pairs: batches of 2,048
DEFAULTS = Recommender().train_config(131_072).to_dict()


def settings_of(**settings) -> TrainConfig:
    """A TrainConfig with the Recommender's defaults but ``settings``."""
    return TrainConfig(**(DEFAULTS | settings))


# ------------------------------------------------------------------ settings
def test_the_defaults_and_their_dict():
    config = settings_of()
    settings = config.to_dict()
    assert settings["epochs"] == 30 and settings["batch_size"] == 2048
    assert settings["loss"] == "softmax" and settings["negatives_from"] == "batch"
    assert settings["patience"] == 3 and settings["workers"] == 1
    assert TrainConfig(**settings) == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 2.0}, "epochs must be a whole number, got 2.0"),
        ({"batch_size": True}, "batch_size must be a whole number, got True"),
        ({"seed": "1"}, "seed must be a whole number, got '1'"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"dense_lr": None}, "dense_lr must be a number, got None"),
        ({"temperature": False}, "temperature must be a number, got False"),
        ({"loss": "hinge"}, "loss must be one of softmax, bpr, got 'hinge'"),
        ({"negatives_from": "all"}, "negatives_from must be one of batch, catalogue, got 'all'"),
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16, got 'fp16'"),
        ({"temperature": 0}, "temperature must be a positive finite number, got 0"),
        ({"temperature": -0.1}, "temperature must be a positive finite number, got -0.1"),
        ({"temperature": np.inf}, "temperature must be a positive finite number, got inf"),
        ({"lr": np.nan}, "lr must be a positive finite number, got nan"),
        ({"lr": -1.0}, "lr must be a positive finite number, got -1.0"),
        ({"dense_lr": 0}, "dense_lr must be a positive finite number, got 0"),
        ({"logq_scale": np.nan}, "logq_scale must be a finite number >= 0, got nan"),
        ({"logq_scale": np.inf}, "logq_scale must be a finite number >= 0, got inf"),
        ({"logq_scale": -1}, "logq_scale must be a finite number >= 0, got -1"),
        ({"weight_decay": -1e-5}, "weight_decay must be a finite number >= 0, got -1e-05"),
        ({"epochs": 0}, "epochs must be positive, got 0"),
        ({"batch_size": 0}, "batch_size must be positive, got 0"),
        ({"negatives": 0}, "negatives must be positive, got 0"),
        ({"workers": 0}, "workers must be positive, got 0"),
        ({"validation_users": 0}, "validation_users must be positive, got 0"),
        ({"patience": -1}, "patience must be positive, got -1"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError) as error:
        settings_of(**settings)
    assert str(error.value) == message


def test_edge_settings_are_accepted():
    config = settings_of(
        epochs=1,
        batch_size=1,
        negatives=1,
        workers=1,
        validation_users=1,
        patience=0,
        seed=-5,
        lr=1,
        temperature=1e-9,
        logq_scale=0,
        weight_decay=0,
        loss="bpr",
        negatives_from="catalogue",
        precision="bf16",
    )
    assert config.patience == 0 and config.seed == -5 and config.lr == 1
    assert settings_of(epochs=np.int64(3)).epochs == 3  # NumPy whole numbers count


# ------------------------------------------------------------------ devices
def test_devices_are_resolved_or_named():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU
    for bad in ("gpu", "mps", "cuda:x", ""):
        with pytest.raises(ValueError) as error:
            resolve_device(bad)
        assert str(error.value) == (
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {bad!r}"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"this machine has {count} CUDA device"):
        resolve_device(f"cuda:{count}")
    if count == 0:
        with pytest.raises(ValueError, match="device 'cuda': this machine has 0 CUDA device"):
            resolve_device("cuda")


def test_several_workers_need_the_cpu():
    check_workers(1, torch.device("cuda"))  # one process: any device
    check_workers(2, CPU)
    with pytest.raises(ValueError) as error:
        check_workers(2, torch.device("cuda"))
    assert str(error.value).startswith(
        "workers=2 needs the CPU and processes started by fork (Linux); here the device is cuda"
    )


# ------------------------------------------------------------------ pairs and optimizers
def small_data():
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "b", "c"],
            "listing_id": ["x", "y", "x", "z", "y", "x"],
            "timestamp": [5, 1, 3, 2, 9, 4],
            "event": ["view", "contact", "view", "favorite", "view", "view"],
        }
    )
    listings = pd.DataFrame({"listing_id": ["x", "y", "z", "never"]})
    data = prepare(load_interactions(events), load_listings(listings))
    data.listings = data.listings.extend(listings["listing_id"])  # as fit does
    return data


class SequentialMF(MatrixFactorization):
    sequential = True  # as a model reading histories: pairs come in time order


class DenseMF(MatrixFactorization):
    def __init__(self, n_users: int, n_listings: int):
        super().__init__(n_users, n_listings, dim=4)
        self.user_layer = nn.Linear(4, 4)


def test_training_pairs_weights_popularity_and_trained_listings():
    data = small_data()
    model = MatrixFactorization(len(data.users), len(data.listings), dim=4)
    (users, listings, weights), log_q, trained = training_pairs(
        model, data, settings_of(logq_scale=1.5), CPU
    )
    assert users.tolist() == data.user_idx.tolist()
    assert listings.tolist() == data.listing_idx.tolist()
    assert np.allclose(weights.numpy(), np.log1p(data.weight))
    counts = np.bincount(data.listing_idx, minlength=len(data.listings))
    assert counts.tolist() == [3, 2, 1, 0]  # x, y, z and a listing without interactions
    expected = 1.5 * np.log(np.maximum(counts, 1) / counts.sum())
    assert np.allclose(log_q.numpy(), expected)
    assert log_q.dtype == torch.float32
    assert trained.tolist() == [0, 1, 2]  # "never" is no negative


def test_a_sequential_model_gets_each_users_pairs_in_time_order():
    data = small_data()
    model = SequentialMF(len(data.users), len(data.listings), dim=4)
    (users, listings, _), _, _ = training_pairs(model, data, settings_of(), CPU)
    ids = data.listings.ids
    pairs = [
        (data.users.ids[u], ids[i]) for u, i in zip(users.tolist(), listings.tolist(), strict=True)
    ]
    assert pairs == [("a", "y"), ("a", "x"), ("b", "z"), ("b", "x"), ("b", "y"), ("c", "x")]


def test_sparse_tables_get_row_wise_adagrad_and_dense_weights_adamw():
    config = settings_of(lr=0.2, dense_lr=0.01, weight_decay=0.5)
    only_sparse = MatrixFactorization(3, 4, dim=4)
    [adagrad] = make_optimizers(only_sparse, config)
    assert isinstance(adagrad, RowWiseAdagrad)
    assert adagrad.defaults["lr"] == 0.2 and adagrad.defaults["weight_decay"] == 0.5
    assert {id(p) for p in adagrad.param_groups[0]["params"]} == {
        id(p) for p in only_sparse.parameters()
    }
    dense = DenseMF(3, 4)
    adagrad, adamw = make_optimizers(dense, config)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["lr"] == 0.01 and adamw.defaults["weight_decay"] == 0.5
    assert {id(p) for p in adamw.param_groups[0]["params"]} == {
        id(p) for p in dense.user_layer.parameters()
    }
    assert len(adagrad.param_groups[0]["params"]) == 2


# ------------------------------------------------------------------ validation
def test_the_validation_sample_is_users_with_pairs_on_both_sides():
    seen = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0]]))
    held_out = sp.csr_matrix(np.array([[0, 1], [1, 0], [0, 0], [1, 0], [0, 1]]))
    # user 1 is only in the hold-out, user 2 only in training
    assert validation_sample(seen, held_out, 10).tolist() == [0, 3, 4]
    drawn = validation_sample(seen, held_out, 2)
    assert len(drawn) == 2 and set(drawn.tolist()) <= {0, 3, 4}
    assert drawn.tolist() == sorted(drawn.tolist())
    assert validation_sample(seen, held_out, 2).tolist() == drawn.tolist()  # fixed draw


def test_the_validation_sample_is_drawn_by_id_so_rows_in_another_order_draw_the_same_users():
    # as each rank of a distributed run numbers its own users: the same users must be drawn
    rng = np.random.default_rng(0)
    ids = np.array([f"user {i}" for i in range(500)])
    seen = sp.csr_matrix(rng.random((500, 30)) < 0.2)
    held_out = sp.csr_matrix(rng.random((500, 30)) < 0.1)
    drawn = set(ids[validation_sample(seen, held_out, 50, IdMap(pd.Index(ids)))])
    order = rng.permutation(500)
    shuffled = IdMap(pd.Index(ids[order]))
    again = validation_sample(seen[order], held_out[order], 50, shuffled)
    assert len(drawn) == 50 and set(ids[order][again]) == drawn


def test_validation_recall_is_recall_at_ten_among_the_listings_live_in_the_hold_out():
    # four users, each with one training listing (0-3) and four held-out ones (4-19);
    # listings 20-29 have no event in the hold-out (sold, say): no candidates there
    n_users, n_listings = 4, 30
    events = [(u, u, 1) for u in range(n_users)]
    events += [(u, 4 + 4 * u + i, 2) for u in range(n_users) for i in range(4)]
    frame = pd.DataFrame(events, columns=["user_id", "listing_id", "timestamp"])
    listings = pd.DataFrame({"listing_id": range(n_listings)})
    data = prepare(load_interactions(frame), load_listings(listings))
    data.listings = data.listings.extend(listings["listing_id"])
    later = data.timestamp == 2
    fit_part, held_out = data.subset(~later), data.subset(later)
    model = MatrixFactorization(n_users, n_listings, dim=n_listings)
    rows = data.listings.indices(list(range(n_listings)))
    with torch.no_grad():
        model.listing_embedding.weight.copy_(torch.eye(n_listings))
        user_weights = model.user_embedding.weight
        user_weights.zero_()
        # every user's top scores go to listings no one viewed in the hold-out
        user_weights[:, rows[20:]] = 3.0
        for user in range(n_users):
            targets = rows[4 + 4 * user : 8 + 4 * user]
            hit = user < 3  # users 0-2 rank theirs first among the live ones, user 3 last
            user_weights[user, targets] = 1.0 if hit else -5.0
    assert data.users.indices(list(range(n_users))).tolist() == [0, 1, 2, 3]
    score, error = validation_recall(model, fit_part, held_out, settings_of())
    assert score == pytest.approx(0.75)
    assert error == pytest.approx(np.std([1, 1, 1, 0], ddof=1) / 2)
    one_user = dataclasses.replace(settings_of(), validation_users=1)
    assert validation_recall(model, fit_part, held_out, one_user)[0] in (0.0, 1.0)


def test_a_hold_out_of_users_without_training_pairs_scores_no_epoch():
    # a warm start's day whose held-out users came the day before: no user to score, so a
    # recall of 0 every epoch would have stopped early and kept the first epochs' weights
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "new", "new"],
            "listing_id": ["x", "y", "x", "z", "y", "z"],
            "timestamp": [1, 2, 3, 4, 10, 11],
        }
    )
    data = prepare(
        load_interactions(events), load_listings(events[["listing_id"]].drop_duplicates())
    )
    later = data.timestamp >= 10
    model = MatrixFactorization(len(data.users), len(data.listings), dim=4)
    config = settings_of(epochs=4, batch_size=2, patience=0, device="cpu")
    result = train(model, data.subset(~later), config, data.subset(later), progress=False)
    assert [entry["epoch"] for entry in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 4 and result.best_score is None
    assert not any("val_recall@10" in entry for entry in result.history)


def test_bpr_and_catalogue_negatives_train_too():
    data = small_data()
    for settings in ({"loss": "bpr"}, {"negatives_from": "catalogue", "negatives": 2}):
        torch.manual_seed(0)
        model = MatrixFactorization(len(data.users), len(data.listings), dim=4)
        before = model.listing_embedding.weight.detach().clone()
        config = settings_of(epochs=3, batch_size=4, device="cpu", **settings)
        result = train(model, data, config, progress=False)
        losses = [entry["loss"] for entry in result.history]
        assert len(losses) == 3 and all(np.isfinite(losses)) and all(v > 0 for v in losses)
        moved = (model.listing_embedding.weight.detach() != before).any(dim=1)
        assert moved[:3].all()
        if "negatives_from" in settings:  # negatives come from listings with pairs only
            assert not moved[3]


@pytest.mark.xfail(
    strict=True,
    reason="known bug: BPR (and the unfactorised model's sampled softmax) draw negatives from "
    "every listing row, also those without interactions, which training_pairs says must not "
    "learn that they are negatives",
)
def test_bpr_negatives_are_listings_with_pairs():
    data = small_data()
    torch.manual_seed(0)
    model = MatrixFactorization(len(data.users), len(data.listings), dim=4)
    before = model.listing_embedding.weight.detach().clone()
    train(model, data, settings_of(epochs=3, batch_size=4, device="cpu", loss="bpr"))
    assert torch.equal(model.listing_embedding.weight.detach()[3], before[3])
