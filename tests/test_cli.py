"""The embedrec command as users run it: a real process for errors, CliRunner for the rest."""

from __future__ import annotations

import datetime
import json
import shutil
import signal
import subprocess
import sys
import time

import click
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embedrec.cli import CutOffs, _cells, _read_config, format_table, main
from embedrec.data.schema import SchemaConfig

COMMANDS = [
    "generate",
    "generate cars",
    "train",
    "similar",
    "recommend",
    "embed",
    "evaluate",
    "plot",
    "inspect",
    "demo",
]


def run(*args: str) -> str:
    """What the command printed on stdout (its notes go to stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="session")
def cars(tmp_path_factory):
    out = tmp_path_factory.mktemp("cars")
    run("generate", "cars", "--out", str(out), "--size", "tiny", "--seed", "3")
    return out


@pytest.fixture(scope="session")
def model_dir(cars, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "hybrid"
    run(
        "train",
        "--interactions",
        str(cars / "interactions.parquet"),
        "--listings",
        str(cars / "listings.parquet"),
        "--out",
        str(out),
        "--epochs",
        "4",
    )
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    assert "Usage:" in run(*command.split(), "--help")


def test_generate_is_deterministic(cars, tmp_path):
    run("generate", "cars", "--out", str(tmp_path), "--size", "tiny", "--seed", "3")
    for name in ("listings", "interactions", "users"):
        a = pd.read_parquet(cars / f"{name}.parquet")
        b = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_similar_json_one_line_per_query_and_unknown_ids(model_dir):
    output = run("similar", str(model_dir), "qashqai-dresden", "no such car", "-k", "4", "--json")
    lines = [json.loads(line) for line in output.strip().splitlines()]
    assert [line["query"] for line in lines] == ["qashqai-dresden", "no such car"]
    assert len(lines[0]["results"]) == 4
    assert {"listing_id", "score", "make", "price", "city"} <= set(lines[0]["results"][0])
    assert "unknown listing_id" in lines[1]["error"]


@pytest.mark.slow
def test_filters_apply(model_dir):
    output = run(
        "similar",
        str(model_dir),
        "qashqai-dresden",
        "-k",
        "5",
        "--json",
        "--filter",
        "price<=15000",
        "--filter",
        "make=Volkswagen,Opel",
    )
    results = json.loads(output)["results"]
    assert results and all(
        r["price"] <= 15000 and r["make"] in ("Volkswagen", "Opel") for r in results
    )


@pytest.mark.slow
def test_recommend_users_and_sessions(model_dir, cars):
    user = pd.read_parquet(cars / "interactions.parquet")["user_id"].iloc[0]
    output = run("recommend", str(model_dir), user, "ghost", "--json", "-k", "3")
    known, unknown = (json.loads(line) for line in output.strip().splitlines())
    assert len(known["results"]) == 3 and "unknown user_id" in unknown["error"]
    output = run("recommend", str(model_dir), "--session", "qashqai-dresden", "--json")
    session = json.loads(output)
    assert session["query"] == ["qashqai-dresden"] and len(session["results"]) == 10
    assert "qashqai-dresden" not in [r["listing_id"] for r in session["results"]]


def test_a_repeated_session_option_takes_each_id_whole(model_dir):
    def session(*args: str) -> tuple[dict, str]:
        result = CliRunner().invoke(main, ["recommend", str(model_dir), *args, "--json", "-k", "2"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout), result.stderr

    both, _ = session("--session", " qashqai-dresden , NOPE")  # one value: split and trimmed
    assert both["query"] == ["qashqai-dresden", "NOPE"]
    # repeated: each value whole, commas and spaces kept, as ids may hold them
    answer, note = session("--session", "qashqai-dresden", "--session", " a, b ")
    assert answer["query"] == ["qashqai-dresden", " a, b "]
    assert answer["unknown"] == [" a, b "] and "' a, b '" in note
    assert [r["listing_id"] for r in answer["results"]] == [
        r["listing_id"] for r in both["results"]
    ]


def test_exclude_takes_each_id_whole_when_repeated_and_splits_one_value(model_dir, cars, tmp_path):
    # a catalogue whose ids hold commas and spaces, as string ids may
    listings = pd.read_parquet(cars / "listings.parquet")
    odd = ["Flat 3, Köln", " a, b "]
    listings.loc[listings.index[:2], "listing_id"] = odd
    catalogue = tmp_path / "odd.parquet"
    listings.to_parquet(catalogue)

    def found(command: str, query: str, *args: str) -> list:
        asked = ["--session", query] if command == "recommend" else [query]
        options = ["--listings", str(catalogue), "--json", "-k", "1000"]
        output = run(command, str(model_dir), *asked, *options, *args)
        return [r["listing_id"] for r in json.loads(output)["results"]]

    for command in ("similar", "recommend"):
        everything = found(command, "qashqai-dresden")
        assert set(odd) <= set(everything)
        # repeated: each value whole; an id that is not in the catalogue excludes nothing
        repeated = ["--exclude", odd[0], "--exclude", odd[1], "--exclude", "Flat 3"]
        whole = found(command, "qashqai-dresden", *repeated)
        assert whole == [i for i in everything if i not in odd]
        # one value: the ids between its commas, trimmed (the form without commas in ids)
        first, second = [i for i in everything if i not in odd][:2]
        split = found(command, "qashqai-dresden", "--exclude", f" {first} ,{second}")
        assert split == [i for i in everything if i not in (first, second)]
        # --filter exclude=... still reads ids between commas
        same = found(command, "qashqai-dresden", "--filter", f"exclude={first},{second}")
        assert same == split
    nothing = CliRunner().invoke(main, ["similar", str(model_dir), "x", "--exclude", " , "])
    assert nothing.exit_code == 2 and "--exclude names no listing id" in nothing.output


@pytest.mark.slow
def test_catalogue_with_new_listings_is_embedded_and_searchable(model_dir, cars, tmp_path):
    listings = pd.read_parquet(cars / "listings.parquet")
    new = listings[listings["listing_id"] == "qashqai-dresden"].copy()
    new["listing_id"] = "brand new Qashqai ü"
    catalogue = pd.concat([listings.iloc[:200], new], ignore_index=True)
    path = tmp_path / "today.csv"
    catalogue.to_csv(path, index=False)
    output = run(
        "similar",
        str(model_dir),
        "brand new Qashqai ü",
        "--listings",
        str(path),
        "--json",
        "-k",
        "3",
    )
    result = json.loads(output)
    assert len(result["results"]) == 3
    allowed = set(catalogue["listing_id"])
    assert {r["listing_id"] for r in result["results"]} <= allowed
    out = tmp_path / "vectors.parquet"
    run("embed", str(model_dir), "--listings", str(path), "--out", str(out))
    table = pq.read_table(out)
    assert table.num_rows == len(catalogue)
    assert len(table.column("embedding")[0]) == 32


@pytest.mark.slow
def test_bad_catalogue_and_listings_errors_name_the_file(model_dir, cars, tmp_path):
    listings = pd.read_parquet(cars / "listings.parquet")
    no_make = tmp_path / "no_make.parquet"
    listings.drop(columns="make").to_parquet(no_make)
    bad_price = tmp_path / "bad_price.csv"
    listings.astype({"price": object}).assign(
        price=lambda t: t["price"].mask(t.index == 2, "cheap")
    ).to_csv(bad_price, index=False)
    out = str(tmp_path / "o.parquet")
    result = CliRunner().invoke(
        main, ["embed", str(model_dir), "--listings", str(no_make), "--out", out]
    )
    assert result.exit_code == 2
    assert f"error: {no_make}, column 'make': listings table has no column 'make'" in result.output
    cheap = f"error: {bad_price}, row 3 (line 4), column 'price': not a number: 'cheap'"
    for args in (
        ["embed", str(model_dir), "--listings", str(bad_price), "--out", out],
        ["similar", str(model_dir), "qashqai-dresden", "--listings", str(bad_price)],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and cheap in result.output, (args, result.output)


@pytest.fixture(scope="session")
def time_split(cars, tmp_path_factory):
    """A model trained on the first 80% of events and the later 20% to evaluate it on."""
    out = tmp_path_factory.mktemp("split")
    events = pd.read_parquet(cars / "interactions.parquet").sort_values("timestamp")
    cut = int(len(events) * 0.8)
    events.iloc[:cut].to_parquet(out / "early.parquet")
    events.iloc[cut:].to_parquet(out / "late.parquet")
    listings = str(cars / "listings.parquet")
    early = str(out / "early.parquet")
    run("train", "--interactions", early, "--listings", listings, "--out", str(out / "model"))
    return out / "model", out / "late.parquet"


@pytest.mark.slow
def test_evaluate_reports_warm_and_cold(time_split):
    model, late = time_split
    report = json.loads(run("evaluate", str(model), "--interactions", str(late), "--json"))
    assert {"overall", "warm", "counts"} <= set(report)
    assert report["counts"]["events"] > 0 and report["overall"]["users"] > 10
    assert 0 < report["overall"]["recall@10"] < 1
    assert 0 < report["overall"]["recall@10_se"] < report["overall"]["recall@10"]


@pytest.mark.slow
def test_evaluate_on_training_events_counts_what_it_cannot_score_and_writes_strict_json(
    model_dir, cars
):
    # every test event is a training event: each user's listings were all seen, none scored
    args = ["evaluate", str(model_dir), "--interactions", str(cars / "interactions.parquet")]
    result = CliRunner().invoke(main, [*args, "-k", "5", "--json"], catch_exceptions=False)
    # the report is printed, and the status says that nothing was scored
    assert result.exit_code == 2, result.output
    json_line = next(line for line in result.output.splitlines() if line.startswith("{"))

    def bare(constant: str) -> None:
        raise AssertionError(f"not JSON: bare {constant}")

    report = json.loads(json_line, parse_constant=bare)
    counts = report["counts"]
    assert report["overall"]["users"] == 0 and report["overall"]["recall@5"] is None
    assert counts["events_skipped_seen_in_training"] == counts["events"] > 0
    assert counts["users_skipped_all_seen"] == counts["users"] > 0
    note = (
        f"note: {counts['events']:,} test events were on listings their user already viewed in "
        f"training and are not scored"
    )
    assert note in result.output
    table = CliRunner().invoke(main, [*args, "-k", "5"], catch_exceptions=False).output
    assert note in table and "nan" not in table
    assert f"{counts['users']:,} of {counts['users']:,} users had none left" in table
    assert (
        f"error: nothing to evaluate: no user or session pair in {counts['events']:,} events "
        f"(skipped: {counts['events']:,} seen in training"
    ) in table


@pytest.mark.slow
def test_evaluate_of_events_no_known_user_made_counts_them_and_scores_none(
    model_dir, cars, tmp_path
):
    events = pd.read_parquet(cars / "interactions.parquet").iloc[:200]
    new_users = tmp_path / "new-users.parquet"
    events.assign(user_id="new " + events["user_id"].astype(str)).to_parquet(new_users)
    args = ["evaluate", str(model_dir), "--interactions", str(new_users), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    # no user is scored, but the sessions' pairs judge similar listings: no error
    assert result.exit_code == 0, result.output
    report = json.loads(next(x for x in result.output.splitlines() if x.startswith("{")))
    assert report["overall"]["users"] == 0 and report["similar"]["overall"]["pairs"] > 0
    assert report["counts"]["events_skipped_unknown_user"] == report["counts"]["events"] == 200


def test_cut_offs_follow_the_rule_of_evaluate():
    assert CutOffs().convert("5, 20,5", None, None) == (5, 20)
    for bad in ("0", "5,", "-3", "5.0", "x"):
        with pytest.raises(click.BadParameter, match="whole numbers from 1 up"):
            CutOffs().convert(bad, None, None)


@pytest.mark.slow
def test_evaluate_prints_every_metric_with_its_standard_error(time_split):
    model, late = time_split
    output = run("evaluate", str(model), "--interactions", str(late), "-k", "5,20")
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["metric", "overall", "warm"]
    rows = {line.split()[0]: line for line in lines[1:]}
    for k in (5, 20):
        for name in ("recall", "ndcg", "hitrate", "mrr"):
            assert f"{name}@{k}" in rows and "±" in rows[f"{name}@{k}"]
        assert f"coverage@{k}" in rows and "±" not in rows[f"coverage@{k}"]
        # similar listings judged by the next view in a session, with their error too
        assert f"similar@{k}" in rows and "±" in rows[f"similar@{k}"]
    assert "events:" in lines[-1] and "similar_pairs_warm:" in lines[-1]


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, cars):
    bad = tmp_path / "events.csv"
    bad.write_text("user_id,listing_id,timestamp\nu1,L1,2026-01-01\nu2,L2,someday\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedrec.cli",
            "train",
            "--interactions",
            str(bad),
            "--listings",
            str(cars / "listings.parquet"),
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}, row 2 (line 3), column 'timestamp'" in result.stderr


def test_a_config_starting_with_a_byte_order_mark_is_read(tmp_path):
    # Windows Notepad starts a UTF-8 file with one
    config = tmp_path / "train.toml"
    config.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 1\n[features]\ndrop = ['city']\n")
    assert _read_config(str(config), explicit=set())["epochs"] == 1
    assert SchemaConfig.from_toml(config).drop == ["city"]


def train_with_config(tmp_path, cars, text: str, *flags: str):
    """``embedrec train`` on the tiny car data with a config of ``text``: (config, result)."""
    config = tmp_path / "train.toml"
    config.write_text(text)
    data = ["--listings", str(cars / "listings.parquet")]
    data += ["--interactions", str(cars / "interactions.parquet")]
    out = ["--out", str(tmp_path / "m")]
    return config, CliRunner().invoke(main, ["train", *data, "--config", str(config), *out, *flags])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('negatives_from = "everything"', "negatives_from must be one of batch, catalogue"),
        ('model = "mf"\nuser_ids = false', "user_ids=False needs model 'hybrid'"),
        ('model = "mf"\nhidden = 64', "hidden=64 needs model 'deep' or 'hybrid'"),
        ('epochs = "ten"', "epochs must be a whole number, got 'ten'"),
    ],
)
def test_bad_config_setting_names_the_file(tmp_path, cars, setting, message):
    config, result = train_with_config(tmp_path, cars, f"[train]\n{setting}\n")
    assert result.exit_code == 2
    assert f"{config}: [train]: " in result.output and message in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("[train]\nlr = nan\n", "[train]: lr must be a positive finite number, got nan"),
        (
            "[train]\nlogq_scale = inf\n",
            "[train]: logq_scale must be a finite number >= 0, got inf",
        ),
        ("[events]\nview = -1.0\n", "[events] view must be a finite number >= 0, got -1.0"),
        ("[events]\nview = nan\n", "[events] view must be a finite number >= 0, got nan"),
        ('[events]\ncontact = "5"\n', "[events] contact must be a finite number >= 0, got '5'"),
    ],
)
def test_bad_config_numbers_name_the_section_and_key(tmp_path, cars, config_text, message):
    config, result = train_with_config(tmp_path, cars, config_text)
    assert result.exit_code == 2
    assert result.output == f"error: {config}: {message}\n"
    assert not (tmp_path / "m").exists()


def test_training_that_diverges_exits_with_one_line_and_writes_no_model(tmp_path, cars):
    text = '[train]\nmodel = "mf"\nlr = 1e30\nvalidation_fraction = 0\n'
    _, result = train_with_config(tmp_path, cars, text, "--epochs", "2")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: training diverged at epoch 1: loss nan; lower lr or check the weights"
    ]
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trian]\ndim = 8\n", "unknown section(s) [trian]; known: [train], [events], [features]"),
        ("dim = 8\n", "setting(s) outside a section: dim; sections: [train], [events]"),
        ('[features]\ndorp = ["x"]\n', "unknown key(s) in [features]: dorp; expected types"),
        ('[features]\ndrop = "dealer_id"\n', "[features] drop must be a list of column names"),
        ('[features]\ntypes = "year"\n', "[features] types must be a table of column = type"),
        ('[train]\nrefit = "no"\n', "[train]: refit must be true or false, got 'no'"),
        ("[events]\n", "event weights name no event"),
    ],
)
def test_a_misspelt_config_section_names_the_file_and_the_known_ones(tmp_path, text, message):
    config = tmp_path / "train.toml"
    config.write_text(text)
    args = ["train", "--interactions", "i.parquet", "--listings", "l.parquet"]
    result = CliRunner().invoke(
        main, [*args, "--config", str(config), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2
    assert f"error: {config}: {message}" in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_corrupt_model_directory_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "embedrec.cli", "similar", str(tmp_path), "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "corrupt manifest" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_plot_and_inspect(model_dir, tmp_path):
    run("plot", str(model_dir), "--out", str(tmp_path / "map.png"), "--color", "segment")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    # the method as its authors write it, not "TSNE"
    tsne = tmp_path / "tsne.html"
    run("plot", str(model_dir), "--out", str(tsne), "--method", "tsne", "--sample", "40")
    assert "t-SNE of 40 listing embeddings" in tsne.read_text()
    run(
        "plot",
        str(model_dir),
        "--out",
        str(tmp_path / "near.html"),
        "--similar-to",
        "qashqai-dresden",
    )
    assert "Qashqai" in (tmp_path / "near.html").read_text()
    report = json.loads(run("inspect", str(model_dir), "--json", "--sample", "200"))
    assert "make" in report["categorical"]


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_a_neighbours_map_counts_neighbours_without_coordinates(
    model_dir, cars, tmp_path, suffix, caplog
):
    listings = pd.read_parquet(cars / "listings.parquet")
    query = listings["listing_id"] == "qashqai-dresden"
    args = ["plot", str(model_dir), "--similar-to", "qashqai-dresden", "--out"]
    # the query has no location: nothing to centre the map on
    unplaced = tmp_path / "unplaced.parquet"
    listings.assign(
        lat=listings["lat"].where(~query), lon=listings["lon"].where(~query)
    ).to_parquet(unplaced)
    result = CliRunner().invoke(
        main, [*args, str(tmp_path / f"a{suffix}"), "--listings", str(unplaced)]
    )
    assert result.exit_code == 2 and result.exception is not None
    assert "error: listing 'qashqai-dresden' has no lat/lon" in result.output
    assert not (tmp_path / f"a{suffix}").exists()
    # its neighbours have none: listed with their rank, not drawn, and counted
    lost = tmp_path / "lost.parquet"
    listings.assign(lat=listings["lat"].where(query), lon=listings["lon"].where(query)).to_parquet(
        lost
    )
    result = CliRunner().invoke(
        main, [*args, str(tmp_path / f"b{suffix}"), "--listings", str(lost)]
    )
    assert result.exit_code == 0, result.output
    # a note on stderr, as the library's messages go there
    assert "10 of 10 neighbours have no lat/lon and are not drawn" in caplog.text
    assert (tmp_path / f"b{suffix}").stat().st_size > 0


@pytest.mark.parametrize(
    "args",
    [
        ["plot", "{model}", "--out", "{file}/map.png"],
        ["similar", "{model}", "--all", "--out", "{file}/similar.parquet"],
        ["embed", "{model}", "--listings", "{model}/listings.parquet", "--out", "{file}/e.parquet"],
        ["generate", "cars", "--out", "{file}/cars", "--size", "tiny"],
    ],
)
def test_an_output_under_a_file_is_one_line_not_a_traceback(model_dir, tmp_path, args):
    file = tmp_path / "notes.txt"
    file.write_text("a file, not a folder")
    result = CliRunner().invoke(main, [a.format(model=model_dir, file=file) for a in args])
    assert result.exit_code == 2, result.output
    assert (
        result.output.startswith("error: ")
        and "a file is where a folder is needed" in result.output
    )
    assert str(file) in result.output and file.read_text() == "a file, not a folder"


@pytest.mark.parametrize("expression", ["listed_at=2026-09-01", "sold_at!=2026-09-01"])
def test_a_date_time_column_is_refused_as_a_filter_not_matched_as_text(model_dir, expression):
    result = CliRunner().invoke(
        main, ["similar", str(model_dir), "qashqai-dresden", "--filter", expression]
    )
    assert result.exit_code == 2
    column = expression.split("=")[0].rstrip("!")
    assert f"column {column!r} holds dates and times: not filterable" in result.output


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("listed_at>=1780000000", "column 'listed_at' holds dates and times: not filterable"),
        ("listed_at>=2026-09-01", "(a column of dates and times cannot be filtered)"),
    ],
)
def test_a_range_on_a_date_time_column_says_why_it_is_refused(model_dir, expression, says):
    result = CliRunner().invoke(
        main, ["similar", str(model_dir), "qashqai-dresden", "--filter", expression]
    )
    assert result.exit_code == 2 and says in result.output, result.output


def test_result_tables_separate_thousands_except_ids_and_years():
    text = format_table(
        [
            {"listing_id": 1001, "price": 8500, "year": 2018, "mileage_km": 123456},
            {"listing_id": 23221, "price": 23221, "year": 2021, "dealer_id": 4096},
        ],
        ["listing_id", "price", "year", "mileage_km", "dealer_id"],
    )
    assert "8,500" in text and "23,221" in text and "123,456" in text
    assert "2018" in text and "2,018" not in text
    # an id pasted back must be the id
    assert "1001 " in text and "1,001" not in text and "4096" in text and "4,096" not in text


@pytest.mark.slow
def test_unknown_queries_are_counted_and_all_unknown_exits_2(model_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["similar", str(model_dir), "NOPE"])
    assert result.exit_code == 2
    assert (
        "unknown listing_id 'NOPE'" in result.output and "1 of 1 queries unknown" in result.output
    )
    result = runner.invoke(main, ["recommend", str(model_dir), "NOPE", "ghost", "--json"])
    assert result.exit_code == 2 and "2 of 2 queries unknown" in result.output
    result = runner.invoke(main, ["recommend", str(model_dir), "--session", "NOPE", "--json"])
    assert result.exit_code == 2 and "none of the session's listings is known" in result.output
    result = runner.invoke(main, ["similar", str(model_dir), "NOPE", "qashqai-dresden", "-k", "2"])
    assert result.exit_code == 0 and "note: 1 of 2 queries unknown" in result.output


@pytest.mark.parametrize("cutoffs", ["abc", "5,,10", "0", "10,-1", "2.5"])
def test_evaluate_cutoffs_must_be_whole_numbers(tmp_path, cutoffs):
    # checked as the option is parsed: the model directory is not even read
    args = ["evaluate", str(tmp_path), "--interactions", "x.parquet", "-k", cutoffs]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Invalid value for '-k': expected whole numbers from 1 up" in result.output
    assert "invalid literal" not in result.output


def test_the_results_table_rounds_no_price_to_whole_units():
    assert _cells([149.99, 100.4], "price") == ["149.99", "100.40"]
    assert _cells([23221.0, 23221, None], "price") == ["23,221", "23,221", ""]
    assert _cells([0.87345, 0.8], "score") == ["0.873", "0.800"]
    assert _cells([2018, 2019.0], "year") == ["2018", "2019"]
    assert _cells([1001], "listing_id") == ["1001"]


def test_result_tables_write_numbers_plainly_and_alike_down_a_column():
    # whole numbers without decimals; others with the decimals the column needs
    assert _cells([3.0, 2.0, float("nan")], "rooms") == ["3", "2", ""]
    assert _cells([96.5, 120.7, 80.0], "area_m2") == ["96.5", "120.7", "80.0"]
    assert _cells([580.9, 1604.27], "rent") == ["580.90", "1,604.27"]
    assert _cells([0.0123456, 0.005], "score") == ["0.0123", "0.0050"]
    assert _cells([50.8477222, 6.94], "lat") == ["50.8477", "6.9400"]  # about 10 m
    float32 = pd.Series([96.5, 120.7], dtype="float32").astype(float).tolist()
    assert _cells(float32, "area_m2") == ["96.5", "120.7"]


def test_a_result_table_says_how_many_columns_it_leaves_out():
    row = {"listing_id": "a", "score": 0.5, **{f"c{i}": i for i in range(10)}, "listed_at": "x"}
    lines = format_table([row]).splitlines()
    assert lines[0].split() == ["listing_id", "score", *(f"c{i}" for i in range(8))]
    assert lines[-1] == "(3 more columns not shown; --json shows every field)"
    assert "not shown" not in format_table([{"listing_id": "a", "score": 0.5}])


def test_a_result_table_leaves_out_dates_by_their_values_and_writes_any_year_plainly():
    # a jobs board's posted_on and a flat's available_from are dates, as listed_at is
    rows = [
        {"listing_id": 7, "score": 0.5, "posted_on": "2026-09-20T00:00:00", "year_built": 1987},
        {"listing_id": 8, "score": 0.4, "posted_on": None, "year_built": 2003.0},
    ]
    rows[0] |= {"updated": "2026-10-19T22:00:00+00:00", "founded_year": 1999, "yearly_fee": 1200}
    rows[1] |= {"updated": "2026-10-20", "founded_year": 2001, "yearly_fee": 1500}
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["listing_id", "score", "year_built", "founded_year", "yearly_fee"]
    assert lines[1].split()[2:] == ["1987", "1999", "1,200"]
    assert lines[-1] == "(2 more columns not shown; --json shows every field)"
    # a column of text that holds no date stays
    assert "city" in format_table([{"listing_id": 1, "city": "2026 Köln"}])


def test_plot_refuses_an_empty_listing_id_and_projection_options_with_similar_to(
    model_dir, tmp_path
):
    out = tmp_path / "map.png"
    for args, says in [
        (["--similar-to", ""], "--similar-to needs a listing id"),
        (["--similar-to", " "], "--similar-to needs a listing id"),
        (["--similar-to", "qashqai-dresden", "--method", "tsne"], "--method set(s) a projection"),
        (["--similar-to", "x", "--color", "make", "--sample", "9"], "--color, --sample set(s)"),
    ]:
        result = CliRunner().invoke(main, ["plot", str(model_dir), "--out", str(out), *args])
        assert result.exit_code == 2 and says in result.output, result.output
    assert not out.exists()
    assert "--sample and --seed" in " ".join(run("plot", "--help").split())


def test_plot_refuses_an_unknown_colour_column_before_projecting(model_dir, tmp_path, monkeypatch):
    # without openTSNE a t-SNE fails: an error about --color shows that none was tried
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    out = tmp_path / "map.png"
    args = ["plot", str(model_dir), "--out", str(out), "--method", "tsne", "--color"]
    result = CliRunner().invoke(main, [*args, "mkae"])
    assert result.exit_code == 2 and "openTSNE" not in result.output, result.output
    assert "--color mkae: unknown colour column 'mkae'; columns to colour by: " in result.output
    assert "make" in result.output.split("columns to colour by: ")[1].replace(",", " ").split()
    result = CliRunner().invoke(main, [*args, "title"])  # known, but free text
    assert result.exit_code == 2 and "openTSNE" not in result.output, result.output
    assert "--color title: cannot colour by 'title': it holds free text" in result.output
    assert not out.exists()


def test_a_neighbour_map_title_says_how_many_neighbours_were_found(model_dir, cars, tmp_path):
    listings = pd.read_parquet(cars / "listings.parquet")
    few = tmp_path / "few.parquet"
    listings[listings["make"] == "Nissan"].head(4).to_parquet(few)
    out = tmp_path / "map.html"
    args = ["plot", str(model_dir), "--listings", str(few), "--out", str(out), "-k", "10"]
    run(*args, "--similar-to", str(pd.read_parquet(few)["listing_id"].iloc[0]))
    assert "and its 3 (of 10 asked) most similar listings" in out.read_text(encoding="utf-8")


def test_listings_unknown_to_the_model_are_said_to_be_the_training_listings(capsys):
    from embedrec.cli import _retriever

    class Recommender:
        def retriever(self, listings):
            return type("Retriever", (), {"unknown": ["a", "b"]})()

    _retriever(Recommender(), None)
    assert "2 listing(s) in the training listings are unknown" in capsys.readouterr().err
    _retriever(Recommender(), "cat.parquet")
    assert "2 listing(s) in cat.parquet are unknown" in capsys.readouterr().err


def test_an_unwritable_output_is_named_as_given_not_by_its_temporary_file(tmp_path):
    from embedrec.data.atomic import write_atomic
    from embedrec.data.errors import os_error_message

    out = tmp_path / "gone" / "x.png"

    def write(temporary):
        temporary.parent.rmdir()  # the folder vanished: the writer cannot create its file
        temporary.write_bytes(b"png")

    with pytest.raises(OSError) as caught:
        write_atomic(out, write)
    assert os_error_message(caught.value) == f"{out}: No such file or directory"

    def arrow_like(temporary):  # an error naming the file only in its message
        raise OSError(f"Failed to open local file '{temporary}'")

    with pytest.raises(OSError, match=r"^Failed to open local file '.*/gone/x\.png'$"):
        write_atomic(out, arrow_like)


@pytest.mark.parametrize("place", ["a folder of other files", "under a file"])
def test_train_refuses_an_output_it_could_not_write_before_training(tmp_path, cars, place):
    # the refusal at save came after the whole training run, hours in a nightly job
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    out = tmp_path / "m" if place == "a folder of other files" else notes / "m"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("not a model")
    data = ["--interactions", str(cars / "interactions.parquet")]
    data += ["--listings", str(cars / "listings.parquet")]
    result = CliRunner().invoke(main, ["train", *data, "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 2
    if place == "under a file":
        assert result.output == f"error: {notes}: a file is where a folder is needed\n"
    else:
        assert f"{out} exists and is not a model directory" in result.output
    # nothing was trained: no epoch left its checkpoint beside the output
    assert not out.with_name("m.checkpoints").exists()
    assert notes.read_text() == "not a model"


def test_a_reader_that_stops_early_ends_the_command_quietly(model_dir):
    # `embedrec similar ... | head`: the pipe closes before the answers are written
    listing = pd.read_parquet(model_dir / "listings.parquet")["listing_id"].iloc[0]
    process = subprocess.Popen(
        [sys.executable, "-m", "embedrec", "similar", str(model_dir), str(listing), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr


def test_every_option_of_every_command_says_what_it_does():
    def options(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from options(sub, [*path, name])
        else:
            for param in command.params:
                if isinstance(param, click.Option):
                    yield " ".join(path), param

    silent = [f"{path} {opt.opts[0]}" for path, opt in options(main, []) if not opt.help]
    assert silent == []


def test_serve_refuses_an_unknown_log_level_in_one_line(model_dir):
    # logging.basicConfig raised "ValueError: Unknown level: 'VERBOSE'" with a traceback
    result = CliRunner().invoke(main, ["serve", str(model_dir), "--log-level", "verbose"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'verbose' is not one of 'critical', 'error', 'warning', 'info', 'debug', 'trace'" in (
        result.output
    )


def test_an_interrupted_training_says_how_to_resume_and_exits_130(cars, tmp_path):
    # Ctrl-C printed click's bare "Aborted!" with status 1
    config = tmp_path / "train.toml"
    config.write_text("[train]\npatience = 1000\n")  # still training when interrupted
    out = tmp_path / "m"
    process = subprocess.Popen(
        [sys.executable, "-m", "embedrec", "train", "--config", str(config), "--epochs", "1000"]
        + ["--interactions", str(cars / "interactions.parquet")]
        + ["--listings", str(cars / "listings.parquet"), "--out", str(out)]
        + ["--checkpoint-every", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    latest = tmp_path / "m.checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.rstrip().endswith(
        f"interrupted; the last checkpoint is in {out}.checkpoints: run the same command "
        "with --resume to continue from it"
    )
    assert latest.exists() and not out.exists()


# Ctrl-C the moment the model's save creates its staging folder
INTERRUPTED_SAVE = """
import os, signal, sys
def interrupt(event, args):
    if event == "os.mkdir" and os.path.basename(str(args[0])).startswith(".m.staging."):
        signal.raise_signal(signal.SIGINT)
