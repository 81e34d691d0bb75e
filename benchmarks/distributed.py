"""Training past one process: torchrun ranks against one process and Hogwild workers, the
nightly warm start against a full retrain, and bad input on every rank.

    python benchmarks/distributed.py [--days 70] [--epochs 2] [--parts scale,hogwild,warm,bad]
    python benchmarks/distributed.py --smoke      # the tiny car data; a minute

Writes the `large` car data (20M events over 70 days; ``embedrec generate cars --size
large``, cached) as a dataset partitioned by day, keeping the last ``--days`` days, and runs
``embedrec train`` on it as a user would: ``torchrun --standalone --nproc_per_node=N -m
embedrec train`` (N=1 is the plain single-process path), every process on one thread. Each
rank's peak memory is its VmHWM, read from /proc while it runs. Prints Markdown
(docs/benchmarks-distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

CACHE = Path.home() / ".cache" / "embedrec"
EPOCH_LINE = re.compile(
    r"epoch\s+(\d+)\s+loss\s+([\d.]+)(?:\s+val recall@10 ([\d.]+) \(se ([\d.]+)\))?"
)
DENSE_BYTES = 4


def sh(*command: str, env: dict | None = None, timeout: float = 7200) -> tuple[str, float, dict]:
    """Run ``command``; returns its output, its seconds and the peak RSS (MB) of each of its
    processes that ran ``embedrec train`` (the ranks), polled from /proc."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=(os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}) | (env or {}),
        )
        peaks: dict[int, float] = {}
        while process.poll() is None:
            for pid in _descendants(process.pid):
                peak = _peak_mb(pid)
                if peak is not None and _is_training(pid):
                    peaks[pid] = max(peaks.get(pid, 0.0), peak)
            if time.perf_counter() - started > timeout:
                process.kill()
                raise TimeoutError(" ".join(command))
            time.sleep(0.25)
        log.seek(0)
        output = log.read()
    if process.returncode != 0:
        output += f"\n[exit {process.returncode}]"
    return output, time.perf_counter() - started, peaks


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    except OSError:
        pass
    return found


