"""Reading interactions and listings (data/io.py): what a user's broken file turns into.

Every problem is a DataError that names the file (and the row and column where there is
one), never a bare parser, decoder or NumPy exception.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from embedrec.data.errors import DataError
from embedrec.data.ids import MAX_ID_LENGTH, id_problem, invalid_ids
from embedrec.data.io import load_interactions, load_listings, read_table

HEADER = "user_id,listing_id,timestamp\n"


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def located(error: DataError) -> tuple:
    return error.file, error.row, error.column, error.line


# ------------------------------------------------------------------ timestamps
@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_an_infinite_numeric_timestamp_names_row_and_column(bad):
    frame = pd.DataFrame(
        {"user_id": ["u", "u", "v"], "listing_id": ["a", "b", "a"], "timestamp": [1.0, 2.0, bad]}
    )
    with pytest.raises(DataError, match="timestamp is not a finite number") as caught:
        load_interactions(frame)
    assert located(caught.value) == ("<DataFrame>", 3, "timestamp", None)
    assert str(caught.value).startswith("<DataFrame>, row 3, column 'timestamp': ")


def test_an_infinite_timestamp_in_a_csv_names_its_line(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + "u,a,1\nu,b,inf\n")
    with pytest.raises(DataError, match="not a finite number") as caught:
        load_interactions(path)
    assert located(caught.value) == (str(path), 2, "timestamp", 3)
    assert f"{path}, row 2 (line 3), column 'timestamp'" in str(caught.value)


def test_a_nan_timestamp_is_a_missing_timestamp():
    frame = pd.DataFrame({"user_id": ["u", "v"], "listing_id": ["a", "a"], "timestamp": [1, None]})
    frame.attrs["source"] = "events from memory"
    with pytest.raises(DataError, match="missing timestamp") as caught:
        load_interactions(frame)
    assert located(caught.value) == ("events from memory", 2, "timestamp", None)


def test_numeric_timestamps_are_whole_epoch_seconds():
    frame = pd.DataFrame(
        {"user_id": ["u"] * 3, "listing_id": ["a", "b", "c"], "timestamp": [1.9, 2.0, 1e9]}
    )
    loaded = load_interactions(frame)
    assert loaded["timestamp"].tolist() == [1, 2, 1_000_000_000]
    assert loaded["timestamp"].dtype == np.int64


def test_epoch_milliseconds_are_refused_not_read_as_seconds(tmp_path):
    # read as seconds they would lie past the year 50,000 and fall outside every window
    frame = pd.DataFrame(
        {"user_id": ["u", "v"], "listing_id": ["a", "b"], "timestamp": [1, 1_767_225_600_000]}
    )
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    for window in ({}, {"until": "2026-12-01"}):  # the window must not skip that row
        with pytest.raises(DataError, match="1767225600000 is not epoch seconds") as caught:
            load_interactions(path, **window)
        assert located(caught.value) == (str(path), 2, "timestamp", None)
    text = write(tmp_path, "events.csv", HEADER + "u,a,1767225600\nu,b,1767225600000\n")
    with pytest.raises(DataError, match="milliseconds divided by 1000") as caught:
        load_interactions(text)
    assert located(caught.value) == (str(text), 2, "timestamp", 3)


def test_dates_past_2262_are_read_and_windows_may_end_there(tmp_path):
    # nanoseconds since 1970 end in 2262; seconds do not
    path = write(tmp_path, "events.csv", HEADER + "u,a,2026-01-01T00:00:00Z\nu,b,3026-01-01\n")
    assert load_interactions(path)["timestamp"].tolist() == [1767225600, 33324134400]
    stamps = pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True).astype("datetime64[ns, UTC]")
    parquet = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["u", "v"], "listing_id": ["a", "b"], "timestamp": stamps}).to_parquet(
        parquet
    )
    assert len(load_interactions(parquet, since="2026-01-02", until="3000-01-01")) == 1
    with pytest.raises(DataError, match="no events since 3000-01-01"):
        load_interactions(parquet, since="3000-01-01")


def test_text_timestamps_mix_iso_and_epoch_seconds(tmp_path):
    path = write(
        tmp_path,
        "events.csv",
        HEADER + "u,a,2026-01-01T00:00:00Z\nu,b,1767225600\nu,c,2026-01-01T01:00:00+01:00\n",
    )
    assert load_interactions(path)["timestamp"].tolist() == [1767225600] * 3


def test_timezone_aware_and_naive_datetimes_are_utc():
    berlin = pd.to_datetime(["2026-01-01T01:00:00", "2026-01-01T02:00:00"]).tz_localize(
        "Europe/Berlin"
    )
    naive = pd.to_datetime(["2026-01-01T00:00:00", "2026-01-01T01:00:00"])
    for stamps in (berlin, naive):
        frame = pd.DataFrame({"user_id": ["u", "u"], "listing_id": ["a", "b"], "timestamp": stamps})
        assert load_interactions(frame)["timestamp"].tolist() == [1767225600, 1767229200]


def test_an_unparseable_text_timestamp_is_quoted():
    frame = pd.DataFrame(
        {"user_id": ["u", "u"], "listing_id": ["a", "b"], "timestamp": ["1767225600", "soon"]}
    )
    with pytest.raises(DataError, match="cannot parse timestamp 'soon': use ISO-8601") as caught:
        load_interactions(frame)
    assert (caught.value.row, caught.value.column) == (2, "timestamp")


# ------------------------------------------------------------------ lines of CSV rows
LISTINGS = "listing_id,title,lat,lon\n"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('A1,"Golf\nmit\nExtras",51.0,13.7\nA2,Polo,51.0,13.7\nA3,Passat,95.0,13.7\n', 6),
        ("A1,Golf,51.0,13.7\n\n\nA2,Polo,51.0,13.7\nA3,Passat,95.0,13.7\n", 6),
        ('\nA1,"Golf\n\nGTI",51.0,13.7\n\nA2,Passat,95.0,13.7\n', 7),
    ],
    ids=["quoted-newlines", "blank-lines", "both"],
)
def test_a_csv_error_names_the_line_its_row_starts_on(tmp_path, body, line):
    path = write(tmp_path, "listings.csv", LISTINGS + body)
    row = body.strip("\n").count(",51.0,") + 1  # the bad row comes after the good ones
    with pytest.raises(DataError, match="lat must be a number") as caught:
        load_listings(path)
    assert located(caught.value) == (str(path), row, "lat", line)
    assert f"row {row} (line {line}), column 'lat'" in str(caught.value)


def test_an_error_located_in_a_csv_later_names_the_line_too(tmp_path):
    path = write(tmp_path, "listings.csv", LISTINGS + 'A1,"Golf\nGTI",51.0,13.7\nA2,Polo,x,\n')
    error = DataError("not a number: 'x'", row=2, column="lat").in_file(str(path))
    assert str(error) == f"{path}, row 2 (line 4), column 'lat': not a number: 'x'"
    # a row the file does not hold (it was changed since) has no line, not a wrong one
    assert DataError("bad", row=9, column="lat").in_file(str(path)).line is None


# ------------------------------------------------------------------ headers
@pytest.mark.parametrize(
    ("header", "column", "positions"),
    [
        ("user_id,listing_id,timestamp,event,event", "event", "columns 4 and 5"),
        ("user_id,listing_id,timestamp,user_id", "user_id", "columns 1 and 4"),
    ],
)
def test_a_column_named_twice_in_a_csv_header_is_refused(tmp_path, header, column, positions):
    # pandas renames the second (event.1), which would then be read as no column at all
    path = write(tmp_path, "events.csv", f"{header}\nu,a,2026-10-01,view,contact\n")
    with pytest.raises(DataError, match=f"names column '{column}' twice \\({positions}\\)") as e:
        load_interactions(path)
    assert (e.value.file, e.value.column) == (str(path), column)


def test_a_dataframe_with_a_column_named_twice_is_refused():
    frame = pd.DataFrame([["a", 1, 2]], columns=["listing_id", "price", "price"])
    with pytest.raises(DataError, match="two columns are named 'price'"):
        load_listings(frame)


def test_empty_unnamed_columns_are_dropped_and_said(tmp_path, caplog):
    rows = ["listing_id,make,price", "A1,VW,1000", "A2,BMW,3000"]
    path = write(tmp_path, "listings.csv", "\n".join(row + ",," for row in rows) + "\n")
    with caplog.at_level("INFO", logger="embedrec"):
        listings = load_listings(path)
    assert list(listings.columns) == ["listing_id", "make", "price"]
    assert "dropped 2 empty column(s) without a name" in caplog.text


def test_an_unnamed_column_holding_values_is_refused_naming_its_position(tmp_path):
    path = write(tmp_path, "listings.csv", "listing_id,make,,price\nA1,VW,,1\nA2,BMW,x,2\n")
    with pytest.raises(DataError, match="column 3 has no name in the header but holds") as e:
        load_listings(path)
    assert (e.value.row, e.value.line) == (2, 3)


@pytest.mark.parametrize(("separator", "called"), [(";", "';'"), ("\t", "tabs")])
def test_a_csv_separated_otherwise_than_by_commas_says_so(tmp_path, separator, called):
    text = separator.join(["listing_id", "make", "price"]) + "\n" + separator.join("AB1") + "\n"
    path = write(tmp_path, "listings.csv", text)
    with pytest.raises(DataError, match=f"seems to be separated by {called}; embedrec reads "):
        load_listings(path)


# ------------------------------------------------------------------ files that do not parse
def test_a_latin1_csv_names_the_line_and_character_of_its_first_non_utf8_byte(tmp_path):
    path = write(tmp_path, "listings.csv", "listing_id,make\na,Citroën\nb,Müller\n", "latin-1")
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_listings(path)
    assert caught.value.file == str(path)
    # the decoder's own position counts from a buffer of pandas', not from the file
    assert str(caught.value).startswith(
        f"{path}: cannot read the file: line 2, character 8: byte 0xeb is not UTF-8 text"
    )
    assert "save it as UTF-8" in str(caught.value)


def test_the_first_non_utf8_byte_is_found_past_a_block_and_in_a_compressed_file(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("embedrec.data.csvtext._BLOCK", 7)  # lines cut across blocks
    text = "listing_id,make\na,VW\nb,Škoda\nc,Müller\n"
    plain = tmp_path / "listings.csv"
    plain.write_bytes(text.encode("cp1250"))
    packed = tmp_path / "listings.csv.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8").replace(b"\xc3\xbc", b"\xfc")))
    for path, where in ((plain, "line 3, character 3: byte 0x8a"), (packed, "line 4, character 4")):
        with pytest.raises(DataError, match=where):
            load_listings(path)


def test_a_latin1_header_is_a_data_error_too(tmp_path):
    path = write(
        tmp_path, "events.csv", "user_id,listing_id,timestamp,Straße\nu,a,1,x\n", "latin-1"
    )
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_interactions(path)
    assert caught.value.file == str(path)


def test_unbalanced_quotes_are_a_data_error_naming_the_file(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + 'u,a,1\nu,"b,2\nv,c,3\n')
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_interactions(path)
    assert caught.value.file == str(path)


def test_a_row_with_too_many_fields_is_a_data_error_naming_the_file(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + "u,a,1\nu,b,2,view,extra\n")
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_interactions(path)
    assert caught.value.file == str(path)
    assert "Expected 3 fields" in str(caught.value)  # the parser says where


def test_a_corrupt_parquet_file_is_a_data_error(tmp_path):
    path = tmp_path / "listings.parquet"
    path.write_bytes(b"PAR1 but nothing else")
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_listings(path)
    assert caught.value.file == str(path)


def test_a_corrupt_gzip_csv_is_a_data_error(tmp_path):
    path = tmp_path / "events.csv.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_interactions(path)
    assert caught.value.file == str(path)


def test_file_kinds_by_extension(tmp_path):
    frame = pd.DataFrame({"listing_id": ["a", "b"], "price": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "listings.parquet")
    frame.to_parquet(tmp_path / "listings.PQ")
    with gzip.open(tmp_path / "listings.csv.gz", "wt") as handle:
        handle.write("listing_id,price\na,1\nb,2\n")
    write(tmp_path, "listings.CSV", "listing_id,price\na,1\nb,2\n")
    for name in ("listings.parquet", "listings.PQ", "listings.csv.gz", "listings.CSV"):
        table = read_table(tmp_path / name)
        assert table["listing_id"].tolist() == ["a", "b"], name
        assert table["price"].tolist() == [1.0, 2.0], name
        assert table.attrs["source"] == str(tmp_path / name)
    for name in ("listings.txt", "listings.csv.bz2", "listings"):
        path = write(tmp_path, name, "listing_id\na\n")
        with pytest.raises(DataError, match="unknown file type; use a .csv or .parquet") as e:
            read_table(path)
        assert e.value.file == str(path)


def test_a_directory_is_not_a_file(tmp_path):
    folder = tmp_path / "events.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory, expected a CSV or Parquet file") as e:
        load_interactions(folder)
    assert e.value.file == str(folder)


def test_empty_tables(tmp_path):
    empty_parquet = tmp_path / "listings.parquet"
    pd.DataFrame({"listing_id": pd.Series([], dtype=str)}).to_parquet(empty_parquet)
    with pytest.raises(DataError, match="the file holds no rows"):
        load_listings(empty_parquet)
    with pytest.raises(DataError, match="the file is empty"):
        load_listings(write(tmp_path, "listings.csv", ""))
    frame = pd.DataFrame({"listing_id": []})
    with pytest.raises(DataError, match="the table holds no rows") as caught:
        load_listings(frame)
    assert caught.value.file == "<DataFrame>"


# ------------------------------------------------------------------ ids
def test_csv_ids_are_integers_only_when_every_one_is_canonical(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + "-3,0,1\n12,999999999999999999,2\n")
    loaded = load_interactions(path)
    assert loaded["user_id"].tolist() == [-3, 12] and loaded["user_id"].dtype == np.int64
    assert loaded["listing_id"].tolist() == [0, 999_999_999_999_999_999]
    # past int64, "+5" and "05" are not how an integer id is written
    for odd in ("9223372036854775808", "-9223372036854775809", "+5", "05", "-0x", "1.0x"):
        path = write(tmp_path, "odd.csv", HEADER + f"u,{odd},1\nu,7,2\n")
        assert load_interactions(path)["listing_id"].tolist() == [odd, "7"], odd
    # "1.0" is how pandas writes a column of integers that had a missing value
    path = write(tmp_path, "floats.csv", HEADER + "u,1.0,1\nu,7,2\n")
    assert load_interactions(path)["listing_id"].tolist() == [1, 7]


@pytest.mark.parametrize(
    "ids",
    [["1234567890123456789", "7"], ["9223372036854775807", "-9223372036854775808"]],
)
def test_csv_ids_of_19_digits_that_fit_int64_are_integers(tmp_path, ids):
    path = write(tmp_path, "events.csv", HEADER + "".join(f"u,{i},1\n" for i in ids))
    loaded = load_interactions(path)["listing_id"]
    assert loaded.dtype == np.int64 and loaded.tolist() == [int(i) for i in ids]
    path = write(tmp_path, "floats.csv", HEADER + "".join(f"u,{i}.0,1\n" for i in ids))
    assert load_interactions(path)["listing_id"].tolist() == [int(i) for i in ids]


@pytest.mark.parametrize(("column", "row"), [("event", "u,a,1,,1"), ("weight", "u,a,1,view,")])
def test_an_empty_event_or_weight_is_a_missing_one(tmp_path, column, row):
    text = "user_id,listing_id,timestamp,event,weight\nu,a,1,view,1\n" + row + "\n"
    path = write(tmp_path, "events.csv", text)
    with pytest.raises(DataError, match=f"missing {column}$") as caught:
        load_interactions(path)
    assert located(caught.value) == (str(path), 2, column, 3)


def test_na_words_are_ids_but_missing_numbers(tmp_path):
    path = write(tmp_path, "listings.csv", "listing_id,price,make\nNA,n/a,NULL\nnull,1,VW\n")
    listings = load_listings(path)
    assert listings["listing_id"].tolist() == ["NA", "null"]
    assert listings["price"].isna().tolist() == [True, False]
    assert listings["make"].isna().tolist() == [True, False]


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_listing_id_in_a_frame_is_named(blank):
    frame = pd.DataFrame({"listing_id": ["a", blank, None], "price": [1, 2, 3]})
    with pytest.raises(DataError, match=r"empty listing_id \(2 such rows\)") as caught:
        load_listings(frame)
    assert (caught.value.row, caught.value.column) == (2, "listing_id")


def test_a_missing_numeric_id_is_named():
    frame = pd.DataFrame({"user_id": [1.0, np.nan], "listing_id": [1, 2], "timestamp": [1, 2]})
    with pytest.raises(DataError, match=r"empty user_id \(1 such rows\)") as caught:
        load_interactions(frame)
    assert (caught.value.row, caught.value.column) == (2, "user_id")


def test_missing_columns_are_listed_with_those_the_file_has(tmp_path):
    path = write(tmp_path, "events.csv", "user,item,when\nu,a,1\n")
    with pytest.raises(DataError) as caught:
        load_interactions(path)
    message = str(caught.value)
    assert "missing required column(s) user_id, listing_id, timestamp" in message
    assert "(the file has: user, item, when)" in message
    assert caught.value.column == "user_id"


# ------------------------------------------------------------------ weights
def test_weights_multiply_the_event_weight_by_the_weight_column():
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 4,
            "listing_id": ["a", "b", "c", "d"],
            "timestamp": [1, 2, 3, 4],
            "event": [" View", "FAVORITE ", "contact", "view"],
            "weight": [2.0, 0.5, 0.0, 1.0],
        }
    )
    assert load_interactions(frame)["weight"].tolist() == [2.0, 1.5, 0.0, 1.0]
    custom = load_interactions(frame, {"view": 0.5, "favorite": 1.0, "contact": 4.0})
    assert custom["weight"].tolist() == [1.0, 0.5, 0.0, 0.5]
    assert custom["weight"].dtype == np.float32
    plain = load_interactions(frame.drop(columns=["event", "weight"]))
    assert plain["weight"].tolist() == [1.0] * 4


def test_unknown_events_name_the_known_ones():
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u"],
            "listing_id": ["a", "b"],
            "timestamp": [1, 2],
            "event": ["view", "buy"],
        }
    )
    with pytest.raises(DataError) as caught:
        load_interactions(frame, {"view": 1.0, "call": 2.0})
    assert "unknown event 'buy'; known events: view, call" in str(caught.value)
    assert (caught.value.row, caught.value.column) == (2, "event")


@pytest.mark.parametrize("bad", ["x", -0.5, np.nan, np.inf, None, True])
def test_event_weights_must_be_finite_numbers_at_least_zero(bad):
    frame = pd.DataFrame({"user_id": ["u"], "listing_id": ["a"], "timestamp": [1]})
    with pytest.raises(ValueError) as caught:
        load_interactions(frame, {"view": 1.0, "favorite": bad})
    assert str(caught.value) == (
        f"event_weights['favorite'] must be a finite number >= 0, got {bad!r}"
    )
    assert load_interactions(frame, {"view": 0, "contact": 2})["weight"].tolist() == [1.0]


@pytest.mark.parametrize("bad", ["x", -0.5, np.nan, np.inf])
def test_a_weight_must_be_a_finite_number_at_least_zero(bad):
    frame = pd.DataFrame(
        {"user_id": ["u", "u"], "listing_id": ["a", "b"], "timestamp": [1, 2], "weight": [1, bad]}
    )
    words = "missing weight" if bad is np.nan else "weight must be a finite number >= 0, got"
    with pytest.raises(DataError, match=words) as caught:
        load_interactions(frame)
    assert (caught.value.row, caught.value.column) == (2, "weight")


@pytest.mark.parametrize(
    ("weight", "contact", "column"),
    [(1e300, 5.0, "weight"), (1e38, 5.0, "weight"), (None, 1e39, "event")],
)
def test_a_weight_beyond_float32_is_refused_not_made_infinite(weight, contact, column):
    """1e38 is a valid weight, but times a contact's 5 it no longer fits the float32 kept."""
    frame = pd.DataFrame(
        {"user_id": ["u", "u"], "listing_id": ["a", "b"], "timestamp": [1, 2]}
        | {"event": ["view", "contact"]}
    )
    if weight is not None:
        frame["weight"] = [1.0, weight]
    with pytest.raises(DataError) as caught:
        load_interactions(frame, {"view": 1.0, "contact": contact})
    assert (caught.value.row, caught.value.column) == (2, column)
    assert caught.value.message.startswith("weight ") and "is above 3.40282e+38" in str(
        caught.value
    )


