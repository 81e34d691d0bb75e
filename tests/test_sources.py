"""Data where it lives (data/sources.py through data/io.py): folders of Parquet files with
day partitions, globs, URIs, a time window pushed down to the reader, and errors that name
the file, the row within it and the column."""

from __future__ import annotations

import datetime
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embedrec.cli import main
from embedrec.data.errors import DataError
from embedrec.data.io import load_interactions, load_listings
from embedrec.data.sources import Window
from embedrec.recommender import Recommender

DAYS = [f"2026-11-0{d}" for d in range(1, 7)]
ROWS_PER_FILE = 12


def events_of(day: str, part: int) -> pd.DataFrame:
    """Rows in time order through the day, ids that say where they were written."""
    start = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12 * part)
    rows = np.arange(ROWS_PER_FILE)
    return pd.DataFrame(
        {
            "user_id": [f"u{(r + part) % 5}" for r in rows],
            "listing_id": [f"{day}/{part}/{r}".replace("/", "-") for r in rows],
            "timestamp": start + pd.to_timedelta(rows * 3600, unit="s"),
            "event": ["view"] * ROWS_PER_FILE,
        }
    )


@pytest.fixture
def by_day(tmp_path):
    """Six day folders with two files each; row groups of four rows."""
    root = tmp_path / "events"
    for day in DAYS:
        folder = root / f"date={day}"
        folder.mkdir(parents=True)
        for part in (0, 1):
            table = pa.Table.from_pandas(events_of(day, part), preserve_index=False)
            pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=4)
    (root / "_SUCCESS").write_text("")  # written by Spark; not data
    return root


def every_event() -> pd.DataFrame:
    return pd.concat([events_of(day, part) for day in DAYS for part in (0, 1)])


def seconds(stamps: pd.Series) -> np.ndarray:
    return (stamps.astype("datetime64[ns, UTC]").astype(np.int64) // 10**9).to_numpy()


def test_a_folder_is_read_whole_in_file_order(by_day):
    loaded = load_interactions(by_day)
    expected = every_event()
    assert loaded["listing_id"].tolist() == expected["listing_id"].tolist()
    assert loaded["timestamp"].tolist() == seconds(expected["timestamp"]).tolist()
    assert list(loaded.columns) == ["user_id", "listing_id", "timestamp", "weight"]
    assert loaded.attrs["rows_read"] == len(expected) and loaded.attrs["files_read"] == 12


def test_a_glob_and_a_file_uri_read_what_they_name(by_day):
    glob = load_interactions(f"{by_day}/date=2026-11-0[23]/*.parquet")
    assert sorted(set(glob["listing_id"].str[:10])) == ["2026-11-02", "2026-11-03"]
    assert len(glob) == 4 * ROWS_PER_FILE
    one_part = load_interactions(f"{by_day}/**/part-1.parquet")
    assert len(one_part) == 6 * ROWS_PER_FILE
    assert set(one_part["listing_id"].str[11]) == {"1"}
    uri = load_interactions(by_day.as_uri())
    assert uri["listing_id"].tolist() == load_interactions(by_day)["listing_id"].tolist()


def test_partition_folders_become_columns(tmp_path):
    root = tmp_path / "listings"
    for region, ids in (("north", ["a", "b"]), ("south", ["c"])):
        (root / f"region={region}").mkdir(parents=True)
        table = pa.table({"listing_id": ids, "price": [1.0] * len(ids)})
        pq.write_table(table, root / f"region={region}" / "part.parquet")
    listings = load_listings(root)
    assert listings["region"].tolist() == ["north", "north", "south"]
    assert listings["listing_id"].tolist() == ["a", "b", "c"]


def test_the_window_keeps_since_up_to_until(by_day):
    since, until = "2026-11-02T06:00:00Z", "2026-11-04"
    loaded = load_interactions(by_day, since=since, until=until)
    stamps = seconds(every_event()["timestamp"])
    low, high = pd.Timestamp(since).timestamp(), pd.Timestamp(until, tz="UTC").timestamp()
    assert len(loaded) == int(((stamps >= low) & (stamps < high)).sum()) > 0
    assert loaded["timestamp"].min() >= low and loaded["timestamp"].max() < high
    # only the two days' files are opened; the rows read include those of their row groups
    # before 06:00 on the 2nd that lie outside the window
    assert loaded.attrs["files_read"] == 4
    assert len(loaded) < loaded.attrs["rows_read"] <= 4 * ROWS_PER_FILE


def test_partitions_outside_the_window_are_never_opened(by_day):
    corrupt = by_day / "date=2026-11-01" / "part-0.parquet"
    corrupt.write_bytes(b"PAR1 and nothing a reader could use")
    with pytest.raises(DataError, match="cannot read the file") as caught:
        load_interactions(by_day)
    assert caught.value.file == str(corrupt)
    loaded = load_interactions(by_day, since="2026-11-02")
    assert loaded["listing_id"].str[:10].min() == "2026-11-02"


def test_row_groups_outside_the_window_are_never_read(by_day):
    # an empty user_id in the last row group of a file (rows 9-12, 20:00 to 23:00)
    path = by_day / "date=2026-11-03" / "part-0.parquet"
    frame = events_of("2026-11-03", 0)
    frame.loc[10, "user_id"] = ""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=4)
    with pytest.raises(DataError) as caught:
        load_interactions(by_day)
    assert (caught.value.file, caught.value.row, caught.value.column) == (
        str(path),
        11,
        "user_id",
    )
    assert f"{path}, row 11, column 'user_id': empty user_id" in str(caught.value)
    morning = load_interactions(by_day, since="2026-11-03", until="2026-11-03T08:00:00Z")
    assert len(morning) == 8


