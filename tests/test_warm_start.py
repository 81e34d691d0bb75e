"""Warm start (``fit(..., init_from=...)``, ``train --init-from``): a model continued on the
last day's events keeps what it learned, grows for new ids and values, and ranks about as
well as a full retrain."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from embedrec.cli import main
from embedrec.data.errors import DataError
from embedrec.data.schema import FeatureSpec, SchemaConfig
from embedrec.datasets.cars import generate_cars
from embedrec.features.categorical import CategoricalEncoder
from embedrec.features.multi_valued import MultiValuedEncoder
from embedrec.features.pipeline import FeaturePipeline
from embedrec.models.feature_model import FeatureModel
from embedrec.models.hybrid import continued_histories
from embedrec.recommender import Recommender
from embedrec.training.warm_start import check_architecture, continue_from

UPDATE_DAY = "2026-10-30"  # the base model trains before it, the update on it
NEXT_DAY = "2026-10-31"  # evaluation day
# no text columns: hashed text tables make training steps slow, and nothing here needs them
COLUMNS = ["listing_id", "make", "body", "price", "equipment", "lat", "lon"]
SETTINGS = {"dim": 16, "hidden": 32, "feature_dim": 8, "epochs": 3, "seed": 0}
QUIET = {"progress": False, "device": "cpu"}
QUICK = {**SETTINGS, "epochs": 1, "validation_fraction": 0.0}  # where quality is not checked


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    paths = generate_cars(tmp_path_factory.mktemp("cars"), size="tiny", seed=0, progress=False)
    events = pd.read_parquet(paths["interactions"])
    listings = pd.read_parquet(paths["listings"], columns=COLUMNS)
    return events, listings


@pytest.fixture(scope="module")
def base(cars):
    events, listings = cars
    return Recommender(**QUICK, **QUIET).fit(events, listings, until=UPDATE_DAY)


@pytest.fixture(scope="module")
def update(cars, base):
    """The update day's data prepared on its own and remapped onto the base model."""
    events, listings = cars
    prepared = Recommender(**SETTINGS, **QUIET).prepare(
        events, listings, since=UPDATE_DAY, until=NEXT_DAY
    )
    return prepared, continue_from(base, prepared, None)


# ---------------------------------------------------------------------------- encoders
def test_categorical_extend_appends_new_values_and_keeps_known_rows():
    encoder = CategoricalEncoder(FeatureSpec("make", "categorical", ["make"]), min_count=1)
    encoder.fit(pd.DataFrame({"make": ["VW", "BMW", "VW"]}))
    before = encoder.transform(pd.DataFrame({"make": ["BMW", "VW", None, "Lada"]}))["make.idx"]
    added = encoder.extend(pd.DataFrame({"make": ["Lada", "VW", "Dacia", None]}))
    after = encoder.transform(pd.DataFrame({"make": ["BMW", "VW", None, "Lada"]}))["make.idx"]
    assert added == 2
    assert encoder.vocabulary == ["BMW", "VW", "Dacia", "Lada"]  # old first, new sorted
    assert after[:3].tolist() == before[:3].tolist()
    assert before[3] == 1 and after[3] == 5  # unknown before, its own row after
    assert encoder.extend(pd.DataFrame({"make": ["VW"]})) == 0


def test_categorical_extend_counts_min_count_over_the_frame():
    encoder = CategoricalEncoder(FeatureSpec("make", "categorical", ["make"]), min_count=2)
    encoder.fit(pd.DataFrame({"make": ["VW", "VW"]}))
    assert encoder.extend(pd.DataFrame({"make": ["Lada", "Kia", "Kia"]})) == 1
    assert encoder.vocabulary == ["VW", "Kia"]


def test_multi_valued_extend_appends_tokens_and_widens_without_changing_old_rows():
    encoder = MultiValuedEncoder(FeatureSpec("equipment", "multi", ["equipment"]))
    encoder.fit(pd.DataFrame({"equipment": ["navi|leather", "navi"]}))
    old = encoder.transform(pd.DataFrame({"equipment": ["navi|leather"]}))["equipment.idx"]
    added = encoder.extend(pd.DataFrame({"equipment": ["navi|tow_bar|sunroof"]}))
    new = encoder.transform(pd.DataFrame({"equipment": ["navi|leather"]}))["equipment.idx"]
    assert added == 2
    assert encoder.vocabulary == ["leather", "navi", "sunroof", "tow_bar"]
    assert encoder.width == 3
    assert new[:, :2].tolist() == old.tolist() and new[0, 2] == 0  # only padding added


