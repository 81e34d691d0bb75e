"""The packed listings table: what comes out is what went in, whole or a rank's rows."""

import numpy as np
import pandas as pd
import pytest

from embedrec.data.packed import BATCH_ROWS, PackedTable, as_packed, row_pieces


def joined(pieces) -> pd.DataFrame:
    parts = list(pieces)
    assert all(len(part) <= BATCH_ROWS for part in parts)
    return pd.concat(parts, ignore_index=True)


def catalogue(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "listing_id": [f"car-{i}" for i in range(rows)],
            "make": pd.Categorical(rng.choice(["Nissan", "Skoda", "BMW"], rows)),
            "price": rng.integers(1_000, 90_000, rows),
            "lat": np.where(rng.random(rows) < 0.1, np.nan, rng.uniform(47, 55, rows)),
            "doors": pd.array(np.where(rng.random(rows) < 0.1, None, 5), dtype="Int64"),
            "listed_at": pd.to_datetime(rng.integers(0, 10**9, rows), unit="s", utc=True),
            "description": ["Gepflegt, scheckheft, Ölwechsel neu " * 3] * rows,
            7: rng.random(rows) < 0.5,  # a column named by a number
        }
    )
    frame.attrs["source"] = "listings.parquet"
    return frame


def test_the_whole_table_comes_back_with_its_dtypes_and_attrs() -> None:
    frame = catalogue(1_000)
    packed = PackedTable(frame)
    assert packed.packed_bytes > 0
    assert len(packed) == 1_000
    pd.testing.assert_frame_equal(packed.frame(), frame)
    assert packed.frame().attrs == {"source": "listings.parquet"}


@pytest.mark.parametrize(
    ("start", "step"), [(0, 1), (0, 2), (1, 2), (2, 3), (6, 7), (BATCH_ROWS + 3, 1)]
)
def test_pieces_across_batches_equal_iloc(start: int, step: int) -> None:
    frame = catalogue(2 * BATCH_ROWS + 5)  # three batches, the last one short
    pieces = list(PackedTable(frame).pieces(start, step))
    expected = frame.iloc[start::step].reset_index(drop=True)
    pd.testing.assert_frame_equal(joined(pieces), expected)
    assert all(piece.attrs == frame.attrs for piece in pieces)


def test_repeated_text_packs_small() -> None:
    frame = catalogue(50_000)
    assert PackedTable(frame).packed_bytes < frame.memory_usage(deep=True).sum() / 4


def test_a_frame_arrow_cannot_hold_is_kept_as_it_is() -> None:
    frame = pd.DataFrame({"listing_id": ["a", "b", "c"], "mixed": [1, "two", 3.0]})
    packed = PackedTable(frame)
    assert packed.packed_bytes == 0
    pd.testing.assert_frame_equal(packed.frame(), frame)
    pd.testing.assert_frame_equal(
        joined(packed.pieces(1, 2)), frame.iloc[1::2].reset_index(drop=True)
    )


def test_an_empty_table() -> None:
    frame = catalogue(0)
    packed = PackedTable(frame)
    pd.testing.assert_frame_equal(packed.frame(), frame)
    # one empty piece, with the table's columns and dtypes
    (piece,) = packed.pieces(1, 2)
    pd.testing.assert_frame_equal(piece, frame)
    (piece,) = row_pieces(frame)
    pd.testing.assert_frame_equal(piece, frame)


def test_frames_and_packed_tables_are_read_alike() -> None:
    frame = catalogue(10)
    packed = as_packed(frame)
    assert as_packed(packed) is packed
    for table in (frame, packed):
        rows = joined(row_pieces(table, 1, 3))["listing_id"].tolist()
        assert rows == ["car-1", "car-4", "car-7"]
