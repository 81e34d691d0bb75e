"""Batch outputs: time and peak memory of the top 10 of every user and of every listing.

    python benchmarks/batch_outputs.py [--scales small,large-1M] [--chunk-sizes 4096]
        [--ranks 1,2]                   # also under torchrun with 2 ranks
        [--model DIR]                   # also a model trained elsewhere, e.g. on all 70 days
        [--write]                       # put the table into docs/benchmarks.md
    python benchmarks/batch_outputs.py --smoke     # tiny data, one epoch, seconds

Each figure is one ``embedrec recommend MODEL --all-users --out`` or ``embedrec similar MODEL
--all --out`` process, timed from start to exit, its peak resident memory read from
``os.wait4``'s resource usage. With N ranks the process is ``torchrun --standalone
--nproc_per_node=N``, each rank on cpus/N threads, and the memory is that of the largest rank
(Linux reports a process's peak as the largest of it and the children it waited for). A ``one
query`` row runs the same command for a single id: the cost of loading the model and building
the catalogue, which every batch run pays too.

Scales: ``small`` is the small car data (10,000 users, 20,000 listings) with a ``hybrid``
trained for three epochs; ``large-1M`` the ``hybrid`` of ``common.py`` (the first 1M events of
the ``large`` car data: about 130k users and 238k listings, searched through the IVF index).
``--model`` adds a model directory as it is, named by its folder, e.g. a model that
``python benchmarks/distributed.py --days 70 --epochs 1 --parts scale --work DIR`` writes
(``DIR/scale-1``, ``DIR/scale-2``: all 2M users of the large data, 1M listings).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from embedrec import Recommender

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- batch:start -->", "<!-- batch:end -->"
CACHE = Path.home() / ".cache" / "embedrec"


def small_model(work: Path, size: str = "small", epochs: int = 3) -> Path:
    """A hybrid trained on the ``size`` car data (generated into the cache once)."""
    from embedrec.datasets.cars import generate_cars

    # the tiny data of a smoke run lives in its temporary folder, the others in the cache
    data = (work if size == "tiny" else CACHE) / f"cars-{size}-seed0"
    if not (data / "interactions.parquet").exists():
        generate_cars(data, size=size, progress=False)
    model = work / f"model-{size}-{epochs}ep"
    if not (model / "manifest.json").exists():
        print(f"training hybrid on the {size} car data", file=sys.stderr, flush=True)
        rec = Recommender(model="hybrid", epochs=epochs, refit=False, progress=False)
        rec.fit(data / "interactions.parquet", data / "listings.parquet").save(model)
    return model


def measure(args: list[str], ranks: int = 1) -> tuple[float, float]:
    """(seconds, peak resident GiB) of one ``embedrec`` process, or of its largest rank under
    torchrun with ``ranks`` processes, each on its share of the CPUs."""
    launcher = ["-m", "embedrec.cli"]
    if ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        launcher += ["-m", "embedrec"]
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, *launcher, *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=os.environ | {"OMP_NUM_THREADS": threads},
        )
        # reaped here, not by Popen, to read this child's own resource usage
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            err.seek(0)
            raise SystemExit(f"embedrec {shlex.join(args)} failed:\n{err.read()}")
    # KiB on Linux: the largest of the process and the children it waited for (the ranks)
    return seconds, usage.ru_maxrss / 1024**2


def run_scale(
    name: str, model: Path, chunk_sizes: list[int], k: int, tmp: Path, ranks: list[int]
) -> list[str]:
    """One row per run: a single query of each kind, then every user and every listing with
    each number of ranks."""
    recommender = Recommender.load(model)
    listings = recommender.listing_table_["listing_id"]
    counts = {"recommend": len(recommender.users_), "similar": len(listings)}
    first = {"recommend": str(recommender.users_.ids[0]), "similar": str(listings.iloc[0])}
    del recommender
    flags = {"recommend": "--all-users", "similar": "--all"}
    cases = [(command, None, 1) for command in counts]
    cases += [(c, size, r) for r in ranks for size in chunk_sizes for c in counts]
    rows = []
    for command, chunk, rank_count in cases:
        out = tmp / f"{command}.parquet"
        args = [command, str(model), "-k", str(k)]
        if chunk is None:
            args.append(first[command])
        else:
            args += [flags[command], "--out", str(out), "--chunk-size", str(chunk)]
        seconds, gib = measure(args, rank_count)
        if chunk is None:
            what, queries, written = "one query (load + 1)", "1", "-"
        else:
            what = "all users" if command == "recommend" else "all listings"
            # one file, or under torchrun a folder of one part per rank
            queries, written = f"{counts[command]:,}", f"{ds.dataset(out).count_rows():,}"
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
        rows.append(
            f"| {name} | `{command}` | {what} | {queries} | {chunk or '-'} | {rank_count} "
            f"| {written} | {seconds:.1f} | {gib:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def report(rows: list[str], command: str, k: int) -> str:
    import faiss
    import numpy as np
    import torch

    return "\n".join(
        [
            f"Produced by `{command}` on {platform.platform()}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
            f"faiss {faiss.__version__}. Top {k} per query; time is the whole process (start, "
            "load, catalogue and index, ranking, Parquet); memory its peak resident set (with 2 "
            "ranks, of the larger rank).",
            "",
            "| scale | command | what | queries | chunk | ranks | rows written | s | peak GiB |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small,large-1M", help="small, large-1M")
    parser.add_argument("--chunk-sizes", default="4096", help="comma-separated")
    parser.add_argument("--ranks", default="1", help="comma-separated numbers of ranks")
    parser.add_argument("--model", type=Path, help="also this model directory, as it is")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--work", type=Path, default=CACHE / "batch-bench")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch")
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOCS}")
    args = parser.parse_args(argv)
    chunk_sizes = [int(c) for c in args.chunk_sizes.split(",")]
    ranks = [int(r) for r in args.ranks.split(",")]
    command = "python benchmarks/batch_outputs.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.smoke else args.work
        scales = ["tiny"] if args.smoke else [s for s in args.scales.split(",") if s]
        for scale in scales + (["model"] if args.model else []):
            if scale == "model":
                model, scale = args.model, args.model.name
            elif scale in ("tiny", "small"):
                model = small_model(work, scale, epochs=1 if args.smoke else 3)
            elif scale == "large-1M":
                from common import large_model

                model = large_model(work)[0]
            else:
                raise SystemExit(f"unknown scale {scale!r}; known: small, large-1M")
            rows += run_scale(scale, model, chunk_sizes, args.k, Path(tmp), ranks)
    text = report(rows, command.strip(), args.k)
    print(text)
    if args.write:
        from report_page import write_generated

        write_generated(DOCS, text, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
