import numpy as np
import pandas as pd
import pytest

from embedrec.data.errors import DataError
from embedrec.data.split import cold_listing_split, global_time_split, per_user_split


def interactions(n_per_user: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"user_id": u, "listing_id": 100 + j, "timestamp": j, "extra": f"{u}{j}"}
        for u, n in n_per_user.items()
        for j in range(n)
    ]
    return pd.DataFrame(rows)


def test_per_user_split_floor_rule():
    df = interactions({"a": 5, "b": 10, "c": 14})
    train, test = per_user_split(df, test_fraction=0.2, min_positives=5)
    assert test.groupby("user_id").size().to_dict() == {"a": 1, "b": 2, "c": 2}
    # the latest interactions are held out
    assert sorted(test[test.user_id == "c"].timestamp) == [12, 13]
    assert len(train) + len(test) == len(df)
    assert list(train.columns) == list(df.columns)


def test_per_user_split_users_under_min_positives_stay_in_train():
    df = interactions({"a": 4, "b": 5})
    train, test = per_user_split(df, test_fraction=0.2, min_positives=5)
    assert (train.user_id == "a").sum() == 4
    assert set(test.user_id) == {"b"}


def test_per_user_split_breaks_timestamp_ties_by_listing_id():
    df = pd.DataFrame(
        {
            "user_id": [1] * 5,
            "listing_id": [9, 3, 7, 1, 5],
            "timestamp": pd.to_datetime(["2024-01-02"] * 3 + ["2024-01-01"] * 2),
        }
    )
    _, test = per_user_split(df.sample(frac=1, random_state=0), 0.2, 5)
    assert test.listing_id.tolist() == [9]
    _, test = per_user_split(df, 0.4, 5)
    assert sorted(test.listing_id) == [7, 9]


def test_per_user_split_keeps_input_order_and_index():
    df = interactions({"a": 10}).iloc[::-1]
    train, test = per_user_split(df)
    assert list(train.index) == [i for i in df.index if i not in (8, 9)]
    assert list(test.index) == [9, 8]


def test_per_user_split_validates():
    with pytest.raises(ValueError):
        per_user_split(interactions({"a": 5}), test_fraction=1.0)
    with pytest.raises(DataError):
        per_user_split(pd.DataFrame({"user_id": [1], "listing_id": [1]}))


def test_global_time_split_with_start_and_ties():
    df = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "listing_id": [1, 2, 3, 4],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03"]),
        }
    )
    train, test = global_time_split(df, test_start="2024-01-02")
    assert train.user_id.tolist() == [1]
    assert test.user_id.tolist() == [2, 3, 4]


def test_global_time_split_by_fraction():
    df = pd.DataFrame({"user_id": 0, "listing_id": 0, "timestamp": np.arange(100)})
    train, test = global_time_split(df, test_fraction=0.1)
    assert len(test) == 10 and test.timestamp.min() == 90
    assert train.timestamp.max() == 89


def test_cold_listing_split():
    train = pd.DataFrame({"user_id": [1, 2], "listing_id": [10, 11]})
    test = pd.DataFrame({"user_id": [1, 2, 3], "listing_id": [11, 12, 10]})
    warm, cold = cold_listing_split(train, test)
    assert warm.listing_id.tolist() == [11, 10]
    assert cold.listing_id.tolist() == [12]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_split_helpers_refuse_a_timestamp_that_is_no_number(bad):
    # a NaN compared false with every cut: its row went to train (or last, to test) silently
    df = interactions({"a": 6}).assign(timestamp=[0.0, bad, 2.0, 3.0, 4.0, 5.0])
    for split in (
        lambda: global_time_split(df, test_fraction=0.5),
        lambda: global_time_split(df, test_start=3.0),
        lambda: per_user_split(df, 0.5, 1),
    ):
        with pytest.raises(DataError, match="row 1, column 'timestamp'"):
            split()
    nullable = interactions({"a": 3}).assign(timestamp=pd.array([0, None, 2], dtype="Int64"))
    with pytest.raises(DataError, match="row 1, column 'timestamp'"):
        global_time_split(nullable, test_start=1)
    with pytest.raises(ValueError, match="test_start"):
        global_time_split(interactions({"a": 3}), test_start=float("nan"))


def test_whole_number_timestamps_past_2_to_the_53_split_exactly():
    # epoch nanoseconds: as float64 neighbouring moments rounded to one, and an event just
    # before the cut went to test
    start = 1_764_000_000_000_000_000
    df = pd.DataFrame(
        {"user_id": 1, "listing_id": [5, 4, 3, 2, 1], "timestamp": start + np.arange(5)}
    )
    train, test = global_time_split(df, test_start=start + 3)
    assert train.timestamp.tolist() == [start, start + 1, start + 2]
    assert global_time_split(df, test_fraction=0.2)[1].timestamp.tolist() == [start + 4]
    # the latest by time, though listing 1 sorts first
    assert per_user_split(df, 0.2, 1)[1].listing_id.tolist() == [1]
