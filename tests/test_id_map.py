"""IdMap packed for training: every lookup after it answers as before, and it holds less."""

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from embedrec.data.ids import IdMap


def user_ids(n: int) -> IdMap:
    return IdMap(pd.Index([f"user-{i:07d}" for i in range(n)], dtype=object))


def test_a_packed_map_answers_every_lookup_as_before(tmp_path) -> None:
    plain, packed = user_ids(1_000), user_ids(1_000).pack()
    assert len(packed) == 1_000
    rows = np.array([5, 3, 999])
    sub_plain, sub_packed = plain.subset(rows), packed.subset(rows)  # taken while packed
    assert len(sub_packed) == 3
    assert sub_packed.external(np.arange(3)) == ["user-0000005", "user-0000003", "user-0000999"]
    sub_plain.save(tmp_path / "plain.parquet")
    sub_packed.save(tmp_path / "packed.parquet")
    assert pq.read_table(tmp_path / "packed.parquet").equals(
        pq.read_table(tmp_path / "plain.parquet")
    )
    query = ["user-0000042", "nobody", "user-0000000"] * 10  # more than a request's few ids
    assert packed.indices(query).tolist() == plain.indices(query).tolist()
    assert "user-0000007" in packed and "user-1" not in packed
    assert packed.ids.equals(plain.ids)
    assert packed.extend(["new"]).external([1_000]) == ["new"]


def test_packing_hands_back_the_python_strings() -> None:
    tracemalloc.start()  # traces the strings made from here on (not Arrow's buffers)
    ids = user_ids(200_000)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    ids.pack()
    gc.collect()
    freed = before - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert freed > 200_000 * 50  # a str object of 12 characters takes 61 bytes


def test_integer_and_mixed_ids_stay_as_they_are(tmp_path) -> None:
    numbers = IdMap(pd.Index([7, 3, 11])).pack()
    assert numbers.indices([3, 11, 5]).tolist() == [1, 2, -1]
    mixed = IdMap(pd.Index(["a", 2, "c"], dtype=object)).pack()
    assert mixed.external([0, 1, 2]) == ["a", 2, "c"]
    assert len(mixed) == 3


def test_many_arrow_string_ids_are_looked_up_by_their_distinct_values() -> None:
    ids = user_ids(100)
    rng = np.random.default_rng(0)
    wanted = [f"user-{i:07d}" for i in rng.integers(0, 120, 5_000)]  # some unknown
    arrow = pd.Series(wanted, dtype="str")
    arrow.iloc[7] = None
    expected = np.array([int(w[5:]) if int(w[5:]) < 100 else -1 for w in wanted])
    expected[7] = -1
    assert ids.indices(arrow).tolist() == expected.tolist()
    assert ids.indices(pd.Series([None] * 20, dtype="str")).tolist() == [-1] * 20
    numbers = IdMap(pd.Index([3, 1]))
    assert numbers.indices(pd.Series(["3", "1"] * 10, dtype="str")).tolist() == [-1] * 20
