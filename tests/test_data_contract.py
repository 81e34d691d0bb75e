"""Every data-contract error names the file, the row and the column."""

from __future__ import annotations

import decimal
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedrec.data.errors import DataError
from embedrec.data.io import load_interactions, load_listings, read_table
from embedrec.data.prepare import prepare
from embedrec.data.schema import SchemaConfig, infer_schema
from embedrec.features import FeaturePipeline
from embedrec.index.filters import FilterError, allowed_mask, parse_filter


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_EVENTS = "user_id,listing_id,timestamp,event\nu1,a,2026-01-01T10:00:00Z,view\n"


def test_valid_interactions_parse_iso_and_epoch(tmp_path):
    path = write(tmp_path, "events.csv", GOOD_EVENTS + "u2,b,1767261600,contact\n")
    frame = load_interactions(path)
    assert frame["timestamp"].tolist() == [1767261600, 1767261600]
    assert frame["weight"].tolist() == [1.0, 5.0]


def test_ids_come_back_exactly_as_given(tmp_path):
    path = write(
        tmp_path, "events.csv", "user_id,listing_id,timestamp\n007,12,1\n 7 ,13,2\nNA,12,3\n"
    )
    frame = load_interactions(path)
    assert frame["user_id"].tolist() == ["007", " 7 ", "NA"]
    assert frame["listing_id"].tolist() == [12, 13, 12]  # canonical integers stay integers


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        ("user_id,timestamp\nu1,1\n", None, "listing_id", "missing required column"),
        ("user_id,listing_id,timestamp\nu1,a,1\n,b,2\n", 2, "user_id", "empty user_id"),
        ("user_id,listing_id,timestamp\nu1,a,1\nu2, ,2\n", 2, "listing_id", "empty listing_id"),
        (
            "user_id,listing_id,timestamp\nu1,a,2026-01-01\nu2,b,yesterday\n",
            2,
            "timestamp",
            "cannot parse timestamp",
        ),
        ("user_id,listing_id,timestamp\nu1,a,\n", 1, "timestamp", "missing timestamp"),
        (
            "user_id,listing_id,timestamp,event\nu1,a,1,view\nu1,b,2,purchase\n",
            2,
            "event",
            "unknown event",
        ),
        (
            "user_id,listing_id,timestamp,weight\nu1,a,1,1\nu1,b,2,inf\n",
            2,
            "weight",
            "finite number",
        ),
        ("user_id,listing_id,timestamp,weight\nu1,a,1,-1\n", 1, "weight", "finite number"),
    ],
)
def test_interaction_errors_name_file_row_column(tmp_path, text, row, column, words):
    path = write(tmp_path, "events.csv", text)
    with pytest.raises(DataError) as caught:
        load_interactions(path)
    error = caught.value
    assert error.file == str(path)
    assert error.row == row
    assert error.column == column
    assert words in str(error)
    if row is not None:
        assert f"row {row} (line {row + 1})" in str(error)


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        ("price\n1\n", None, "listing_id", "missing required column"),
        ("listing_id,price\na,1\na,2\n", 2, "listing_id", "duplicate listing_id"),
        ("listing_id,price\na,1\n,2\n", 2, "listing_id", "empty listing_id"),
        ("listing_id,price\na,1\nb,inf\n", 2, "price", "non-finite"),
        ("listing_id,lat,lon\na,51,13\nb,95,13\n", 2, "lat", "must be a number in [-90, 90]"),
        ("listing_id,lat,lon\na,51,13\nb,50,-181\n", 2, "lon", "[-180, 180]"),
        ("listing_id,latitude,longitude\na,north,13\n", 1, "latitude", "must be a number"),
    ],
)
def test_listing_errors_name_file_row_column(tmp_path, text, row, column, words):
    path = write(tmp_path, "listings.csv", text)
    with pytest.raises(DataError) as caught:
        load_listings(path)
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), row, column)
    assert words in str(caught.value)


def test_missing_numbers_are_allowed_as_missing(tmp_path):
    path = write(tmp_path, "listings.csv", "listing_id,price\na,1\nb,\n")
    assert load_listings(path)["price"].isna().tolist() == [False, True]


@pytest.mark.parametrize("content", [b"", b"user_id,listing_id,timestamp\n"])
def test_empty_files(tmp_path, content):
    path = tmp_path / "events.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty|no rows") as caught:
        load_interactions(path)
    assert caught.value.file == str(path)


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        read_table(broken)
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="unknown file type"):
        read_table(write(tmp_path, "events.json", "{}"))


