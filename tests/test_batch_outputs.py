"""Batch outputs: the top k of every user or listing as Parquet, in chunks, split by rank."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import block_data

from embedrec.cli import main
from embedrec.recommender import Recommender
from embedrec.retrieval import retriever as retriever_module
from embedrec.retrieval.batch import chunk_starts, torchrun_rank

K = 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    events, listings, _, _ = block_data()
    out = tmp_path_factory.mktemp("batch") / "hybrid"
    Recommender(model="hybrid", epochs=4, batch_size=256, seed=0, progress=False).fit(
        events, listings
    ).save(out)
    return out


@pytest.fixture(scope="module")
def retriever(model_dir):
    return Recommender.load(model_dir).retriever()


def by_query(frame: pd.DataFrame, column: str) -> dict:
    frame = frame.sort_values([column, "rank"])
    return {q: group for q, group in frame.groupby(column, sort=False)}


def assert_same_answers(written: pd.DataFrame, column: str, results) -> None:
    """The rows of each query in ``written`` are its single-query answer, in order."""
    groups = by_query(written, column)
    assert results
    for result in results:
        group = groups.get(result.query)
        if not result.hits:
            assert group is None
            continue
        assert group["listing_id"].tolist() == result.ids
        assert group["rank"].tolist() == list(range(1, len(result.hits) + 1))
        np.testing.assert_allclose(group["score"], result.scores, atol=1e-5)


def test_recommend_all_equals_single_queries_with_a_filter(retriever, tmp_path):
    filters = ["price<=30000"]
    written = retriever.recommend_all(tmp_path / "users.parquet", K, filters, chunk_size=32)
    table = pq.read_table(written.path).to_pandas()
    assert list(table.columns) == ["user_id", "rank", "listing_id", "score"]
    users = retriever.users.ids.tolist()
    assert written.queries == len(users) and written.rows == len(table)
    assert set(table["user_id"]) == set(users)  # every user has cheap listings left
    sample = list(np.random.default_rng(0).choice(users, 25, replace=False))
    assert_same_answers(table, "user_id", retriever.recommend(sample, K, filters))
    prices = retriever.catalogue.table.set_index("listing_id")["price"]
    assert (prices[table["listing_id"]] <= 30000).all()
    seen = retriever.seen_in(retriever.users.indices(table["user_id"]))
    rows = retriever.catalogue.rows_of(table["listing_id"].tolist())
    assert not seen[np.arange(len(table)), rows].any()  # no seen listing comes back
    # one row group per chunk of 32 users: the writer never held more than a chunk
    assert pq.ParquetFile(written.path).metadata.num_row_groups == -(-len(users) // 32)


def test_similar_all_equals_single_queries_with_a_filter(retriever, tmp_path):
    filters = ["make=VW,BMW"]
    written = retriever.similar_all(tmp_path / "listings.parquet", K, filters, chunk_size=50)
    table = pq.read_table(written.path).to_pandas()
    assert list(table.columns) == ["query_id", "rank", "listing_id", "score"]
    listings = retriever.catalogue.table["listing_id"].tolist()
    assert written.queries == len(listings)
    assert (table["query_id"] != table["listing_id"]).all()
    makes = retriever.catalogue.table.set_index("listing_id")["make"]
    assert makes[table["listing_id"]].isin(["VW", "BMW"]).all()
    sample = list(np.random.default_rng(1).choice(listings, 25, replace=False))
    assert_same_answers(table, "query_id", retriever.similar(sample, K, filters))


@pytest.mark.parametrize("kind", ["recommend_all", "similar_all"])
def test_chunks_smaller_than_the_queries_give_the_same_output(retriever, tmp_path, kind):
    write = getattr(retriever, kind)
    whole = pq.read_table(write(tmp_path / "whole.parquet", K).path).to_pandas()
    chunked = pq.read_table(write(tmp_path / "chunked.parquet", K, chunk_size=23).path)
    assert chunked.num_rows == len(whole)
    assert pq.ParquetFile(tmp_path / "chunked.parquet").metadata.num_row_groups > 1
    chunked = chunked.to_pandas()
    pd.testing.assert_frame_equal(chunked.drop(columns="score"), whole.drop(columns="score"))
    np.testing.assert_allclose(chunked["score"], whole["score"], atol=1e-5)


def test_a_model_scoring_pairs_ranks_in_blocks_with_the_same_answers(monkeypatch, tmp_path):
    events, listings, _, _ = block_data(n_users=60, n_listings=40)
    deep = Recommender(model="deep", epochs=2, batch_size=256, seed=0, progress=False)
    retriever = deep.fit(events, listings).retriever()
    whole = pq.read_table(retriever.recommend_all(tmp_path / "whole.parquet", K).path)
    monkeypatch.setattr(retriever_module, "MAX_SCORES", 100)  # blocks of 2 users
    blocks = pq.read_table(retriever.recommend_all(tmp_path / "blocks.parquet", K).path)
    assert blocks.num_rows == 60 * K
    # the same ranking; the scores may differ in the last bits, as BLAS sums blocks of another
    # size in another order on some CPUs
    blocks, whole = blocks.to_pandas(), whole.to_pandas()
    pd.testing.assert_frame_equal(blocks.drop(columns="score"), whole.drop(columns="score"))
    np.testing.assert_allclose(blocks["score"], whole["score"], atol=1e-5)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embedrec.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("command", "flag", "column"),
    [("recommend", "--all-users", "user_id"), ("similar", "--all", "query_id")],
)
def test_ranks_under_torchrun_split_the_queries(model_dir, tmp_path, command, flag, column):
    single = tmp_path / "single.parquet"
    args = [command, str(model_dir), flag, "-k", str(K), "--chunk-size", "16"]
    args += ["--filter", "price<=40000"]
    assert run_cli(*args, "--out", str(single)).returncode == 0
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part-00002.parquet").write_bytes(b"from an earlier run with 3 ranks")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "embedrec.cli", *args, "--out", str(parts)],
            env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "(rank 1 of 2)" in outputs[1][0]
    assert sorted(f.name for f in parts.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    halves = [pq.read_table(parts / f"part-0000{r}.parquet").to_pandas() for r in range(2)]
    assert len(halves[0]) and len(halves[1])
    assert not set(halves[0][column]) & set(halves[1][column])  # each query on one rank
    keys = [column, "rank"]
    union = pd.read_parquet(parts).sort_values(keys).reset_index(drop=True)
    expected = pd.read_parquet(single).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(union, expected)


def test_chunks_go_to_ranks_in_turn():
    assert list(chunk_starts(10, 3)) == [0, 3, 6, 9]
    assert list(chunk_starts(10, 3, 0, 2)) == [0, 6]
    assert list(chunk_starts(10, 3, 1, 2)) == [3, 9]
    assert list(chunk_starts(2, 3, 1, 2)) == []  # more ranks than chunks: an empty part


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "0"}, "must be set together"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "must lie in"),
        ({"RANK": "a", "WORLD_SIZE": "2"}, "must be integers"),
    ],
)
def test_torchrun_variables_are_checked(environ, message):
    with pytest.raises(ValueError, match=message):
        torchrun_rank(environ)
    assert torchrun_rank({}) is None
    assert torchrun_rank({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["similar", "{model}", "--all", "some-id", "--out", "{tmp}/a.parquet"], "give no ids"),
        (["similar", "{model}", "--all"], "--all needs --out"),
        (["recommend", "{model}", "--all-users"], "--all-users needs --out"),
        (["recommend", "{model}", "u1", "--out", "{tmp}/a.parquet"], "give --all-users too"),
        (["recommend", "{model}", "--all-users", "--out", "{tmp}"], "is a directory"),
        (["similar", "{model}", "--all", "--out", "{tmp}/a.csv"], "ending in .parquet"),
        (["similar", "{model}", "--all", "--out", "{tmp}/a.parquet", "--json"], "--json does"),
        (["recommend", "{model}", "--all-users", "--session", "x", "--out", "{tmp}/a"], "session"),
        (["similar", "{model}", "--all", "--out", "{tmp}/a.parquet", "--chunk-size", "0"], "0"),
        # embed writes Parquet too: a .csv name would hold Parquet bytes
        (
            ["embed", "{model}", "--listings", "{model}/listings.parquet", "--out", "{tmp}/a.csv"],
            "ending in .parquet",
        ),
    ],
)
def test_bad_batch_requests_are_clear_errors(model_dir, tmp_path, args, message):
    args = [a.format(model=model_dir, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "a.csv").exists()


def test_parts_need_a_directory_and_a_bad_filter_writes_nothing(model_dir, tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier file")
    args = ["recommend", str(model_dir), "--all-users", "--out", str(out)]
    result = CliRunner().invoke(main, args, env={"RANK": "0", "WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "is a file" in result.output
    result = CliRunner().invoke(main, [*args, "--filter", "price<=cheap"])
    assert result.exit_code == 2 and result.output.startswith("error:")
    assert out.read_bytes() == b"an earlier file"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 150 * 10
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temporary left