def test_the_result_is_the_four_columns_with_a_fresh_index():
    frame = pd.DataFrame(
        {"user_id": ["u", "v"], "listing_id": ["a", "b"], "timestamp": [5, 6], "extra": [1, 2]},
        index=[10, 20],
    )
    loaded = load_interactions(frame)
    assert list(loaded.columns) == ["user_id", "listing_id", "timestamp", "weight"]
    assert loaded.index.tolist() == [0, 1]
    assert loaded.attrs["source"] == "<DataFrame>"


# ------------------------------------------------------------------ listings
def test_listing_numbers_may_be_missing_but_not_infinite():
    frame = pd.DataFrame(
        {
            "listing_id": ["a", "b", "c"],
            "price": [1.0, np.nan, -np.inf],
            "sold": [True, False, True],
        }
    )
    with pytest.raises(DataError, match="non-finite number -inf") as caught:
        load_listings(frame)
    assert (caught.value.row, caught.value.column) == (3, "price")
    fine = load_listings(frame.iloc[:2])
    assert fine["price"].isna().tolist() == [False, True]


def test_nullable_integer_columns_with_missing_values_are_accepted():
    frame = pd.DataFrame({"listing_id": ["a", "b"], "year": pd.array([2019, None], dtype="Int64")})
    assert load_listings(frame)["year"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("lat", 90.5, "lat must be a number in [-90, 90], got 90.5"),
        ("lat", -91.0, "lat must be a number in [-90, 90]"),
        ("lon", 180.5, "lon must be a number in [-180, 180], got 180.5"),
        ("lon", "east", "lon must be a number in [-180, 180], got 'east'"),
    ],
)
def test_coordinates_must_be_on_the_globe(column, value, words):
    frame = pd.DataFrame({"listing_id": ["a", "b"], "lat": [51.0, 52.0], "lon": [13.0, 12.0]})
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    with pytest.raises(DataError) as caught:
        load_listings(frame)
    assert words in str(caught.value)
    assert (caught.value.row, caught.value.column) == (2, column)