def test_files_that_write_timestamps_in_other_zones_or_none_read_as_one_table(by_day):
    # a writer that began to write zones, or wrote a partition in local time: the same
    # instants (a time without a zone is UTC), and the window prunes each file's row groups
    for day, zone in (("2026-11-02", None), ("2026-11-03", "Europe/Berlin")):
        for part in (0, 1):
            frame = events_of(day, part)
            stamps = frame["timestamp"]
            frame["timestamp"] = stamps.dt.tz_convert(zone) if zone else stamps.dt.tz_localize(None)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, by_day / f"date={day}" / f"part-{part}.parquet", row_group_size=4)
    loaded = load_interactions(by_day)
    assert loaded["timestamp"].tolist() == seconds(every_event()["timestamp"]).tolist()
    since, until = "2026-11-02T20:00:00Z", "2026-11-03T04:00:00Z"
    window = load_interactions(by_day, since=since, until=until)
    stamps = seconds(every_event()["timestamp"])
    low, high = pd.Timestamp(since).timestamp(), pd.Timestamp(until).timestamp()
    assert len(window) == int(((stamps >= low) & (stamps < high)).sum()) > 0
    # one row group of four rows each of the naive 2nd and of the 3rd in Berlin time: the
    # others lie outside the window
    assert window.attrs["files_read"] == 2 and window.attrs["rows_read"] == 8


def test_an_error_in_a_later_file_names_that_file_its_row_and_column(by_day):
    path = by_day / "date=2026-11-05" / "part-1.parquet"
    frame = events_of("2026-11-05", 1)
    frame["event"] = frame["event"].astype(object)
    frame.loc[6, "event"] = "purchase"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=4)
    with pytest.raises(DataError, match="unknown event 'purchase'") as caught:
        load_interactions(by_day)
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), 7, "event")
    assert caught.value.line is None


def test_a_duplicate_listing_in_another_file_names_that_file_and_row(tmp_path):
    root = tmp_path / "listings"
    root.mkdir()
    pq.write_table(pa.table({"listing_id": ["a", "b", "c"]}), root / "0.parquet")
    pq.write_table(pa.table({"listing_id": ["d", "b"]}), root / "1.parquet")
    with pytest.raises(DataError, match="duplicate listing_id 'b'") as caught:
        load_listings(root)
    assert (caught.value.file, caught.value.row) == (str(root / "1.parquet"), 2)


def test_files_that_disagree_are_named(tmp_path):
    root = tmp_path / "events"
    root.mkdir()
    good = events_of(DAYS[0], 0)
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False), root / "0.parquet")
    pq.write_table(pa.table({"user_id": ["u"], "listing_id": ["a"]}), root / "1.parquet")
    with pytest.raises(DataError, match="missing required column") as caught:
        load_interactions(root)
    assert (caught.value.file, caught.value.column) == (str(root / "1.parquet"), "timestamp")
    numbers = good.assign(user_id=np.arange(len(good)))
    pq.write_table(pa.Table.from_pandas(numbers, preserve_index=False), root / "1.parquet")
    with pytest.raises(DataError, match="column types do not match") as caught:
        load_interactions(root)
    assert caught.value.file == str(root / "1.parquet")