def test_pipeline_extend_keeps_numeric_geo_and_text_as_fitted():
    listings = pd.DataFrame(
        {
            "make": ["VW", "BMW"],
            "price": [10_000, 20_000],
            "lat": [52.5, 48.1],
            "lon": [13.4, 11.6],
            "title": ["Golf Navi", "BMW 320d Leder"],
        }
    )
    specs = [
        FeatureSpec("make", "categorical", ["make"]),
        FeatureSpec("price", "numeric", ["price"]),
        FeatureSpec("geo", "geo", ["lat", "lon"]),
        FeatureSpec("title", "text", ["title"]),
    ]
    with pytest.raises(RuntimeError, match="before fit"):
        FeaturePipeline(specs).extend(listings)
    pipeline = FeaturePipeline(specs).fit(listings)
    before = pipeline.to_dict()["features"]
    newer = pd.DataFrame(
        {
            "make": ["Lada"],
            "price": [900_000],
            "lat": [40.0],
            "lon": [-3.7],
            "title": ["Lada Niva"],
        }
    )
    assert pipeline.extend(newer) == 1
    after = pipeline.to_dict()["features"]
    assert after[0]["state"]["vocabulary"] == ["BMW", "VW", "Lada"]
    assert after[1:] == before[1:]


def test_continued_histories_put_new_listings_first_and_count_a_listing_once():
    new_rows = np.array([[5, 3, 0, 0], [0, 0, 0, 0], [8, 0, 0, 0]])
    new_lengths = np.array([2, 0, 1])
    old_rows = np.array([[3, 7, 9, 4], [2, 0, 0, 0]])
    old_lengths = np.array([4, 1])
    rows, lengths = continued_histories(new_rows, new_lengths, old_rows, old_lengths)
    assert rows.tolist() == [[5, 3, 7, 9], [2, 0, 0, 0], [8, 0, 0, 0]]
    assert lengths.tolist() == [4, 1, 1]


# ---------------------------------------------------------------------------- remapping
def test_old_ids_keep_their_rows_and_pairs_keep_their_ids(base, update):
    prepared, warm = update
    data = warm.data
    n_old_users, n_old_trained = len(base.users_), base.n_trained_listings_
    assert data.users.ids[:n_old_users].equals(base.users_.ids)
    assert data.listings.ids[:n_old_trained].equals(base.listings_.ids[:n_old_trained])
    # trained listings first: every pair's listing row is below n_trained_listings
    assert data.listing_idx.max() < warm.n_trained_listings
    assert set(data.listings.ids) == set(base.listings_.ids) | set(prepared.data.listings.ids)
    assert warm.listings.frame()["listing_id"].tolist() == data.listings.ids.tolist()
    new = prepared.data  # the same pairs in the same order, on other rows
    assert data.users.external(data.user_idx) == new.users.external(new.user_idx)
    assert data.listings.external(data.listing_idx) == new.listings.external(new.listing_idx)
    assert np.array_equal(data.timestamp, new.timestamp)


def test_a_warm_model_starts_with_the_old_vectors(base, update):
    _, warm = update
    model = Recommender(**SETTINGS, **QUIET).build_model(warm, warm.data).eval()
    old = base.model_
    n_users = len(base.users_)
    assert torch.equal(model.user_id.weight[:n_users], old.user_id.weight[:n_users])
    assert torch.equal(model.listing_mlp[0].weight, old.listing_mlp[0].weight)
    rows = warm.data.listings.indices(base.listings_.ids)
    # a listing trained for the first time gets a fresh id embedding, as in a fresh model
    same = (np.arange(len(rows)) < base.n_trained_listings_) | (rows >= warm.n_trained_listings)
    with torch.no_grad():
        assert torch.allclose(
            model.listing_vectors(torch.as_tensor(rows[same])),
            old.listing_vectors(torch.as_tensor(np.flatnonzero(same))),
            atol=1e-6,
        )
        # users without events on the update day read the same history as before
        quiet = np.setdiff1d(np.arange(n_users), warm.data.user_idx)
        users = torch.as_tensor(quiet)
        assert len(quiet) > 0
        assert torch.allclose(model.user_vectors(users), old.user_vectors(users), atol=1e-6)