def test_parquet_errors_count_rows_without_lines(tmp_path):
    path = tmp_path / "listings.parquet"
    pd.DataFrame({"listing_id": ["a", "b"], "price": [1.0, np.inf]}).to_parquet(path)
    with pytest.raises(DataError) as caught:
        load_listings(path)
    assert caught.value.row == 2 and caught.value.line is None
    assert "line" not in str(caught.value)


def test_dataframes_are_accepted_and_keep_integer_ids():
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],
            "listing_id": [10, 11],
            "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"]),
        }
    )
    loaded = load_interactions(frame)
    assert loaded["user_id"].tolist() == [1, 2]
    assert loaded["timestamp"].tolist() == [1767225600, 1767312000]


def test_numeric_event_ids_meet_a_listings_csv_whose_slug_makes_its_ids_strings(tmp_path):
    # every listing of the events is in the table: none may be skipped as unknown
    events = write(tmp_path, "events.csv", "user_id,listing_id,timestamp\nu1,64,1\nu1,7,2\n")
    table = write(tmp_path, "listings.csv", "listing_id,price\n64,1\n7,2\nqashqai-dresden,3\n")
    data = prepare(load_interactions(events), load_listings(table))
    assert data.report["events_skipped_unknown_listing"] == 0
    assert data.listings.external([0, 1]) == ["64", "7"]  # as the listings table holds them
    # and the other way round: plainly written numbers among string event ids
    events = write(tmp_path, "events.csv", "user_id,listing_id,timestamp\nu1,64,1\nu1,x,2\n")
    table = write(tmp_path, "listings.csv", "listing_id,price\n64,1\n7,2\n")
    data = prepare(load_interactions(events), load_listings(table))
    assert data.report["events_skipped_unknown_listing"] == 1
    assert data.listings.external([0]) == [64] and data.listings.ids.dtype == np.int64


def test_event_ids_unknown_for_their_spelling_of_an_integer_are_explained(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,listing_id,timestamp\nu1,064,1\nu1,07,2\n")
    table = write(tmp_path, "listings.csv", "listing_id,price\n64,1\n7,2\n")
    with pytest.raises(DataError, match="unknown_listing: 2") as caught:
        prepare(load_interactions(events), load_listings(table))
    message = str(caught.value)
    assert "listings table's listing_id are integers" in message
    assert "interactions' are strings such as '064'" in message


@pytest.mark.parametrize("column", ["user_id", "listing_id"])
def test_integer_ids_beyond_int64_are_refused_not_wrapped(tmp_path, column):
    huge = np.array([5, 2**63 + 5], dtype=np.uint64)
    events = pd.DataFrame({"user_id": [1, 2], "listing_id": [3, 4], "timestamp": [1, 2]})
    path = tmp_path / "events.parquet"
    events.assign(**{column: huge}).to_parquet(path)
    with pytest.raises(DataError, match="integer id out of range: 9223372036854775813") as caught:
        load_interactions(path)
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), 2, column)
    assert "give them as strings" in str(caught.value)
    listings = pd.DataFrame({"listing_id": pd.Series([7, -(2**63) - 1], dtype=object)})
    with pytest.raises(DataError, match="out of range: -9223372036854775809") as caught:
        load_listings(listings)
    assert (caught.value.row, caught.value.column) == (2, "listing_id")
    assert load_listings(pd.DataFrame({"listing_id": [2**63 - 1]}))["listing_id"][0] == 2**63 - 1


def test_a_column_of_string_and_integer_ids_is_refused_at_its_first_other_type():
    events = pd.DataFrame(
        {
            "user_id": pd.Series(["u0", "u1", 2, "u3"], dtype=object),
            "listing_id": ["a", "b", "a", "b"],
            "timestamp": [1, 2, 3, 4],
        }
    )
    with pytest.raises(DataError, match="user_id 2 is of type int, row 1's id of type str"):
        load_interactions(events)
    listings = pd.DataFrame({"listing_id": pd.Series([7, "b"], dtype=object)})
    with pytest.raises(DataError, match="all strings or all integers") as caught:
        load_listings(listings)
    assert (caught.value.row, caught.value.column) == (2, "listing_id")