def test_missing_paths_and_empty_globs_are_named(tmp_path, by_day):
    with pytest.raises(DataError, match="not found") as caught:
        load_interactions(tmp_path / "absent")
    assert caught.value.file == str(tmp_path / "absent")
    with pytest.raises(DataError, match="no files match"):
        load_interactions(f"{by_day}/date=2027-*/*.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet files in the folder"):
        load_listings(tmp_path / "empty")
    # a nightly run on a day whose partition is missing: no file is opened, and it says so
    missing = "no events since 2026-11-03.*: none of its partitions .* lies in that window"
    shutil.rmtree(by_day / "date=2026-11-03")
    with pytest.raises(DataError, match=missing) as caught:
        load_interactions(by_day, since="2026-11-03", until="2026-11-04")
    assert caught.value.file == str(by_day)
    # a row group read, but no event of the window in it: the rows read are counted
    with pytest.raises(DataError, match=r"no events since 2026-11-02T09:30.* \(4 rows read\)"):
        load_interactions(by_day, since="2026-11-02T09:30", until="2026-11-02T09:31")
    with pytest.raises(DataError, match="no events since 2027-01-01"):
        load_interactions(by_day, since="2027-01-01")
    with pytest.raises(ValueError, match="since: cannot read 'yesterday'"):
        load_interactions(by_day, since="yesterday")
    with pytest.raises(ValueError, match="must be earlier than until"):
        load_interactions(by_day, since="2026-11-03", until="2026-11-02")


@pytest.mark.parametrize("text", ["01.10.2026", "10/01/2026", "today", "now", "Dec 1 2026"])
def test_a_window_bound_that_is_no_iso_date_is_refused(text):
    # pandas would read these, "01.10.2026" month first as January 10
    with pytest.raises(ValueError, match=rf"until: cannot read '{text}' .*ISO-8601"):
        Window.parse(until=text)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-10-01", "2026-10-01T00:00:00Z"),
        ("2026-10-01T12:30", "2026-10-01T12:30:00Z"),
        ("2026-10-01T12:30:00Z", "2026-10-01T12:30:00Z"),
        ("2026-10-01 12:30:00+02:00", "2026-10-01T10:30:00Z"),
    ],
)
def test_window_bounds_are_iso_dates_or_times_utc_unless_zoned(text, moment):
    assert Window.parse(since=text).since == int(pd.Timestamp(moment).timestamp())


def test_an_existing_path_with_glob_characters_is_read_as_named(tmp_path):
    events = pd.DataFrame({"user_id": ["u"], "listing_id": ["a"], "timestamp": [1]})
    events.to_csv(tmp_path / "events[1].csv", index=False)
    events.to_parquet(tmp_path / "events[2].parquet")
    for name in ("events[1].csv", "events[2].parquet"):
        assert load_interactions(tmp_path / name)["listing_id"].tolist() == ["a"]


def test_a_csv_is_read_through_a_file_uri(tmp_path):
    path = tmp_path / "my events.csv"
    path.write_text("user_id,listing_id,timestamp\nu,a,1\nu,b,soon\n")
    uri = path.as_uri()
    with pytest.raises(DataError, match="cannot parse timestamp 'soon'") as caught:
        load_interactions(uri)
    assert (caught.value.file, caught.value.row, caught.value.line) == (uri, 2, 3)
    path.write_text("user_id,listing_id,timestamp\nu,a,1\n")
    assert load_interactions(uri).attrs["source"] == uri


@pytest.mark.parametrize("source", [{"listing_id": ["a"]}, [("a",)], 5])
def test_a_source_that_is_no_path_or_dataframe_is_a_type_error(source):
    # as text, a dict would be taken for a path: a broken glob
    for load, argument in ((load_listings, "listings"), (load_interactions, "interactions")):
        with pytest.raises(TypeError, match=f"{argument}: expected a path, a URI, a glob, a pan"):
            load(source)


def test_a_pyarrow_table_is_read_as_its_dataframe():
    table = pa.table({"listing_id": ["a", "b"], "price": [1.0, 2.0]})
    assert load_listings(table)["listing_id"].tolist() == ["a", "b"]


def test_an_unknown_scheme_is_an_error_listing_the_known_ones():
    with pytest.raises(DataError, match="unknown URI scheme 'ftp'; known: file://, s3://"):
        load_interactions("ftp://example.org/events/")


def test_a_missing_cloud_filesystem_names_the_extra(monkeypatch):
    # as on a pyarrow built without S3, with the cloud extra not installed
    monkeypatch.setitem(sys.modules, "pyarrow._s3fs", None)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(DataError, match=r"pip install 'embedrec\[cloud\]'") as caught:
        load_interactions("s3://bucket/events/")
    assert caught.value.file == "s3://bucket/events/"


