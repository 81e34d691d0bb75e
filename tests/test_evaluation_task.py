"""What an evaluation judges: the same listings for every model, only events of interest,
what training saw excluded, and a model that does not depend on the rows' order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedrec import Recommender
from embedrec.data.split import global_time_split, per_user_split
from embedrec.ranking import ties_to_lowest_row

N_LISTINGS, N_TRAINED = 30, 25


def marketplace() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """40 users in three taste groups; training covers 25 of 30 listings, the test all."""
    rng = np.random.default_rng(1)
    listings = pd.DataFrame(
        {
            "listing_id": [f"L{i:03d}" for i in range(N_LISTINGS)],
            "price": rng.integers(5000, 40000, N_LISTINGS).astype(float),
            "make": [["vw", "bmw", "audi"][i % 3] for i in range(N_LISTINGS)],
        }
    )

    def events(n: int, catalogue: int, start: str, days: int) -> pd.DataFrame:
        users = np.repeat(np.arange(40), n)
        group = [np.arange(catalogue)[np.arange(catalogue) % 3 == u % 3] for u in range(3)]
        picks = [rng.choice(group[u % 3]) for u in users]
        minutes = rng.integers(0, 60 * 24 * days, len(users))
        return pd.DataFrame(
            {
                "user_id": [f"U{u:03d}" for u in users],
                "listing_id": [f"L{i:03d}" for i in picks],
                "timestamp": pd.Timestamp(start, tz="UTC") + pd.to_timedelta(minutes, "min"),
            }
        )

    return events(12, N_TRAINED, "2026-10-01", 20), listings, events(4, N_LISTINGS, "2026-10-25", 3)


@pytest.fixture(scope="module")
def data():
    return marketplace()


def fitted(model: str, train: pd.DataFrame, listings: pd.DataFrame, **params) -> Recommender:
    return Recommender(model=model, epochs=2, dim=8, seed=0, progress=False, **params).fit(
        train, listings
    )


def test_a_model_that_cannot_embed_new_listings_is_judged_on_them_all_the_same(data):
    train, listings, test = data
    # a visit from a new listing to a trained one and back, five minutes apart
    at = pd.Timestamp("2026-10-27", tz="UTC") + pd.to_timedelta([0, 5, 10], "min")
    visit = pd.DataFrame(
        {"user_id": "U099", "listing_id": ["L026", "L003", "L027"], "timestamp": at}
    )
    test = pd.concat([test, visit], ignore_index=True)
    reports = {
        m: fitted(m, train, listings).evaluate(test, listings, ks=(10,)) for m in ("hybrid", "mf")
    }
    hybrid, mf = reports["hybrid"], reports["mf"]
    assert mf["counts"]["catalogue"] == hybrid["counts"]["catalogue"] == N_LISTINGS
    assert mf["counts"]["listings_the_model_cannot_rank"] == N_LISTINGS - N_TRAINED
    on_new = mf["counts"]["events_on_listings_the_model_cannot_rank"]
    assert on_new > 0 and hybrid["counts"]["events_on_listings_the_model_cannot_rank"] == 0
    assert mf["counts"]["events_skipped_not_in_catalogue"] == 0
    # the same users with the same relevant listings: the new ones are misses for mf
    assert mf["overall"]["users"] == hybrid["overall"]["users"]
    assert mf["cold"]["recall@10"] == 0.0 and mf["cold"]["users"] == hybrid["cold"]["users"]
    assert mf["similar"]["counts"]["pairs_outside_catalogue"] == 0
    assert mf["similar"]["counts"]["pairs_on_listings_the_model_cannot_rank"] > 0
    assert mf["similar"]["cold"]["hit@10"] == 0.0


def test_events_of_weight_zero_are_no_test_events(data):
    train, listings, _ = data
    rec = fitted("hybrid", train, listings, event_weights={"view": 1.0, "impression": 0.0})
    top = rec.recommend(["U000"], k=1)[0].ids[0]
    test = pd.DataFrame(
        {
            "user_id": ["U000", "U000"],
            "listing_id": [top, top],
            "timestamp": [pd.Timestamp("2026-10-26", tz="UTC")] * 2,
            "event": ["impression", "impression"],
        }
    )
    report = rec.evaluate(test, ks=(1,))
    assert report["counts"]["events_skipped_zero_weight"] == 2
    assert report["counts"]["users"] == 0 and report["similar"]["counts"]["pairs_read"] == 0


def test_a_listing_too_rare_to_train_on_stays_seen(data):
    train, listings, _ = data
    rare = pd.DataFrame(
        {"user_id": ["U000"], "listing_id": ["L027"], "timestamp": [train["timestamp"].max()]}
    )
    rec = fitted("hybrid", pd.concat([train, rare]), listings, min_listing_interactions=2)
    assert rec.report_["events_skipped_rare_listing"] == 1
    assert "L027" not in rec.recommend(["U000"], k=N_LISTINGS)[0].ids
    again = rare.assign(timestamp=pd.Timestamp("2026-10-26", tz="UTC"))
    assert rec.evaluate(again, ks=(10,))["counts"]["events_skipped_seen_in_training"] == 1


def test_the_rows_order_does_not_change_the_model(data):
    train, listings, test = data
    shuffled = train.sample(frac=1.0, random_state=3)
    first, second = (fitted("hybrid", t, listings) for t in (train, shuffled))
    assert list(first.users_.ids) == sorted(train["user_id"].unique())
    np.testing.assert_array_equal(first.embed(listings)["embedding"].tolist(),
                                  second.embed(listings)["embedding"].tolist())  # fmt: skip
    assert first.recommend(["U000"], k=5)[0].ids == second.recommend(["U000"], k=5)[0].ids


def test_ties_come_lowest_row_first_and_padding_last():
    rows = np.array([[7, 3, 5, -1], [2, 9, 4, 1]])
    scores = np.array([[0.5, 0.5, 0.9, -np.inf], [0.1, 0.3, 0.3, 0.3]], dtype=np.float32)
    ordered_rows, ordered_scores = ties_to_lowest_row(rows, scores)
    assert ordered_rows.tolist() == [[5, 3, 7, -1], [1, 4, 9, 2]]
    assert ordered_scores[1].tolist() == pytest.approx([0.3, 0.3, 0.3, 0.1])


def test_the_split_helpers_read_zones_and_text_as_moments():
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 5,
            "listing_id": list("ABCDE"),
            # E is 07:30 UTC, before D (09:00 UTC), though it reads later as text
            "timestamp": [
                "2026-10-01T08:00:00Z",
                "2026-10-01T08:10:00Z",
                "2026-10-01T08:20:00Z",
                "2026-10-01T09:00:00Z",
                "2026-10-01T09:30:00+02:00",
            ],
        }
    )
    assert per_user_split(frame, 0.2, 5)[1]["listing_id"].tolist() == ["D"]
    assert global_time_split(frame, "2026-10-01T08:30:00Z")[1]["listing_id"].tolist() == ["D"]
    aware = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601"))
    # a date without a zone is UTC, as --since reads it
    assert len(global_time_split(aware, "2026-10-01")[1]) == 5
    assert global_time_split(aware, test_fraction=0.2)[1]["listing_id"].tolist() == ["D"]
    with pytest.raises(ValueError, match="row 1, column 'timestamp'"):
        per_user_split(frame.assign(timestamp=["2026-10-01", "01.10.2026", "x", "y", "z"]))


def test_each_skipped_test_event_is_counted_once(data):
    train, listings, _ = data
    test = pd.DataFrame(
        {
            "user_id": ["stranger", "stranger", "U000"],
            "listing_id": ["sold long ago", "L000", "sold long ago"],
            "timestamp": pd.Timestamp("2026-10-26", tz="UTC"),
        }
    )
    counts = fitted("mf", train, listings).evaluation_task(test).counts
    # the stranger's event on an unknown listing was counted under both reasons
    assert counts["events_skipped_unknown_user"] == 2
    assert counts["events_skipped_not_in_catalogue"] == 1
    skipped = sum(v for k, v in counts.items() if k.startswith("events_skipped_"))
    assert skipped == counts["events"] == 3