@pytest.mark.parametrize(
    ("ids", "row", "named"),
    [
        ([uuid.UUID(int=1), uuid.UUID(int=2)], 1, r"UUID\('0{8}-.*'\) is of type UUID:"),
        (pd.to_datetime(["2026-01-01", "2026-01-02"]), 1, r"Timestamp\(.*\) is of type Timestamp:"),
        ([(1, "a"), (2, "b")], 1, r"\(1, 'a'\) is of type tuple:"),
        (["u0", 1.5], 2, "1.5 is of type float, row 1's id of type str:"),
        (["u0", 2.0], 2, "2.0 is of type float, row 1's id of type str:"),
    ],
)
def test_ids_that_are_neither_text_nor_numbers_are_refused_at_their_row(ids, row, named):
    # UUID objects trained a model their text (the CLI's, HTTP's) could not query; tuples
    # failed the save after training; text beside fractions trained as ids of two types
    events = pd.DataFrame({"user_id": ["a", "b"], "listing_id": ids, "timestamp": [1, 2]})
    refused = f"listing_id {named} ids are strings or integers"
    with pytest.raises(DataError, match=refused) as caught:
        load_interactions(events)
    assert (caught.value.row, caught.value.column) == (row, "listing_id")
    with pytest.raises(DataError, match=named):
        load_listings(pd.DataFrame({"listing_id": ids}))


@pytest.mark.parametrize("dtype", [bool, "boolean", object])
def test_a_column_of_booleans_is_no_ids(dtype):
    # a mask passed for the ids would make two "users", True and False
    events = pd.DataFrame(
        {
            "user_id": pd.Series([True, False], dtype=dtype),
            "listing_id": ["a", "b"],
            "timestamp": [1, 2],
        }
    )
    with pytest.raises(DataError, match="user_id True is a boolean") as caught:
        load_interactions(events)
    assert (caught.value.row, caught.value.column) == (1, "user_id")


def test_a_warm_start_reads_the_new_ids_in_the_models_types(tmp_path):
    events = write(tmp_path, "day.csv", "user_id,listing_id,timestamp\n175,64,1\n7,65,2\n")
    read = load_interactions(events, model_ids={"user_id": pd.Index(["U1"], dtype=object)})
    assert read["user_id"].tolist() == ["175", "7"]
    table = write(tmp_path, "listings.csv", "listing_id,price\n64,1\n065,2\n")
    with pytest.raises(DataError, match="'065' is not an integer, but the model") as caught:
        load_listings(table, model_ids={"listing_id": pd.Index([64])})
    assert (caught.value.file, caught.value.row, caught.value.column) == (
        str(table),
        2,
        "listing_id",
    )


def test_skips_are_counted_never_silent():
    events = load_interactions(
        pd.DataFrame(
            {
                "user_id": ["u1", "u1", "u2", "u3", "u3", "u3"],
                "listing_id": ["a", "b", "zzz", "a", "b", "c"],
                "timestamp": [1, 2, 3, 4, 5, 6],
            }
        )
    )
    listings = pd.DataFrame({"listing_id": ["a", "b", "c"]})
    data = prepare(events, listings, min_user_interactions=2, min_listing_interactions=2)
    assert data.report["events_skipped_unknown_listing"] == 1
    assert data.report["events_skipped_rare_listing"] == 1  # c has one event
    assert data.report["events_skipped_rare_user"] == 0
    assert data.report["events_used"] == 4
    assert set(data.users.ids) == {"u1", "u3"}


def test_events_of_weight_zero_are_skipped_and_counted():
    events = load_interactions(
        pd.DataFrame(
            {
                "user_id": ["u1", "u1", "u2", "u2"],
                "listing_id": ["a", "b", "a", "c"],
                "timestamp": [1, 2, 3, 4],
                "event": ["view", "contact", "view", "view"],
                "weight": [1.0, 1.0, 0.0, 2.0],
            }
        ),
        {"view": 1.0, "contact": 0.0},
    )
    data = prepare(events)
    assert data.report["events_skipped_zero_weight"] == 2
    assert data.report["events_used"] == 2 and len(data) == 2
    assert set(data.listings.ids) == {"a", "c"}  # b had only its weightless contact
    assert (data.weight > 0).all()


def test_events_all_of_weight_zero_leave_nothing_to_train_on(tmp_path):
    path = write(tmp_path, "events.csv", "user_id,listing_id,timestamp,weight\nu,a,1,0\nu,b,2,0\n")
    with pytest.raises(DataError) as caught:
        prepare(load_interactions(path))
    assert str(caught.value) == (
        f"{path}: no interactions left to train on after skipping zero_weight: 2, "
        "rare_listing: 0, rare_user: 0"
    )


def test_repeated_pairs_merge_weights_and_keep_last_time():
    events = load_interactions(
        pd.DataFrame(
            {
                "user_id": ["u", "u", "u"],
                "listing_id": ["a", "a", "b"],
                "timestamp": [1, 9, 5],
                "event": ["view", "contact", "view"],
            }
        )
    )
    data = prepare(events)
    a = data.listings.indices(["a"])[0]
    row = np.flatnonzero(data.listing_idx == a)[0]
    assert data.weight[row] == 6.0 and data.timestamp[row] == 9
    assert len(data) == 2