def _peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _is_training(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"train" in command and b"torch.distributed.run" not in command


# ---------------------------------------------------------------------------- data
def partitioned(work: Path, days: int, smoke: bool) -> tuple[Path, Path, list[str]]:
    """The car data as ``events/date=YYYY-MM-DD/part-0.parquet`` for its last ``days`` days,
    its listings, and the days in order."""
    size = "tiny" if smoke else "large"
    source = CACHE / f"cars-{size}-seed0"
    if not (source / "interactions.parquet").exists():
        subprocess.run(
            ["embedrec", "generate", "cars", "--out", str(source), "--size", size], check=True
        )
    root = work / f"{size}-last-{days}-days"
    if not (root / "done").exists():
        table = pq.read_table(source / "interactions.parquet")
        dates = pd.to_datetime(table.column("timestamp").to_numpy()).strftime("%Y-%m-%d")
        keep = sorted(set(dates))[-days:]
        table = table.append_column("date", pa.array(dates))
        table = table.filter(ds.field("date").isin(keep))
        pq.write_to_dataset(table, root / "events", partition_cols=["date"])
        (root / "done").write_text("\n".join(keep))
    day_list = (root / "done").read_text().split()
    return root / "events", source / "listings.parquet", day_list


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- training runs
def train(events: Path, listings: Path, out: Path, ranks: int, config: dict, *extra: str) -> dict:
    """``embedrec train`` under torchrun with ``ranks`` processes; what its log says."""
    config_file = out.with_suffix(".toml")
    config_file.write_text(
        "[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", "-m", "embedrec", "train", "--interactions", str(events),
        "--listings", str(listings), "--out", str(out), "--config", str(config_file),
        "--device", "cpu", *extra,
    ]  # fmt: skip
    output, seconds, peaks = sh(*command)
    if "[exit" in output:
        raise RuntimeError(output[-4000:])
    epochs = [m.groups() for m in EPOCH_LINE.finditer(output)]
    stamps = [float(s) for s in re.findall(r"\(([\d.]+)s\)", output)]
    report = json.loads((out / "config.json").read_text())["report"]
    per_epoch = np.diff([0.0, *stamps])
    validation = [h.get("validation_seconds", 0.0) for h in report["history"]]
    return {
        "ranks": ranks,
        "seconds": seconds,
        "epoch_seconds": float(np.median(per_epoch[: len(validation)] - np.array(validation))),
        "peak_mb": sorted(peaks.values(), reverse=True)[:ranks],
        "recall": report["best_val_recall@10"],
        "recall_se": report["history"][report["best_epoch"] - 1].get("val_recall@10_se"),
        "pairs": report["pairs"],
        "users": report["users"],
        "listings": report["listings"],
        "epochs": len(epochs),
        "log": output,
    }


def communication(model_dir: Path, batch: int, negatives: int, ranks: int) -> dict:
    """Bytes a rank sends per step, from the model's tables: DDP's ring all-reduce of the
    dense gradients, the sparse id-table gradients (each rank's rows gathered by every
    other), and the gathered negatives with their gradients."""
    from safetensors import safe_open

    dense = sparse_dim = 0
    with safe_open(str(model_dir / "weights.safetensors"), "pt") as weights:
        for name in weights.keys():  # noqa: SIM118 - safe_open has no items()
            shape = weights.get_slice(name).get_shape()
            if name.endswith("_id.weight") or "embedding" in name and "features" not in name:
                sparse_dim = shape[1]
            else:
                dense += int(np.prod(shape))
    ring = 2 * (ranks - 1) / ranks
    dense_bytes = ring * dense * DENSE_BYTES
    # a step's user and listing rows: at most one each per pair of the batch
    sparse_bytes = (ranks - 1) * 2 * batch * (sparse_dim * DENSE_BYTES + 8)
    share = -(-negatives // ranks)
    negatives_bytes = (ranks - 1) * share * (sparse_dim * DENSE_BYTES + 8) + 2 * (
        ranks - 1
    ) / ranks * ranks * share * sparse_dim * DENSE_BYTES
    return {
        "dense_parameters": dense,
        "dim": sparse_dim,
        "dense": dense_bytes,
        "sparse": sparse_bytes,
        "negatives": negatives_bytes,
        "total": dense_bytes + sparse_bytes + negatives_bytes,
    }


def scale(events: Path, listings: Path, work: Path, epochs: int) -> str:
    config = {"epochs": epochs, "patience": 100, "refit": False}
    runs = {r: train(events, listings, work / f"scale-{r}", r, config) for r in (1, 2)}
    one, two = runs[1], runs[2]
    rate_one = one["pairs"] / one["epoch_seconds"]
    rate_two = two["pairs"] / 2 / two["epoch_seconds"]
    batch = min(4096, max(256, one["pairs"] // 64))
    batch_two = min(4096, max(256, one["pairs"] // 2 // 64))
    comm = communication(work / "scale-2", batch_two, 512, 2)
    lines = [
        "| ranks | pairs per rank | seconds per epoch | pairs/s per rank | peak MB per rank | "
        "val Recall@10 (se) | wall seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, run in runs.items():
        rate = run["pairs"] / r / run["epoch_seconds"]
        lines.append(
            f"| {r} | {run['pairs'] // r:,} | {run['epoch_seconds']:.1f} | {rate:,.0f} | "
            f"{' / '.join(f'{p:,.0f}' for p in run['peak_mb'])} | {run['recall']:.4f} "
            f"({run['recall_se']:.4f}) | {run['seconds']:.0f} |"
        )
    memory_ratio = max(two["peak_mb"]) / max(one["peak_mb"])
    lines += [
        "",
        f"- Weak-scaling efficiency (pairs/s per rank, 2 ranks over 1): "
        f"**{rate_two / rate_one:.2f}** (goal 0.85).",
        f"- Peak memory per rank, 2 ranks over 1: **{memory_ratio:.2f}** (goal at most 0.6).",
        f"- Validation Recall@10: 1 rank {one['recall']:.4f} (se {one['recall_se']:.4f}), "
        f"2 ranks {two['recall']:.4f} (se {two['recall_se']:.4f}); difference "
        f"{abs(two['recall'] - one['recall']):.4f}.",
        f"- Bytes a rank sends per step with 2 ranks (batch {batch_two} per rank, from the "
        f"model's tables): dense gradients {comm['dense'] / 1e6:.2f} MB "
        f"({comm['dense_parameters']:,} parameters, ring all-reduce), sparse id-table "
        f"gradients at most {comm['sparse'] / 1e6:.2f} MB, gathered negatives and their "
        f"gradients {comm['negatives'] / 1e6:.2f} MB: **{comm['total'] / 1e6:.2f} MB**.",
        "",
        projection(one, comm, batch, batch_two),
    ]
    return "\n".join(lines), runs


def projection(one: dict, comm: dict, batch: int, batch_per_rank: int) -> str:
    """Time per epoch of 1B events on 8 and 32 nodes, from the measured step time."""
    steps_one = -(-one["pairs"] // batch)
    step_seconds = one["epoch_seconds"] / steps_one
    rows = ["| nodes | steps per epoch | compute s/step | communication s/step | hours per epoch |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    bandwidth = 10e9 / 8  # 10 Gbit/s between nodes
    latency = 50e-6 * 6  # a few collectives per step, 50 us each
    for nodes in (8, 32):
        ring = 2 * (nodes - 1) / nodes
        dense = ring * comm["dense_parameters"] * DENSE_BYTES
        sparse = (nodes - 1) * 2 * batch_per_rank * (comm["dim"] * DENSE_BYTES + 8)
        seconds = (dense + sparse + comm["negatives"]) / bandwidth + latency
        steps = -(-1_000_000_000 // (nodes * batch_per_rank))
        compute = step_seconds * batch_per_rank / batch
        hours = steps * (compute + seconds) / 3600
        rows.append(f"| {nodes} | {steps:,} | {compute:.4f} | {seconds:.4f} | {hours:.2f} |")
    return "\n".join(
        [
            "Projection to 1B events (one rank per node, one thread each as measured here, "
            f"{batch_per_rank} pairs per rank and step). Assumptions: compute per pair as "
            f"measured with 1 rank ({step_seconds * 1000:.1f} ms per step of {batch}); "
            "10 Gbit/s between nodes, 50 us per collective, six collectives per step; "
            "no overlap of communication with compute (DDP overlaps the dense all-reduce "
            "with the backward pass, so this is pessimistic); sparse gradients grow with "
            "the number of nodes (every rank receives every other's rows):",
            "",
            *rows,
        ]
    )


def hogwild(events: Path, listings: Path, work: Path, epochs: int, ddp: dict) -> str:
    config = {"epochs": epochs, "patience": 100, "refit": False, "workers": 2}
    run = train(events, listings, work / "hogwild", 1, config, "--seed", "0")
    # Hogwild splits the process's threads among its workers: two workers of one thread
    ratio = run["epoch_seconds"] / ddp["epoch_seconds"]
    return "\n".join(
        [
            "| one host, 2 cores | seconds per epoch | peak MB (all processes) | "
            "val Recall@10 (se) |",
            "|---|---:|---:|---:|",
            f"| Hogwild, 2 workers | {run['epoch_seconds']:.1f} | "
            f"{max(run['peak_mb']):,.0f} | {run['recall']:.4f} ({run['recall_se']:.4f}) |",
            f"| DDP, 2 ranks | {ddp['epoch_seconds']:.1f} | "
            f"{sum(ddp['peak_mb']):,.0f} | {ddp['recall']:.4f} ({ddp['recall_se']:.4f}) |",
            "",
            f"Hogwild's epoch takes {ratio:.2f} times DDP's.",
        ]
    )


def warm(events: Path, listings: Path, work: Path, days: list[str], epochs: int) -> str:
    """All days but the last two, then the second-to-last through --init-from, against a
    full retrain on all days but the last; Recall@10 on the last day."""
    from embedrec.recommender import load

    last, update_day = days[-1], days[-2]
    config = {"epochs": epochs, "patience": 100}
    base = train(events, listings, work / "warm-base", 1, config, "--until", update_day)
    start = time.perf_counter()
    train(
        events, listings, work / "warm-updated", 1, config, "--since", update_day,
        "--until", last, "--init-from", str(work / "warm-base"),
    )  # fmt: skip
    update_seconds = time.perf_counter() - start
    full = train(events, listings, work / "warm-full", 1, config, "--until", last)
    rows = []
    models = {
        "full retrain": "warm-full",
        "update with --init-from": "warm-updated",
        "before the update": "warm-base",
    }
    for name, model in models.items():
        metrics = load(work / model).evaluate(events, since=last)["overall"]
        rows.append((name, metrics["recall@10"], metrics.get("recall@10_se", float("nan"))))
    lines = [
        f"Base model: every day before {update_day} ({base['seconds']:.0f} s). Update: the "
        f"day {update_day} through `--init-from` ({update_seconds:.0f} s wall). Full retrain: "
        f"every day before {last} ({full['seconds']:.0f} s). Test: the events of {last}.",
        "",
        f"- Wall time, update over full retrain: **{update_seconds / full['seconds']:.2f}** "
        "(goal at most 0.2).",
        "",
        "| model | Recall@10 on the next day | se |",
        "|---|---:|---:|",
        *[f"| {n} | {r:.4f} | {s:.4f} |" for n, r, s in rows],
    ]
    return "\n".join(lines)


def bad_input(events: Path, listings: Path, work: Path) -> str:
    corrupt = work / "corrupt" / "date=2026-11-01"
    corrupt.mkdir(parents=True, exist_ok=True)
    (corrupt / "part-0.parquet").write_bytes(b"PAR1 not parquet PAR1")
    port = free_port()
    cases = {
        "a missing partition": [f"{events}/date=2099-01-01"],
        "a corrupt Parquet file": [str(work / "corrupt")],
        "an unknown URI scheme": ["nosuch://bucket/events"],
    }
    rows = [
        "| bad input | exit status | seconds | what every rank printed |",
        "|---|---:|---:|---|",
    ]
    for name, (source,) in cases.items():
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "embedrec", "train", "--interactions", source, "--listings", str(listings),
            "--out", str(work / "bad"),
        ]  # fmt: skip
        rows.append(_bad_row(name, command))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1",
        "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.2:{port}",
        "--rdzv_conf=join_timeout=30,read_timeout=30", "-m", "embedrec", "train",
        "--interactions", str(events), "--listings", str(listings), "--out", str(work / "bad"),
    ]  # fmt: skip
    rows.append(_bad_row("a rendezvous endpoint nobody answers", command))
    return "\n".join(rows)


def _bad_row(name: str, command: list[str]) -> str:
    started = time.perf_counter()
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    seconds = time.perf_counter() - started
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    if not lines:  # torchrun's own failure, before any rank started
        lines = [line for line in run.stderr.splitlines() if "Error" in line][-1:]
    shown = "<br>".join(sorted(set(lines))).replace("|", "\\|")
    shown = re.sub(r"/[^ ]*/(?=date=|corrupt)", ".../", shown)
    return f"| {name} | {run.returncode} | {seconds:.1f} | {shown} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--parts", default="scale,hogwild,warm,bad")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.days, args.epochs = min(args.days, 30), 1
    work = args.work or Path(tempfile.mkdtemp(prefix="embedrec-distributed-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    events, listings, days = partitioned(work, args.days, args.smoke)
    print(
        f"`python benchmarks/distributed.py --days {args.days} --epochs {args.epochs} "
        f"--parts {args.parts}`; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, one thread per process; {len(days)} days "
        f"({days[0]} to {days[-1]}).\n"
    )
    runs = None
    if "scale" in parts:
        text, runs = scale(events, listings, work, args.epochs)
        print("## Scale: 1 rank against 2\n\n" + text + "\n", flush=True)
    if "hogwild" in parts and runs is not None:
        print("## DDP against Hogwild on one host\n")
        print(hogwild(events, listings, work, args.epochs, runs[2]) + "\n", flush=True)
    if "warm" in parts:
        print("## Warm start: the nightly update\n")
        print(warm(events, listings, work, days, args.epochs) + "\n", flush=True)
    if "bad" in parts:
        print("## Bad input\n\n" + bad_input(events, listings, work) + "\n", flush=True)


if __name__ == "__main__":
    main()
