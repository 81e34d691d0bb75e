"""Similar listings judged by behaviour: the next listing a visitor viewed in a session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedrec.retrieval.evaluation import next_view_pairs, similar_by_behaviour


def test_next_view_pairs_stay_within_one_visitors_session():
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "a"],
            "listing_id": ["1", "2", "2", "3", "4", "9"],
            "timestamp": [0, 60, 90, 100_000, 70, 100_100],
        }
    )
    first, then = next_view_pairs(events, session_gap=1800)
    # 1->2; 2->2 is the same listing; 2->3 is another visit; b has one view; 3->9 in a visit
    assert list(zip(first, then, strict=True)) == [("1", "2"), ("3", "9")]


def test_similar_listings_predict_the_next_view_far_better_than_chance(fitted_mf, blocks):
    _, listings, listing_group, _ = blocks
    rng = np.random.default_rng(0)
    # sessions that move within a group: what the block data's users do
    group = rng.integers(0, 4, 400)
    start = rng.integers(0, 30, 400) * 4 + group
    step = rng.integers(1, 30, 400) * 4 % 120
    ids = listings["listing_id"].to_numpy()
    events = pd.DataFrame(
        {
            "user_id": np.repeat([f"v{i}" for i in range(400)], 2),
            "listing_id": np.column_stack([ids[start], ids[(start + step) % 120]]).ravel(),
            "timestamp": np.tile([0, 60], 400),
        }
    )
    retriever = fitted_mf.retriever()
    report = similar_by_behaviour(retriever, events, ks=(10,))
    assert report["warm"]["pairs"] == 400 and report["cold"]["pairs"] == 0
    # ten of the 119 other listings by chance: 8%; the same group holds 29 of them
    assert report["warm"]["hit@10"] > 0.25
    assert 0 < report["warm"]["hit@10_se"] < 0.05
    # as every metric's: the sample standard deviation over units (here pairs, ddof=1)
    hits = np.arange(400) < round(report["warm"]["hit@10"] * 400)
    expected = np.std(hits, ddof=1) / np.sqrt(400)
    assert report["warm"]["hit@10_se"] == pytest.approx(expected, rel=1e-9)


def test_evaluate_reports_it_for_warm_and_cold_listings(fitted_mf, blocks):
    events, _, _, _ = blocks
    # visitors the model never saw: their sessions' pairs are no training pairs
    visitors = events.head(2000).assign(user_id="new " + events["user_id"].head(2000))
    report = fitted_mf.evaluate(visitors, ks=(5, 10))
    similar = report["similar"]
    assert {"hit@5", "hit@10", "pairs"} <= set(similar["warm"])
    assert similar["warm"]["hit@5"] <= similar["warm"]["hit@10"]
    assert similar["counts"]["pairs_read"] >= similar["warm"]["pairs"]


def test_pairs_a_user_viewed_together_in_training_are_counted_not_judged(fitted_mf, blocks):
    events, listings, _, _ = blocks
    retriever = fitted_mf.retriever()
    # the training events themselves: every session pair is one the model learned
    report = similar_by_behaviour(retriever, events.head(600), ks=(10,))
    counts = report["counts"]
    assert counts["pairs_read"] > 0
    assert counts["pairs_seen_in_training"] == counts["pairs_read"]
    assert report["overall"]["pairs"] == 0
    # the same listings viewed by visitors the model never saw are all judged
    strangers = events.head(600).assign(user_id="new " + events["user_id"].head(600))
    fresh = similar_by_behaviour(retriever, strangers, ks=(10,))
    assert fresh["counts"]["pairs_seen_in_training"] == 0
    assert fresh["overall"]["pairs"] == counts["pairs_read"]


def test_next_view_pairs_read_datetimes_with_a_time_zone():
    seconds = [0, 60, 4000]
    for stamps in (
        pd.to_datetime(seconds, unit="s", utc=True),
        pd.to_datetime(seconds, unit="s"),
        pd.to_datetime(seconds, unit="s", utc=True).as_unit("s"),
    ):
        events = pd.DataFrame({"user_id": ["a"] * 3, "listing_id": ["1", "2", "3"]})
        events["timestamp"] = stamps
        first, then = next_view_pairs(events, session_gap=1800)
        assert list(zip(first, then, strict=True)) == [("1", "2")]
