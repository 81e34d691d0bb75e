"""The Recommender as a scikit-learn estimator, and the seams of its training."""

from __future__ import annotations

import copy
import logging
import pickle
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.base import clone

from embedrec import NotFittedError, Recommender, load
from embedrec.data.errors import DataError
from embedrec.data.schema import SchemaConfig
from embedrec.training.trainer import EarlyStopping


def test_params_come_from_the_signature_and_clone_works():
    rec = Recommender(model="mf", dim=8, event_weights={"view": 1.0, "buy": 9.0})
    params = rec.get_params()
    assert set(params) == set(Recommender.defaults())
    assert params["dim"] == 8 and params["event_weights"] == {"view": 1.0, "buy": 9.0}
    copy = clone(rec)
    assert copy is not rec and copy.get_params() == params
    assert copy.set_params(dim=16, epochs=2) is copy
    assert (copy.dim, copy.epochs, rec.dim) == (16, 2, 8)
    with pytest.raises(ValueError, match="nope"):
        copy.set_params(nope=1)


def test_an_unfitted_model_raises_not_fitted_error_as_scikit_learn_does(fitted_mf, tmp_path):
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError
    from sklearn.utils.validation import check_is_fitted

    rec = Recommender(model="mf")
    calls = [
        lambda: rec.recommend(["u"]),
        lambda: rec.similar(["a"]),
        lambda: rec.save(tmp_path / "m"),
        lambda: Recommender(model="mf").fit("unread.csv", "unread.csv", init_from=rec),
        lambda: check_is_fitted(rec),
        lambda: check_is_fitted(clone(fitted_mf)),
    ]
    for call in calls:
        with pytest.raises(SklearnNotFittedError):
            call()
    with pytest.raises(NotFittedError, match=r"call fit\(\) or load\(\)") as error:
        rec.retriever()
    assert isinstance(error.value, ValueError) and isinstance(error.value, AttributeError)
    assert not (tmp_path / "m").exists()
    check_is_fitted(fitted_mf)


def test_a_fitted_model_copies_before_and_after_its_first_query(fitted_mf):
    # copy.deepcopy and multiprocessing's pickling in memory; the retriever a query cached
    # holds locks and is left out, to be rebuilt by the copy's own first query
    before = copy.deepcopy(fitted_mf)
    [answer] = fitted_mf.similar(["Wagen 1 ä"], k=5)
    for copied in (before, copy.deepcopy(fitted_mf), pickle.loads(pickle.dumps(fitted_mf))):
        assert copied.similar(["Wagen 1 ä"], k=5) == [answer]
    assert fitted_mf.retriever() is fitted_mf.retriever()  # the original keeps its own


@pytest.mark.parametrize(
    ("ks", "named"),
    [([], "at least one cut-off"), ([0], "got 0"), ([-3], "got -3"), ([5.0], "got 5.0"),
     ([True], "got True"), ("10", "got '10'"), (None, "got None")],
)  # fmt: skip
def test_evaluation_cut_offs_are_whole_numbers_from_1_named_ks(fitted_mf, blocks, ks, named):
    events, _, _, _ = blocks
    with pytest.raises(ValueError, match=rf"^ks must .*{named}"):
        fitted_mf.evaluate(events, ks=ks)


def test_one_cut_off_may_be_given_alone(fitted_mf, blocks):
    events, _, _, _ = blocks
    report = fitted_mf.evaluate(events.iloc[::7], ks=np.int64(5))
    assert {"recall@5", "ndcg@5"} <= set(report["overall"])
    assert not any(key.endswith(("@10", "@20")) for key in report["overall"])


