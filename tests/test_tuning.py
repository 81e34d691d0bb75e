"""``tune``: fit's own search of training settings on its time hold-out, within a budget."""

from __future__ import annotations

import json
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import block_data

from embedrec.cli import main
from embedrec.data.prepare import time_holdout
from embedrec.models.registry import model_class
from embedrec.recommender import Recommender, load
from embedrec.training.trainer import TrainingDiverged
from embedrec.training.tuning import SEARCH, Candidate, run_search, search_settings

EPOCH_SECONDS = 1000.0  # what the clock of these tests adds to an epoch: real time is noise


@pytest.fixture(scope="module")
def data():
    events, listings, *_ = block_data(n_users=150, n_listings=400)
    return events, listings


@pytest.fixture
def slow_epochs(monkeypatch):
    """A clock on which every epoch takes ``EPOCH_SECONDS`` more than it did: the search's
    budget and the runs' time budgets read it, so what fits into a budget is decided by
    the epochs trained, not by this host's speed. Its callback goes to ``fit``."""
    real = time.perf_counter
    extra = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real() + extra[0])

    def epoch_passed(epoch, metrics, elapsed):
        extra[0] += EPOCH_SECONDS

    return epoch_passed


def test_the_search_tries_what_a_model_reads_and_no_setting_twice():
    given = Recommender.defaults()
    hybrid = search_settings(given, model_class("hybrid"))
    assert hybrid[0] == {}  # the settings as given come first
    assert hybrid[1] == {"negatives_from": "catalogue", "negatives": 2048, "temperature": 0.2}
    assert len(hybrid) == len(SEARCH)
    # a setting a model does not read is left out of a change, and a change left with
    # nothing new is not tried
    mf = search_settings(given | {"model": "mf"}, model_class("mf"))
    assert mf == [
        {},
        {"negatives_from": "catalogue", "negatives": 2048},
        {"logq_scale": 1.5},
        {"lr": 0.1},
        {"lr": 0.02},
    ]
    deep = search_settings(given | {"model": "deep"}, model_class("deep"))
    assert deep == [{}, {"lr": 0.1}, {"lr": 0.02}]
    bpr = search_settings(given | {"loss": "bpr"}, model_class("hybrid"))
    assert not any({"negatives_from", "negatives", "logq_scale"} & set(c) for c in bpr)
    # given settings are not changed to themselves
    chosen = given | {"temperature": 0.2, "lr": 0.1}
    searched = search_settings(chosen, model_class("hybrid"))
    assert {"temperature": 0.2} not in searched and {"lr": 0.1} not in searched
    assert searched[1] == {"negatives_from": "catalogue", "negatives": 2048}
    assert len({json.dumps(chosen | c, sort_keys=True) for c in searched}) == len(searched)


def test_tune_tries_settings_while_its_budget_lasts_and_keeps_the_best(data, slow_epochs):
    events, listings = data
    # the settings given train 4 epochs (4,000 s), the next 4 more (8,000 s), and the third
    # starts with 1,500 s left: the check after its third epoch finds it passed
    given = {"epochs": 4, "patience": 5, "tune": 9500, "seed": 1, "device": "cpu"}
    recommender = Recommender(**given, progress=False).fit(
        events, listings, callbacks=[slow_epochs]
    )
    tuning = recommender.report_["tuning"]
    tried = tuning["tried"]
    assert [t["changes"] for t in tried] == search_settings(
        recommender.get_params(), model_class("hybrid")
    )[:3]
    assert [t["epochs"] for t in tried] == [4, 4, 3]
    assert [t["stopped"] for t in tried] == ["epochs", "epochs", "time budget"]
    assert tuning["candidates"] == len(SEARCH) and tuning["budget_seconds"] == 9500
    assert len({t["val_recall@10"] for t in tried}) > 1  # the settings made a difference
    best = max(tried, key=lambda t: t["val_recall@10"])
    assert tuning["chosen"] == best["changes"]
    # the report's validation run is the winner's, and the refit trained its epochs with
    # its settings
    assert recommender.report_["best_val_recall@10"] == best["val_recall@10"]
    assert recommender.report_["refit_epochs"] == best["best_epoch"]
    expected = recommender.get_params() | best["changes"]
    assert recommender.model_.history_gradient == expected["history_gradient"]
    # fit leaves the parameters as given
    assert recommender.get_params() == Recommender(**given, progress=False).get_params()