def test_fit_takes_the_window_and_counts_what_it_read(tmp_path, by_day):
    listings = pd.DataFrame({"listing_id": every_event()["listing_id"].unique()})
    recommender = Recommender(model="mf", dim=4, epochs=1, validation_fraction=0, seed=0)
    recommender.fit(by_day, listings, since="2026-11-05")
    assert recommender.report_["events_read"] == 2 * 2 * ROWS_PER_FILE
    assert recommender.report_["files_read"] == 4


def test_train_on_a_partitioned_folder_then_similar(tmp_path):
    runner = CliRunner()
    cars = tmp_path / "cars"
    result = runner.invoke(main, ["generate", "cars", "--out", str(cars), "--size", "tiny"])
    assert result.exit_code == 0, result.output
    events = pq.read_table(cars / "interactions.parquet").to_pandas()
    events["date"] = events["timestamp"].dt.strftime("%Y-%m-%d")
    pq.write_to_dataset(
        pa.Table.from_pandas(events, preserve_index=False),
        tmp_path / "events",
        partition_cols=["date"],
    )
    days = sorted(events["date"].unique())
    since = days[len(days) // 3]
    model = tmp_path / "model"
    args = ["train", "--interactions", str(tmp_path / "events"), "--listings"]
    args += [str(cars / "listings.parquet"), "--out", str(model), "--epochs", "2"]
    result = runner.invoke(main, [*args, "--since", since], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    query = events.loc[events["date"] >= since, "listing_id"].iloc[0]
    result = runner.invoke(main, ["similar", str(model), query, "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert '"results"' in result.output and query in result.output
    trained = Recommender.load(model)
    assert trained.report_["events_read"] == int((events["date"] >= since).sum())
    later = days[-7]
    args = ["evaluate", str(model), "--interactions", str(tmp_path / "events"), "--json"]
    result = runner.invoke(main, [*args, "--since", later], catch_exceptions=False)
    # trained on those days: every event was seen, so nothing is scored (status 2)
    assert result.exit_code == 2 and "nothing to evaluate" in result.stderr, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["counts"]["events"] == int((events["date"] >= later).sum())


def test_an_optional_column_only_some_files_have_is_absent_from_the_others(tmp_path):
    events = pd.DataFrame(
        {"user_id": ["u"] * 4, "listing_id": list("abcd"), "timestamp": [1, 2, 3, 4]}
    )
    first, second = tmp_path / "date=2026-01-01", tmp_path / "date=2026-01-02"
    first.mkdir(), second.mkdir()
    events.iloc[:2].to_parquet(first / "part-0.parquet")  # neither weight nor event
    events.iloc[2:].assign(weight=2.0, event=["contact", "view"]).to_parquet(
        second / "part-0.parquet"
    )
    loaded = load_interactions(tmp_path)
    assert loaded["weight"].tolist() == [1.0, 1.0, 10.0, 2.0]
    # a missing value in a file that has the column is still an error, named where it is
    events.iloc[2:].assign(weight=[2.0, None]).to_parquet(second / "part-0.parquet")
    with pytest.raises(DataError) as error:
        load_interactions(tmp_path)
    assert error.value.file.endswith("date=2026-01-02/part-0.parquet")
    assert error.value.row == 2 and error.value.column == "weight"


def test_a_day_partition_that_is_no_date_is_named(tmp_path):
    events = pd.DataFrame({"user_id": ["u"], "listing_id": ["a"], "timestamp": [1]})
    for day in ("2026-02-28", "2026-02-30"):
        (tmp_path / f"date={day}").mkdir()
        events.to_parquet(tmp_path / f"date={day}" / "part-0.parquet")
    with pytest.raises(DataError, match=r"partition date=2026-02-30 is no date") as error:
        load_interactions(tmp_path, since="2026-01-01")
    assert "date=2026-02-30" in error.value.file


def test_an_empty_window_bound_is_refused_and_a_date_is_midnight_utc():
    # an unset variable in a nightly job (--since "$DAY") must not read every day
    for text in ("", "  "):
        with pytest.raises(ValueError, match="since: empty"):
            Window.parse(since=text)
    midnight = int(pd.Timestamp("2026-10-01T00:00:00Z").timestamp())
    assert Window.parse(since=datetime.date(2026, 10, 1)).since == midnight
