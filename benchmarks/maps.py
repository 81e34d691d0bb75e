"""Pictures of what the network learned on the small car data, for the README and docs/maps.md.

    python benchmarks/maps.py [--model-dir DIR] [--out docs]

Trains the default model on the small car data when no model directory is given, then draws
PCA and t-SNE maps coloured by segment and by region, the Qashqai's neighbours on a map of
Germany, and the `embedrec inspect` figures, timing each.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedrec import Recommender, __version__, load
from embedrec.data.schema import column_kinds
from embedrec.datasets.cars import generate_cars
from embedrec.viz import (
    format_inspection,
    inspect_embeddings,
    plot_neighbours_map,
    plot_projection,
    project,
)
from embedrec.viz.projection import METHOD_NAMES

QUERY = "qashqai-dresden"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "embedrec")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--epochs", type=int, default=10, help="as in `embedrec demo`")
    args = parser.parse_args()
    if args.model_dir is None:
        data_dir = args.data / "cars-small-seed0"
        if not (data_dir / "interactions.parquet").exists():
            generate_cars(data_dir, size="small", seed=0, progress=False)
        args.model_dir = args.data / "model-small-seed0"
        # the model `embedrec demo` trains (and caches where this looks first): no refit
        Recommender(seed=0, epochs=args.epochs, refit=False, progress=False).fit(
            data_dir / "interactions.parquet", data_dir / "listings.parquet"
        ).save(args.model_dir)
    recommender = load(args.model_dir)
    catalogue = recommender.retriever().catalogue
    table, vectors = catalogue.table, catalogue.vectors
    args.out.mkdir(parents=True, exist_ok=True)
    timings = []

    def timed(label: str, action):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        result = action()
        timings.append((label, time.perf_counter() - started))
        return result

    for method in ("pca", "tsne"):
        started = time.perf_counter()
        rows, coords = project(vectors, method=method, seed=0)
        timings.append(
            (f"{method} projection of {len(rows):,} listings", time.perf_counter() - started)
        )
        sample = table.iloc[rows].reset_index(drop=True)
        for color in ("segment", "region"):
            path = args.out / f"map-{method}-{color}.png"
            started = time.perf_counter()
            plot_projection(
                coords,
                sample,
                color,
                path,
                title=f"{METHOD_NAMES[method]} of listing embeddings, by {color}",
            )
            timings.append((path.name, time.perf_counter() - started))
    [result] = recommender.similar([QUERY], k=10)
    [query] = catalogue.fields(catalogue.rows_of([QUERY]))
    timed(
        "qashqai-neighbours.png",
        lambda: plot_neighbours_map(
            query,
            [hit.to_dict() for hit in result.hits],
            args.out / "qashqai-neighbours.png",
            title="2018 Nissan Qashqai, Dresden, and its 10 most similar listings",
        ),
    )
    kinds = column_kinds(recommender.feature_specs_)
    figures = timed(
        "inspect", lambda: inspect_embeddings(vectors, table, k=10, sample=2000, kinds=kinds)
    )
    (args.out / "inspect.json").write_text(json.dumps(figures, indent=2, default=str))
    lines = [
        "# Maps of the learned embeddings (small car data)",
        "",
        f"Model: `{args.model_dir.name}` ({recommender.model}), {len(vectors):,} listings.",
        "",
        "| figure | seconds |",
        "|---|---|",
        *[f"| {label} | {seconds:.1f} |" for label, seconds in timings],
        "",
        "## `embedrec inspect`",
        "",
        "```",
        format_inspection(figures),
        "```",
        "",
        f"`python benchmarks/maps.py` on {platform.platform()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}, embedrec {__version__}.",
    ]
    (args.out / "maps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