def test_numbers_in_messages_are_plain_not_numpy_reprs():
    listings = pd.DataFrame({"listing_id": ["a"], "lat": [95.0], "lon": [13.0]})
    with pytest.raises(DataError) as caught:
        load_listings(listings)
    assert str(caught.value).endswith("lat must be a number in [-90, 90], got 95.0")
    events = pd.DataFrame(
        {"user_id": ["u"], "listing_id": ["a"], "timestamp": [1], "weight": [-1.0]}
    )
    with pytest.raises(DataError) as caught:
        load_interactions(events)
    assert str(caught.value).endswith("weight must be a finite number >= 0, got -1.0")


def test_coordinates_at_the_limits_and_missing_are_valid():
    frame = pd.DataFrame(
        {
            "listing_id": ["a", "b", "c"],
            "latitude": [90.0, -90.0, None],
            "longitude": [180.0, -180.0, None],
        }
    )
    assert len(load_listings(frame)) == 3


@pytest.mark.parametrize(
    ("lat", "lon", "words", "column"),
    [
        ("lat", "lon", "lon is missing where lat is given", "lon"),
        ("latitude", "longitude", "latitude is missing where longitude is given", "latitude"),
    ],
)
def test_half_a_coordinate_pair_is_refused_naming_the_missing_half(
    tmp_path, lat, lon, words, column
):
    path = tmp_path / "listings.csv"
    half = "c,52.0," if column == lon else "c,,12.0"
    path.write_text(f"listing_id,{lat},{lon}\na,51.0,13.0\nb,,\n{half}\n")
    with pytest.raises(DataError) as caught:
        load_listings(path)
    assert words in str(caught.value)
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), 3, column)