def test_repeated_pairs_whose_weights_sum_beyond_float32_stay_finite():
    events = load_interactions(
        pd.DataFrame(
            {"user_id": ["u", "u"], "listing_id": ["a", "a"], "timestamp": [1, 2], "weight": 3e38}
        )
    )
    assert np.isfinite(prepare(events).weight).all()


def test_schema_inference_and_config_overrides(tmp_path):
    listings = pd.DataFrame(
        {
            "listing_id": ["a", "b"],
            "price": [1.0, 2.0],
            "make": ["VW", "BMW"],
            "equipment": ["nav|abs", "abs"],
            "lat": [51.0, 52.0],
            "lon": [13.0, 12.0],
            "year": [2018, 2019],
            "dealer_id": ["d1", "d2"],
            "listed_at": pd.to_datetime(["2026-01-01", "2026-01-02"]),
        }
    )
    kinds = {s.name: s.kind for s in infer_schema(listings)}
    assert kinds == {
        "geo": "geo",
        "price": "numeric",
        "make": "categorical",
        "equipment": "multi",
        "year": "numeric",
        "dealer_id": "categorical",
    }
    config_path = write(
        tmp_path,
        "config.toml",
        '[features]\ndrop = ["dealer_id"]\n[features.types]\nyear = "categorical"\n',
    )
    specs = infer_schema(listings, SchemaConfig.from_toml(config_path))
    kinds = {s.name: s.kind for s in specs}
    assert kinds["year"] == "categorical" and "dealer_id" not in kinds
    bad = write(tmp_path, "bad.toml", '[features.types]\nyear = "color"\n')
    with pytest.raises(DataError, match="unknown feature type 'color'"):
        SchemaConfig.from_toml(bad)
    with pytest.raises(DataError, match="not in the listings table"):
        infer_schema(listings, SchemaConfig(drop=["nope"]))


def test_a_column_with_bars_is_text_when_its_items_are_one_offs_and_multi_when_they_repeat():
    rng = np.random.default_rng(0)
    roles = ["Senior Engineer", "Staff Nurse", "Lead Marketer", "Junior Accountant", "Driver"]
    amenities = np.array(["balcony", "fitted kitchen", "lift", "washing machine", "garden"])
    n = 40
    listings = pd.DataFrame(
        {
            "listing_id": range(n),
            # every title holds a part no other title has: hundreds of one-off categories
            "title": [
                f"{rng.choice(roles)} in team {i} | {rng.choice(['Remote', 'Berlin'])}"
                for i in range(n)
            ],  # fmt: skip
            # combinations mostly unique and of several words, but from a small vocabulary
            "amenities": ["|".join(rng.choice(amenities, 3, replace=False)) for _ in range(n)],
            "skills": rng.choice(["python|sql", "sap", "driving|sap"], n),
        }
    )
    kinds = {spec.name: spec.kind for spec in infer_schema(listings)}
    assert kinds == {"title": "text", "amenities": "multi", "skills": "multi"}


def test_a_date_column_is_a_date_in_csv_as_in_parquet(tmp_path):
    n = 30
    csv = write(
        tmp_path,
        "listings.csv",
        "listing_id,make,available_from,updated\n"
        + "".join(
            f"L{i},{'VW' if i % 2 else 'BMW'},2026-11-{1 + i % 28:02d},"
            + ("" if i == 3 else f"2026-11-03T10:{i:02d}:00{'Z' if i % 2 else '+01:00'}")
            + "\n"
            for i in range(n)
        ),
    )
    from_csv = load_listings(csv)
    parquet = tmp_path / "listings.parquet"
    table = pa.Table.from_pandas(from_csv.astype({"available_from": "datetime64[s]"}))
    # Parquet's date type as well as its timestamps
    table = table.set_column(2, "available_from", table["available_from"].cast(pa.date32()))
    pq.write_table(table, parquet)
    from_parquet = load_listings(parquet)
    for listings in (from_csv, from_parquet):
        assert pd.api.types.is_datetime64_any_dtype(listings["available_from"])
        assert str(listings["updated"].dtype).endswith(", UTC]")
        assert listings["updated"].iloc[0] == pd.Timestamp("2026-11-03T09:00:00Z")
        assert pd.isna(listings["updated"].iloc[3])
        assert [(s.name, s.kind) for s in infer_schema(listings)] == [("make", "categorical")]
        with pytest.raises(FilterError, match="holds dates and times: not filterable"):
            allowed_mask([parse_filter("available_from=2026-11-03")], listings)
    bad = write(tmp_path, "bad.csv", "listing_id,available_from\nL1,2026-02-28\nL2,2026-02-30\n")
    with pytest.raises(DataError, match="'2026-02-30' is no date") as error:
        load_listings(bad)
    assert (error.value.row, error.value.column) == (2, "available_from")
    # dates in other shapes, or among other text, stay text
    other = write(tmp_path, "other.csv", "listing_id,when\nL1,2026-02-28\nL2,soon\nL3,03.11.2026\n")
    assert load_listings(other)["when"].tolist() == ["2026-02-28", "soon", "03.11.2026"]


