"""Time each embedrec.viz figure on synthetic clustered listing vectors.

    .venv/bin/python benchmarks/viz.py            # 50k listings, 32 dims (a few minutes)
    .venv/bin/python benchmarks/viz.py --smoke    # tiny sizes, seconds

Prints a markdown table with the machine, library versions and the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedrec.viz import (
    format_inspection,
    inspect_embeddings,
    plot_neighbours_map,
    plot_projection,
    project,
)

MAKES = ["VW", "BMW", "Mercedes-Benz", "Audi", "Opel", "Ford", "Skoda", "Renault", "Toyota"]
CITIES = {
    "Berlin": (52.52, 13.40),
    "Hamburg": (53.55, 9.99),
    "München": (48.14, 11.58),
    "Köln": (50.94, 6.96),
    "Frankfurt am Main": (50.11, 8.68),
    "Stuttgart": (48.78, 9.18),
    "Leipzig": (51.34, 12.37),
    "Hannover": (52.37, 9.73),
}


def synthetic(n: int, dim: int = 32, clusters: int = 200, seed: int = 0):
    """Clustered unit vectors and a car-like table whose make/city/price follow the clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    c = rng.integers(0, clusters, n)
    vectors = (centres[c] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    make = np.array(MAKES)[c % len(MAKES)]
    names = np.array(list(CITIES))
    city_of = (c // len(MAKES)) % len(names)
    ll = np.array(list(CITIES.values()))[city_of]
    year = 2008 + (c % 15) + rng.integers(-1, 2, n)
    table = pd.DataFrame(
        {
            "listing_id": np.char.add("L", np.arange(n).astype(str)),
            "make": make,
            "model": np.char.add(np.char.add(make, " "), (c % 7).astype(str)),
            "fuel": np.array(["petrol", "diesel", "electric", "hybrid"])[c % 4],
            "year": year,
            "mileage_km": rng.integers(0, 250_000, n),
            "price": np.round(30_000 * 0.9 ** (2024 - year) * rng.lognormal(0, 0.2, n), -2),
            "equipment": np.where(rng.random(n) < 0.5, "navi|ahk", "navi|led|sitzheizung"),
            "city": names[city_of],
            "lat": ll[:, 0] + rng.normal(0, 0.15, n),
            "lon": ll[:, 1] + rng.normal(0, 0.2, n),
            "dealer_id": rng.integers(0, n // 20 + 1, n),
        }
    )
    return vectors, table


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def versions() -> str:
    names = ["numpy", "scikit-learn", "openTSNE", "umap-learn", "numba", "plotly", "matplotlib"]
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} missing")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="listings (default 50,000)")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    ap.add_argument("--methods", default="pca,tsne,umap")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the figures in this folder")
    args = ap.parse_args(argv)
    n = 600 if args.smoke else args.n
    vectors, table = synthetic(n, args.dim)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="embedrec-viz-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, str, float, str]] = []
    for method in args.methods.split(","):
        secs, (idx, coords) = timed(lambda m=method: project(vectors, m, n_jobs=args.n_jobs))
        rows.append((f"project {method}", f"{len(idx):,}", secs, "2-D layout"))
        sub = table.iloc[idx]
        for colour in ("make", "price"):
            for suffix in (".html", ".png"):
                path = out_dir / f"{method}-{colour}{suffix}"
                secs, _ = timed(
                    lambda p=path, c=colour, xy=coords, t=sub: plot_projection(xy, t, c, p)
                )
                size = f"{path.stat().st_size / 2**20:.1f} MiB"
                rows.append((f"plot {method} by {colour} {suffix}", f"{len(idx):,}", secs, size))

    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    s = x @ x[0]
    s[0] = -np.inf
    top = np.argsort(-s)[:10]
    fields = table.drop(columns=["dealer_id"])
    query = fields.iloc[0].to_dict()
    neighbours = fields.iloc[top].assign(score=s[top]).to_dict("records")
    for suffix in (".html", ".png"):
        path = out_dir / f"neighbours{suffix}"
        secs, _ = timed(lambda p=path: plot_neighbours_map(query, neighbours, p))
        rows.append(
            (f"neighbours map {suffix}", "10", secs, f"{path.stat().st_size / 2**20:.1f} MiB")
        )

    sample = 200 if args.smoke else 2000
    secs, res = timed(lambda: inspect_embeddings(vectors, table, k=10, sample=sample))
    rows.append(("inspect_embeddings", f"{sample:,} queries x {n:,}", secs, "k=10"))

    cpu = platform.processor() or platform.machine()
    print(f"Machine: {platform.node()} {cpu}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"Python {platform.python_version()}; {versions()}")
    print("Command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"Data: {n:,} synthetic listings, {args.dim} dims, n_jobs={args.n_jobs}\n")
    print("| step | points | seconds | note |")
    print("|---|---:|---:|---|")
    for name, pts, secs, note in rows:
        print(f"| {name} | {pts} | {secs:.2f} | {note} |")
    print(f"\nFigures in {out_dir}\n")
    print(format_inspection(res))


if __name__ == "__main__":
    main()