def test_listings_get_a_fresh_index_and_keep_their_columns():
    frame = pd.DataFrame({"listing_id": ["a", "b"], "price": [1, 2]}, index=[5, 7])
    loaded = load_listings(frame)
    assert loaded.index.tolist() == [0, 1]
    assert list(loaded.columns) == ["listing_id", "price"]
    assert loaded.attrs["source"] == "<DataFrame>"


# ------------------------------------------------------------------ the id rules
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("a/b", "contains '/'"),
        ("x" * (MAX_ID_LENGTH + 1), f"is longer than {MAX_ID_LENGTH} characters"),
        ("tab\there", "contains the control character U+0009"),
    ],
    ids=["slash", "too long", "tab"],
)
def test_a_csv_id_breaking_the_rules_is_named_by_file_row_and_column(tmp_path, bad, words):
    path = write(tmp_path, "listings.csv", f"listing_id,price\nok,1\n{bad},2\nok2,3\n")
    with pytest.raises(DataError) as caught:
        load_listings(path)
    error = caught.value
    assert (error.file, error.row, error.line, error.column) == (str(path), 2, 3, "listing_id")
    assert words in str(error) and "(1 such rows)" in str(error)


@pytest.mark.parametrize("bad", ["nul\x00", "\x7fdel", "c1\x85", "line\nbreak", "cr\r"])
def test_control_characters_in_parquet_ids_are_refused(tmp_path, bad):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {"user_id": ["u1", "u2", bad], "listing_id": ["a", "b", "c"], "timestamp": [1, 2, 3]}
    ).to_parquet(path)
    with pytest.raises(DataError, match="contains the control character U[+]00") as caught:
        load_interactions(path)
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), 3, "user_id")


