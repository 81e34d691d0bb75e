"""MovieLens-100k, read from the copy inside RecBole's wheel, and the benchmark's split protocol.

The data's licence forbids redistribution, so it is never part of this repository: the loader
fetches ``recbole==1.2.1`` with ``pip download`` (PyPI is the one source reachable everywhere
this project runs), unpacks the two atomic files into a cache outside the repository
(``cache_dir``, else embedrec's cache: :func:`embedrec.cache.cache_root`) and reads them
from there.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedrec.cache import cache_root
from embedrec.data.atomic import write_atomic
from embedrec.data.split import per_user_split

RECBOLE_REQUIREMENT = "recbole==1.2.1"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item")
POSITIVE_RATING = 4
TEST_FRACTION = 0.2
MIN_POSITIVES = 5
COLD_SEED = 42


def default_cache_dir() -> Path:
    """embedrec's cache (:func:`embedrec.cache.cache_root`)."""
    return cache_root()


def dataset_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the ml-100k files live (or will, once downloaded)."""
    return Path(cache_dir or default_cache_dir()) / "ml-100k"


def is_cached(cache_dir: str | Path | None = None) -> bool:
    return all((dataset_dir(cache_dir) / name).is_file() for name in FILES)


def download_movielens_100k(cache_dir: str | Path | None = None) -> Path:
    """Fetch RecBole's wheel with pip and unpack the ml-100k files; returns their folder.

    Raises RuntimeError, with pip's own message, when the download fails (e.g. offline).
    """
    target = dataset_dir(cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            RECBOLE_REQUIREMENT,
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            scratch,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(scratch).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"cannot download MovieLens-100k: `pip download {RECBOLE_REQUIREMENT}` failed "
                f"(offline, or no access to PyPI?). Place {', '.join(FILES)} in {target} "
                "by hand to work offline. pip said: " + " | ".join(detail)
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in FILES:
                # atomic, so an interrupted unpack never looks like a cached file
                data = wheel.read(MEMBER_DIR + name)
                write_atomic(target / name, lambda path, data=data: path.write_bytes(data))
    return target


def read_atomic(path: str | Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab-separated, headers typed like ``user_id:token``.

    Every column is read as text (types are the caller's business); the ``:type`` suffixes
    are dropped from the column names.
    """
    frame = pd.read_csv(
        path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8"
    )
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    return frame


def parse_movielens(inter_path: str | Path, item_path: str | Path) -> tuple[pd.DataFrame, ...]:
    """The two frames ``load_movielens_100k`` returns, from the atomic files at these paths."""
    inter = read_atomic(inter_path)
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(np.int64),
            "listing_id": inter["item_id"].astype(np.int64),
            "timestamp": pd.to_numeric(inter["timestamp"]).astype(np.int64),
            "rating": pd.to_numeric(inter["rating"]).astype(np.float64),
        }
    )
    item = read_atomic(item_path)
    # genres are space-separated tokens ("Children's", "Film-Noir" hold no spaces)
    genres = item["class"].str.split().str.join("|")
    year = pd.to_numeric(item["release_year"].str.strip(), errors="coerce")
    items = pd.DataFrame(
        {
            "listing_id": item["item_id"].astype(np.int64),
            "genres": genres.where(genres != "", "unknown"),
            "year": year.astype(np.float64),
        }
    )
    return interactions, items.sort_values("listing_id", ignore_index=True)


def load_movielens_100k(
    cache_dir: str | Path | None = None, download: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-100k as (interactions, items).

    interactions: ``user_id, listing_id, timestamp`` (epoch seconds), ``rating`` (1-5), all
    100,000 ratings. items: ``listing_id``, ``genres`` ('|'-joined), ``year`` (release year,
    float, NaN when unknown). Downloads into the cache on first use unless ``download`` is
    False, which raises FileNotFoundError instead.
    """
    folder = dataset_dir(cache_dir)
    if not is_cached(cache_dir):
        if not download:
            raise FileNotFoundError(f"MovieLens-100k is not in {folder}")
        download_movielens_100k(cache_dir)
    return parse_movielens(folder / FILES[0], folder / FILES[1])


@dataclass
class ProtocolSplit:
    """The benchmark's splits of the positives (frames keep the input's columns).

    Warm: ``train`` / ``test``, and for tuning ``valid_train`` / ``valid`` carved out of
    ``train`` by the same rule. Cold: ``cold_train`` (every positive not on a cold item),
    ``cold_test`` (positives on ``cold_items`` of users who are in ``cold_train``), and for
    tuning ``cold_valid_train`` / ``cold_valid`` / ``cold_valid_items``, drawn from
    ``cold_train`` by the same rule.
    """

    train: pd.DataFrame
    valid_train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold_train: pd.DataFrame
    cold_test: pd.DataFrame
    cold_items: np.ndarray
    cold_valid_train: pd.DataFrame
    cold_valid: pd.DataFrame
    cold_valid_items: np.ndarray


def positives(interactions: pd.DataFrame, threshold: float = POSITIVE_RATING) -> pd.DataFrame:
    """Ratings at or above ``threshold``: the implicit-feedback positives."""
    return interactions[interactions["rating"] >= threshold]


def cold_items_of(frame: pd.DataFrame, seed: int = COLD_SEED) -> np.ndarray:
    """A fifth of the items with at least 5 positives, drawn reproducibly.

    ``default_rng(seed).choice(eligible, len(eligible) // 5, replace=False)`` over the eligible
    ids in ascending order, returned sorted.
    """
    counts = frame.groupby("listing_id").size()
    eligible = np.sort(counts.index[counts >= MIN_POSITIVES].to_numpy())
    chosen = np.random.default_rng(seed).choice(eligible, size=len(eligible) // 5, replace=False)
    return np.sort(chosen)


def movielens_protocol_split(interactions: pd.DataFrame, rated: bool = True) -> ProtocolSplit:
    """Split MovieLens interactions by the benchmark's protocol.

    With ``rated``, positives are ratings >= 4 first; otherwise every row is a positive. Per
    user, positives ordered by (timestamp, item id); a user with >= 5 puts the last
    ``max(1, floor(n / 5))`` into test (``per_user_split``), and validation is carved out of
    train the same way. Cold items (``cold_items_of``) lose all their training interactions.
    """
    frame = positives(interactions) if rated else interactions
    train, test = per_user_split(frame, TEST_FRACTION, MIN_POSITIVES)
    valid_train, valid = per_user_split(train, TEST_FRACTION, MIN_POSITIVES)
    cold_train, cold_test, cold_items = cold_split(frame)
    cold_valid_train, cold_valid, cold_valid_items = cold_split(cold_train)
    return ProtocolSplit(
        train,
        valid_train,
        valid,
        test,
        cold_train,
        cold_test,
        cold_items,
        cold_valid_train,
        cold_valid,
        cold_valid_items,
    )


def cold_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(positives not on cold items, positives on them, the cold items) by ``cold_items_of``."""
    cold_items = cold_items_of(frame)
    on_cold = frame["listing_id"].isin(cold_items).to_numpy()
    train, test = frame[~on_cold], frame[on_cold]
    # a user with no training positive has no vector in any model: nothing to rank for them
    test = test[test["user_id"].isin(train["user_id"].unique()).to_numpy()]
    return train, test, cold_items
