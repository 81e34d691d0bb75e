"""Early stopping in the training loop (training/trainer.py) and the facade's refit.

With a validation set, ``train`` stops once ``patience`` epochs in a row brought no gain over
the best validation Recall@10, and leaves the model with the best epoch's weights; the
facade then refits on all data for exactly the best epoch's count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import block_data

from embedrec.data.io import load_interactions, load_listings
from embedrec.data.prepare import prepare, time_holdout
from embedrec.models.mf import MatrixFactorization
from embedrec.recommender import Recommender
from embedrec.training.trainer import TrainConfig, train, validation_recall

LAST_TIME = 1_700_000_000 + 1_000_000  # block_data's events are all before this


def wrong_group_events(groups: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """block_data plus, after all its events, each user viewing a listing of another group.

    Held out by time, those last views are what training learns *against*: validation
    recall falls as the groups are learned, so the best epoch comes early, and later epochs
    are worse.
    """
    events, listings, listing_group, user_group = block_data(seed=seed)
    rng = np.random.default_rng(seed + 1)
    users = events["user_id"].unique()
    group_of_user = dict(zip(events["user_id"], np.repeat(user_group, 12), strict=True))
    later = []
    for i, user in enumerate(users):
        other = (group_of_user[user] + 1 + rng.integers(0, groups - 1)) % groups
        listing = rng.choice(np.flatnonzero(listing_group == other))
        later.append((user, listings["listing_id"][listing], LAST_TIME + i, "view"))
    extra = pd.DataFrame(later, columns=["user_id", "listing_id", "timestamp", "event"])
    return pd.concat([events, extra], ignore_index=True), listings


def interactions(events: pd.DataFrame, listings: pd.DataFrame, fraction: float):
    data = prepare(load_interactions(events), load_listings(listings))
    return data, *time_holdout(data, fraction)


def small_catalogue() -> tuple[pd.DataFrame, pd.DataFrame]:
    """8 listings: every listing a user has not seen is in their top 10, so every epoch's
    validation Recall@10 is 1.0 and no epoch can improve on the first."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"l{rng.integers(0, 8)}", t) for u in range(30) for t in range(6)]
    events = pd.DataFrame(rows, columns=["user_id", "listing_id", "timestamp"])
    return events, pd.DataFrame({"listing_id": [f"l{i}" for i in range(8)]})


def mf(data, seed: int = 0, dim: int = 8) -> MatrixFactorization:
    torch.manual_seed(seed)
    return MatrixFactorization(len(data.users), len(data.listings), dim=dim)


def config(**settings) -> TrainConfig:
    base = {"epochs": 20, "batch_size": 128, "device": "cpu", "validation_users": 1000}
    return Recommender(model="mf", **{**base, **settings}).train_config(0)


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_training_stops_after_patience_epochs_without_gain(patience):
    _, fit_part, held_out = interactions(*small_catalogue(), fraction=0.2)
    result = train(mf(fit_part), fit_part, config(patience=patience), held_out, progress=False)
    scores = [entry["val_recall@10"] for entry in result.history]
    # the first epoch (no candidate), the best, then patience + 1 epochs without gain
    assert scores == [1.0] * (patience + 3)
    assert [entry["epoch"] for entry in result.history] == list(range(1, patience + 4))
    assert result.best_epoch == 2 and result.best_score == 1.0


def test_the_best_epochs_weights_are_restored():
    events, listings = wrong_group_events()
    _, fit_part, held_out = interactions(events, listings, fraction=0.05)
    # the first seed whose run peaks after its first epoch and ends worse than its peak, so
    # that neither the first nor the last epoch's weights pass for the best epoch's
    for seed in range(6):
        settings = config(epochs=12, patience=2, lr=0.01, seed=seed)
        model = mf(fit_part, seed, dim=16)
        result = train(model, fit_part, settings, held_out, progress=False)
        scores = [entry["val_recall@10"] for entry in result.history]
        if result.best_epoch > 1 and scores[-1] < result.best_score:
            break
    else:
        pytest.fail("no seed gave a run that peaks after epoch 1 and ends below its peak")
    last = len(result.history)
    assert last == result.best_epoch + settings.patience + 1 < settings.epochs  # stopped early
    # each epoch's own training time, without its validation; the log's time since the start
    for before, entry in zip([{"seconds": 0.0}, *result.history[:-1]], result.history, strict=True):
        spent = entry["seconds"] - before["seconds"]
        assert 0 < entry["train_seconds"] <= spent - before.get("validation_seconds", 0.0)
    # the first epoch warms up and is no candidate; of equal scores the first is the best
    candidates = scores[1:]
    best = max(candidates)
    assert result.best_score == best and result.best_epoch == candidates.index(best) + 2
    # the model is the best epoch's: it scores the best score again ...
    assert validation_recall(model, fit_part, held_out, settings) == (
        result.best_score,
        result.history[result.best_epoch - 1]["val_recall@10_se"],
    )
    # ... and holds exactly the weights of the same run stopped after the best epoch
    again = mf(fit_part, seed, dim=16)
    train(again, fit_part, settings, progress=False, epochs=result.best_epoch)
    for name, weights in again.state_dict().items():
        assert torch.equal(model.state_dict()[name], weights), name


def test_without_validation_every_epoch_runs_and_the_last_is_kept():
    events, listings, _, _ = block_data()
    data = prepare(load_interactions(events), load_listings(listings))
    model = mf(data)
    result = train(model, data, config(epochs=4, patience=0), progress=False)
    assert [entry["epoch"] for entry in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 4 and result.best_score is None
    assert all("val_recall@10" not in entry for entry in result.history)
    assert all(entry["loss"] > 0 for entry in result.history)
    # the epochs argument (the refit's) overrides the configured count
    again = train(mf(data), data, config(epochs=4), progress=False, epochs=2)
    assert len(again.history) == 2 and again.best_epoch == 2


def test_an_empty_validation_set_trains_every_epoch(blocks):
    events, listings, _, _ = blocks
    data = prepare(load_interactions(events), load_listings(listings))
    empty = data.subset(np.zeros(len(data), dtype=bool))
    result = train(mf(data), data, config(epochs=3, patience=0), empty, progress=False)
    assert len(result.history) == 3 and result.best_epoch == 3 and result.best_score is None


def fit(events, listings, **params) -> Recommender:
    settings = {
        "model": "mf",
        "dim": 8,
        "epochs": 12,
        "batch_size": 128,
        "lr": 0.1,
        "patience": 2,
        "validation_fraction": 0.05,
        "progress": False,
        "device": "cpu",
    }
    return Recommender(**{**settings, **params}).fit(events, listings)


def test_refit_trains_for_the_best_epochs_count_not_every_epoch():
    events, listings = wrong_group_events()
    rec = fit(events, listings)
    report = rec.report_
    assert len(report["history"]) < 12  # early stopping happened
    assert report["best_epoch"] < len(report["history"])
    assert report["refit_epochs"] == report["best_epoch"]


def test_no_refit_no_refit_epochs():
    events, listings = wrong_group_events()
    assert fit(events, listings, refit=False).report_["refit_epochs"] is None
    unvalidated = fit(events, listings, epochs=2, validation_fraction=0)
    assert unvalidated.report_["refit_epochs"] is None
    assert unvalidated.report_["best_epoch"] == 2 and len(unvalidated.report_["history"]) == 2