def test_ids_within_the_rules_load_as_given(tmp_path):
    fine = ["Wagen 1 ä", " 7 ", "a\\b", "x" * MAX_ID_LENGTH, "🚗", "a:b?c#d%2F", "NA"]
    frame = pd.DataFrame({"listing_id": fine, "price": range(len(fine))})
    assert load_listings(frame)["listing_id"].tolist() == fine


def test_the_column_check_and_the_single_id_check_agree_on_every_character():
    # the column is judged by Arrow's regular expressions, a request's id by Python's
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for ids in (characters, [f"a{c}b" for c in characters]):
        column = invalid_ids(pd.Series(ids, dtype=object))
        single = np.array([id_problem(i) is not None for i in ids])
        assert np.array_equal(column, single)
    refused = {c for c, bad in zip(characters, column, strict=True) if bad}
    assert refused == {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | {"/"}
    # a slice of a column, several Arrow chunks, missing values and no rows at all
    ids = pd.Series(
        ["ok", "a/b", "\x85", "fine", None, "x" * 257, " ", "é\x7f", "..", "..."], dtype="str"
    )
    expected = [False, True, True, False, True, True, True, True, True, False]
    assert invalid_ids(ids).tolist() == expected
    assert invalid_ids(ids.iloc[2:]).tolist() == expected[2:]
    assert invalid_ids(pd.concat([ids.iloc[3:], ids.iloc[:3]])).tolist() == [
        *expected[3:], *expected[:3]
    ]  # fmt: skip
    assert invalid_ids(pd.Series([], dtype=object)).tolist() == []


@pytest.mark.parametrize(
    ("stamps", "looks"),
    [
        ("20260824\n20260825", "YYYYMMDD"),
        ("46258.591134\n46259.25", "serial day"),
    ],
)
def test_dates_written_as_numbers_are_refused_not_read_as_1970(tmp_path, stamps, looks):
    rows = "".join(f"u,a,{s}\n" for s in stamps.splitlines())
    path = tmp_path / "events.csv"
    path.write_text("user_id,listing_id,timestamp\n" + rows)
    with pytest.raises(DataError, match=rf"row 1 .*column 'timestamp'.*{looks}.*1970"):
        load_interactions(path)
    # epoch seconds, small test numbers and a mix are read as they are
    for good in ("1782288000\n1782374400", "1\n2", "20260824\n1782288000"):
        path.write_text(
            "user_id,listing_id,timestamp\n" + "".join(f"u,a,{s}\n" for s in good.splitlines())
        )
        assert len(load_interactions(path)) == 2