def test_a_warm_start_keeps_the_ids_of_old_listings_the_new_day_lacks(base, update):
    _, warm = update
    model = Recommender(**SETTINGS, **QUIET).build_model(warm, warm.data)
    old_rows = base.n_trained_listings_  # the first rows: the old model's trained listings
    trained = np.unique(warm.data.listing_idx)
    assert len(np.setdiff1d(np.arange(old_rows), trained)) > 0  # some not viewed that day
    carried = model.listing_id.weight[:old_rows].clone()
    assert torch.equal(carried, base.model_.listing_id.weight[:old_rows])
    model.forget_untrained_ids(torch.as_tensor(trained))
    # the training pairs reach only the day's listings, but the old ones keep what they learned
    assert torch.equal(model.listing_id.weight[:old_rows], carried), model._carried_ids


def test_a_tiny_learning_rate_keeps_old_vectors(cars):
    events, listings = cars
    mf = {"model": "mf", "dim": 16, "epochs": 2, "validation_fraction": 0.0, "seed": 0}
    old = Recommender(**mf, **QUIET).fit(events, listings, until=UPDATE_DAY)
    new = Recommender(**mf | {"lr": 1e-9}, **QUIET).fit(
        events, listings, since=UPDATE_DAY, until=NEXT_DAY, init_from=old
    )
    assert new.report_["new_users"] > 0
    users = torch.arange(len(old.users_))
    listings_rows = torch.arange(old.n_trained_listings_)
    with torch.no_grad():
        assert torch.allclose(
            new.model_.user_vectors(users), old.model_.user_vectors(users), atol=1e-5
        )
        assert torch.allclose(
            new.model_.listing_vectors(listings_rows),
            old.model_.listing_vectors(listings_rows),
            atol=1e-5,
        )
    # what the old users saw before is still excluded from their recommendations
    users_seen, listings_seen = old.seen_.nonzero()
    assert np.asarray(new.seen_[users_seen, listings_seen]).all()


def test_settings_that_shape_the_model_must_match(base, cars):
    events, listings = cars
    with pytest.raises(ValueError, match="dim=8 differs .*dim=16"):
        Recommender(**SETTINGS | {"dim": 8}, **QUIET).fit(events, listings, init_from=base)
    with pytest.raises(ValueError, match="model='mf'"):
        Recommender(model="mf", **QUIET).fit(events, listings, init_from=base)


def test_an_update_whose_listings_lack_a_feature_column_is_refused(base, cars, tmp_path):
    events, listings = cars
    # joined with the old listings, the missing column would be blank for every listing
    # of the new table: its values erased, its filters matching nothing
    path = tmp_path / "listings.parquet"
    listings.drop(columns="make").to_parquet(path)
    reads = r"no column 'make' \(feature 'make' of the model continued from\)"
    with pytest.raises(DataError, match=reads) as error:
        Recommender(**QUICK, **QUIET).fit(events, path, since=UPDATE_DAY, init_from=base)
    assert error.value.file == str(path) and error.value.column == "make"


def test_an_update_reads_its_columns_in_the_types_of_the_model_it_continues(base, cars, tmp_path):
    events, listings = cars
    # tonight's CSV: prices read as text would join the old numbers in one column that no
    # Parquet file can hold, and one listing sold since keeps its old row
    tonight = listings.iloc[1:].assign(price=listings["price"].iloc[1:].astype(str))
    rec = Recommender(**QUICK, **QUIET).fit(events, tonight, since=UPDATE_DAY, init_from=base)
    assert pd.api.types.is_numeric_dtype(rec.listing_table_["price"].dtype)
    assert rec.similar([listings["listing_id"].iloc[5]], k=3, filters=["price<=1e9"])[0].ids
    rec.save(tmp_path / "model")  # the mixed column made this fail
    bad = tonight.assign(price=tonight["price"] + " EUR")
    bad.attrs["source"] = "tonight.csv"
    with pytest.raises(DataError, match="is not a number, as this column is in the model") as e:
        Recommender(**QUICK, **QUIET).fit(events, bad, since=UPDATE_DAY, init_from=base)
    assert e.value.file == "tonight.csv" and e.value.column == "price"


