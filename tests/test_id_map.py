"""IdMap packed for training: every lookup after it answers as before, and it holds less."""

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from embedrec.data.errors import DataError
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
    assert numbers.indices(pd.Series(["3", "01"] * 10, dtype="str")).tolist() == [0, -1] * 10


@pytest.mark.parametrize("many", [False, True], ids=["a request's few", "a table's many"])
def test_an_id_of_the_other_type_finds_the_id_it_writes(many: bool) -> None:
    # a CSV types its ids on its own: one slug makes a file's numbers strings
    repeat = 10 if many else 1
    words = IdMap(pd.Index(["64", "-3", "qashqai"], dtype=object))
    asked = [64, np.int64(-3), "64", 65, True] * repeat
    assert words.indices(asked).tolist() == [0, 1, 0, -1, -1] * repeat
    assert words.indices(np.array([-3, 64] * repeat)).tolist() == [1, 0] * repeat
    numbers = IdMap(pd.Index([64, -3, 0]))
    # only the plain spelling of an integer names it
    asked = ["64", "-3", "0", "064", " 64", "+64", "64.0", "6_4", "qashqai"] * repeat
    expected = ([0, 1, 2] + [-1] * 6) * repeat
    assert numbers.indices(asked).tolist() == expected
    assert numbers.indices(pd.Series(asked, dtype="str")).tolist() == expected
    assert numbers.external(numbers.indices(["64"])) == [64]  # the id as the map holds it


def test_an_extended_map_keeps_the_type_of_its_ids(tmp_path) -> None:
    words = IdMap(pd.Index(["64", "x"], dtype=object)).extend([64, 7, "y"])
    assert words.external([0, 1, 2, 3]) == ["64", "x", "7", "y"]
    words.save(tmp_path / "words.parquet")  # one type: saved as it is held
    assert IdMap.load(tmp_path / "words.parquet").external([2]) == ["7"]
    numbers = IdMap(pd.Index([64])).extend(["7", 64, np.int64(8)])
    assert numbers.external([0, 1, 2]) == [64, 7, 8] and numbers.ids.dtype == np.int64
    with pytest.raises(DataError, match="id '07' is not an integer"):
        numbers.extend(["07"])