def test_a_decimal_column_is_a_numeric_feature(tmp_path):
    # Parquet DECIMAL (a price in a SQL export) arrives as Python Decimals
    prices = [decimal.Decimal("12500.00"), None, decimal.Decimal("9990.50")]
    table = pa.table(
        {"listing_id": ["a", "b", "c"], "price": pa.array(prices, pa.decimal128(12, 2))}
    )
    pq.write_table(table, tmp_path / "listings.parquet")
    given = pd.DataFrame({"listing_id": ["a", "b", "c"], "price": pd.Series(prices, dtype=object)})
    for source in (tmp_path / "listings.parquet", given):  # a file, or embed's and PUT's tables
        listings = load_listings(source)
        assert listings["price"].dtype == np.float64
        assert listings["price"].tolist()[::2] == [12500.0, 9990.5]
        assert [(s.name, s.kind) for s in infer_schema(listings)] == [("price", "numeric")]


def price_rows(prices: list[str]) -> str:
    return "listing_id,make,price\n" + "".join(
        f"L{i},{'VW' if i % 2 else 'BMW'},{price}\n" for i, price in enumerate(prices)
    )


def test_a_column_of_numbers_with_a_few_words_is_refused_not_made_categorical(tmp_path):
    prices = [str(10_000 + 500 * i) for i in range(30)]
    prices[7] = "k.A."
    path = write(tmp_path, "listings.csv", price_rows(prices))
    listings = load_listings(path)
    with pytest.raises(DataError, match=r"'k.A.' is not a number, but 29 of the column's 30") as e:
        infer_schema(listings, source=str(path))
    assert (e.value.file, e.value.row, e.value.line, e.value.column) == (str(path), 8, 9, "price")
    assert '[features.types]: price = "categorical"' in str(e.value)
    forced = infer_schema(listings, SchemaConfig(types={"price": "categorical"}))
    assert {s.name: s.kind for s in forced}["price"] == "categorical"


def test_missing_markers_in_a_column_of_numbers_are_missing_values(tmp_path):
    prices = [str(10_000 + 500 * i) for i in range(30)]
    prices[3], prices[5], prices[9] = "-", "n/a", "NULL"
    listings = load_listings(write(tmp_path, "listings.csv", price_rows(prices)))
    assert listings["price"].dtype == np.float64 and listings["price"].isna().sum() == 3
    # text from a table typed so: the same markers, also without case or spaces
    text = pd.DataFrame({"listing_id": range(30), "price": prices}).astype({"price": object})
    text.loc[5, "price"] = " N/A "
    specs = infer_schema(text)
    assert [(s.name, s.kind) for s in specs] == [("price", "numeric")]
    encoded = FeaturePipeline(specs).fit(text).transform(text)
    assert encoded["price.missing"].numpy().nonzero()[0].tolist() == [3, 5, 9]


@pytest.mark.parametrize(
    "values",
    [
        ["01067", "80331", "10115", "-"] * 5,  # postal codes: codes, not numbers
        [str(i) for i in range(8)] + ["a", "b"] + ["c"] * 10,  # 8 of 11 distinct: words
    ],
    ids=["leading-zeros", "few-numbers"],
)
def test_text_that_is_not_nearly_all_numbers_stays_categorical(values):
    listings = pd.DataFrame({"listing_id": range(len(values)), "code": values})
    assert [(s.name, s.kind) for s in infer_schema(listings)] == [("code", "categorical")]