# ---------------------------------------------------------------------------- end to end
def test_new_users_listings_and_values_get_rows_and_answer_after_a_reload(base, cars, tmp_path):
    events, listings = cars
    day = events[(events["timestamp"] >= UPDATE_DAY) & (events["timestamp"] < NEXT_DAY)]
    day_user, day_listing = day["user_id"].iloc[0], day["listing_id"].iloc[0]
    new_listing = listings.iloc[[0]].assign(listing_id="L-new", make="Lada")
    stamp = pd.Timestamp(f"{UPDATE_DAY}T12:00:00Z")
    extra = pd.DataFrame(
        {
            "user_id": ["U-new", "U-new", day_user],
            "listing_id": [day_listing, "L-new", "L-new"],
            "timestamp": [stamp, stamp + pd.Timedelta(minutes=1), stamp],
            "event": ["view", "view", "view"],
        }
    )
    model_dir = tmp_path / "old"
    base.save(model_dir)
    updated = Recommender(**QUICK, **QUIET).fit(
        pd.concat([day, extra], ignore_index=True),
        pd.concat([listings, new_listing], ignore_index=True),
        init_from=model_dir,
    )
    report = updated.report_
    assert report["init_from"] == str(model_dir)
    assert report["new_listings"] == 1 and report["new_category_values"] == 1
    assert report["new_users"] >= 1
    make = next(i for i, spec in enumerate(base.pipeline_.specs) if spec.name == "make")
    old_makes = base.pipeline_.encoders[make].vocabulary
    assert updated.pipeline_.encoders[make].vocabulary == [*old_makes, "Lada"]
    assert "L-new" in updated.listings_ and "U-new" in updated.users_
    updated.save(tmp_path / "new")
    loaded = Recommender.load(tmp_path / "new")
    for results in loaded.similar(["L-new", base.listings_.external([0])[0]], k=5):
        assert len(results.hits) == 5
    for results in loaded.recommend(["U-new", base.users_.external([0])[0]], k=5):
        assert len(results.hits) == 5


def test_a_day_whose_user_ids_read_as_integers_continues_a_model_of_string_ids(
    base, cars, tmp_path
):
    events, listings = cars
    day = events[(events["timestamp"] >= UPDATE_DAY) & (events["timestamp"] < NEXT_DAY)]
    number = {user: k for k, user in enumerate(day["user_id"].unique())}
    day = day.assign(user_id=day["user_id"].map(number).astype(np.int64))
    updated = Recommender(**QUICK, **QUIET).fit(day, listings, init_from=base)
    assert all(isinstance(user, str) for user in updated.users_.ids)
    assert "0" in updated.users_
    updated.save(tmp_path / "new")  # one type of id: saved, not a pyarrow error
    assert Recommender.load(tmp_path / "new").users_.external([len(base.users_)]) == ["0"]


def test_continuing_a_saved_model_does_not_build_its_catalogue(base, cars, tmp_path, monkeypatch):
    # the old model's listing features (a minute at 1M listings) are never read by a warm
    # start: only its weights, ids and histories are
    events, listings = cars
    base.save(tmp_path / "old")
    built: list[int] = []
    set_inputs = FeatureModel.set_inputs

    def recording(self, table, data, reuse=None):  # noqa: ANN001, ANN202
        built.append(len(table) if data is None else -1)
        set_inputs(self, table, data, reuse)

    monkeypatch.setattr(FeatureModel, "set_inputs", recording)
    day = events[(events["timestamp"] >= UPDATE_DAY) & (events["timestamp"] < NEXT_DAY)]
    Recommender(**QUICK, **QUIET).fit(day, listings, init_from=tmp_path / "old")
    assert built and all(n == -1 for n in built)  # the new model's inputs only
    Recommender.load(tmp_path / "old")
    assert built[-1] == len(base.listing_table_)  # a plain load builds it


