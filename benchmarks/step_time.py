"""Training-step time of model variants, measured side by side in one process.

    python benchmarks/step_time.py [--size 5M] [--steps 100] [--rounds 3]
        [--variants "default;precision=fp32;hidden=64;feature_dim=8"]
    python benchmarks/step_time.py --smoke          # tiny data, seconds

Each variant is a ``Recommender`` fitted on the ``large`` car data or its first N events (as
``train_scale.py`` makes them) up to the point where ``fit`` hands its model and pairs to the
trainer; then the variants train for ``--steps`` steps per round with the trainer's own epoch
loop, taking turns for ``--rounds`` rounds. Timings from separate processes on a shared 2-core
machine vary by ±15%; interleaved rounds and the median per variant make small differences
readable.

A variant is ``key=value`` pairs joined by commas, each a ``Recommender`` parameter
(``hidden``, ``feature_dim``, ``precision``, ``negatives``, ...); ``default`` is the model as
shipped.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_scale import DEFAULT_DATA, ensure_data, parse_size, prepared, subset

from embedrec import Recommender
from embedrec.training.trainer import (
    make_optimizers,
    train_epoch,
    training_pairs,
)

# timed steps count as steps of a late epoch, where no early refresh of the cache falls
LATE_STEP = 3 << 30
PARAMETERS = set(Recommender().get_params())


def parse_variant(text: str) -> dict[str, Any]:
    """``"hidden=64,precision=bf16"`` -> Recommender parameters."""
    params: dict[str, Any] = {}
    if text.strip() == "default":
        return params
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SystemExit(f"variant {text!r}: expected key=value pairs, got {part!r}")
        if key not in PARAMETERS:
            raise SystemExit(f"variant {text!r}: Recommender has no parameter {key!r}")
        with contextlib.suppress(ValueError):
            value = float(value) if "." in value else int(value)
        params[key] = value
    return params


def checked_variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each ``--variants`` entry's Recommender parameters, checked before any data is made:
    a bad one exits with a line naming it."""
    variants = {}
    for text in (v.strip() for v in args.variants.split(";")):
        if not text:
            continue
        params = {"model": args.model, "batch_size": args.batch_size, **parse_variant(text)}
        try:
            Recommender(**params).check_params()
        except ValueError as error:  # check_params names the parameter
            raise SystemExit(f"variant {text!r}: {error}") from None
        variants[text] = params
    return variants


def measure(
    args: argparse.Namespace, variants: dict[str, dict[str, Any]], events: Path, listings: Path
) -> list[dict[str, Any]]:
    runs = []
    for text, params in variants.items():
        model, data, config = prepared(events, listings, params)
        pairs, log_q, trained = training_pairs(model, data, config, torch.device("cpu"))
        model.set_training_pairs(pairs[0], pairs[1])
        runs.append(
            {
                "variant": text,
                "model": model,
                "config": config,
                "optimizers": make_optimizers(model, config),
                "inputs": (pairs, log_q, trained),
                "generator": torch.Generator().manual_seed(0),
                "ms": [],
            }
        )
    # a warm-up of two steps each builds the cached listing vectors outside the timings
    for steps, timed in [(2, False)] + [(args.steps, True)] * args.rounds:
        for run in runs:
            (users, listings_, weights), log_q, trained = run["inputs"]
            n = min(len(users), steps * run["config"].batch_size)
            # the first pairs in training order: positions stay those the model's
            # time-ordered sequence was given, so histories are the real ones
            head = (users[:n], listings_[:n], weights[:n])
            model, optimizers, config = run["model"], run["optimizers"], run["config"]
            started = time.perf_counter()
            train_epoch(
                model, optimizers, head, log_q, trained, config, run["generator"], None, LATE_STEP
            )
            if timed:
                run["ms"].append((time.perf_counter() - started) / -(-n // config.batch_size) * 1e3)
    for run in runs:
        run["model"].set_training_pairs(None, None)
    return [{"variant": r["variant"], "ms": r["ms"]} for r in runs]


def render(results: list[dict[str, Any]], command: str, size: str, threads: int) -> str:
    first = float(np.median(results[0]["ms"]))
    lines = [
        f"Step time, `{size}` events, {threads} torch threads, torch {torch.__version__}:",
        "",
        "```",
        command,
        "```",
        "",
        "| variant | median ms/step | rounds (ms/step) | vs first |",
        "|---|---:|---|---:|",
    ]
    for result in results:
        median = float(np.median(result["ms"]))
        rounds = ", ".join(f"{ms:.1f}" for ms in result["ms"])
        lines.append(
            f"| {result['variant']} | {median:.1f} | {rounds} | {median / first - 1:+.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--size", default="5M", help="first N events, or all")
    parser.add_argument("--model", default="hybrid", choices=("mf", "hybrid"))
    parser.add_argument("--variants", default="default;precision=fp32;hidden=64;feature_dim=8")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true", help="tiny data, a few steps")
    args = parser.parse_args(argv)
    command = "python benchmarks/step_time.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    variants = checked_variants(args)
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            args.data_dir, args.size = str(Path(scratch) / "cars-tiny"), "all"
            args.steps, args.rounds, args.batch_size = 3, 2, 256
        data_dir = Path(args.data_dir)
        paths = ensure_data(data_dir, "tiny" if args.smoke else "large")
        events, listings, _ = subset(paths, parse_size(args.size), data_dir / "subsets")
        results = measure(args, variants, events, listings)
    print(render(results, command.strip(), args.size, torch.get_num_threads()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