def test_a_budget_spent_by_the_settings_given_trains_them_alone(data, slow_epochs):
    events, listings = data
    tuned = Recommender(epochs=2, tune=1500, device="cpu", progress=False).fit(
        events, listings, callbacks=[slow_epochs]
    )
    plain = Recommender(epochs=2, device="cpu", progress=False).fit(events, listings)
    assert [t["changes"] for t in tuned.report_["tuning"]["tried"]] == [{}]
    assert tuned.report_["tuning"]["chosen"] == {}
    assert plain.report_["tuning"] is None
    assert tuned.report_["best_val_recall@10"] == plain.report_["best_val_recall@10"]


@pytest.mark.parametrize("tune", [0, -5, True, "300"])
def test_tune_must_be_a_positive_number_of_seconds(tune):
    with pytest.raises(ValueError, match="tune must be a positive number of seconds"):
        Recommender(tune=tune).check_params()


def test_tune_needs_the_time_hold_out_unless_it_continues_a_search():
    with pytest.raises(ValueError, match="validation_fraction"):
        Recommender(tune=60, validation_fraction=0).check_params()
    Recommender(tune=60, validation_fraction=0).check_params(continuing=True)


def test_train_tune_prints_what_it_tried_and_the_model_keeps_it(data, tmp_path):
    events, listings = data
    events.to_parquet(tmp_path / "events.parquet")
    listings.to_parquet(tmp_path / "listings.parquet")
    out = tmp_path / "model"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--interactions",
            str(tmp_path / "events.parquet"),
            "--listings",
            str(tmp_path / "listings.parquet"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--tune",
            "0.001",  # spent by the settings given
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"tuning: 1 of {len(SEARCH)} settings tried" in result.output
    assert "* as given: validation Recall@10" in result.output
    tuning = load(out).report_["tuning"]
    assert tuning["chosen"] == {} and len(tuning["tried"]) == 1
    refused = CliRunner().invoke(main, ["train", "--interactions", "x", "--listings", "y",
                                        "--out", str(tmp_path / "m"), "--tune", "0"])  # fmt: skip
    assert refused.exit_code != 0 and "--tune" in refused.output


class Stop(Exception):
    """Stands for a crash after a checkpoint."""


def test_a_tuned_fit_stopped_in_its_refit_resumes_with_the_settings_it_chose(
    data, slow_epochs, tmp_path
):
    events, listings = data
    # two candidates of 2 epochs each fill the budget; the refit follows
    given = {"dim": 8, "epochs": 2, "patience": 5, "tune": 2500, "seed": 0, "device": "cpu"}
    given["temperature"] = 20.0  # far too flat: the first change tried (0.2) wins
    whole = Recommender(**given, progress=False).fit(events, listings, callbacks=[slow_epochs])
    calls = {"n": 0}

    def stop_in_the_refit(number, metrics, elapsed):
        slow_epochs(number, metrics, elapsed)
        calls["n"] += 1
        if calls["n"] == 5:  # the refit's first epoch, once its checkpoint is written
            raise Stop

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Stop):
        Recommender(**given, progress=False).fit(
            events, listings, callbacks=[stop_in_the_refit], checkpoint_dir=checkpoints
        )
    resumed = Recommender(**given, progress=False).fit(
        events, listings, checkpoint_dir=checkpoints, resume=True
    )
    assert len(whole.report_["tuning"]["tried"]) == 2
    assert whole.report_["tuning"]["chosen"]  # not the settings given: the resume must know

    def scores(recommender):  # what was tried and chosen, not how long it took
        tuning = recommender.report_["tuning"]
        return tuning["chosen"], [(t["changes"], t["val_recall@10"]) for t in tuning["tried"]]

    assert scores(resumed) == scores(whole)
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[name], value, msg=name)


