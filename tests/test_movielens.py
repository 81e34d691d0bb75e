"""The MovieLens loader on fabricated RecBole files, the split protocol, the benchmark smoke."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedrec.datasets import movielens
from embedrec.datasets.movielens import (
    cold_items_of,
    load_movielens_100k,
    movielens_protocol_split,
)

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t4.5\t891717742\n"
    "22\t377\t1\t878887116\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    "377\tHeavyweights\t\tChildren's Comedy\n"
)


def write_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.inter").write_text(INTER, encoding="utf-8")
    (folder / "ml-100k.item").write_text(ITEM, encoding="utf-8")


def test_loader_parses_recbole_atomic_files(tmp_path: Path) -> None:
    write_files(tmp_path / "ml-100k")
    interactions, items = load_movielens_100k(tmp_path, download=False)
    assert list(interactions.columns) == ["user_id", "listing_id", "timestamp", "rating"]
    assert interactions["user_id"].tolist() == [196, 186, 22]
    assert interactions["listing_id"].dtype == np.int64
    assert interactions["timestamp"].tolist() == [881250949, 891717742, 878887116]
    assert interactions["rating"].tolist() == [3.0, 4.5, 1.0]
    assert list(items.columns) == ["listing_id", "genres", "year"]
    assert items["listing_id"].tolist() == [242, 302, 377]
    assert items["genres"].tolist() == [
        "Comedy",
        "Crime|Film-Noir|Mystery|Thriller",
        "Children's|Comedy",
    ]
    assert items["year"].iloc[:2].tolist() == [1996.0, 1997.0]
    assert np.isnan(items["year"].iloc[2])


def test_loader_without_files_and_without_download_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not in"):
        load_movielens_100k(tmp_path, download=False)


def test_download_unpacks_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        target = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(target / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(movielens.MEMBER_DIR + "ml-100k.inter", INTER)
            wheel.writestr(movielens.MEMBER_DIR + "ml-100k.item", ITEM)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(movielens.subprocess, "run", fake_pip)
    interactions, items = load_movielens_100k(tmp_path / "cache")
    assert len(interactions) == 3 and len(items) == 3
    assert sorted(p.name for p in (tmp_path / "cache" / "ml-100k").iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
    ]


def test_download_failure_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(movielens.subprocess, "run", offline)
    with pytest.raises(RuntimeError, match="offline.*No matching distribution"):
        load_movielens_100k(tmp_path)


def protocol_frame() -> pd.DataFrame:
    """User 1: 10 positives (two share a timestamp) plus low ratings; user 2: 4 positives."""
    rows = [(1, item, 100 + item, 5.0) for item in range(10, 20)]
    rows[-1] = (1, 19, 118, 4.0)  # same time as item 18: ordered by item id, 19 last
    rows += [(1, 90, 200, 3.0), (1, 91, 201, 1.0)]  # not positives
    rows += [(2, item, 100, 4.0) for item in range(10, 14)]
    return pd.DataFrame(rows, columns=["user_id", "listing_id", "timestamp", "rating"])


def test_protocol_split_per_user_last_fifth() -> None:
    split = movielens_protocol_split(protocol_frame())
    assert sorted(split.test["listing_id"]) == [18, 19]  # last floor(10 / 5) = 2 of user 1
    assert set(split.test["user_id"]) == {1}  # user 2 has fewer than 5 positives
    assert (split.train["rating"] >= 4).all() and 90 not in split.train["listing_id"].tolist()
    assert len(split.train) == 8 + 4
    # validation: the same rule on train (user 1 has 8: last 1), user 2 stays in valid_train
    assert split.valid["listing_id"].tolist() == [17]
    assert len(split.valid_train) == 7 + 4
    assert (
        pd.concat([split.valid_train, split.valid])
        .index.sort_values()
        .equals(split.train.index.sort_values())
    )


def test_protocol_split_cold_items() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 30, 600),
            "listing_id": rng.integers(0, 60, 600),
            "timestamp": rng.integers(0, 10_000, 600),
            "rating": rng.integers(1, 6, 600).astype(float),
        }
    ).drop_duplicates(["user_id", "listing_id"])
    split = movielens_protocol_split(frame)
    positives = frame[frame["rating"] >= 4]
    counts = positives.groupby("listing_id").size()
    eligible = np.sort(counts.index[counts >= 5].to_numpy())
    expected = np.random.default_rng(42).choice(eligible, len(eligible) // 5, replace=False)
    assert np.array_equal(split.cold_items, np.sort(expected))
    assert np.array_equal(cold_items_of(positives), split.cold_items)
    assert not split.cold_train["listing_id"].isin(split.cold_items).any()
    assert split.cold_test["listing_id"].isin(split.cold_items).all()
    assert split.cold_test["user_id"].isin(split.cold_train["user_id"]).all()
    on_cold = positives[positives["listing_id"].isin(split.cold_items)]
    dropped = on_cold[~on_cold["user_id"].isin(split.cold_train["user_id"])]
    assert len(split.cold_train) + len(split.cold_test) + len(dropped) == len(positives)
    # the cold validation split is the same rule applied to the cold training split
    assert np.array_equal(split.cold_valid_items, cold_items_of(split.cold_train))
    assert not set(split.cold_valid_items) & set(split.cold_items)
    assert not split.cold_valid_train["listing_id"].isin(split.cold_valid_items).any()
    assert split.cold_valid["listing_id"].isin(split.cold_valid_items).all()
    assert len(split.cold_valid_train) + len(split.cold_valid) <= len(split.cold_train)


@pytest.mark.slow
def test_benchmark_smoke_runs_on_synthetic_data(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "movielens.py"
    out = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--quiet", "--cache-dir", str(tmp_path)]
        + ["--only", "popularity,EASE,hybrid", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "synthetic stand-in" in done.stdout
    report = out.read_text(encoding="utf-8")
    assert "| embedrec hybrid |" in report and "| EASE |" in report
    assert not (tmp_path / "ml-100k").exists()  # smoke never downloads


@pytest.mark.slow
def test_benchmark_reruns_some_methods_and_reuses_the_other_rows(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "movielens.py"
    smoke = [sys.executable, str(script), "--smoke", "--quiet", "--cache-dir", str(tmp_path)]
    earlier, out = tmp_path / "earlier.json", tmp_path / "report.md"
    first = smoke + ["--only", "popularity,EASE", "--json", str(earlier)]
    assert subprocess.run(first, capture_output=True, timeout=300).returncode == 0
    again = smoke + ["--only", "EASE", "--reuse", str(earlier), "--out", str(out)]
    done = subprocess.run(again, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = out.read_text(encoding="utf-8")
    assert "| popularity * |" in report and "| EASE |" in report
    assert "popularity,EASE --json" in report  # the earlier run's command, named
    broken = tmp_path / "broken.json"
    broken.write_text("{}", encoding="utf-8")
    refused = subprocess.run(
        smoke + ["--only", "EASE", "--reuse", str(broken)], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "not the --json file of an earlier run" in refused.stderr