@pytest.mark.slow
def test_an_update_ranks_the_next_day_about_as_well_as_a_full_retrain(cars):
    events, listings = cars
    base = Recommender(**SETTINGS, **QUIET).fit(events, listings, until=UPDATE_DAY)
    updated = Recommender(**SETTINGS, **QUIET).fit(
        events, listings, since=UPDATE_DAY, until=NEXT_DAY, init_from=base
    )
    full = Recommender(**SETTINGS, **QUIET).fit(events, listings, until=NEXT_DAY)
    recall = {
        name: model.evaluate(events, since=NEXT_DAY)["overall"]["recall@10"]
        for name, model in (("update", updated), ("full", full))
    }
    assert recall["update"] >= 0.8 * recall["full"], recall


def test_cli_trains_on_the_last_day_from_a_model_directory(cars, tmp_path):
    events, listings = cars
    events.to_parquet(tmp_path / "events.parquet")
    listings.to_parquet(tmp_path / "listings.parquet")
    common = ["--interactions", str(tmp_path / "events.parquet")]
    common += ["--listings", str(tmp_path / "listings.parquet")]
    common += ["--model", "mf", "--dim", "8", "--epochs", "2"]
    model = tmp_path / "model"
    runner = CliRunner()
    first = runner.invoke(main, ["train", *common, "--until", UPDATE_DAY, "--out", str(model)])
    assert first.exit_code == 0, first.output
    old_users = pd.read_parquet(model / "users.parquet")["id"].tolist()
    # the nightly update replaces the model it continues
    update = [*common, "--since", UPDATE_DAY, "--until", NEXT_DAY, "--out", str(model)]
    result = runner.invoke(main, ["train", *update, "--init-from", str(model)])
    assert result.exit_code == 0, result.output
    report = json.loads((model / "config.json").read_text())["report"]
    assert report["init_from"] == str(model) and report["new_users"] > 0
    assert report["first_event"][:10] == report["last_event"][:10] == UPDATE_DAY
    assert "trained on twice" not in result.stderr  # the next day: no overlap
    new_users = pd.read_parquet(model / "users.parquet")["id"].tolist()
    assert new_users[: len(old_users)] == old_users
    answer = runner.invoke(main, ["recommend", str(model), old_users[0], new_users[-1], "--json"])
    assert answer.exit_code == 0, answer.output
    assert [len(json.loads(line)["results"]) for line in answer.stdout.splitlines()] == [10, 10]