def test_a_csv_column_of_digits_with_a_leading_zero_is_codes_not_numbers(tmp_path):
    # Dresden's postcode 01067 (German postcodes 01xxx-09xxx): not the number 1067
    path = write(
        tmp_path,
        "listings.csv",
        "listing_id,plz,plz_missing,counts,signed,decimal,price\n"
        "a,01067,01067,0,-01,01.5,9990\n"
        "b,10115,,10,5,2,12500\n"
        "c,80331,n/a,7,7,3,\n",
    )
    listings = load_listings(path)
    assert listings["plz"].tolist() == ["01067", "10115", "80331"]
    assert listings["plz_missing"].tolist()[0] == "01067"
    assert listings["plz_missing"].isna().tolist() == [False, True, True]
    # 0 and 10 alone are numbers; a sign or a decimal point makes a number of the column too
    assert listings["counts"].tolist() == [0, 10, 7] and listings["counts"].dtype == np.int64
    assert listings["signed"].tolist() == [-1, 5, 7]
    assert listings["decimal"].tolist() == [1.5, 2.0, 3.0]
    assert listings["price"].tolist()[:2] == [9990.0, 12500.0]
    kinds = {s.name: s.kind for s in infer_schema(listings)}
    assert kinds["plz"] == kinds["plz_missing"] == "categorical"
    assert kinds["counts"] == kinds["signed"] == kinds["price"] == "numeric"
    # read_table, whose codes an events file does without
    assert read_table(path)["plz"].tolist()[0] == "01067"
    assert read_table(path, codes=False)["plz"].tolist()[0] == 1067


@pytest.mark.parametrize("block", [1, 2, 3, 1 << 24])
def test_the_scan_for_a_field_with_a_leading_zero_reads_across_blocks(tmp_path, monkeypatch, block):
    from embedrec.data import csvtext

    monkeypatch.setattr(csvtext, "_BLOCK", block)
    for body, found in [
        ("a,01067\n", True),
        ('a,"01067"\n', True),
        ("a, 01067\r\n", True),
        ("a,0\nb,10\nc,0.5\nd,2026-01-05\n", False),
    ]:
        path = write(tmp_path, "listings.csv", "listing_id,plz\n" + body)
        assert csvtext.leading_zero_field(str(path)) is found, body


def test_csv_ids_with_leading_zeros_keep_them_and_name_other_listings(tmp_path):
    # "007" and "7" are two listings, in a listings file and in an events file alike
    table = write(tmp_path, "listings.csv", "listing_id,plz\n007,01067\n7,01069\n8,10115\n")
    events = write(
        tmp_path, "events.csv", "user_id,listing_id,timestamp\n01,007,1\n01,7,2\n1,8,3\n"
    )
    listings = load_listings(table)
    assert listings["listing_id"].tolist() == ["007", "7", "8"]
    interactions = load_interactions(events)
    assert interactions["user_id"].tolist() == ["01", "01", "1"]
    data = prepare(interactions, listings)
    assert data.report["events_skipped_unknown_listing"] == 0
    seen = data.listings.external(data.listing_idx)
    assert sorted(seen) == ["007", "7", "8"]
    assert sorted(data.users.external(np.unique(data.user_idx))) == ["01", "1"]


def test_a_column_of_lists_is_a_multi_valued_feature_and_one_of_mappings_is_refused(tmp_path):
    # Parquet's list type, as Spark and pandas write arrays: 40 rows, past the small-table path
    tags = [["wood", "oak"] if i % 2 else ["metal"] for i in range(39)] + [[]]
    listings = pd.DataFrame({"listing_id": [f"L{i}" for i in range(40)], "tags": tags})
    listings.to_parquet(tmp_path / "listings.parquet")
    frame = load_listings(tmp_path / "listings.parquet")
    assert frame["tags"].tolist()[:3] == ["metal", "wood|oak", "metal"]
    assert pd.isna(frame["tags"].iloc[-1])  # an empty list: missing
    (spec,) = infer_schema(frame)
    assert spec.kind == "multi"
    listings["tags"] = [{"a": 1}] * 40
    with pytest.raises(DataError) as error:
        load_listings(listings.assign(tags=[None, *listings["tags"][1:]]))
    assert error.value.row == 2 and error.value.column == "tags"
    assert "mapping" in str(error.value)