def test_a_cut_off_beyond_the_catalogue_scores_the_whole_ranking(fitted_mf, blocks):
    # each user's ranking held max(ks) slots: 2**50 failed with a MemoryError
    events, _, _, _ = blocks
    later = events.iloc[::7].assign(listing_id=np.roll(events["listing_id"].to_numpy()[::7], 3))
    whole, huge = 120, 2**50
    by_size, beyond = (fitted_mf.evaluate(later, ks=[5, k]) for k in (whole, huge))
    assert beyond["overall"]["users"] > 0 and beyond["similar"]["overall"]["pairs"] > 0
    for part in ("overall", "warm"):
        assert beyond[part][f"recall@{huge}"] == by_size[part][f"recall@{whole}"] == 1.0
        assert beyond[part][f"ndcg@{huge}"] == by_size[part][f"ndcg@{whole}"]
        assert beyond[part]["recall@5"] == by_size[part]["recall@5"]
    assert beyond["similar"]["overall"][f"hit@{huge}"] == 1.0


def test_one_source_of_defaults_for_the_cli_and_the_trainer():
    from embedrec.cli import train as train_command

    defaults = Recommender.defaults()
    options = {p.name: p.default for p in train_command.params}
    for name in ("model", "dim", "epochs", "seed", "device"):
        assert options[name] == defaults[name]
    config = Recommender().train_config(10_000)
    for name in ("epochs", "lr", "patience", "validation_users", "negatives", "temperature"):
        assert getattr(config, name) == defaults[name]


def test_callbacks_see_every_epoch_and_can_stop_training(blocks):
    events, listings, _, _ = blocks
    seen = []

    def stop_at_two(epoch: int, metrics: dict, elapsed: float) -> bool:
        seen.append((epoch, set(metrics), elapsed))
        return epoch == 2

    rec = Recommender(model="mf", epochs=10, batch_size=256, refit=False, progress=False)
    rec.fit(events, listings, callbacks=[stop_at_two])
    assert [epoch for epoch, _, _ in seen] == [1, 2]
    assert {"loss", "val_recall@10", "val_recall@10_se", "validation_seconds"} <= seen[0][1]
    assert 0 < seen[0][2] <= seen[1][2]
    assert rec.report_["stopped"] == "callback" and len(rec.report_["history"]) == 2


def test_a_time_budget_ends_training_after_the_epoch_that_passes_it(blocks):
    events, listings, _, _ = blocks
    rec = Recommender(
        model="mf", epochs=10, batch_size=256, refit=False, time_budget=1e-6, progress=False
    ).fit(events, listings)
    assert rec.report_["stopped"] == "time budget" and len(rec.report_["history"]) == 1
    assert rec.report_["best_epoch"] == 1  # the warm-up epoch, when it is all there is
    with pytest.raises(ValueError, match="time_budget must be a positive number"):
        Recommender(time_budget=0).check_params()


def test_the_stopping_rule_counts_epochs_without_gain():
    rule = EarlyStopping(patience=1)
    assert [rule.update(s) for s in (0.2, 0.3, 0.3)] == [True, True, False]
    assert not rule.stop
    rule.update(0.1)
    assert rule.stop and rule.best == 0.3


def test_the_first_epoch_is_no_candidate_unless_it_is_the_last():
    rule = EarlyStopping(patience=1, warm_up=True)
    # a first score above every later one does not stop the run nor become the best
    assert [rule.update(s) for s in (0.5, 0.2, 0.3, 0.25)] == [False, True, True, False]
    assert rule.best == 0.3 and not rule.stop
    assert EarlyStopping(patience=1, warm_up=True).update(0.5, last=True)
    assert EarlyStopping(patience=1).update(0.5)  # a warm start has no warm-up
    resumed = EarlyStopping(patience=1, warm_up=True)
    resumed.restore([0.3, 0])  # a checkpoint from before the warm-up was counted
    assert not resumed.update(0.2) and resumed.best == 0.3