def test_settings_that_diverge_lose_the_search_instead_of_ending_it(data):
    events, listings = data
    recommender = Recommender(
        model="mf", lr=1e30, epochs=1, tune=3600, device="cpu", progress=False
    ).fit(events, listings)
    tuning = recommender.report_["tuning"]
    stopped = {json.dumps(t["changes"]): t["stopped"] for t in tuning["tried"]}
    assert stopped == {
        "{}": "diverged",
        '{"negatives_from": "catalogue", "negatives": 2048}': "diverged",
        '{"logq_scale": 1.5}': "diverged",
        '{"lr": 0.1}': "epochs",
        '{"lr": 0.02}': "epochs",
    }
    assert tuning["chosen"] in ({"lr": 0.1}, {"lr": 0.02})
    assert torch.isfinite(recommender.model_.user_embedding.weight).all()


def search_of(data, tried: list[dict]):
    """``run_search`` over candidates of ``tried`` changes to an ``mf`` model's settings,
    built as fit builds them, on the fit's time hold-out."""
    events, listings = data
    given = Recommender(model="mf", epochs=2, device="cpu", progress=False)
    prepared = given.prepare(events, listings)
    fit_part, held_out = time_holdout(prepared.data, given.validation_fraction)
    candidates = []
    for changes in tried:
        variant = Recommender(**(given.get_params() | changes))
        build = lambda part, v=variant: v.build_model(prepared, part)  # noqa: E731
        candidates.append(Candidate(changes, variant.train_config(len(fit_part)), build))
    return run_search(candidates, 3600, fit_part, held_out)


def test_when_every_setting_tried_diverges_the_first_ones_error_ends_the_search(data, caplog):
    tried = [{"lr": 1e30}, {"lr": 1e30, "logq_scale": 1.5}, {"lr": 1e31}]
    with (
        caplog.at_level("WARNING", logger="embedrec.training.tuning"),
        pytest.raises(TrainingDiverged, match="^training diverged at epoch 1: loss nan;"),
    ):
        search_of(data, tried)
    # each was tried: a diverged one lost, and none was left to win
    warned = [record.getMessage().split(": training diverged")[0] for record in caplog.records]
    assert warned == [f"tuning: candidate {k} of 3" for k in (1, 2, 3)]


def test_the_first_settings_are_kept_when_every_later_one_diverges(data):
    search = search_of(data, [{}, {"lr": 1e30}, {"lr": 1e30, "logq_scale": 1.5}])
    assert search.chosen.changes == {}
    assert [t["stopped"] for t in search.report["tried"]][1:] == ["diverged", "diverged"]
    assert search.report["tried"][0]["stopped"] != "diverged"
    assert all(torch.isfinite(p).all() for p in search.model.parameters())


def test_train_stops_with_one_line_when_the_only_setting_tried_diverges(data, tmp_path):
    events, listings = data
    events.to_parquet(tmp_path / "events.parquet")
    listings.to_parquet(tmp_path / "listings.parquet")
    (tmp_path / "train.toml").write_text("[train]\nlr = 1e30\nepochs = 1\n")
    result = CliRunner().invoke(
        main,
        ["train", "--interactions", str(tmp_path / "events.parquet"), "--listings",
         str(tmp_path / "listings.parquet"), "--out", str(tmp_path / "model"), "--model", "mf",
         "--config", str(tmp_path / "train.toml"), "--tune", "0.001"],  # spent by the first
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        "error: training diverged at epoch 1: loss nan; lower lr or check the weights"
    )
    assert not (tmp_path / "model").exists()


