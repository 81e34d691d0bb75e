"""The same training on two devices gives the same results up to floating point.

    python benchmarks/device_check.py [--data-dir DIR] [--models mf,deep,hybrid] [--epochs 3]
        [--devices cpu,cuda] [--json results.json]
    python benchmarks/device_check.py --smoke     # tiny data, cpu against cpu, seconds

Each model is fitted through the Recommender with the same seed on each device (validation on
the last 10% of pairs by time, no refit). Negatives, shuffles and dropout masks come from CPU
generators, so both runs see the same batches; what may differ is the arithmetic (summation
order, fused kernels). The table compares, per model: the largest relative difference of an
epoch's loss, the best validation Recall@10, the largest absolute difference of
a listing vector, and how many of each user's top 10 recommendations agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedrec import Recommender

DEFAULT_DATA = Path.home() / ".cache" / "embedrec" / "cars-small-seed0"


def fit(model: str, device: str, data_dir: Path, epochs: int) -> tuple[Recommender, float]:
    rec = Recommender(
        model=model,
        epochs=epochs,
        patience=epochs,
        refit=False,
        device=device,
        progress=False,
        seed=0,
    )
    started = time.perf_counter()
    rec.fit(data_dir / "interactions.parquet", data_dir / "listings.parquet")
    return rec, time.perf_counter() - started


def compare(model: str, devices: list[str], data_dir: Path, epochs: int) -> dict[str, Any]:
    (first, first_s), (second, second_s) = (fit(model, d, data_dir, epochs) for d in devices)
    losses = [np.array([h["loss"] for h in rec.report_["history"]]) for rec in (first, second)]
    vectors = [rec.retriever().catalogue.vectors for rec in (first, second)]
    users = first.users_.ids[:500]
    tops = [[answer.ids for answer in rec.recommend(users, k=10)] for rec in (first, second)]
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*tops, strict=True)])
    return {
        "model": model,
        "devices": devices,
        "epochs": epochs,
        "fit_s": [round(first_s, 2), round(second_s, 2)],
        "loss": [loss.round(6).tolist() for loss in losses],
        "max_loss_rel_diff": float(np.max(np.abs(losses[0] - losses[1]) / np.abs(losses[0]))),
        "val_recall@10": [rec.report_["best_val_recall@10"] for rec in (first, second)],
        "max_vector_abs_diff": float(np.max(np.abs(vectors[0] - vectors[1]))),
        "top10_agreement": float(agree),
    }


def render(results: list[dict[str, Any]]) -> str:
    devices = results[0]["devices"]
    lines = [
        f"| model | epochs | fit s, {devices[0]} | fit s, {devices[1]} | max loss rel. diff "
        f"| val R@10, {devices[0]} | val R@10, {devices[1]} | max vector diff | top-10 agree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['epochs']} | {r['fit_s'][0]:.1f} | {r['fit_s'][1]:.1f} "
            f"| {r['max_loss_rel_diff']:.1e} | {r['val_recall@10'][0]:.4f} "
            f"| {r['val_recall@10'][1]:.4f} | {r['max_vector_abs_diff']:.1e} "
            f"| {r['top10_agreement']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--models", default="mf,deep,hybrid")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny data, cpu against cpu")
    args = parser.parse_args(argv)
    devices = args.devices.split(",")
    if args.smoke:
        devices, args.epochs = ["cpu", "cpu"], 1
    if len(devices) != 2:
        parser.error("--devices takes two devices, e.g. cpu,cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device here: nothing to compare", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(args.data_dir)
        if args.smoke:
            from embedrec.datasets.cars import generate_cars

            data_dir = Path(scratch) / "cars-tiny"
            generate_cars(data_dir, size="tiny", progress=False)
        elif not (data_dir / "interactions.parquet").exists():
            from embedrec.datasets.cars import generate_cars

            generate_cars(data_dir, size="small", progress=False)
        results = [compare(m, devices, data_dir, args.epochs) for m in args.models.split(",")]
    print(f"torch {torch.__version__}; {' vs '.join(devices)}; data {data_dir.name}")
    if "cuda" in devices:
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