def test_public_preparation_is_what_fit_trains_on(blocks):
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    prepared = rec.prepare(events, listings)
    assert prepared.n_trained_listings == len(listings)
    assert list(prepared.listings.frame()["listing_id"]) == list(prepared.data.listings.ids)
    model = rec.build_model(prepared, prepared.data)
    again = rec.build_model(prepared, prepared.data)
    # weights come from the seed alone
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_model_reuses_the_catalogue_inputs_another_derived(blocks):
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    prepared = rec.prepare(events, listings)
    first = rec.build_model(prepared, prepared.data)
    part = prepared.data.subset(np.arange(len(prepared.data) // 2))  # a hold-out's part
    derived = rec.build_model(prepared, part)
    reused = rec.build_model(prepared, part, reuse=first.listing_inputs())
    # the feature tensors are the first model's, not copies, and the inputs derived from
    # the pairs are the part's own
    assert first.catalogue.keys() == reused.catalogue.keys()
    assert all(reused.catalogue[k] is v for k, v in first.catalogue.items())
    assert torch.equal(reused.histories, derived.histories)
    assert not torch.equal(reused.histories, first.histories)
    for model in (derived, reused):
        model.eval()
    assert torch.equal(reused.all_listing_vectors(), derived.all_listing_vectors())
    # a model without features derives nothing from the listings
    assert Recommender(model="mf").build_model(prepared, part).listing_inputs() is None


def test_fit_leaves_global_random_state_alone(blocks):
    events, listings, _, _ = blocks
    torch.manual_seed(123)
    state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    Recommender(model="hybrid", epochs=1, batch_size=256, progress=False).fit(events, listings)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_messages_go_through_logging_and_bars_stay_off_without_a_terminal(blocks, caplog, capsys):
    events, listings, _, _ = blocks
    with caplog.at_level(logging.INFO, logger="embedrec"):
        Recommender(model="mf", epochs=2, batch_size=256).fit(events, listings)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("embedrec")]
    assert any(m.startswith("training on") for m in messages)
    assert any(m.startswith("epoch   1") for m in messages)
    assert any(m.startswith("refit on all") for m in messages)
    out, err = capsys.readouterr()
    assert not sys.stderr.isatty() and "\r" not in err and "epoch" not in out


def test_importing_embedrec_leaves_scikit_learn_unloaded():
    # its import took 1.4 s of every command's and server worker's start
    import subprocess

    code = "import sys, embedrec.cli, embedrec.serving.app; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_listings_seen_in_the_hold_out_only_are_embedded_by_their_features(blocks):
    events, listings, _, _ = blocks
    # the last listings appear only after every other event: in the time hold-out
    late = listings["listing_id"].iloc[-6:]
    events = events.copy()
    events.loc[events["listing_id"].isin(late), "timestamp"] += 10_000_000
    rec = Recommender(epochs=2, batch_size=256, refit=False, progress=False).fit(events, listings)
    model = rec.model_
    rows = torch.as_tensor(rec.listings_.indices(late.to_numpy()))
    assert bool((rows < rec.n_trained_listings_).all())  # trained listings' rows
    # no pair of the training part trained their ids: dropped, not random
    assert torch.count_nonzero(model.listing_id.weight[rows]) == 0
    others = torch.arange(rec.n_trained_listings_)[
        ~torch.isin(torch.arange(rec.n_trained_listings_), rows)
    ]
    assert bool(model.listing_id.weight[others].abs().sum(dim=1).gt(0).all())
    # so their vectors are those of new listings with the same features
    with torch.no_grad():
        by_id = model.listing_vectors(rows)
        by_features = model.vectors_from_features(
            model.features_of(rows), torch.full_like(rows, -1)
        )
    torch.testing.assert_close(by_id, by_features)


def test_a_rank_drops_the_untrained_ids_among_the_rows_it_holds(blocks):
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    prepared = rec.prepare(events, listings)
    whole = rec.build_model(prepared, prepared.data)
    rank = rec.build_model(prepared, prepared.data)
    rank._hold_own_listing_ids(1, 2)  # as rank 1 of 2 holds them: rows 1, 3, 5, ...
    n = whole.n_trained_listings
    trained = torch.arange(0, n, 3)  # the rows the training pairs reach
    for model in (whole, rank):
        model.forget_untrained_ids(trained)
    held = torch.cat([torch.arange(1, n, 2), torch.tensor([n])])
    torch.testing.assert_close(rank.listing_id.weight, whole.listing_id.weight[held])
    dropped = ~torch.isin(torch.arange(n), trained)
    assert torch.count_nonzero(whole.listing_id.weight[:n][dropped]) == 0
    assert bool(whole.listing_id.weight[trained].abs().sum(dim=1).gt(0).all())


@pytest.mark.parametrize(
    ("params", "reads"),
    [
        ({"user_ids": "false"}, "user_ids must be true or false"),
        ({"refit": "no"}, "refit must be true or false"),
        ({"history_gradient": 1}, "history_gradient must be true or false"),
        ({"progress": "yes"}, "progress must be true, false or None"),
        ({"min_user_interactions": "2"}, "min_user_interactions must be a whole number >= 1"),
        ({"min_listing_interactions": 0}, "min_listing_interactions must be a whole number"),
        ({"min_listing_interactions": 1.5}, "min_listing_interactions must be a whole number"),
        ({"schema": {"drop": ["lat"]}}, "schema must be a SchemaConfig"),
        ({"event_weights": {}}, "event weights name no event"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused_before_any_work(blocks, params, reads):
    events, listings, _, _ = blocks
    with pytest.raises(ValueError, match=reads):
        Recommender(**params).fit(events, listings)


def test_the_feature_settings_are_saved_with_the_model(blocks, tmp_path):
    events, listings, _, _ = blocks
    schema = SchemaConfig(types={"price": "categorical"}, drop=["lat", "lon"])
    fitted = Recommender(dim=8, epochs=1, schema=schema, progress=False).fit(events, listings)
    fitted.save(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.get_params()["schema"] == schema
    refitted = clone(loaded).set_params(progress=False).fit(events, listings)
    kinds = {spec.name: spec.kind for spec in refitted.feature_specs_}
    assert kinds == {spec.name: spec.kind for spec in fitted.feature_specs_}
    assert kinds == {"make": "categorical", "price": "categorical"}


def test_a_value_a_forced_feature_type_cannot_read_names_the_file(blocks, tmp_path):
    events, listings, _, _ = blocks
    path = tmp_path / "listings.parquet"
    listings.to_parquet(path)
    schema = SchemaConfig(types={"make": "numeric"})
    with pytest.raises(DataError, match="not a number") as error:
        Recommender(schema=schema, progress=False).fit(events, path)
    assert error.value.file == str(path) and error.value.column == "make"


def test_concurrent_first_queries_build_one_retriever(fitted_mf):
    # each thread that found none cached built its own: at 1M listings a catalogue embedded
    # and indexed once per thread, the memory many times over
    threads = 8
    for _ in range(3):
        rec = copy.deepcopy(fitted_mf)  # no retriever cached yet
        start = threading.Barrier(threads)

        def first_query(rec=rec, start=start):
            start.wait()
            return rec.retriever()

        with ThreadPoolExecutor(threads) as pool:
            retrievers = list(pool.map(lambda _: first_query(), range(threads)))
        assert all(r is rec.retriever() for r in retrievers)


def test_a_loaded_model_fitted_again_forgets_the_directory_it_came_from(
    fitted_mf, blocks, tmp_path
):
    from embedrec.serving.shared import model_tag

    events, listings, _, _ = blocks
    loaded = load(fitted_mf.save(tmp_path / "model"))
    assert loaded.manifest_["files"] and model_tag(loaded)
    loaded.set_params(epochs=1, validation_fraction=0).fit(events.iloc[::4], listings)
    # its checksums and trained_at are the old model's: vectors the server stored under that
    # tag would be read as this model's
    assert not hasattr(loaded, "manifest_") and model_tag(loaded) is None
