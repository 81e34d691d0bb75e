"""Checkpoints: a stopped fit resumed from its last checkpoint ends with the model of a fit
that never stopped; another run's checkpoint is refused."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import block_data
from safetensors.torch import load_file, save_file

from embedrec.recommender import Recommender
from embedrec.training.checkpoint import CheckpointError, Checkpoints


class Stop(Exception):
    """Stands for a crash after an epoch's checkpoint."""


def settings(**changes: object) -> dict:
    return {"model": "hybrid", "dim": 8, "epochs": 4, "patience": 10, "device": "cpu"} | changes


@pytest.fixture(scope="module")
def data():
    events, listings, *_ = block_data(n_users=80, n_listings=40)
    return events, listings


def stop_at(epoch: int):
    def callback(number: int, metrics: dict, elapsed: float) -> None:
        if number == epoch:
            raise Stop

    return callback


@pytest.mark.parametrize("stopped_in", ["fit", "refit"])
def test_a_resumed_fit_ends_with_the_weights_of_one_that_never_stopped(data, tmp_path, stopped_in):
    events, listings = data
    whole = Recommender(**settings()).fit(events, listings)
    checkpoints = tmp_path / "checkpoints"
    first = Recommender(**settings())
    # after the fit phase's second epoch, or the refit's first (the fit phase runs 4)
    calls = {"n": 0}

    def callback(number: int, metrics: dict, elapsed: float) -> None:
        calls["n"] += 1
        if calls["n"] == (2 if stopped_in == "fit" else 5):
            raise Stop

    with pytest.raises(Stop):
        first.fit(events, listings, callbacks=[callback], checkpoint_dir=checkpoints)
    assert (checkpoints / "latest.json").exists()
    resumed = Recommender(**settings()).fit(
        events, listings, checkpoint_dir=checkpoints, resume=True
    )
    assert resumed.report_["best_epoch"] == whole.report_["best_epoch"]
    assert len(resumed.report_["history"]) == len(whole.report_["history"])
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[name], value, msg=name)


def stopped_after_one_epoch(data, checkpoints) -> None:
    events, listings = data
    with pytest.raises(Stop):
        Recommender(**settings()).fit(
            events, listings, callbacks=[stop_at(1)], checkpoint_dir=checkpoints
        )


