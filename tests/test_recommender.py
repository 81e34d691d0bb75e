"""similar / recommend / save / load on small data with awkward ids."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import block_data

import embedrec
from embedrec import BundleError, Recommender, load
from embedrec.index.filters import parse_filter
from embedrec.models import hybrid
from embedrec.retrieval import UnknownListingError, UnknownUserError
from embedrec.retrieval.retriever import query_samples_of


def group_of(listing_id: str) -> int:
    return int(listing_id.split()[1]) % 4


def test_similar_listings_come_from_the_same_group(fitted_mf, blocks):
    _, listings, _, _ = blocks
    queries = listings["listing_id"].tolist()[:8]
    results = fitted_mf.similar(queries, k=5)
    assert [r.query for r in results] == queries
    same = [group_of(hit.listing_id) == group_of(r.query) for r in results for hit in r.hits]
    assert np.mean(same) >= 0.9
    for result in results:
        assert result.query not in [hit.listing_id for hit in result.hits]
        scores = [hit.score for hit in result.hits]
        assert scores == sorted(scores, reverse=True)
        assert {"make", "price", "lat", "lon"} <= set(result.hits[0].fields)


def test_recommendations_exclude_seen_and_match_the_users_group(fitted_mf, blocks):
    events, _, _, user_group = blocks
    user = "Nutzer 3 🚗"
    [result] = fitted_mf.recommend([user], k=10)
    seen = set(events.loc[events["user_id"] == user, "listing_id"])
    found = [hit.listing_id for hit in result.hits]
    assert len(found) == 10 and not seen & set(found)
    assert np.mean([group_of(f) == user_group[3] for f in found]) >= 0.8


def test_unknown_ids_raise_a_named_error_naming_every_unknown_id(fitted_mf):
    with pytest.raises(UnknownListingError, match="unknown listing_id 'nope', 'nix'") as error:
        fitted_mf.similar(["nope", "Wagen 1 ä", "nix"], k=3)
    assert error.value.ids == ["nope", "nix"] and error.value.kind == "listing_id"
    assert len(fitted_mf.similar(["Wagen 1 ä"], k=3)[0].hits) == 3
    with pytest.raises(UnknownUserError, match="unknown user_id 'ghost'"):
        fitted_mf.recommend(["ghost"])


def test_catalogue_restricts_results_and_reports_unknown_ids(fitted_mf, blocks):
    _, listings, _, _ = blocks
    today = listings.iloc[::3].copy()
    extra = today.iloc[:1].copy()
    extra["listing_id"] = "brand new"
    today = pd.concat([today, extra], ignore_index=True)
    assert fitted_mf.retriever(today).unknown == ["brand new"]
    allowed = set(today["listing_id"])
    [result] = fitted_mf.similar(["Wagen 1 ä"], k=5, listings=today)
    assert {hit.listing_id for hit in result.hits} <= allowed


def test_a_column_named_score_never_replaces_the_computed_score(fitted_mf, blocks):
    _, listings, _, _ = blocks
    [result] = fitted_mf.similar(["Wagen 1 ä"], k=3, listings=listings.assign(score=4.5))
    assert [hit.fields["score"] for hit in result.hits] == [4.5] * 3  # the column, kept apart
    as_dict = result.to_dict()["results"]
    assert [r["score"] for r in as_dict] == result.scores and 4.5 not in result.scores
    assert [r["listing_id"] for r in as_dict] == result.ids
    assert list(as_dict[0])[:2] == ["listing_id", "score"]


def test_results_as_a_table_for_a_notebook(fitted_mf, blocks):
    events, _, _, _ = blocks
    [similar] = fitted_mf.similar(["Wagen 1 ä"], k=4)
    table = similar.to_frame()
    assert list(table.columns[:4]) == ["query", "rank", "listing_id", "score"]
    assert "make" in table.columns and "price" in table.columns
    assert table["listing_id"].tolist() == similar.ids and table["rank"].tolist() == [1, 2, 3, 4]
    assert (table["query"] == "Wagen 1 ä").all()
    session = events["listing_id"].iloc[:2].tolist()
    answers = [*fitted_mf.similar(["Wagen 2 ä"], k=3), fitted_mf.recommend_session(session, k=3)]
    both = pd.concat([r.to_frame() for r in answers], ignore_index=True)
    assert len(both) == 6 and both["query"].iloc[-1] == session
    [nothing] = fitted_mf.similar(["Wagen 1 ä"], k=3, filters=["price<=0"])
    assert nothing.to_frame().empty


def test_a_catalogue_read_with_pyarrow_dtypes_is_searched_and_shown(fitted_mf, blocks, tmp_path):
    # pd.read_parquet(..., dtype_backend="pyarrow"): Arrow strings, numbers, times and lists
    _, listings, _, _ = blocks
    dated = listings.assign(listed_at=pd.Timestamp("2026-01-01", tz="UTC"), tags=[["a", "b"]] * 120)
    dated.to_parquet(tmp_path / "today.parquet")
    today = pd.read_parquet(tmp_path / "today.parquet", dtype_backend="pyarrow")
    [result] = fitted_mf.similar(["Wagen 1 ä"], k=3, listings=today, filters=["price<=40000"])
    assert [hit.listing_id for hit in result.hits] == fitted_mf.similar(
        ["Wagen 1 ä"], k=3, listings=dated, filters=["price<=40000"]
    )[0].ids
    fields = result.hits[0].fields
    assert fields["listed_at"] == "2026-01-01T00:00:00+00:00" and fields["tags"] == "a|b"


def test_a_catalogue_with_integer_ids_meets_a_model_with_string_ids(blocks):
    # a model trained on digit strings (a slug in its CSV made them strings), queried with a
    # catalogue whose CSV holds numbers only: the same listings, vectors and seen ones
    events, listings, _, _ = blocks
    number = {name: str(k) for k, name in enumerate(listings["listing_id"])}
    events = events.assign(listing_id=events["listing_id"].map(number))
    listings = listings.assign(listing_id=listings["listing_id"].map(number))
    rec = Recommender(model="mf", epochs=2, seed=0, progress=False).fit(events, listings)
    today = listings.assign(listing_id=listings["listing_id"].astype(int))
    retriever = rec.retriever(today)
    assert retriever.unknown == []
    [by_model] = rec.similar(["7"], k=5)
    [by_today] = retriever.similar([7], k=5)
    assert [int(h.listing_id) for h in by_model.hits] == [h.listing_id for h in by_today.hits]
    assert [h.score for h in by_model.hits] == [h.score for h in by_today.hits]
    user = events["user_id"].iloc[0]
    seen = set(events.loc[events["user_id"] == user, "listing_id"].astype(int))
    [result] = retriever.recommend([user], k=20)
    assert not seen & {hit.listing_id for hit in result.hits}


def test_save_load_round_trip(fitted_mf, tmp_path):
    path = fitted_mf.save(tmp_path / "model")
    loaded = load(path)
    query = ["Wagen 0 ä", "Wagen 7 ä"]
    assert loaded.similar(query, k=5) == fitted_mf.similar(query, k=5)
    assert loaded.recommend(["Nutzer 3 🚗"]) == fitted_mf.recommend(["Nutzer 3 🚗"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "embedrec-model" and manifest["format_version"] == 1
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pt"))


def test_corrupt_truncated_and_foreign_directories(fitted_mf, tmp_path):
    path = fitted_mf.save(tmp_path / "model")
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        load(path)
    path = fitted_mf.save(tmp_path / "model")  # overwriting a model directory is allowed
    (path / "users.parquet").unlink()
    with pytest.raises(BundleError, match="missing"):
        load(path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="not an embedrec model"):
        load(foreign)
    with pytest.raises(BundleError, match="no such model directory"):
        load(tmp_path / "absent")


def test_weights_that_are_no_safetensors_file_behind_a_matching_checksum(fitted_mf, tmp_path):
    path = fitted_mf.save(tmp_path / "model")
    weights = path / "weights.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(5000))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="weights.safetensors is not a safetensors file"):
        load(path)


def test_save_refuses_to_replace_a_directory_that_is_not_a_model(fitted_mf, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a model directory"):
        fitted_mf.save(target)
    assert (target / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_fit_is_deterministic(blocks):
    events, listings, _, _ = blocks
    params = dict(epochs=3, batch_size=256, seed=1, progress=False)
    a = Recommender(**params).fit(events, listings).similar(["Wagen 0 ä"])
    b = Recommender(**params).fit(events, listings).similar(["Wagen 0 ä"])
    assert a == b


def test_training_reports_history_and_early_stopping(fitted_mf):
    report = fitted_mf.report_
    assert report["best_epoch"] >= 1
    assert all("loss" in entry for entry in report["history"])
    assert report["best_val_recall@10"] > 0.2
    validated = [entry for entry in report["history"] if "val_recall@10" in entry]
    assert validated and all(0 < entry["val_recall@10_se"] < 0.2 for entry in validated)


@pytest.fixture(scope="module")
def fitted_hybrid(blocks):
    events, listings, _, _ = blocks
    return Recommender(model="hybrid", epochs=12, batch_size=256, seed=0, progress=False).fit(
        events, listings
    )


def test_hybrid_embeds_unseen_listings_from_features(fitted_hybrid, blocks):
    _, listings, _, _ = blocks
    # a new listing whose features (make, location) are those of group 2
    new = listings.iloc[[2]].copy()
    new["listing_id"] = "neu eingestellt"
    catalogue = pd.concat([listings, new], ignore_index=True)
    [result] = fitted_hybrid.similar(["neu eingestellt"], k=10, listings=catalogue)
    groups = [group_of(hit.listing_id) for hit in result.hits]
    assert np.mean([g == 2 for g in groups]) >= 0.8
    vectors = fitted_hybrid.embed(catalogue)
    assert len(vectors) == len(catalogue)
    assert np.allclose(np.linalg.norm(np.stack(vectors["embedding"]), axis=1), 1.0, atol=1e-5)


def test_hybrid_similar_listings_are_the_next_views_of_a_one_listing_session(fitted_hybrid):
    # "viewed this, then viewed": similar answers what the user tower predicts a visitor
    # who viewed only this listing views next, not the listing vectors' own neighbours
    retriever = fitted_hybrid.retriever()
    ids = retriever.catalogue.table["listing_id"].tolist()[:20]
    differs = 0
    for listing in ids:
        [similar] = retriever.similar([listing], k=10)
        session = retriever.recommend_session([listing], k=10)
        assert [h.listing_id for h in similar.hits] == [h.listing_id for h in session.hits]
        assert np.allclose([h.score for h in similar.hits], [h.score for h in session.hits])
        row = retriever.catalogue.rows_of([listing])
        found, _ = retriever.catalogue.search(
            retriever.catalogue.unit_vectors[row], 10, True, exclude=[row]
        )
        differs += list(found[0]) != list(
            retriever.catalogue.rows_of([h.listing_id for h in similar.hits])
        )
    assert differs > 0  # not the listing vectors' cosine neighbours after all


@pytest.fixture(scope="module")
def fitted_one_space(blocks):
    events, listings, _, _ = blocks
    return Recommender(
        model="hybrid", recent_half_life=None, epochs=12, batch_size=256, seed=0, progress=False
    ).fit(events, listings)


@pytest.mark.parametrize("split", [False, True], ids=["one space", "two halves"])
def test_hybrid_anonymous_query_in_numpy_is_the_user_tower(
    fitted_hybrid, fitted_one_space, split, monkeypatch
):
    rec = fitted_hybrid if split else fitted_one_space
    model = rec.model_
    vectors = np.random.default_rng(0).normal(size=(7, model.config["dim"])).astype(np.float32)
    with torch.no_grad():
        tower = model.user_from(torch.as_tensor(vectors)).numpy()
    assert np.allclose(model.similar_queries(vectors), tower, atol=1e-5)
    query, cosine = model.session_vector(vectors)
    with torch.no_grad():
        lasting = model.user_from(torch.as_tensor(vectors.mean(axis=0, keepdims=True)))
        expected = lasting.numpy()
        if split:
            # a session in the order viewed: the last listing is the newest and weighs most
            # in the first half, while the second half reads the plain mean
            weights = 0.5 ** (np.arange(7)[::-1] / 2)
            recent = (weights @ vectors / weights.sum())[None].astype(np.float32)
            expected = model.halves(model.user_from(torch.as_tensor(recent)), lasting).numpy()
    assert np.allclose(query, expected, atol=1e-5) and not cosine
    assert split != np.allclose(query, lasting.numpy(), atol=1e-3)  # the order counts
    # known users: their id vectors and histories, pooled in blocks of three users
    monkeypatch.setattr(hybrid, "_POOLED_BLOCK", 3)
    users = np.array([0, 3, 59, len(rec.users_) - 1])
    with torch.no_grad():
        tower = model.user_vectors(torch.as_tensor(users)).numpy()
    assert np.allclose(model.query_vectors(users), tower, atol=1e-5)


def test_two_halves_keep_new_listings_to_the_users_lasting_taste(fitted_hybrid, blocks):
    _, listings, _, _ = blocks
    model = fitted_hybrid.model_
    half = model.config["dim"] // 2
    assert model.listing_id.weight.shape[1] == half  # the id fills the first half alone
    new = listings.iloc[[2]].assign(listing_id="neu eingestellt")
    catalogue = pd.concat([listings, new], ignore_index=True)
    vectors = fitted_hybrid.retriever(catalogue).embed().set_index("listing_id")["embedding"]
    fresh, known = vectors["neu eingestellt"], vectors[listings["listing_id"].iloc[2]]
    # a listing without id has nothing in the first half: only the second halves score it
    assert np.abs(fresh[:half]).max() == 0 and np.abs(fresh[half:]).max() > 0
    assert np.abs(known[:half]).max() > 0


def test_two_halves_need_a_number_of_listings():
    with pytest.raises(ValueError, match="recent_half_life must be a number"):
        Recommender(recent_half_life=-1).check_params()
    with pytest.raises(ValueError, match="recent_half_life needs dim of at least 2"):
        Recommender(recent_half_life=2, dim=1).check_params()
    Recommender(recent_half_life=0).check_params()  # 0: one space


def test_vector_index_calibrates_on_each_models_own_queries(fitted_mf, fitted_hybrid):
    for rec, kinds in ((fitted_mf, set()), (fitted_hybrid, {"similar"})):
        draw = query_samples_of(rec.model_, len(rec.users_), size=20)
        unit = rec.retriever().catalogue.unit_vectors
        # mf's similar queries are its listing vectors, which the index calibrates on anyway
        assert set(draw(True, unit)) == kinds
        users = draw(False, unit)["user"]
        rows = np.sort(np.random.default_rng(0).choice(len(rec.users_), 20, replace=False))
        np.testing.assert_allclose(users, rec.model_.query_vectors(rows), atol=1e-6)


def test_new_listing_ranks_high_for_the_right_users(fitted_hybrid, blocks):
    _, listings, _, user_group = blocks
    new = listings.iloc[[1]].copy()  # features of group 1
    new["listing_id"] = "frisch"
    catalogue = pd.concat([listings, new], ignore_index=True)
    users = [f"Nutzer {u} 🚗" for u in range(60)]
    results = fitted_hybrid.recommend(users, k=len(catalogue), listings=catalogue)
    rank = np.array([[hit.listing_id for hit in r.hits].index("frisch") for r in results])
    in_group = user_group[:60] == 1
    assert rank[in_group].mean() < 0.5 * rank[~in_group].mean()


def test_session_recommendations_follow_the_session(fitted_hybrid):
    session = ["Wagen 3 ä", "Wagen 7 ä", "Wagen 11 ä"]  # group 3
    result = fitted_hybrid.recommend_session(session, k=10)
    found = [hit.listing_id for hit in result.hits]
    assert not set(found) & set(session)
    assert np.mean([group_of(f) == 3 for f in found]) >= 0.8
    partly = fitted_hybrid.recommend_session(["Wagen 3 ä", "nie gesehen"], k=5)
    assert partly.unknown == ["nie gesehen"] and len(partly.hits) == 5
    with pytest.raises(UnknownListingError, match="none of the session's listings is known"):
        fitted_hybrid.recommend_session(["nie gesehen"])


@pytest.mark.parametrize("model", ["mf", "hybrid"])
def test_a_session_listing_sold_since_training_counts_as_similar_finds_it(request, blocks, model):
    # today's catalogue lacks a listing the model knows (sold): similar embeds it from its
    # training fields, and so must a session, or one sold car would blank the visitor's page
    rec = request.getfixturevalue(f"fitted_{model}")
    _, listings, _, _ = blocks
    sold, other = "Wagen 3 ä", "Wagen 7 ä"
    today = rec.retriever(listings[listings["listing_id"] != sold])
    everything = rec.retriever()
    session = today.recommend_session([sold, other], k=5)
    assert session.unknown == []
    assert session.ids == everything.recommend_session([sold, other], k=5).ids
    alone = today.recommend_session([sold], k=5)
    assert alone.ids == everything.recommend_session([sold], k=5).ids
    if model == "hybrid":  # its similar is the one-listing session
        [similar] = today.similar([sold], k=5)
        assert alone.ids == similar.ids and np.allclose(alone.scores, similar.scores)


def test_an_empty_session_is_a_value_error_naming_session(fitted_mf):
    with pytest.raises(ValueError, match="session must name at least one listing"):
        fitted_mf.recommend_session([])


@pytest.mark.slow
def test_hybrid_and_deep_round_trip(fitted_hybrid, blocks, tmp_path):
    loaded = load(fitted_hybrid.save(tmp_path / "hybrid"))
    assert loaded.similar(["Wagen 5 ä"]) == fitted_hybrid.similar(["Wagen 5 ä"])
    events, listings, _, _ = blocks
    deep = Recommender(model="deep", epochs=3, batch_size=256, progress=False)
    deep.fit(events, listings)
    again = load(deep.save(tmp_path / "deep"))
    assert again.recommend(["Nutzer 3 🚗"]) == deep.recommend(["Nutzer 3 🚗"])


@pytest.mark.slow
def test_hybrid_without_user_ids_recommends_from_history(blocks, tmp_path):
    events, listings, _, user_group = blocks
    rec = Recommender(
        model="hybrid",
        user_ids=False,
        history_gradient=True,
        epochs=12,
        batch_size=256,
        progress=False,
    ).fit(events, listings)
    assert rec.model_.user_id is None  # nothing learned per user
    users = [f"Nutzer {u} 🚗" for u in range(20)]
    results = rec.recommend(users, k=10)
    hits = [group_of(h.listing_id) == user_group[u] for u, r in enumerate(results)
            for h in r.hits]  # fmt: skip
    assert np.mean(hits) >= 0.8
    again = load(rec.save(tmp_path / "no-user-ids"))
    assert again.get_params()["user_ids"] is False
    assert again.model_.history_gradient and again.get_params()["history_gradient"]
    assert again.recommend(users[:3]) == rec.recommend(users[:3])
    # the similar listings' query reads the whole first layer when there is no id half
    vectors = again.retriever().catalogue.unit_vectors[:5]
    with torch.no_grad():
        tower = again.model_.user_from(torch.as_tensor(vectors)).numpy()
    assert np.allclose(again.model_.similar_queries(vectors), tower, atol=1e-5)
    with torch.no_grad():
        tower = again.model_.user_vectors(torch.arange(20)).numpy()
    assert np.allclose(again.model_.query_vectors(np.arange(20)), tower, atol=1e-5)
    with pytest.raises(ValueError, match="user_ids=False needs model 'hybrid'"):
        Recommender(model="mf", user_ids=False).fit(events, listings)
    with pytest.raises(ValueError, match="history_gradient=True needs model 'hybrid'"):
        Recommender(model="deep", history_gradient=True).fit(events, listings)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("hybrid", {"hidden": 24, "feature_dim": 4, "history": 3, "id_dropout": 0.0}),
        ("deep", {"hidden": 24, "feature_dim": 4}),
    ],
)
def test_model_size_parameters_reach_the_network_and_the_saved_model(
    blocks, tmp_path, model, params
):
    events, listings, _, _ = blocks
    rec = Recommender(model=model, epochs=1, batch_size=256, progress=False, **params).fit(
        events, listings
    )
    first_layer = rec.model_.listing_mlp[0] if model == "hybrid" else rec.model_.mlp[0]
    assert first_layer.out_features == 24
    assert rec.model_.features.output_dim == 4 * len(rec.pipeline_.encoders)
    if model == "hybrid":
        assert rec.model_.histories.shape[1] == 3 and rec.model_.id_dropout == 0.0
    again = load(rec.save(tmp_path / model))
    assert {k: again.get_params()[k] for k in params} == params
    assert {k: again.model_.config[k] for k in params} == params
    assert again.recommend(["Nutzer 3 🚗"]) == rec.recommend(["Nutzer 3 🚗"])


def test_numpy_numbers_are_accepted_and_saved_as_json_numbers(blocks, tmp_path):
    # parameters read from a NumPy grid or a DataFrame of configurations
    events, listings, _, _ = blocks
    params = {
        "epochs": np.int64(1),
        "batch_size": np.int64(256),
        "lr": np.float64(0.05),
        "hidden": np.int64(24),
        "history": np.int32(3),
        "id_dropout": np.float32(0.25),
        "user_ids": np.bool_(True),
        "seed": np.int64(3),  # torch's generators take Python integers only
    }
    rec = Recommender(progress=False, **params).fit(events, listings)
    assert rec.model_.listing_mlp[0].out_features == 24
    saved = json.loads((rec.save(tmp_path / "m") / "config.json").read_text())
    assert {k: saved["params"][k] for k in params} == {k: v.item() for k, v in params.items()}
    assert saved["model_config"]["hidden"] == 24 and saved["model_config"]["history"] == 3
    again = load(tmp_path / "m")
    assert again.recommend(["Nutzer 3 🚗"]) == rec.recommend(["Nutzer 3 🚗"])


def test_filters_in_library_calls(fitted_mf):
    [result] = fitted_mf.similar(["Wagen 0 ä"], k=5, filters=["make=BMW"])
    assert result.hits and all(hit.fields["make"] == "BMW" for hit in result.hits)
    [result] = fitted_mf.recommend(["Nutzer 3 🚗"], k=5, filters={"price_max": 20000})
    assert all(hit.fields["price"] <= 20000 for hit in result.hits)


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True, None])
def test_k_must_be_a_whole_number_from_1_up(fitted_mf, k):
    retriever = fitted_mf.retriever()
    for query in (
        lambda: fitted_mf.similar(["Wagen 1 ä"], k=k),
        lambda: fitted_mf.recommend(["Nutzer 3 🚗"], k=k),
        lambda: fitted_mf.recommend_session(["Wagen 1 ä"], k=k),
        lambda: retriever.similar([], k=k),
    ):
        with pytest.raises(ValueError, match=f"k must be a positive integer, got {k!r}"):
            query()


def test_a_k_beyond_the_catalogue_returns_it_all_without_holding_k_slots(fitted_mf, tmp_path):
    # each query held k slots: k = 2**50 failed with a MemoryError, 10**9 took 7 GiB
    huge = 2**50
    [similar] = fitted_mf.similar(["Wagen 1 ä"], k=huge, filters=["make=BMW,VW"])
    assert len(similar.hits) == 59  # 60 listings of those makes, the query left out
    [mine] = fitted_mf.recommend(["Nutzer 3 🚗"], k=huge)
    assert len(mine.hits) == 120 - fitted_mf.seen_[fitted_mf.users_.indices(["Nutzer 3 🚗"])].nnz
    assert len(fitted_mf.recommend_session(["Wagen 1 ä"], k=huge).hits) == 119
    written = fitted_mf.retriever().similar_all(tmp_path / "all.parquet", k=huge)
    assert pd.read_parquet(written.path).groupby("query_id").size().eq(119).all()


def test_a_single_id_outside_a_list_is_a_type_error(fitted_mf):
    # a str would be read as its characters; the error says how to pass it
    retriever = fitted_mf.retriever()
    for query in (
        lambda: fitted_mf.similar("Wagen 1 ä"),
        lambda: retriever.similar("Wagen 1 ä"),
        lambda: fitted_mf.recommend("Nutzer 3 🚗"),
        lambda: fitted_mf.recommend_session("Wagen 1 ä"),
    ):
        with pytest.raises(TypeError, match=r"must be a list of ids, got the single str"):
            query()
    with pytest.raises(TypeError, match=r"pass \[7\]"):
        fitted_mf.similar(7)


@pytest.mark.parametrize("filters", ["price<=25000", parse_filter("price<=25000")])
def test_a_single_filter_outside_a_list_is_a_type_error(fitted_mf, tmp_path, filters):
    retriever = fitted_mf.retriever()
    for query in (
        lambda: fitted_mf.similar(["Wagen 1 ä"], filters=filters),
        lambda: fitted_mf.recommend(["Nutzer 3 🚗"], filters=filters),
        lambda: fitted_mf.recommend_session(["Wagen 1 ä"], filters=filters),
        lambda: retriever.recommend_all(tmp_path / "all.parquet", filters=filters),
        lambda: retriever.similar_all(tmp_path / "all.parquet", filters=filters),
    ):
        with pytest.raises(TypeError, match=r"filters must be a list of filters or a mapping"):
            query()
    assert not (tmp_path / "all.parquet").exists()


@pytest.mark.parametrize(
    "filters",
    [
        np.array(["price<=25000", "make!=BMW"]),
        pd.Series(["price<=25000", "make!=BMW"]),
        ("price<=25000", parse_filter("make!=BMW")),
    ],
    ids=["array", "series", "tuple"],
)
def test_filters_may_be_any_sequence_of_expressions(fitted_mf, filters):
    as_list = ["price<=25000", "make!=BMW"]
    assert fitted_mf.similar(["Wagen 1 ä"], k=5, filters=filters) == fitted_mf.similar(
        ["Wagen 1 ä"], k=5, filters=as_list
    )
    assert fitted_mf.similar(["Wagen 1 ä"], k=5, filters=np.array([], dtype=str))[0].hits


@pytest.mark.parametrize(
    ("filters", "named"),
    [([20000], "the int 20000"), ([None], "the NoneType None"), (7, "the int 7")],
)
def test_a_filter_that_is_no_expression_is_a_type_error_naming_it(fitted_mf, filters, named):
    with pytest.raises(TypeError, match=rf"filters must .*got {named}"):
        fitted_mf.similar(["Wagen 1 ä"], filters=filters)
    with pytest.raises(TypeError, match="a filter expression must be a str"):
        parse_filter(20000)


def test_k_may_be_a_numpy_integer(fitted_mf, blocks):
    events, listings, _, _ = blocks
    listing, user = listings["listing_id"].iloc[0], events["user_id"].iloc[0]
    for k in (np.int64(3), np.int32(3), np.uint8(3)):
        [similar] = fitted_mf.similar([listing], k=k)
        [recommended] = fitted_mf.recommend([user], k=k)
        session = fitted_mf.recommend_session([listing], k=k)
        assert len(similar.ids) == len(recommended.ids) == len(session.ids) == 3


def test_deep_ranks_a_new_listing_from_its_features(tmp_path):
    # a listing no training pair reaches is known to deep by its features alone (a zero id);
    # the same listing under an id the model never saw must score alike, and one new listing
    # must not block every user's recommendations
    events, listings, _, _ = block_data(n_users=60, n_listings=40)
    quiet = listings["listing_id"].iloc[5]
    events = events[events["listing_id"] != quiet]
    deep = Recommender(model="deep", epochs=2, batch_size=256, seed=0, progress=False)
    deep.fit(events, listings)
    new = listings[listings["listing_id"] == quiet].assign(listing_id="neu eingestellt")
    retriever = deep.retriever(pd.concat([listings, new], ignore_index=True))
    assert retriever.unknown == []
    user = events["user_id"].iloc[0]
    [result] = retriever.recommend([user], k=len(listings) + 1)
    scores = dict(zip(result.ids, result.scores, strict=True))
    assert "neu eingestellt" in scores
    assert scores["neu eingestellt"] == pytest.approx(scores[quiet], abs=1e-5)
    written = retriever.recommend_all(tmp_path / "all.parquet", k=3)
    assert written.queries == events["user_id"].nunique()
    # one added as a server adds a PUT listing: past the table, after the first ranking
    later = new.assign(listing_id="später eingestellt")
    vectors, model_rows, _ = retriever.embed_listings(later)
    retriever.catalogue.add(later, vectors, model_rows)
    [result] = retriever.recommend([user], k=len(listings) + 2)
    scores = dict(zip(result.ids, result.scores, strict=True))
    assert scores["später eingestellt"] == pytest.approx(scores[quiet], abs=1e-5)


def test_a_model_this_embedrec_cannot_read_names_the_version_that_saved_it(fitted_mf, tmp_path):
    path = fitted_mf.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["params"]["knob_of_a_later_version"] = 1
    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["embedrec_version"] = "99.0"
    manifest["files"]["config.json"] = hashlib.sha256(
        (path / "config.json").read_bytes()
    ).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"knob_of_a_later_version.*saved by embedrec 99\.0, this is"
    ):
        load(path)
    manifest["embedrec_version"] = embedrec.__version__  # the same version: nothing to add
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"knob_of_a_later_version'\)$"):
        load(path)


def test_a_model_of_a_newer_or_unnamed_embedrec_loads_with_a_warning_naming_both_versions(
    fitted_mf, tmp_path, caplog
):
    path = fitted_mf.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    ours = embedrec.__version__
    for saved_by, warned in [("99.0", "99.0"), (None, "(no version named)"), ("0.0.1", None)]:
        if saved_by is None:
            manifest.pop("embedrec_version")
        else:
            manifest["embedrec_version"] = saved_by
        (path / "manifest.json").write_text(json.dumps(manifest))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="embedrec"):
            assert load(path).similar([fitted_mf.listings_.ids[0]], k=2)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if warned is None:
            assert lines == [], saved_by
        else:
            assert (
                len(lines) == 1
                and f"saved by embedrec {warned}, and this is embedrec {ours}" in (lines[0])
            ), lines