sys.addaudithook(interrupt)
from embedrec.cli import main
main(prog_name="embedrec")
"""


def test_an_interrupted_save_keeps_the_old_model_says_how_to_resume_and_exits_130(
    cars, model_dir, tmp_path
):
    # it printed click's bare "Aborted!" with status 1
    out = tmp_path / "m"
    shutil.copytree(model_dir, out)
    before = (out / "manifest.json").read_bytes()
    config = tmp_path / "train.toml"
    config.write_text("[train]\nvalidation_fraction = 0\n")  # one phase: quick
    arguments = ["train", "--model", "mf", "--dim", "8", "--epochs", "1", "--config"]
    arguments += [str(config), "--interactions", str(cars / "interactions.parquet")]
    arguments += ["--listings", str(cars / "listings.parquet"), "--out", str(out)]
    process = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_SAVE, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 130, process.stderr
    assert "Traceback" not in process.stderr and "Aborted" not in process.stderr
    assert process.stderr.rstrip().splitlines()[-1] == (
        f"interrupted while saving the model; {out} holds the model it held before: run the "
        f"same command with --resume to save it from the last checkpoint in {out}.checkpoints"
    )
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.checkpoints", "train.toml"]
    assert "saved" in run(*arguments, "--resume")  # as it says
    assert json.loads((out / "manifest.json").read_text())["model"] == "mf"
    assert not (tmp_path / "m.checkpoints").exists()


@pytest.mark.parametrize(("module", "package"), [("umap", "umap-learn"), ("openTSNE", "openTSNE")])
def test_a_projection_whose_package_is_missing_says_which_to_install(
    model_dir, tmp_path, monkeypatch, module, package
):
    # an environment without it (a trimmed image): a ModuleNotFoundError traceback before
    monkeypatch.setitem(sys.modules, module, None)  # import then fails as if not installed
    method = "umap" if module == "umap" else "tsne"
    out = tmp_path / "map.png"
    result = CliRunner().invoke(
        main, ["plot", str(model_dir), "--out", str(out), "--method", method]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith(f"error: the {method} projection needs the package {package}")
    assert result.output.rstrip().endswith(f"pip install {package}")
    assert not out.exists()


def test_a_column_of_dates_comes_back_as_dates_from_the_cli_and_the_service(tmp_path):
    # a flat's available_from is a date (Parquet date32), not a moment at midnight
    from conftest import block_data

    from embedrec.recommender import Recommender
    from embedrec.serving.shared import model_tag, shared_recommender, shared_retriever

    events, listings, _, _ = block_data(n_users=40, n_listings=24)
    days = [datetime.date(2026, 11, 1 + i % 3) if i % 5 else None for i in range(len(listings))]
    listings["available_from"] = days
    listings["checked_at"] = pd.Timestamp("2026-10-01 12:30") + pd.to_timedelta(
        range(len(listings)), unit="h"
    )
    expected = {i: d and d.isoformat() for i, d in zip(listings["listing_id"], days, strict=True)}
    listings_file = tmp_path / "listings.parquet"
    listings.to_parquet(listings_file)
    Recommender(model="mf", epochs=1, seed=0, progress=False).fit(events, listings_file).save(
        tmp_path / "model"
    )
    user = events["user_id"].iloc[0]
    outputs = [
        run("similar", str(tmp_path / "model"), "Wagen 1 ä", "-k", "20", "--json"),
        run("recommend", str(tmp_path / "model"), user, "-k", "20", "--json"),
        run(
            "similar",
            str(tmp_path / "model"),
            "Wagen 1 ä",
            "-k",
            "20",
            "--json",
            "--listings",
            str(listings_file),
        ),
    ]
    served = shared_recommender(tmp_path / "model", tmp_path / "cache")
    retriever = shared_retriever(served, None, tmp_path / "cache", model_tag(served))
    outputs.append(json.dumps(retriever.similar(["Wagen 1 ä"], k=20)[0].to_dict()))
    for output in outputs:
        hits = json.loads(output)["results"]
        assert any(hit["available_from"] for hit in hits) and any(
            hit["available_from"] is None for hit in hits
        )
        assert {
            hit["listing_id"]: hit["available_from"] for hit in hits
        }.items() <= expected.items()
    skipped = json.loads(run("inspect", str(tmp_path / "model"), "--json"))["skipped"]
    assert skipped["available_from"] == "date" and skipped["checked_at"] == "timestamp"


def test_a_saved_models_listings_are_named_by_the_model_file_not_a_machine_path(tmp_path):
    from conftest import block_data

    from embedrec.recommender import Recommender

    events, listings, _, _ = block_data(n_users=40, n_listings=24)
    listings_file = tmp_path / "training listings.parquet"
    listings.to_parquet(listings_file)
    Recommender(model="mf", epochs=1, seed=0, progress=False).fit(events, listings_file).save(
        tmp_path / "model"
    )
    # the training file's path was kept in the table's metadata and named by later errors
    assert str(tmp_path).encode() not in (tmp_path / "model" / "listings.parquet").read_bytes()
    loaded = Recommender.load(tmp_path / "model")
    # what errors about its rows and columns name (test_serving_hardening: a reload's)
    assert loaded.listing_table_.attrs["source"] == "model listings.parquet"


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("map.svg", "--out must end in .html or .png, got 'map.svg'"),
        ("notes.txt/map.png", "{tmp}/notes.txt: a file is where a folder is needed"),
    ],
)
def test_plot_refuses_an_output_it_cannot_write_before_loading_the_model(tmp_path, out, says):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    # no model at all: the output is checked first, before the model, the projection
    missing_model = tmp_path / "no model here"
    args = ["plot", str(missing_model), "--out", str(tmp_path / out), "--method", "tsne"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert says.format(tmp=tmp_path) in " ".join(result.output.split()), result.output
    assert "no model here" not in result.output.replace(str(tmp_path / out), "")
