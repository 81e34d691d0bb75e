"""Training past one process: torchrun ranks against one process and Hogwild workers, the
nightly warm start against a full retrain, and bad input on every rank.

    python benchmarks/distributed.py [--days 70] [--epochs 2] [--parts scale,hogwild,warm,bad]
    python benchmarks/distributed.py --days 3 --epochs 1 --parts ceiling   # the host's own limit
    python benchmarks/distributed.py --days 3 --parts converged --seeds 0,1,2  # quality
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

CACHE = Path.home() / ".cache" / "embedrec"
EPOCH_LINE = re.compile(
    r"epoch\s+(\d+)\s+loss\s+([\d.]+)(?:\s+val recall@10 ([\d.]+) \(se ([\d.]+)\))?"
)
DENSE_BYTES = 4
# the runs timed against each other: no early stop, no refit on the validation days
SCALE_CONFIG = {"patience": 100, "refit": False}
TEST_USERS = 5_000
# runs argv[2:] kept to the cores listed in argv[1] (the processes it starts inherit them)
PINNED = (
    "import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def sh(
    *command: str, env: dict | None = None, timeout: float = 7200, cores: list[int] | None = None
) -> tuple[str, float, dict]:
    """Run ``command`` (on ``cores`` only, when given); returns its output, its seconds and
    the peak RSS (MB) of each of its processes that ran ``embedrec train`` (the ranks),
    polled from /proc."""
    if cores is not None:
        # set in a process of its own that then becomes the command: a preexec_fn is unsafe
        # where threads run, and the ceiling starts two commands from two threads
        command = (sys.executable, "-c", PINNED, ",".join(map(str, cores)), *command)
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
    # the large data is cached across runs; the tiny one stays in the run's own folder
    source = (work if smoke else CACHE) / f"cars-{size}-seed0"
    if not (source / "interactions.parquet").exists():
        subprocess.run(
            [sys.executable, "-m", "embedrec", "generate", "cars", "--out", str(source)]
            + ["--size", size],
            check=True,
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
def train(
    events: Path,
    listings: Path,
    out: Path,
    ranks: int,
    config: dict,
    *extra: str,
    cores: list[int] | None = None,
) -> dict:
    """``embedrec train`` under torchrun with ``ranks`` processes (on ``cores`` only, when
    given); what its log says."""
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
    output, seconds, peaks = sh(*command, cores=cores)
    if "[exit" in output:
        raise RuntimeError(output[-4000:])
    epochs = [m.groups() for m in EPOCH_LINE.finditer(output)]
    report = json.loads((out / "config.json").read_text())["report"]
    return {
        "ranks": ranks,
        "seconds": seconds,
        # each epoch's steps and refreshes: neither validation nor checkpoints
        "epoch_seconds": float(np.median([h["train_seconds"] for h in report["history"]])),
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
    """Bytes a rank sends per step, from the trained model: DDP's ring all-reduce of the dense
    parameters' gradients; the sparse tables' gradients, which gloo all-gathers (every rank
    receives the rows each other rank touched: the distinct rows of a batch of training
    pairs, counted on one), but not those of the rows a rank holds of its own; the
    listing vectors of the batch that other ranks own, asked of them by row and sent back,
    and their gradients (the owner of a row computes its vector: each rank holds its own
    rows' features); and the gathered negatives with their gradients."""
    from embedrec.recommender import load

    recommender = load(model_dir)
    model = recommender.model_
    sparse = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    in_tables = {id(t.weight) for t in sparse}
    dense = sum(p.numel() for p in model.parameters() if id(p) not in in_tables)
    # the rows a rank holds of its own (its users', and its listings' ids where the
    # catalogue is shared out) are summed nowhere: no other rank reads them
    held = list(model.user_tables().values())
    if model.shards_catalogue:
        held.append(model.listing_id)
    tables = [t for t in sparse if all(t is not h for h in held)]
    # a batch of training pairs: its users, listings and the listings' feature rows
    rng = np.random.default_rng(0)
    seen = recommender.seen_.tocoo()
    picked = rng.choice(len(seen.row), size=min(batch, len(seen.row)), replace=False)
    listings = torch.as_tensor(seen.col[picked])
    sparse_bytes, sparse_rows = 0, 0
    for table in tables:
        key = getattr(_owner(model, table), "key", None)  # a feature's column
        if key is None:  # an id table: a row per distinct id
            ids = seen.row if table in model.user_tables().values() else seen.col
            rows = len(np.unique(ids[picked]))
        else:
            rows = len(torch.unique(model.catalogue[key][listings]))
        sparse_rows += rows
        sparse_bytes += rows * (table.embedding_dim * DENSE_BYTES + 8)
    dim = model.listing_id.embedding_dim
    share = -(-negatives // ranks)
    negatives_bytes = (ranks - 1) * share * (dim * DENSE_BYTES + 8) + 2 * (
        ranks - 1
    ) / ranks * ranks * share * dim * DENSE_BYTES
    dense_bytes = 2 * (ranks - 1) / ranks * dense * DENSE_BYTES
    # a rank asks others for the rows they own (a row id each), answers as many requests
    # with vectors, and sends the gradients of the vectors it received back
    exchanged_bytes = (ranks - 1) / ranks * batch * (8 + 2 * dim * DENSE_BYTES)
    return {
        "dense_parameters": dense,
        "sparse_tables": len(tables),
        "sparse_rows": sparse_rows,
        "sparse_per_rank": sparse_bytes,
        "dense": dense_bytes,
        "sparse": (ranks - 1) * sparse_bytes,
        "negatives": negatives_bytes,
        "exchanged": exchanged_bytes,
        "total": dense_bytes + (ranks - 1) * sparse_bytes + negatives_bytes + exchanged_bytes,
    }


def _owner(model: torch.nn.Module, table: torch.nn.Embedding) -> torch.nn.Module | None:
    """The module that holds ``table`` as its attribute (a feature's embedding keeps its
    column name there)."""
    for module in model.modules():
        if any(child is table for child in module.children()):
            return module
    return None


def scale(events: Path, listings: Path, work: Path, epochs: int) -> str:
    config = {**SCALE_CONFIG, "epochs": epochs}
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
        f"trained model and a batch of its training pairs): dense gradients "
        f"{comm['dense'] / 1e6:.2f} MB ({comm['dense_parameters']:,} parameters, ring "
        f"all-reduce), sparse gradients {comm['sparse'] / 1e6:.2f} MB "
        f"({comm['sparse_rows']:,} rows of {comm['sparse_tables']} tables, all-gathered), "
        f"listing vectors exchanged with their owners and their gradients "
        f"{comm['exchanged'] / 1e6:.2f} MB, "
        f"gathered negatives and their gradients {comm['negatives'] / 1e6:.2f} MB: "
        f"**{comm['total'] / 1e6:.2f} MB**.",
        "",
        projection(one, comm, batch, batch_two),
    ]
    return "\n".join(lines), runs


def ceiling(events: Path, listings: Path, work: Path, epochs: int, rounds: int = 3) -> str:
    """The efficiency this host allows two ranks whose communication were free: one
    process's training alone on one core, then two copies of it at once, each on a core of
    its own, alternated ``rounds`` times. The copies share what ranks share (memory
    bandwidth, caches, the host's other work) and exchange nothing."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        return "Not measured: this host lets the benchmark use one core."
    config = {**SCALE_CONFIG, "epochs": epochs}
    lines = [
        "| round | alone: s/epoch | two at once: s/epoch each | alone / slower of two |",
        "|---:|---:|---:|---:|",
    ]
    ratios = []
    for round_ in range(rounds):
        alone = train(events, listings, work / f"alone-{round_}", 1, config, cores=cores[:1])
        outs = [work / f"copy-{round_}-{core}" for core in cores]
        with ThreadPoolExecutor(2) as pool:
            running = [
                pool.submit(train, events, listings, out, 1, config, cores=[core])
                for out, core in zip(outs, cores, strict=True)
            ]
            copies = [future.result() for future in running]
        seconds = [run["epoch_seconds"] for run in copies]
        ratios.append(alone["epoch_seconds"] / max(seconds))
        lines.append(
            f"| {round_ + 1} | {alone['epoch_seconds']:.1f} | "
            f"{' / '.join(f'{s:.1f}' for s in seconds)} | {ratios[-1]:.3f} |"
        )
    lines += [
        "",
        f"- The ceiling of weak-scaling efficiency on this host, two ranks on cores {cores}: "
        f"**{float(np.median(ratios)):.2f}** (median of {rounds} rounds). What 2 ranks reach "
        "below it is the cost of their exchanges and of waiting for each other.",
    ]
    return "\n".join(lines)


def converged(events: Path, listings: Path, work: Path, seeds: list[int]) -> str:
    """1 rank against 2, each trained as ``embedrec train`` trains by default (early
    stopping on its validation users, who are the same whatever the number of ranks), once
    per training seed: the best validation Recall@10 of each, and their difference."""
    config = {"refit": False}  # the model scored is the one the validation chose
    lines = [
        "| seed | 1 rank: Recall@10 (se), best epoch | 2 ranks: Recall@10 (se), best epoch "
        "| 2 ranks - 1 rank |",
        "|---:|---|---|---:|",
    ]
    differences, errors = [], []
    for seed in seeds:
        runs = [
            train(events, listings, work / f"converged-{r}-{seed}", r, config, "--seed", str(seed))
            for r in (1, 2)
        ]
        best = [json.loads((work / f"converged-{r}-{seed}" / "config.json").read_text())
                ["report"]["best_epoch"] for r in (1, 2)]  # fmt: skip
        differences.append(runs[1]["recall"] - runs[0]["recall"])
        errors.append(runs[0]["recall_se"])
        lines.append(
            f"| {seed} | "
            + " | ".join(
                f"{run['recall']:.4f} ({run['recall_se']:.4f}), {epoch}"
                for run, epoch in zip(runs, best, strict=True)
            )
            + f" | {differences[-1]:+.4f} |"
        )
    mean = float(np.mean(differences))
    spread = float(np.std(differences, ddof=1) / np.sqrt(len(seeds))) if len(seeds) > 1 else 0
    lines += [
        "",
        f"- Mean difference over {len(seeds)} seeds: **{mean:+.4f}** (its standard error over "
        f"seeds {spread:.4f}); one run's standard error of Recall@10 is about "
        f"{float(np.mean(errors)):.4f}.",
    ]
    return "\n".join(lines)


def projection(one: dict, comm: dict, batch: int, batch_per_rank: int) -> str:
    """Time per epoch of 1B events on 8 and 32 nodes, from the measured step time."""
    steps_one = -(-one["pairs"] // batch)
    step_seconds = one["epoch_seconds"] / steps_one
    rows = ["| nodes | steps per epoch | compute s/step | communication s/step | hours per epoch |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    bandwidth = 10e9 / 8  # 10 Gbit/s between nodes
    latency = 50e-6 * 10  # ten collectives per step, 50 us each
    for nodes in (8, 32):
        ring = 2 * (nodes - 1) / nodes
        dense = ring * comm["dense_parameters"] * DENSE_BYTES
        sparse = (nodes - 1) * comm["sparse_per_rank"]
        # measured with 2 ranks, where half of a batch's rows are another's
        exchanged = comm["exchanged"] * 2 * (nodes - 1) / nodes
        seconds = (dense + sparse + exchanged + comm["negatives"]) / bandwidth + latency
        steps = -(-1_000_000_000 // (nodes * batch_per_rank))
        compute = step_seconds * batch_per_rank / batch
        hours = steps * (compute + seconds) / 3600
        rows.append(f"| {nodes} | {steps:,} | {compute:.4f} | {seconds:.4f} | {hours:.2f} |")
    return "\n".join(
        [
            "Projection to 1B events (one rank per node, one thread each as measured here, "
            f"{batch_per_rank} pairs per rank and step). Assumptions: compute per pair as "
            f"measured with 1 rank ({step_seconds * 1000:.1f} ms per step of {batch}); "
            "10 Gbit/s between nodes, 50 us per collective, ten collectives per step; "
            "no overlap of communication with compute (DDP overlaps the dense all-reduce "
            "with the backward pass, so this is pessimistic); sparse gradients grow with "
            "the number of nodes (every rank receives every other's rows), and the listing "
            "vectors a rank asks of the others with the share of rows they own:",
            "",
            *rows,
        ]
    )


def hogwild(events: Path, listings: Path, work: Path, epochs: int, ddp: dict) -> str:
    config = {**SCALE_CONFIG, "epochs": epochs, "workers": 2}
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
    full retrain on all days but the last; Recall@10 on the last day, for a sample of its
    users (ranking 1M listings for every user of a day takes a quarter of an hour a model)."""
    from embedrec.recommender import load

    last, update_day = days[-1], days[-2]
    config = {**SCALE_CONFIG, "epochs": epochs}
    base = train(events, listings, work / "warm-base", 1, config, "--until", update_day)
    update = train(
        events, listings, work / "warm-updated", 1, config, "--since", update_day,
        "--until", last, "--init-from", str(work / "warm-base"),
    )  # fmt: skip
    full = train(events, listings, work / "warm-full", 1, config, "--until", last)
    test, test_users = _test_sample(events, last, work / "warm-test.parquet", TEST_USERS)
    rows = []
    models = {
        "full retrain": "warm-full",
        "update with --init-from": "warm-updated",
        "before the update": "warm-base",
    }
    for name, model in models.items():
        metrics = load(work / model).evaluate(test)["overall"]
        rows.append((name, metrics["recall@10"], metrics.get("recall@10_se", float("nan"))))
    # a run's time is a fixed part (reading, the listing features) and a part per pair:
    # from the base and full runs, the full retrain on all 70 days of the data
    per_pair = (full["seconds"] - base["seconds"]) / (full["pairs"] - base["pairs"])
    fixed = full["seconds"] - per_pair * full["pairs"]
    pairs_per_day = full["pairs"] / (len(days) - 1)
    full_70 = fixed + per_pair * pairs_per_day * 70
    if per_pair > 0 and fixed >= 0:
        projected = (
            f"- Projected to the data's 70 days ({fixed:.0f} s fixed, {per_pair * 1e3:.3f} ms "
            f"per pair, {pairs_per_day:,.0f} pairs a day, from the base and full runs): a full "
            f"retrain {full_70 / 60:.0f} min, the update over it "
            f"**{update['seconds'] / full_70:.2f}**."
        )
    else:  # e.g. on all 70 days, where the two runs differ by one day's pairs
        projected = (
            "- No projection: the base and full runs differ too little to separate the fixed "
            "cost from the cost per pair."
        )
    lines = [
        f"Base model: every day before {update_day} ({base['pairs']:,} pairs, "
        f"{base['seconds']:.0f} s). Update: the day {update_day} through `--init-from` "
        f"({update['pairs']:,} pairs, {update['seconds']:.0f} s). Full retrain: every day "
        f"before {last} ({full['pairs']:,} pairs, {full['seconds']:.0f} s). Wall times of "
        f"`embedrec train`, one process. Test: {test_users:,} users of {last} drawn at random "
        "(seed 0), all their events that day.",
        "",
        f"- Wall time, update over full retrain: **{update['seconds'] / full['seconds']:.2f}** "
        "(goal at most 0.2).",
        projected,
        "",
        "| model | Recall@10 on the next day | se |",
        "|---|---:|---:|",
        *[f"| {n} | {r:.4f} | {s:.4f} |" for n, r, s in rows],
    ]
    return "\n".join(lines)


def _test_sample(events: Path, day: str, out: Path, users: int) -> tuple[Path, int]:
    """The events of ``day`` of ``users`` users drawn at random, as one Parquet file."""
    table = ds.dataset(events, partitioning="hive").to_table(filter=ds.field("date") == day)
    everyone = np.unique(table.column("user_id").to_numpy())
    drawn = np.random.default_rng(0).choice(everyone, min(users, len(everyone)), replace=False)
    table = table.filter(pc.is_in(table.column("user_id"), pa.array(drawn)))
    pq.write_table(table.drop_columns(["date"]), out)
    return out, len(drawn)


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
    parser.add_argument("--rounds", type=int, default=3, help="of the ceiling part")
    parser.add_argument("--seeds", default="0,1,2", help="of the converged part")
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
    if "ceiling" in parts:
        print("## The host's ceiling: two copies of one process at once\n")
        rounds = 1 if args.smoke else args.rounds
        print(ceiling(events, listings, work, args.epochs, rounds) + "\n", flush=True)
    if "converged" in parts:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        print("## Trained until early stopping: 1 rank against 2\n")
        print(converged(events, listings, work, seeds) + "\n", flush=True)
    if "hogwild" in parts:
        config = {**SCALE_CONFIG, "epochs": args.epochs}
        ddp = runs[2] if runs else train(events, listings, work / "scale-2", 2, config)
        print("## DDP against Hogwild on one host\n")
        print(hogwild(events, listings, work, args.epochs, ddp) + "\n", flush=True)
    if "warm" in parts:
        print("## Warm start: the nightly update\n")
        print(warm(events, listings, work, days, args.epochs) + "\n", flush=True)
    if "bad" in parts:
        print("## Bad input\n\n" + bad_input(events, listings, work) + "\n", flush=True)


if __name__ == "__main__":
    main()