def test_cli_refuses_a_directory_that_is_no_model(tmp_path):
    result = CliRunner().invoke(
        main,
        ["train", "--interactions", "x.parquet", "--listings", "y.parquet"]
        + ["--out", str(tmp_path / "out"), "--init-from", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "not an embedrec model directory" in result.stderr


def test_a_model_saved_before_a_setting_existed_continues_with_its_old_meaning():
    saved = Recommender(recent_half_life=0).get_params()
    del saved["recent_half_life"]  # a model saved before the two halves: one space
    check_architecture(saved, Recommender(recent_half_life=0).get_params())
    check_architecture(saved, Recommender(recent_half_life=None).get_params())
    with pytest.raises(ValueError, match="recent_half_life=2.0 differs from the model"):
        check_architecture(saved, Recommender().get_params())


def test_a_warm_starts_first_epoch_may_be_its_best(update):
    # a fresh fit's first epoch is barely trained; a warm start's continues a trained model
    prepared, warm = update
    rec = Recommender(**SETTINGS, **QUIET)
    fresh, continued = (rec._candidates(p, len(p.data), None, None)[0] for p in (prepared, warm))
    assert fresh.config.warm_up and not continued.config.warm_up


def test_listings_too_rare_to_train_on_stay_seen_through_an_update(cars):
    events, listings = cars
    settings = {**QUICK, **QUIET, "min_listing_interactions": 2}
    base = Recommender(**settings).fit(events, listings, until=UPDATE_DAY)
    updated = Recommender(**settings).fit(
        events, listings, since=UPDATE_DAY, until=NEXT_DAY, init_from=base
    )

    def rare_views(since: str | None, until: str) -> pd.DataFrame:
        window = events["timestamp"] < pd.Timestamp(until, tz="UTC")
        if since is not None:
            window &= events["timestamp"] >= pd.Timestamp(since, tz="UTC")
        inside = events[window]
        per_listing = inside.groupby("listing_id")["user_id"].transform("size")
        return inside[(per_listing < 2).to_numpy()][["user_id", "listing_id"]]

    def seen(model: Recommender, user: str) -> set:
        row = model.users_.indices([user])[0]
        return set(np.asarray(model.listings_.ids)[model.seen_[row].indices])

    before, tonight = rare_views(None, UPDATE_DAY), rare_views(UPDATE_DAY, NEXT_DAY)
    assert len(before) and len(tonight)
    for views in (before, tonight):
        for user, listing in views.itertuples(index=False):
            assert listing in seen(updated, user)
            assert listing not in updated.recommend([user], k=len(listings))[0].ids
    # what the base model's users saw is what they see after the update, no other listing
    for user in before["user_id"].unique():
        assert seen(base, user) <= seen(updated, user)
        viewed = set(events.loc[events["user_id"] == user, "listing_id"])
        assert seen(updated, user) <= viewed


def test_an_update_says_which_new_columns_it_does_not_learn_from(base, cars, caplog):
    # a column added to tonight's export is kept as a field; without a word, a nightly job
    # would never learn that the network ignores it
    events, listings = cars
    tonight = listings.assign(colour="red")
    tonight.attrs["source"] = "tonight.parquet"
    prepared = Recommender(**SETTINGS, **QUIET).prepare(
        events, tonight, since=UPDATE_DAY, until=NEXT_DAY
    )
    with caplog.at_level("WARNING", logger="embedrec"):
        warm = continue_from(base, prepared, None)
    assert "colour" in warm.listings.frame().columns
    notes = [r.getMessage() for r in caplog.records if "not learned from" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("tonight.parquet: column(s) colour are new")
    caplog.clear()
    with caplog.at_level("WARNING", logger="embedrec"):
        continue_from(
            base,
            Recommender(**SETTINGS, **QUIET).prepare(
                events, listings, since=UPDATE_DAY, until=NEXT_DAY
            ),
            None,
        )
    assert not [r for r in caplog.records if "not learned from" in r.getMessage()]


def test_an_update_says_which_columns_of_the_old_listings_it_lacks(base, update, caplog):
    # a field dropped from tonight's export leaves tonight's listings without a value there,
    # so a filter on it would drop them: a nightly job is told which column it was
    prepared, _ = update
    old = copy.copy(base)
    old.listing_table_ = base.listing_table_.assign(colour="red")
    with caplog.at_level("WARNING", logger="embedrec"):
        warm = continue_from(old, prepared, None)
    notes = [r.getMessage() for r in caplog.records if "are missing" in r.getMessage()]
    assert len(notes) == 1 and ": column(s) colour of the model continued from" in notes[0]
    assert warm.listings.frame()["colour"].isna().all()  # tonight's table holds every listing


def test_an_update_on_events_the_old_model_trained_on_says_so(base, cars, caplog):
    # the same day run twice weighs its events twice: a nightly job is told, not stopped
    # (a window reaching back on purpose is allowed)
    events, listings = cars
    assert base.report_["last_event"].startswith("2026-10-29")  # the day before UPDATE_DAY
    with caplog.at_level("WARNING", logger="embedrec"):
        again = Recommender(**QUICK, **QUIET).fit(
            events, listings, since="2026-10-29", until=UPDATE_DAY, init_from=base
        )
    notes = [r.getMessage() for r in caplog.records if "trained on twice" in r.getMessage()]
    assert len(notes) == 1 and base.report_["last_event"] in notes[0], notes
    assert again.report_["first_event"].startswith("2026-10-29")


def test_an_update_whose_features_config_differs_is_refused(base, cars):
    # the warm start keeps the old encoders: a new type or drop would be ignored unsaid
    events, listings = cars
    text_make = SchemaConfig(types={"make": "text"})
    with pytest.raises(ValueError, match=r"\[features\] differ .*\(make: text here, inferred"):
        Recommender(**QUICK, **QUIET, schema=text_make).fit(events, listings, init_from=base)
    dropped = Recommender(**QUICK, schema=SchemaConfig(drop=["make"])).get_params()
    with pytest.raises(ValueError, match=r"drop \['make'\] here, \[\] there"):
        check_architecture(base.get_params(), dropped)
    # no [features] and an empty one are the same; mf reads no features
    check_architecture(base.get_params(), Recommender(**QUICK, schema=SchemaConfig()).get_params())
    mf = Recommender(model="mf", dim=16).get_params()
    check_architecture(mf, Recommender(model="mf", dim=16, schema=text_make).get_params())