def test_parquet_binary_columns_are_read_as_utf8_text_and_other_bytes_are_refused(tmp_path):
    # Hive and Impala write strings as BINARY without the UTF-8 mark: ids and categories
    # must come back as the text they are, not as b'...' that no query or filter names
    text = pa.binary()
    listings = pa.table(
        {
            "listing_id": pa.array([b"007", b"8"], text),
            "city": pa.array(["Köln".encode(), None], text),
        }
    )
    events = pa.table(
        {
            "user_id": pa.array([b"u1", b"0042"], text),
            "listing_id": pa.array([b"007", b"8"], text),
            "timestamp": [1, 2],
            "event": pa.array([b"view", b"apply"], text),
        }
    )
    pq.write_table(listings, tmp_path / "listings.parquet")
    pq.write_table(events, tmp_path / "events.parquet")
    frame = load_listings(tmp_path / "listings.parquet")
    assert frame["listing_id"].tolist() == ["007", "8"]
    assert frame["city"].iloc[0] == "Köln" and pd.isna(frame["city"].iloc[1])
    loaded = load_interactions(tmp_path / "events.parquet", {"view": 1.0, "apply": 6.0})
    assert loaded["user_id"].tolist() == ["u1", "0042"]
    assert loaded["listing_id"].tolist() == ["007", "8"]
    assert loaded["weight"].tolist() == [1.0, 6.0]
    image = listings.append_column("logo", pa.array([b"png", b"\x89PNG"], text))
    pq.write_table(image, tmp_path / "images.parquet")
    with pytest.raises(DataError) as error:
        load_listings(tmp_path / "images.parquet")
    assert (error.value.row, error.value.column) == (2, "logo")
    assert "not UTF-8" in str(error.value) and "images.parquet" in str(error.value)


def test_tables_of_pyarrow_dtypes_read_as_their_parquet_files_do(tmp_path):
    # pd.read_parquet(..., dtype_backend="pyarrow"), as a notebook may read the tables
    listings = pd.DataFrame(
        {
            "listing_id": ["a", "b"],
            "tags": [["wood", "oak"], []],
            "price": pd.array([1.5, None], dtype="Float64"),
            "listed": pd.to_datetime(["2026-01-01", None], utc=True),
        }
    )
    events = pd.DataFrame(
        {
            "user_id": [7, 8],
            "listing_id": ["a", "b"],
            "timestamp": pd.to_datetime([1767225600, 0], unit="s", utc=True),
        }
    )
    listings.to_parquet(tmp_path / "listings.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    arrow = pd.read_parquet(tmp_path / "listings.parquet", dtype_backend="pyarrow")
    frame = load_listings(arrow)
    assert frame["tags"].tolist()[0] == "wood|oak" and pd.isna(frame["tags"].iloc[1])
    assert frame["price"].iloc[0] == 1.5 and pd.isna(frame["price"].iloc[1])
    assert frame["listed"].dtype.kind == "M" and pd.isna(frame["listed"].iloc[1])
    assert [s.kind for s in infer_schema(frame)] == ["multi", "numeric"]
    loaded = load_interactions(
        pd.read_parquet(tmp_path / "events.parquet", dtype_backend="pyarrow")
    )
    assert loaded["user_id"].tolist() == [7, 8] and loaded["timestamp"].tolist() == [1767225600, 0]


def test_a_pandas_index_written_to_parquet_is_read_as_the_column_it_is_in_the_file(tmp_path):
    # df.set_index("listing_id").to_parquet(...): the file holds the column, pandas' metadata
    # calls it the index; a feature written as the index is no feature to drop either
    listings = pd.DataFrame({"listing_id": ["a", "b"], "make": ["VW", "BMW"], "price": [1.0, 2.0]})
    (tmp_path / "folder").mkdir()
    listings.set_index("listing_id").to_parquet(tmp_path / "folder" / "part.parquet")
    listings.set_index("listing_id").to_parquet(tmp_path / "by_id.parquet")
    listings.set_index("make").to_parquet(tmp_path / "by_make.parquet")
    listings.set_index(pd.Index([7, 3])).to_parquet(tmp_path / "unnamed.parquet")
    by_make = pa.Table.from_pandas(listings.set_index("make"))
    for source in ("folder", "by_id.parquet", "by_make.parquet", "unnamed.parquet", by_make):
        frame = load_listings(tmp_path / source if isinstance(source, str) else source)
        assert sorted(frame.columns) == ["listing_id", "make", "price"], source
        assert frame["listing_id"].tolist() == ["a", "b"] and frame["make"].tolist() == [
            "VW",
            "BMW",
        ]
    events = pd.DataFrame({"user_id": [5, 9, 6], "listing_id": list("aba"), "timestamp": [1, 2, 3]})
    events.set_index("user_id").to_parquet(tmp_path / "events.parquet")
    assert load_interactions(tmp_path / "events.parquet")["user_id"].tolist() == [5, 9, 6]
    # ids 5, 6, 7: pandas makes the index a range, which the file keeps in its metadata only
    by_range = events.assign(user_id=[5, 6, 7]).set_index("user_id")
    assert load_interactions(pa.Table.from_pandas(by_range))["user_id"].tolist() == [5, 6, 7]
    by_range.to_parquet(tmp_path / "range.parquet")
    with pytest.raises(DataError, match=r"user_id is the pandas index .* frame.reset_index"):
        load_interactions(tmp_path / "range.parquet")
    # a DataFrame's index is not read, but the error says where the column went
    with pytest.raises(DataError, match=r"listing_id is the DataFrame's index.*reset_index"):
        load_listings(listings.set_index("listing_id"))


def test_a_sparse_column_is_read_as_its_values():
    listings = pd.DataFrame({"listing_id": ["a", "b", "c"], "doors": [2, 0, 4]})
    sparse = listings.astype({"doors": pd.SparseDtype(int, 0)})
    frame = load_listings(sparse)
    assert frame["doors"].tolist() == [2, 0, 4] and frame["doors"].dtype == np.int64
    assert pa.Table.from_pandas(frame).column("doors").to_pylist() == [2, 0, 4]


def test_a_category_column_of_integer_ids_holds_those_integers():
    listings = pd.DataFrame({"listing_id": pd.Categorical([10, 11, 12]), "make": list("abc")})
    events = pd.DataFrame(
        {"user_id": pd.Categorical([1, 2, 2]), "listing_id": [10, 12, 11], "timestamp": [1, 2, 3]}
    )
    loaded_listings = load_listings(listings)
    assert loaded_listings["listing_id"].tolist() == [10, 11, 12]
    assert pd.api.types.is_integer_dtype(loaded_listings["listing_id"].dtype)
    data = prepare(load_interactions(events), loaded_listings)
    assert data.report["events_used"] == 3 and list(data.listings.ids) == [10, 11, 12]
    assert list(data.users.ids) == [1, 2]


def test_events_meet_their_weights_without_case_or_spaces(tmp_path):
    path = write(
        tmp_path, "events.csv", "user_id,listing_id,timestamp,event\nu,a,1,Share\nu,b,2, share\n"
    )
    frame = load_interactions(path, {"view": 1.0, "Share": 2.0})
    assert frame["weight"].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="name one event"):
        load_interactions(path, {"Share": 2.0, " share": 3.0})


