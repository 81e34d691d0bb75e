"""Integer ids that arrive as floats (64.0): pandas makes a column of integers float64 once
it holds a missing value, and writes it to CSV so. A whole float is the integer id it
writes; any other float is refused where it is read."""

from __future__ import annotations

import decimal
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import block_data

from embedrec.cli import main
from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap
from embedrec.data.io import load_interactions, load_listings
from embedrec.recommender import Recommender


def integer_tables(floats: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and listings with integer ids (listings from 10, users from 1000); as float64
    columns where ``floats``."""
    events, listings, _, _ = block_data(n_users=60, n_listings=40)
    number = {text: 10 + i for i, text in enumerate(listings["listing_id"])}
    users = {text: 1000 + i for i, text in enumerate(pd.unique(events["user_id"]))}
    kind = np.float64 if floats else np.int64
    listings = listings.assign(listing_id=listings["listing_id"].map(number).astype(kind))
    events = events.assign(
        listing_id=events["listing_id"].map(number).astype(kind),
        user_id=events["user_id"].map(users).astype(kind),
    )
    return events, listings


def test_float_ids_of_a_dataframe_train_the_model_an_integer_table_does():
    events, listings = integer_tables(floats=True)
    rec = Recommender(model="mf", epochs=1, seed=0, progress=False).fit(events, listings)
    assert rec.report_["events_skipped_unknown_listing"] == 0
    assert rec.users_.ids.dtype == np.int64 and rec.listings_.ids.dtype == np.int64
    [by_int] = rec.similar([12], k=3)
    [by_float] = rec.similar([12.0], k=3)
    assert by_int.query == 12 and by_int.hits == by_float.hits
    assert all(type(hit.listing_id) is int for hit in by_int.hits)
    assert rec.recommend([1000.0], k=3)[0].hits == rec.recommend([1000], k=3)[0].hits
    # a catalogue of float ids meets the model's integer ids: none of its listings is new
    catalogue = integer_tables(floats=True)[1]
    assert rec.retriever(catalogue).unknown == []
    embedded = rec.embed(catalogue.head(3))
    assert embedded["listing_id"].tolist() == [10, 11, 12]


def test_a_whole_float_finds_a_string_id():
    words = IdMap(pd.Index(["64", "x"], dtype=object))
    assert words.indices([64.0, np.float32(64.0), 64.5]).tolist() == [0, 0, -1]
    assert words.indices(pd.Series([64.0, 65.0] * 10)).tolist() == [0, -1] * 10


@pytest.mark.parametrize("bad", [64.5, np.inf, -np.inf, 2.0**63])
@pytest.mark.parametrize("column", ["user_id", "listing_id"])
def test_a_float_id_that_is_no_integer_is_refused_at_its_row(bad, column):
    events = pd.DataFrame({"user_id": [1.0, 2.0, 3.0], "listing_id": [4.0, 5.0, 6.0]})
    events = events.assign(timestamp=[1, 2, 3])
    events.loc[1, column] = bad
    with pytest.raises(DataError, match="is not a whole number") as caught:
        load_interactions(events)
    assert (caught.value.row, caught.value.column) == (2, column)
    listings = pd.DataFrame({"listing_id": [4.0, bad]})
    with pytest.raises(DataError, match="is not a whole number") as caught:
        load_listings(listings)
    assert (caught.value.row, caught.value.column) == (2, "listing_id")


def test_csv_ids_written_as_floats_are_integers_exactly(tmp_path):
    path = tmp_path / "listings.csv"
    path.write_text("listing_id,price\n64.0,1\n9007199254740993.0,2\n-3.00,3\n")
    assert load_listings(path)["listing_id"].tolist() == [64, 2**53 + 1, -3]
    # without a whole float the column is not one of floats: string ids, exactly as written
    path.write_text("listing_id,price\n1.5,1\n2.25,2\n")
    assert load_listings(path)["listing_id"].tolist() == ["1.5", "2.25"]


def train(tmp_path, events: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["train", "--interactions", str(tmp_path / events), "--listings",
         str(tmp_path / "listings.csv"), "--out", str(tmp_path / "model"), "--model", "mf",
         "--epochs", "1"],
    )  # fmt: skip
    return result.exit_code, result.output


def test_cli_trains_on_a_csv_of_float_ids_and_answers_integer_ids(tmp_path):
    events, listings = integer_tables(floats=True)
    events.to_csv(tmp_path / "events.csv", index=False)  # 1000.0, 45.0, ...
    integer_tables(floats=False)[1].to_csv(tmp_path / "listings.csv", index=False)
    code, output = train(tmp_path, "events.csv")
    assert code == 0, output
    result = CliRunner().invoke(main, ["recommend", str(tmp_path / "model"), "-k", "2", "--json",
                                       "--", "1000"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [line] = [json.loads(text) for text in result.stdout.strip().splitlines()]
    assert line["query"] == 1000 and all(type(h["listing_id"]) is int for h in line["results"])


def test_cli_refuses_a_csv_float_id_that_is_no_integer_at_its_line(tmp_path):
    events, listings = integer_tables(floats=True)
    events.loc[4, "listing_id"] = 64.5
    events.to_csv(tmp_path / "events.csv", index=False)
    listings.to_csv(tmp_path / "listings.csv", index=False)
    code, output = train(tmp_path, "events.csv")
    assert code == 2
    assert (
        "events.csv, row 5 (line 6), column 'listing_id': listing_id 64.5 is not a whole" in output
    )
    assert "Traceback" not in output


def decimal_parquet(frame: pd.DataFrame, path, columns: dict[str, pa.DataType]) -> str:
    """``frame`` as Parquet with ``columns`` as DECIMAL, as SQL exports write NUMBER."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column, kind in columns.items():
        values = [None if v != v else decimal.Decimal(str(v)) for v in frame[column]]
        table = table.set_column(
            table.schema.get_field_index(column), column, pa.array(values, kind)
        )
    pq.write_table(table, path)
    return str(path)


def test_decimal_ids_are_integer_ids_the_model_answers_by(tmp_path):
    events, listings = integer_tables(floats=False)
    ids = pa.decimal128(18, 0)
    events_file = decimal_parquet(
        events, tmp_path / "e.parquet", {"user_id": ids, "listing_id": ids}
    )
    listings_file = decimal_parquet(listings, tmp_path / "l.parquet", {"listing_id": ids})
    assert load_listings(listings_file)["listing_id"].dtype == np.int64
    rec = Recommender(model="mf", epochs=1, seed=0, progress=False)
    rec.fit(events_file, listings_file)
    assert rec.report_["events_skipped_unknown_listing"] == 0
    assert rec.users_.ids.dtype == np.int64 and rec.listings_.ids.dtype == np.int64
    [hits] = rec.similar([12], k=3)
    assert hits.query == 12 and all(type(hit.listing_id) is int for hit in hits.hits)
    assert rec.recommend([1000], k=3)[0].hits
    # integer ids in the events meet DECIMAL ids in the listings
    rec.fit(events, listings_file)
    assert rec.report_["events_skipped_unknown_listing"] == 0


@pytest.mark.parametrize("column", ["user_id", "listing_id"])
def test_a_decimal_id_that_is_no_integer_is_refused_at_its_row(tmp_path, column):
    events = pd.DataFrame({"user_id": [1, 2, 3], "listing_id": [4, 5, 6], "timestamp": [1, 2, 3]})
    events[column] = [1.0, 2.5, 3.0]
    path = decimal_parquet(events, tmp_path / "e.parquet", {column: pa.decimal128(18, 2)})
    with pytest.raises(DataError, match=rf"{column} '2.50' is not a whole number") as caught:
        load_interactions(path)
    assert (caught.value.file, caught.value.row, caught.value.column) == (path, 2, column)
    too_large = events.assign(**{column: [1, 2, 2**63]})
    path = decimal_parquet(too_large, tmp_path / "big.parquet", {column: pa.decimal128(38, 0)})
    with pytest.raises(DataError, match="within 64 bits") as caught:
        load_interactions(path)
    assert caught.value.row == 3