def test_a_callback_that_stops_a_run_stops_the_search(data):
    events, listings = data
    recommender = Recommender(epochs=3, tune=3600, device="cpu", progress=False).fit(
        events, listings, callbacks=[lambda epoch, metrics, elapsed: True]
    )
    tried = recommender.report_["tuning"]["tried"]
    assert [(t["changes"], t["stopped"], t["epochs"]) for t in tried] == [({}, "callback", 1)]


def test_without_a_refit_the_search_winners_own_run_is_the_model(data, slow_epochs):
    events, listings = data
    given = {"epochs": 4, "patience": 5, "tune": 9500, "seed": 1, "device": "cpu"}
    refit = Recommender(**given, progress=False).fit(events, listings, callbacks=[slow_epochs])
    kept = Recommender(**given, refit=False, progress=False).fit(
        events, listings, callbacks=[slow_epochs]
    )
    assert kept.report_["tuning"]["chosen"] == refit.report_["tuning"]["chosen"]
    assert kept.report_["refit_epochs"] is None
    # the model is the winner's run on the training part, as a fit of its settings alone
    # without a refit gives it
    settings = given | refit.report_["tuning"]["chosen"] | {"tune": None}
    alone = Recommender(**settings, refit=False, progress=False).fit(events, listings)
    for name, value in alone.model_.state_dict().items():
        torch.testing.assert_close(kept.model_.state_dict()[name], value, msg=name)


def test_a_warm_start_continues_the_old_search_instead_of_searching_again(
    data, slow_epochs, tmp_path
):
    events, listings = data
    given = {"dim": 8, "epochs": 2, "patience": 5, "tune": 2500, "seed": 0, "device": "cpu"}
    given["temperature"] = 20.0  # far too flat: the first change tried (0.2) wins
    old = Recommender(**given, progress=False).fit(events, listings, callbacks=[slow_epochs])
    chosen = old.report_["tuning"]["chosen"]
    assert chosen  # a setting other than those given won
    old.save(tmp_path / "old")
    # the nightly update with the full train's settings: no search, the old one's choice
    update = Recommender(**given, progress=False).fit(
        events, listings, callbacks=[slow_epochs], init_from=tmp_path / "old"
    )
    assert update.report_["tuning"] == {"chosen": chosen, "continued_from": str(tmp_path / "old")}
    plain = given | chosen | {"tune": None}
    expected = Recommender(**plain, progress=False).fit(
        events, listings, init_from=tmp_path / "old"
    )
    assert expected.report_["tuning"] is None  # without tune, the settings as given
    for name, value in expected.model_.state_dict().items():
        torch.testing.assert_close(update.model_.state_dict()[name], value, msg=name)
    # a continued choice needs no hold-out: an update without one is no error
    whole = {"validation_fraction": 0.0, "epochs": 1}
    quick = Recommender(**given | whole, progress=False).fit(
        events, listings, init_from=tmp_path / "old"
    )
    assert quick.report_["tuning"]["chosen"] == chosen
    with pytest.raises(ValueError, match="validation_fraction"):
        Recommender(**given | whole, progress=False).fit(events, listings)
    # the command line says so
    events.to_parquet(tmp_path / "events.parquet")
    listings.to_parquet(tmp_path / "listings.parquet")
    sources = [
        "--interactions",
        str(tmp_path / "events.parquet"),
        "--listings",
        str(tmp_path / "listings.parquet"),
        "--init-from",
        str(tmp_path / "old"),
    ]
    flags = ["--dim", "8", "--epochs", "1", "--seed", "3", "--tune", "2500"]
    result = CliRunner().invoke(
        main, ["train", *sources, "--out", str(tmp_path / "new"), *flags], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"tuning: the settings the search of {tmp_path / 'old'} chose: " in result.output
    assert "negatives_from=catalogue" in result.output