def test_what_a_crash_left_half_written_goes_with_the_next_checkpoint(data, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    # a run killed while it wrote a checkpoint's folder, and the pointer to it
    staged = checkpoints / ".fit-00002-000000010.k3j2h1"
    staged.mkdir(parents=True)
    (staged / "tensors.safetensors").write_bytes(b"\0" * 1000)
    (checkpoints / ".latest.json.0a1b2c3d4e5f.tmp.json").write_text("{")
    stopped_after_one_epoch(data, checkpoints)
    pointer = json.loads((checkpoints / "latest.json").read_text())
    assert {p.name for p in checkpoints.iterdir()} == {"latest.json", pointer["checkpoint"]}


def test_another_runs_checkpoint_is_refused(data, tmp_path):
    events, listings = data
    checkpoints = tmp_path / "checkpoints"
    stopped_after_one_epoch(data, checkpoints)
    with pytest.raises(CheckpointError, match="dim: 8 there, 16 now"):
        Recommender(**settings(dim=16)).fit(
            events, listings, checkpoint_dir=checkpoints, resume=True
        )
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Recommender(**settings()).fit(
            events, listings, checkpoint_dir=tmp_path / "empty", resume=True
        )


@pytest.mark.parametrize("change", ["listing", "timestamp", "renamed id", "a listing's price"])
def test_a_checkpoint_of_other_data_with_the_same_counts_is_refused(data, tmp_path, change):
    # the fingerprint held the data's counts only: other data of equal counts was resumed
    events, listings = data
    checkpoints = tmp_path / "checkpoints"
    stopped_after_one_epoch(data, checkpoints)
    events, listings = events.copy(), listings.copy()
    once = ~events.duplicated(["user_id", "listing_id"], keep=False)  # a pair of one event
    row = events.index[once][0]
    if change == "listing":  # to a listing its user has no other event on
        seen = set(events.loc[events["user_id"] == events.at[row, "user_id"], "listing_id"])
        events.at[row, "listing_id"] = next(i for i in listings["listing_id"] if i not in seen)
    elif change == "timestamp":
        events.at[row, "timestamp"] += 1
    elif change == "a listing's price":  # the same events, one listing's features changed
        listings.loc[listings.index[0], "price"] = listings["price"].iloc[0] + 1
    else:  # a listing renamed, in the same place among the sorted ids
        renamed = {"Wagen 0 ä": "Wagen 0 äb"}
        events["listing_id"] = events["listing_id"].replace(renamed)
        listings["listing_id"] = listings["listing_id"].replace(renamed)
    with pytest.raises(CheckpointError, match="the training data differ: other events, ids or"):
        Recommender(**settings()).fit(events, listings, checkpoint_dir=checkpoints, resume=True)


def test_checkpoint_tensors_are_written_from_where_they_lie_unless_they_share_memory(tmp_path):
    from safetensors.torch import load_file, save_file

    from embedrec.training.checkpoint import _apart

    weight = torch.arange(12.0).view(3, 4)
    tensors = {"weight": weight, "same": weight, "row": weight[1], "other": torch.ones(2)}
    apart = _apart(tensors)
    # no copy of a model's weights, the size of the model, at every checkpoint
    assert apart["weight"].data_ptr() == weight.data_ptr()
    assert apart["other"].data_ptr() == tensors["other"].data_ptr()
    save_file(apart, str(tmp_path / "tensors.safetensors"))
    loaded = load_file(str(tmp_path / "tensors.safetensors"))
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)


def test_a_checkpoint_of_another_format_is_refused_with_what_to_do(data, tmp_path):
    events, listings = data
    checkpoints = tmp_path / "checkpoints"
    stopped_after_one_epoch(data, checkpoints)
    folder = checkpoints / json.loads((checkpoints / "latest.json").read_text())["checkpoint"]
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps(state | {"format": 1}))
    with pytest.raises(CheckpointError, match="format 1, this embedrec reads format 2; train"):
        Recommender(**settings()).fit(events, listings, checkpoint_dir=checkpoints, resume=True)


@pytest.mark.parametrize(
    ("damage", "reads"),
    [
        (lambda folder, root: (folder / "tensors.safetensors").write_bytes(b"\x01"), "Safetensor"),
        (lambda folder, root: (folder / "state.json").write_text('{"form'), "JSONDecodeError"),
        (lambda folder, root: (root / "latest.json").write_text(""), "JSONDecodeError"),
        (lambda folder, root: (folder / "state.json").unlink(), "FileNotFoundError"),
    ],
    ids=["truncated tensors", "truncated state", "empty pointer", "state removed"],
)
def test_a_damaged_checkpoint_is_one_clear_error(data, tmp_path, damage, reads):
    events, listings = data
    checkpoints = tmp_path / "checkpoints"
    stopped_after_one_epoch(data, checkpoints)
    folder = checkpoints / json.loads((checkpoints / "latest.json").read_text())["checkpoint"]
    damage(folder, checkpoints)
    with pytest.raises(CheckpointError, match=f"cannot be read \\({reads}") as error:
        Recommender(**settings()).fit(events, listings, checkpoint_dir=checkpoints, resume=True)
    assert "train again without --resume" in str(error.value)


def test_a_resume_asking_for_fewer_epochs_than_were_done_is_refused(data, tmp_path):
    events, listings = data
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Stop):
        Recommender(**settings()).fit(
            events, listings, callbacks=[stop_at(3)], checkpoint_dir=checkpoints
        )
    with pytest.raises(CheckpointError, match="has 3 epochs done, more than the 2 asked for"):
        Recommender(**settings(epochs=2)).fit(
            events, listings, checkpoint_dir=checkpoints, resume=True
        )


