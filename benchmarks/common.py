"""A model of a million-listing marketplace, shared by the index and serving benchmarks, and
the package of an earlier commit for their side-by-side runs.

The ``large`` car data (1,000,000 listings, about 20M events; generated once into
``~/.cache/embedrec/cars-large-seed0``, as ``train_scale.py`` does) and a ``hybrid`` model
trained on its first 1M events. That model knows about 238k listings by id; the other
listings are embedded from their features, as a marketplace's newest listings would be.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from train_scale import DEFAULT_DATA, ensure_data, parse_size, subset


def large_model(work: Path, events: str = "1M", epochs: int = 3) -> tuple[Path, Path, Path]:
    """(model directory, the 1M listings, the interactions it was trained on), built once."""
    from embedrec import Recommender

    paths = ensure_data(DEFAULT_DATA, "large")
    interactions, trained_listings, _ = subset(paths, parse_size(events), DEFAULT_DATA / "subsets")
    model = work / f"model-large-{events}"
    if not (model / "manifest.json").exists():
        print(f"training hybrid on the first {events} events of the large car data", flush=True)
        rec = Recommender(model="hybrid", epochs=epochs, refit=False, progress=False)
        rec.fit(interactions, trained_listings).save(model)
    return model, paths["listings"], interactions


def new_listings(listings: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` listings not in ``listings``: random ones with new ids, prices and places moved."""
    rng = np.random.default_rng(seed)
    table = pd.read_parquet(listings)
    table = table.iloc[rng.choice(len(table), n, replace=False)].reset_index(drop=True)
    table["listing_id"] = [f"new-{i:06d}" for i in range(n)]
    table["price"] = (table["price"] * rng.uniform(0.9, 1.1, n)).round().astype(np.int64)
    table["lat"] = (table["lat"] + rng.normal(0, 0.05, n)).clip(-90, 90)
    table["lon"] = (table["lon"] + rng.normal(0, 0.05, n)).clip(-180, 180)
    return table


def package_at(revision: str, folder: Path) -> Path:
    """``src/embedrec`` of ``revision`` (``git archive``) extracted under ``folder``; returns
    ``folder / "src"``. An unknown revision exits with one line that names it."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["git", "archive", revision, "src/embedrec"], cwd=root, capture_output=True
    )
    if done.returncode:
        sys.exit(f"--before {revision}: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"
