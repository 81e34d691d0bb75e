"""Ids typed by users (command line, URL path) on a model whose ids are integers: only the
canonical spelling of an integer names an integer id; anything else is an unknown id, never
a crash and never another listing."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import block_data

from embedrec.cli import main
from embedrec.data.ids import parse_id

# each would be 3, 5, 3 or 7 to a lenient int(), or crash it
NOT_CANONICAL = ["003", " 3 ", "+3", "--5", "٣", "²", "3\n", "1_0", "", "7.0"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("7", 7),
        ("-7", -7),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", "9223372036854775808"),  # beyond int64: no id
        ("-9223372036854775809", "-9223372036854775809"),
        ("1" * 5000, "1" * 5000),  # int() refuses so many digits: never asked
        *((raw, raw) for raw in NOT_CANONICAL),
    ],
)
def test_only_canonical_ascii_integers_become_ints(raw, expected):
    parsed = parse_id(raw, np.dtype(np.int64))
    assert parsed == expected and type(parsed) is type(expected)


def test_string_ids_stay_strings():
    assert parse_id("7", np.dtype(object)) == "7"
    assert parse_id("007", pd.StringDtype()) == "007"


@pytest.fixture(scope="module")
def integer_model(tmp_path_factory):
    """An ``mf`` model whose listing and user ids are integers (3 is a listing, so is 5)."""
    events, listings, _, _ = block_data(n_users=60, n_listings=40)
    number = {text: i for i, text in enumerate(listings["listing_id"])}
    listings = listings.assign(listing_id=listings["listing_id"].map(number))
    users = {text: 1000 + i for i, text in enumerate(pd.unique(events["user_id"]))}
    events = events.assign(
        listing_id=events["listing_id"].map(number), user_id=events["user_id"].map(users)
    )
    work = tmp_path_factory.mktemp("integer_ids")
    events.to_parquet(work / "events.parquet")
    listings.to_parquet(work / "listings.parquet")
    model = work / "model"
    result = CliRunner().invoke(
        main,
        ["train", "--interactions", str(work / "events.parquet"), "--listings",
         str(work / "listings.parquet"), "--out", str(model), "--model", "mf", "--epochs", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return model


def similar_json(model, *ids: str) -> list[dict]:
    # after "--", so that ids such as "--5" are not read as options
    result = CliRunner().invoke(main, ["similar", str(model), "-k", "3", "--json", "--", *ids])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def test_cli_matches_canonical_integers_and_reports_the_rest_unknown(integer_model):
    lines = similar_json(integer_model, "3", *NOT_CANONICAL)
    assert lines[0]["query"] == 3 and len(lines[0]["results"]) == 3
    for raw, line in zip(NOT_CANONICAL, lines[1:], strict=True):
        assert line["query"] == raw and "unknown listing_id" in line["error"]
    result = CliRunner().invoke(main, ["recommend", str(integer_model), "1000", "01000", "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "unknown user_id '01000'" in result.output


@pytest.fixture(scope="module")
def client(integer_model, tmp_path_factory):
    import torch
    from fastapi.testclient import TestClient

    from embedrec.serving.app import create_app
    from embedrec.serving.state import Settings

    threads = torch.get_num_threads()
    store = tmp_path_factory.mktemp("store") / "store.sqlite"
    app = create_app(Settings(model_dir=str(integer_model), store=str(store)))
    # building the app in-process leaves the process's thread settings alone
    assert torch.get_num_threads() == threads
    with TestClient(app) as test_client:
        yield test_client


def test_http_canonical_integer_ids_are_found(client):
    listing = client.get("/v1/listings/3")
    assert listing.status_code == 200 and listing.json()["listing_id"] == 3
    similar = client.get("/v1/listings/3/similar", params={"k": 3})
    assert similar.status_code == 200 and similar.json()["query"] == 3
    assert client.get("/v1/users/1000/recommendations").status_code == 200
    assert client.get("/v1/users/01000/recommendations").status_code == 404


@pytest.mark.parametrize("raw", [r for r in NOT_CANONICAL if r.strip()] + ["99999999999999999999"])
def test_http_other_spellings_are_unknown_ids(client, raw):
    quoted = quote(raw, safe="")
    for path in (f"/v1/listings/{quoted}", f"/v1/listings/{quoted}/similar"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["field"] == "listing_id"