def test_titles_in_scripts_without_spaces_are_text_and_their_short_names_categories():
    rng = np.random.default_rng(0)
    words = np.array(["床垫", "北京", "实木", "九成新", "二手", "真皮", "包邮", "衣柜", "自提"])
    titles = ["".join(rng.choice(words, 4)) + str(i) for i in range(60)]
    thai = ["กรุงเทพโซฟาสภาพดีส่งฟรี" + str(i) for i in range(60)]
    listings = pd.DataFrame(
        {
            "listing_id": range(60),
            "title": titles,
            "title_th": thai,
            "city": rng.choice(["北京", "上海", "广州"], 60),
        }
    )
    kinds = {spec.name: spec.kind for spec in infer_schema(listings)}
    assert kinds == {"title": "text", "title_th": "text", "city": "categorical"}


def test_columns_named_by_numbers_are_named_by_their_text():
    listings = pd.DataFrame({"listing_id": ["a", "b"], 5: [1.0, 2.0]})
    loaded = load_listings(listings)
    assert list(loaded.columns) == ["listing_id", "5"]
    with pytest.raises(DataError, match="two columns have one name"):
        load_listings(listings.assign(**{"5": [3.0, 4.0]}))


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_segments_are_no_ids_as_a_url_path_cannot_name_them(tmp_path, dots):
    # browsers and HTTP clients drop "." and ".." from a path, %2E%2E too
    listings = write(tmp_path, "listings.csv", f"listing_id,price\na,1\n{dots},2\n")
    with pytest.raises(DataError, match="is a dot segment") as caught:
        load_listings(listings)
    assert (caught.value.file, caught.value.row, caught.value.column) == (
        str(listings), 2, "listing_id"
    )  # fmt: skip
    assert "not '.' or '..'" in str(caught.value)
    # user ids are named in paths too (/v1/users/{user_id}/recommendations)
    events = write(tmp_path, "events.csv", f"user_id,listing_id,timestamp\nu1,a,1\n{dots},a,2\n")
    with pytest.raises(DataError, match="is a dot segment") as caught:
        load_interactions(events)
    assert (caught.value.row, caught.value.column) == (2, "user_id")
    # only the whole id: dots among other characters are fine
    fine = ["...", ".a", "a.", "a..b", " . "]
    assert load_listings(pd.DataFrame({"listing_id": fine}))["listing_id"].tolist() == fine