WITHIN = {"batch_size": 64, "epochs": 3, "refit": False}


@pytest.fixture(scope="module")
def whole_within(data) -> Recommender:
    """The fit of ``WITHIN`` that never stopped."""
    return Recommender(**settings(**WITHIN)).fit(*data)


def stopped_within_epoch_two(data, checkpoints, monkeypatch) -> None:
    """A fit (``WITHIN``, a checkpoint every 3 steps) stopped after a checkpoint of its
    second epoch's first batches."""
    events, listings = data
    save = Checkpoints.save

    def save_then_stop(self, position, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        save(self, position, *args, **kwargs)
        if position.epoch == 2 and position.batch > 0:
            raise Stop

    monkeypatch.setattr(Checkpoints, "save", save_then_stop)
    with pytest.raises(Stop):
        Recommender(**settings(**WITHIN)).fit(
            events, listings, checkpoint_dir=checkpoints, checkpoint_every=3
        )
    monkeypatch.undo()


def test_a_fit_stopped_within_an_epoch_resumes_the_same_run(
    data, whole_within, tmp_path, monkeypatch
):
    # hybrid's steps read listing vectors cached at the last refresh: the resumed epoch must
    # read those, not vectors made again from the weights at the checkpoint
    events, listings = data
    whole = whole_within
    checkpoints = tmp_path / "checkpoints"
    stopped_within_epoch_two(data, checkpoints, monkeypatch)
    resumed = Recommender(**settings(**WITHIN)).fit(
        events, listings, checkpoint_dir=checkpoints, checkpoint_every=3, resume=True
    )
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[name], value, msg=name)
    # the resumed epoch logs the mean loss of all its batches, not of those after the stop
    history, whole_history = resumed.report_["history"], whole.report_["history"]
    assert [e["epoch"] for e in history] == [e["epoch"] for e in whole_history] == [1, 2, 3]
    for entry, expected in zip(history, whole_history, strict=True):
        assert entry["loss"] == pytest.approx(expected["loss"], abs=1e-6), entry["epoch"]
        assert entry["val_recall@10"] == pytest.approx(expected["val_recall@10"], abs=1e-6)


def test_a_checkpoint_within_an_epoch_without_its_totals_still_resumes(
    data, whole_within, tmp_path, monkeypatch
):
    # written before the epoch's running totals were kept: the same weights, and the resumed
    # epoch's loss is the mean over the batches taken after the stop, as it was then
    events, listings = data
    whole = whole_within
    checkpoints = tmp_path / "checkpoints"
    stopped_within_epoch_two(data, checkpoints, monkeypatch)
    folder = checkpoints / json.loads((checkpoints / "latest.json").read_text())["checkpoint"]
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "tensors.safetensors"))
    loss_sum, batches, _ = tensors.pop("totals.0").tolist()
    (folder / "state.json").write_text(
        json.dumps({k: v for k, v in state.items() if k != "epoch_totals"})
    )
    save_file(tensors, str(folder / "tensors.safetensors"))
    done, epoch_batches = (
        state["position"]["batch"],
        state["position"]["steps"] - state["position"]["batch"],
    )
    assert state["position"]["epoch"] == 2 and batches == done > 0
    resumed = Recommender(**settings(**WITHIN)).fit(
        events, listings, checkpoint_dir=checkpoints, checkpoint_every=3, resume=True
    )
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[name], value, msg=name)
    whole_loss = whole.report_["history"][1]["loss"]
    after_stop = (whole_loss * epoch_batches - loss_sum) / (epoch_batches - done)
    assert resumed.report_["history"][1]["loss"] == pytest.approx(after_stop, abs=1e-6)
