"""Training at scale: load time, epoch time, time to the best validation score and peak memory.

    python benchmarks/train_scale.py [--sizes 1M,5M,all] [--models mf,hybrid,als,...]
        [--budget-seconds 600] [--seeds 0,1,2] [--out docs/benchmarks-scale.md]
    python benchmarks/train_scale.py --smoke          # tiny data, seconds; prints the table

Runs on the ``large`` car data (about 20M events; generated once into
``~/.cache/embedrec/cars-large-seed0``) and on its first N events in time order. Every fit runs
in a child process (``--child``, one JSON line on stdout) so that its peak RSS is its own.

Protocol, identical for our models and the peers (implicit ALS/BPR, LightFM WARP with item
features): interactions are loaded and merged into pairs with embedrec's ``prepare``; the last
10% of pairs by time are held out; after every epoch (iteration) Recall@10 is computed with
``evaluate_scorer`` over the full catalogue, training listings excluded, for the same fixed
sample of validation users as embedrec's trainer picks. Training stops after ``patience``+1
epochs without gain (the trainer's rule), at ``--max-epochs`` or once ``--budget-seconds`` of
wall time have passed since training started. Results are appended to a JSON-lines file, so
that runs of different sizes add up to one report. With several ``--seeds`` every model is fitted
once per training seed (the validation users stay the same), and the report adds each seed's
time to the best score and their median: where a flat validation curve peaks moves from seed
to seed. The main tables show seed 0.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from report_page import write_generated

DEFAULT_DATA = Path.home() / ".cache" / "embedrec" / "cars-large-seed0"
# our models as (Recommender model, worker processes): "hybrid-2w" trains hybrid with two
# Hogwild workers, as LightFM trains with two threads
OUR_MODELS = {"mf": ("mf", 1), "hybrid": ("hybrid", 1), "hybrid-2w": ("hybrid", 2)}
OURS = tuple(OUR_MODELS)
HYBRIDS = ("hybrid", "hybrid-2w")
PEERS = ("als", "bpr", "lightfm")
PEER_MODULES = {"als": "implicit", "bpr": "implicit", "lightfm": "lightfm"}
NAMES = {
    "mf": "embedrec mf",
    "hybrid": "embedrec hybrid",
    "hybrid-2w": "embedrec hybrid, 2 workers",
    "als": "implicit ALS",
    "bpr": "implicit BPR",
    "lightfm": "LightFM WARP + features",
}
ITEM_FEATURES = ("make", "segment", "body", "price_bucket", "region")
GB = 1024**3


# --------------------------------------------------------------------------- data


def parse_size(text: str) -> int | None:
    """``"1M"`` -> 1_000_000, ``"500k"`` -> 500_000, ``"all"`` -> None (every event)."""
    text = text.strip().lower()
    if text == "all":
        return None
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(n: int | None) -> str:
    if n is None:
        return "all"
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def ensure_data(data_dir: Path, size: str) -> dict[str, Path]:
    """The car data in ``data_dir``, generated when missing (large: minutes, 2.4 GB peak)."""
    paths = {name: data_dir / f"{name}.parquet" for name in ("listings", "interactions")}
    if not all(p.exists() for p in paths.values()):
        from embedrec.datasets.cars import generate_cars

        log(f"generating the {size} car data into {data_dir} (once)")
        generate_cars(data_dir, size=size, progress=False)
    return paths


def subset(paths: dict[str, Path], n: int | None, cache: Path) -> tuple[Path, Path, int]:
    """(events, listings, number of events) for the first ``n`` events in time order.

    The generator writes events sorted by time, so the first ``n`` rows are the earliest.
    The listings are those the subset names, so that a subset is a self-contained, smaller
    marketplace (the catalogue grows with the events, as in a real one).
    """
    rows = pq.ParquetFile(paths["interactions"]).metadata.num_rows
    if n is None or n >= rows:
        return paths["interactions"], paths["listings"], rows
    events = cache / f"interactions-first-{label(n)}.parquet"
    listings = cache / f"listings-first-{label(n)}.parquet"
    if not (events.exists() and listings.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        batches, taken = [], 0
        for batch in pq.ParquetFile(paths["interactions"]).iter_batches(batch_size=1 << 20):
            batches.append(batch.slice(0, n - taken))
            taken += batches[-1].num_rows
            if taken >= n:
                break
        table = pa.Table.from_batches(batches)
        used = pc.unique(table["listing_id"])
        catalogue = pq.read_table(paths["listings"])
        pq.write_table(
            catalogue.filter(pc.is_in(catalogue["listing_id"], value_set=used)), listings
        )
        pq.write_table(table, events)
    return events, listings, n


# --------------------------------------------------------------------------- child: load


def peak_rss_gb() -> float:
    """Peak resident set size of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def memory_gb(record: dict[str, Any]) -> float:
    """A fit's peak memory: its process's peak RSS, or, when worker processes trained with
    it, the larger of that and the peak of their summed proportional set sizes."""
    return max(record["peak_rss_gb"], record.get("peak_pss_gb", 0.0))


def proportional_set_gb(pid: int) -> float:
    """``pid``'s proportional set size: its private memory plus its share of pages that it
    shares with other processes (Linux)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024 / GB
    return 0.0


class MemorySampler(threading.Thread):
    """Samples the summed proportional set sizes of this process and its children (workers
    share the weights and data with it: their RSS would count them again) every
    ``every_s`` seconds; reading them costs about 0.1 s a process for 5 GB."""

    def __init__(self, every_s: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.every_s, self.peak_gb, self.done = every_s, 0.0, threading.Event()

    def run(self) -> None:
        pid = os.getpid()
        while not self.done.wait(self.every_s):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{pid}/children") as children:
                    pids = [int(child) for child in children.read().split()]
                if pids:  # only while workers run: the parent alone is its RSS
                    total = sum(proportional_set_gb(p) for p in [pid, *pids])
                    self.peak_gb = max(self.peak_gb, total)


def child_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Time a raw pyarrow read and embedrec's validated ``load_interactions``."""
    from embedrec.data.io import load_interactions

    started = time.perf_counter()
    table = pq.read_table(spec["events"])
    raw_s = time.perf_counter() - started
    rows = table.num_rows
    del table
    rss_raw = peak_rss_gb()
    started = time.perf_counter()
    frame = load_interactions(spec["events"])
    ours_s = time.perf_counter() - started
    assert len(frame) == rows
    return {"rows": rows, "pyarrow_s": raw_s, "load_s": ours_s, "rss_pyarrow_gb": rss_raw}


# --------------------------------------------------------------------------- child: fits


class Tracker:
    """Per-epoch timings and scores of a peer's run, with the trainer's own stopping rule
    (``EarlyStopping``) and the wall-clock budget."""

    def __init__(self, budget_s: float, patience: int) -> None:
        from embedrec.training.trainer import EarlyStopping

        self.budget_s = budget_s
        self.stopping = EarlyStopping(patience)
        self.epochs: list[dict[str, float]] = []
        self.train_started = 0.0
        self.mark = 0.0

    def start(self) -> None:
        self.train_started = self.mark = time.perf_counter()

    def validated(self, validation_started: float, score: float, error: float) -> bool:
        """Record an epoch whose validation began at ``validation_started``, its Recall@10 and
        that score's standard error; True to stop."""
        now = time.perf_counter()
        self.epochs.append(
            {
                "train_s": validation_started - self.mark,
                "val_s": now - validation_started,
                "elapsed_s": now - self.train_started,
                "recall@10": score,
                "recall@10_se": error,
            }
        )
        self.mark = now
        self.stopping.update(score)
        return self.stopping.stop

    def over_budget(self) -> bool:
        return time.perf_counter() - self.train_started > self.budget_s


# the Recommender's reasons to stop, in this report's words
STOPPED = {"epochs": "max epochs", "patience": "patience", "time budget": "budget"}


def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit ``mf`` or ``hybrid`` through the Recommender, timing each epoch and validation
    with a callback; the budget is the Recommender's ``time_budget``."""
    import logging

    from embedrec import Recommender
    from embedrec.training.trainer import bf16_steps, resolve_device

    logging.basicConfig(stream=sys.stderr, format="%(message)s")
    logging.getLogger("embedrec").setLevel(logging.INFO)
    epochs: list[dict[str, float]] = []
    timing = {"started": 0.0}

    def record(epoch: int, metrics: dict[str, float], elapsed: float) -> None:
        if not epochs:  # the first epoch ends ``elapsed`` seconds after training started
            timing["started"] = time.perf_counter() - elapsed
        previous = epochs[-1]["elapsed_s"] if epochs else 0.0
        epochs.append(
            {
                "train_s": elapsed - previous - metrics["validation_seconds"],
                "val_s": metrics["validation_seconds"],
                "elapsed_s": elapsed,
                "recall@10": metrics["val_recall@10"],
                "recall@10_se": metrics["val_recall@10_se"],
            }
        )

    model, workers = OUR_MODELS[spec["model"]]
    rec = Recommender(
        model=model,
        workers=workers,
        seed=spec["seed"],
        epochs=spec["max_epochs"],
        patience=spec["patience"],
        validation_fraction=0.1,
        validation_users=spec["val_users"],  # the same users as the peers'
        refit=False,
        time_budget=spec["budget_s"],
        progress=False,
    )
    started = time.perf_counter()
    rec.fit(spec["events"], spec["listings"], callbacks=[record])
    report = rec.report_
    return {
        "train_pairs": report["pairs"] - report["validation_pairs"],
        "listings": len(rec.listings_),
        "users": len(rec.users_),
        "setup_s": timing["started"] - started,
        "epochs": epochs,
        "stopped": STOPPED[report["stopped"]],
        "bf16_steps": bf16_steps(rec.precision, resolve_device(rec.device)),
    }


def prepared(events: Path, listings: Path, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(model, training pairs, config) as ``Recommender(**params).fit`` hands them to its
    first training run (the part before the time hold-out), through fit's public steps."""
    from embedrec import Recommender
    from embedrec.data.prepare import time_holdout

    rec = Recommender(progress=False, **params)
    rec.check_params()
    training = rec.prepare(events, listings)
    fit_part, _ = time_holdout(training.data, rec.validation_fraction)
    model = rec.build_model(training, fit_part)
    return model, fit_part, rec.train_config(len(training.data))


def item_features(table: Any) -> Any:
    """LightFM item features: an identity column per listing plus make, segment, body, price
    bucket (deciles) and region, rows normalised to sum 1 as LightFM's Dataset does."""
    import pandas as pd
    import scipy.sparse as sp

    n = len(table)
    columns = table.assign(
        price_bucket=pd.qcut(table["price"].rank(method="first"), 10, labels=False)
    )
    blocks = [sp.identity(n, dtype=np.float32, format="csr")]
    for name in ITEM_FEATURES:
        codes, uniques = pd.factorize(columns[name].astype(str))
        blocks.append(
            sp.csr_matrix(
                (np.ones(n, dtype=np.float32), (np.arange(n), codes)), shape=(n, len(uniques))
            )
        )
    matrix = sp.hstack(blocks, format="csr", dtype=np.float32)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / sums).astype(np.float32) @ matrix, dtype=np.float32)


def factor_scorer(
    users: np.ndarray, user_vectors: np.ndarray, listing_vectors: np.ndarray, bias: Any
) -> Callable[[np.ndarray], Any]:
    """Scores of rows of ``users`` over every listing: dot products plus the item bias,
    computed as embedrec's trainer validates (``dot_scorer``)."""
    import torch

    from embedrec.ranking import dot_scorer

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    queries = tensor(user_vectors)
    dots = dot_scorer(tensor(listing_vectors), None if bias is None else tensor(bias))
    return lambda rows: dots(queries[users[rows]])


def child_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit a peer one epoch (iteration) at a time, validating like embedrec's trainer."""
    from threadpoolctl import threadpool_limits

    from embedrec import Recommender
    from embedrec.data.prepare import time_holdout
    from embedrec.evaluation.metrics import evaluate_scorer
    from embedrec.training.trainer import validation_sample

    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    # the same pairs, catalogue and hold-out as Recommender.fit builds, by fit's own steps
    prepared = Recommender(model="mf", progress=False).prepare(spec["events"], spec["listings"])
    data = prepared.data
    fit_part, held_out = time_holdout(data, 0.1)
    seen, held = fit_part.matrix(), held_out.matrix()
    users = validation_sample(seen, held, spec["val_users"], fit_part.users)
    threads = spec["threads"]
    model_name = spec["model"]
    if model_name == "lightfm":
        from lightfm import LightFM

        features = item_features(prepared.listings.frame())
        coo = seen.tocoo()
        model = LightFM(no_components=spec["dim"], loss="warp", random_state=spec["seed"])

        def epoch(_: int) -> None:
            model.fit_partial(coo, item_features=features, epochs=1, num_threads=threads)

        def vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            bias, items = model.get_item_representations(features)
            return model.get_user_representations()[1], items, bias.astype(np.float32)

    else:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        if model_name == "als":
            model = AlternatingLeastSquares(
                factors=spec["dim"],
                iterations=1,
                random_state=spec["seed"],
                num_threads=threads,
                calculate_training_loss=False,
            )
        else:
            model = BayesianPersonalizedRanking(
                factors=spec["dim"], iterations=1, num_threads=threads
            )

        def epoch(number: int) -> None:
            # fit() continues from the current factors; a new seed per call gives BPR new
            # samples each epoch. implicit wants single-threaded BLAS next to its own threads.
            model.random_state = spec["seed"] + number
            with threadpool_limits(1, "blas"):
                model.fit(seen, show_progress=False)

        def vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            return np.asarray(model.user_factors), np.asarray(model.item_factors), None

    tracker = Tracker(spec["budget_s"], spec["patience"])
    tracker.start()
    setup_s = tracker.train_started - started
    stopped = "max epochs"
    for number in range(1, spec["max_epochs"] + 1):
        epoch(number)
        validation_started = time.perf_counter()
        score = factor_scorer(users, *vectors())
        metrics = evaluate_scorer(score, seen[users], held[users], ks=(10,), standard_errors=True)
        print(f"epoch {number:3d}  val recall@10 {metrics['recall@10']:.4f}", file=sys.stderr)
        recall, error = float(metrics["recall@10"]), float(metrics["recall@10_se"])
        if tracker.validated(validation_started, recall, error):
            stopped = "patience"
            break
        if tracker.over_budget():
            stopped = "budget"
            break
    return {
        "train_pairs": len(fit_part),
        "listings": len(data.listings),
        "users": len(data.users),
        "setup_s": setup_s,
        "epochs": tracker.epochs,
        "stopped": stopped,
    }


def child_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """torch.profiler over ``spec['steps']`` training steps of our model (one epoch capped)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from embedrec.training.trainer import make_optimizers, train_epoch, training_pairs

    model, data, config = prepared(spec["events"], spec["listings"], {"model": spec["model"]})
    (users, listings, weights), log_q, trained = training_pairs(
        model, data, config, torch.device("cpu")
    )
    model.set_training_pairs(users, listings)
    # the first pairs in training order, so that histories are the real ones
    n = min(len(users), spec["steps"] * config.batch_size)
    head = (users[:n], listings[:n], weights[:n])
    optimizers = make_optimizers(model, config)
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(
            model, optimizers, head, log_q, trained, config, torch.Generator().manual_seed(0), None
        )
    return {
        "steps": spec["steps"],
        "threads": torch.get_num_threads(),
        "steps_s": time.perf_counter() - started,
        "table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
    }


def child_main(spec: dict[str, Any]) -> None:
    """Run one measurement and print its result as one JSON line."""
    kind = spec["kind"]
    if kind == "load":
        result = child_load(spec)
    elif kind == "profile":
        result = child_profile(spec)
    elif spec["model"] in OURS:
        sampler = MemorySampler()
        sampler.start()
        result = child_ours(spec)
        sampler.done.set()
        if sampler.peak_gb:
            result["peak_pss_gb"] = sampler.peak_gb
    else:
        result = child_peer(spec)
    result["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent


def log(message: str) -> None:
    print(f"[train_scale] {message}", file=sys.stderr, flush=True)


def run_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last stdout line is the result."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}"}
    return json.loads(lines[-1])


def installed(model: str) -> bool:
    module = PEER_MODULES.get(model)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def within_one_se(scores: list[float], best: int, error: float) -> int:
    """The one-standard-error rule: index of the first score at least ``scores[best] - error``."""
    return next(i for i, score in enumerate(scores) if score >= scores[best] - error)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Epoch timings -> s/epoch, samples/s, best epoch and the time it took to reach it."""
    epochs = result.get("epochs") or []
    if not epochs:
        return result
    scores = [e["recall@10"] for e in epochs]
    best = int(np.argmax(scores))  # the first of equal scores, as the trainer keeps it
    per_epoch = float(np.median([e["train_s"] for e in epochs]))
    settled = {}
    if "recall@10_se" in epochs[best]:
        # the one-standard-error rule: the first epoch not measurably below the best, since
        # where a flat curve peaks is up to the validation sample's noise
        first = within_one_se(scores, best, epochs[best]["recall@10_se"])
        settled = {
            "settled_epoch": first + 1,
            "settled_recall@10": scores[first],
            "wall_s_to_settled": float(epochs[first]["elapsed_s"] - epochs[first]["val_s"]),
        }
    return {
        **result,
        "epochs_run": len(epochs),
        "s_per_epoch": per_epoch,
        "val_s_per_epoch": float(np.median([e["val_s"] for e in epochs])),
        "samples_per_s": result["train_pairs"] / per_epoch if per_epoch else float("nan"),
        "best_epoch": best + 1,
        "best_recall@10": scores[best],
        "train_s_to_best": float(sum(e["train_s"] for e in epochs[: best + 1])),
        "wall_s_to_best": float(epochs[best]["elapsed_s"] - epochs[best]["val_s"]),
        "best_recall@10_se": epochs[best].get("recall@10_se"),
        **settled,
    }


def read_results(path: Path, seed: int = 0) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest record per (kind, size, model) trained with ``seed`` (loads: any)."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in _records(path):
        if record["kind"] != "fit" or record.get("seed", 0) == seed:
            latest[(record["kind"], record["size"], record.get("model", ""))] = record
    return latest


def read_seeds(path: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """The latest fit per (size, model) and training seed, seeds in ascending order."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for record in _records(path):
        if record["kind"] == "fit" and record.get("epochs"):
            runs.setdefault((record["size"], record["model"]), {})[record.get("seed", 0)] = record
    return {key: dict(sorted(by_seed.items())) for key, by_seed in runs.items()}


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def run(args: argparse.Namespace) -> int:
    """Measure every requested (size, model), appending each result as it arrives."""
    data_dir = Path(args.data_dir)
    paths = ensure_data(data_dir, args.data_size)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    models = [m for m in args.models.split(",") if m]
    for model in models:
        if model not in OURS + PEERS:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(OURS + PEERS)}")
    results = Path(args.results)
    common = {
        "budget_s": args.budget_seconds,
        "patience": args.patience,
        "max_epochs": args.max_epochs,
        "val_users": args.val_users,
        "threads": args.threads,
        "dim": 32,
    }
    timeout = args.budget_seconds + args.setup_timeout
    for n in sizes:
        events, listings, n_events = subset(paths, n, data_dir / "subsets")
        size = label(n)
        base = {"events": str(events), "listings": str(listings)}
        if args.load:
            log(f"{size}: load")
            result = run_child({"kind": "load", **base}, timeout)
            append_result(results, {"kind": "load", "size": size, "n_events": n_events, **result})
        for seed in args.seeds:
            for model in models:
                if not installed(model):
                    log(f"{size}: {model} skipped ({PEER_MODULES[model]} not installed)")
                    continue
                log(f"{size}: {model}, seed {seed}")
                spec = {"kind": "fit", "model": model, "seed": seed, **base, **common}
                result = summarise(run_child(spec, timeout))
                record = {"kind": "fit", "size": size, "model": model, "seed": seed}
                append_result(
                    results,
                    {
                        **record,
                        "n_events": n_events,
                        "max_epochs": args.max_epochs,
                        "val_users": args.val_users,
                        **result,
                    },
                )
        if args.profile and n == sizes[0]:
            log(f"{size}: profile {args.profile}")
            spec = {"kind": "profile", "model": args.profile, "steps": 50, **base}
            result = run_child(spec, timeout)
            append_result(
                results, {"kind": "profile", "size": size, "model": args.profile, **result}
            )
    return 0


# --------------------------------------------------------------------------- report


def environment(threads: int) -> list[str]:
    versions = []
    for package in ("embedrec", "torch", "numpy", "pandas", "pyarrow", "implicit", "lightfm"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = names[0] if names else cpu
    return [
        f"- Machine: {os.cpu_count()} cores ({cpu}), {memory:.0f} GB RAM, "
        f"{platform.system()} {platform.release()}; peers use {threads} threads, torch its "
        "default (all cores)",
        f"- Python {platform.python_version()}; " + ", ".join(versions),
    ]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(
    results: dict[tuple[str, str, str], dict[str, Any]],
    sizes: Iterable[str],
    models: Iterable[str],
    command: str,
    threads: int,
    budget_s: float,
    seeds: dict[tuple[str, str], dict[int, dict[str, Any]]] | None = None,
) -> str:
    """The markdown report: load table, training table (peers side by side), targets, and
    time to best over training seeds where ``seeds`` (``read_seeds``) holds several."""
    sizes, models = list(sizes), list(models)
    loads = [results.get(("load", s, "")) for s in sizes]
    counts = {r.get("val_users") for k, r in results.items() if k[0] == "fit" and k[1] in sizes}
    sample = f"{counts.pop():,} " if len(counts) == 1 and None not in counts else ""
    steps = {r.get("bf16_steps") for k, r in results.items() if k[0] == "fit" and k[2] in OURS}
    precision = ""
    if len(steps) == 1 and None not in steps:
        precision = f": {'bf16' if steps.pop() else 'fp32'} steps"
    lines = [
        "# Training at scale",
        "",
        "Generated by `benchmarks/train_scale.py`; the numbers below are from one run on the "
        "machine described, no repetitions.",
        "",
        "```",
        command,
        "```",
        "",
        *environment(threads),
        "- Data: the synthetic `large` car marketplace (`generate_cars(size='large', seed=0)`); "
        "a size of N events is its first N events in time order, with the listings they name.",
        "- Protocol (all models): pairs merged by embedrec's `prepare`; the last 10% of pairs by "
        "time held out; after each epoch (iteration) Recall@10 over the full catalogue, training "
        f"listings excluded, on one fixed sample of {sample}validation users (`evaluate_scorer`); "
        f"stop after patience+1 epochs without gain, at the epoch cap, or after {budget_s:.0f} s "
        "of wall time. Dimension 32 for every model; library defaults otherwise (ours: softmax "
        f'loss, batch 4096, `precision="auto"`{precision}; '
        "implicit ALS/BPR; LightFM WARP, identity + make, segment, body, price decile, region "
        "item features).",
        "- s/epoch: median training time of an epoch, validation excluded; samples/s: training "
        "pairs / s/epoch; to best: training time summed up to the best epoch (train) and wall "
        "time from the start of training to the end of that epoch, earlier validations "
        "included (wall); setup: load + prepare + features + model before the first epoch; "
        "peak RSS: `ru_maxrss` of the child process that did it all; with 2 workers, the larger "
        "of that and the peak sum of the processes' proportional set sizes, sampled every 15 s "
        "(the workers share weights and data with it, which their RSS would count again).",
        "",
        "## Loading the interactions (Parquet)",
        "",
        "| events | rows | pyarrow read s | `load_interactions` s | peak RSS GB |",
        "|---|---:|---:|---:|---:|",
    ]
    for size, load in zip(sizes, loads, strict=True):
        if load is None:
            lines.append(f"| {size} | not run (time) | | | |")
        elif "error" in load:
            lines.append(f"| {size} | failed: {load['error']} | | | |")
        else:
            lines.append(
                f"| {size} | {load['rows']:,} | {fmt(load['pyarrow_s'])} | {fmt(load['load_s'])} "
                f"| {fmt(load['peak_rss_gb'], 2)} |"
            )
    lines += [
        "",
        "## Training",
        "",
        "| events | model | train pairs | listings | setup s | s/epoch | val s/epoch "
        "| samples/s | epochs (best) | best val R@10 | to best s (train) | to best s (wall) "
        "| peak RSS GB | stopped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in sizes:
        for model in models:
            record = results.get(("fit", size, model))
            name = NAMES[model]
            if record is None:
                lines.append(f"| {size} | {name} | not run (time) |" + " |" * 11)
            elif "error" in record or not record.get("epochs"):
                error = record.get("error", "no epoch finished")
                lines.append(f"| {size} | {name} | failed: {error} |" + " |" * 11)
            else:
                stopped = record["stopped"]
                if stopped == "max epochs":
                    stopped += f" ({record['max_epochs']})"
                lines.append(
                    f"| {size} | {name} | {record['train_pairs']:,} | {record['listings']:,} "
                    f"| {fmt(record['setup_s'])} | {fmt(record['s_per_epoch'])} "
                    f"| {fmt(record['val_s_per_epoch'])} | {fmt(record['samples_per_s'], 0)} "
                    f"| {record['epochs_run']} ({record['best_epoch']}) "
                    f"| {fmt(record['best_recall@10'], 4)} | {fmt(record['train_s_to_best'])} "
                    f"| {fmt(record['wall_s_to_best'])} | {fmt(memory_gb(record), 2)} "
                    f"| {stopped} |"
                )
    lines += ["", "## Targets (this machine)", "", *targets(results, sizes, models)]
    lines += seed_section(seeds or {}, sizes, models)
    profiles = [r for k, r in results.items() if k[0] == "profile" and "table" in r]
    for record in profiles:
        lines += [
            "",
            f"## Profile: {record['steps']} training steps of `{record['model']}` "
            f"({record['size']} events, {record['threads']} torch threads, "
            f"{fmt(record['steps_s'])} s with the profiler on)",
            "",
            "```",
            record["table"].rstrip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def curve_text(scores: list[float], best: int) -> str:
    """Scores by epoch, the one at index ``best`` in bold."""
    return ", ".join(f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(scores))


def seed_section(
    seeds: dict[tuple[str, str], dict[int, dict[str, Any]]], sizes: list[str], models: list[str]
) -> list[str]:
    """Time to best per training seed and its median, for each (size, model) fitted with more
    than one seed: where a flat curve peaks moves from seed to seed."""
    repeated = [(s, m) for s in sizes for m in models if len(seeds.get((s, m), {})) > 1]
    if not repeated:
        return []
    lines = [
        "",
        "## Time to best over training seeds",
        "",
        "Each seed changes initialisation, shuffling and sampling (LightFM's Hogwild threads "
        "add their own run-to-run differences); the validation users are the same for every "
        "seed and model.",
        "",
        "| events | model | seed | Recall@10 by epoch | best ± se (epoch) | to best s (wall) "
        "| within 1 SE: epoch (wall) | stopped |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    medians = {}
    for size, model in repeated:
        runs = seeds[(size, model)]
        for seed, record in runs.items():
            scores = [e["recall@10"] for e in record["epochs"]]
            curve = curve_text(scores, record["best_epoch"] - 1)
            error = record.get("best_recall@10_se")
            best = fmt(record["best_recall@10"], 4) + (f" ± {error:.4f}" if error else "")
            settled = (
                f"{record['settled_epoch']} ({record['wall_s_to_settled']:.0f} s)"
                if "settled_epoch" in record
                else "–"
            )
            lines.append(
                f"| {size} | {NAMES[model]} | {seed} | {curve} | {best} ({record['best_epoch']}) "
                f"| {fmt(record['wall_s_to_best'], 0)} | {settled} | {record['stopped']} |"
            )
        medians[(size, model)] = float(np.median([r["wall_s_to_best"] for r in runs.values()]))
    lines.append("")
    for (size, model), median in medians.items():
        walls = ", ".join(f"{r['wall_s_to_best']:.0f}" for r in seeds[(size, model)].values())
        lines.append(
            f"- {size}, {NAMES[model]}: median wall time to best {median:.0f} s (seeds: {walls})"
        )
    for size, model in itertools.product(sizes, HYBRIDS):
        ours, peer = medians.get((size, model)), medians.get((size, "lightfm"))
        if ours is not None and peer is not None:
            lines.append(
                f"- {size}: {NAMES[model]}'s median time to best below LightFM WARP + "
                f"features': {verdict(ours < peer)} ({ours:.0f} s vs {peer:.0f} s, "
                f"ratio {ours / peer:.2f})"
            )
    return lines + mean_curve_section(seeds, repeated)


def mean_curve(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The seeds' validation curves averaged epoch by epoch, over the epochs every seed ran:
    its best epoch, the mean wall time to it, and the first epoch within one standard error of
    it (the seeds' mean standard error: they share the validation users, so their sampling
    noise does not average out)."""
    length = min(len(r["epochs"]) for r in runs.values())
    epochs = [[r["epochs"][i] for r in runs.values()] for i in range(length)]
    scores = [float(np.mean([e["recall@10"] for e in epoch])) for epoch in epochs]
    walls = [float(np.mean([e["elapsed_s"] - e["val_s"] for e in epoch])) for epoch in epochs]
    best = int(np.argmax(scores))
    out: dict[str, Any] = {"scores": scores, "best": best, "wall_s_to_best": walls[best]}
    if all("recall@10_se" in e for e in epochs[best]):
        error = float(np.mean([e["recall@10_se"] for e in epochs[best]]))
        settled = within_one_se(scores, best, error)
        out.update(error=error, settled=settled, wall_s_to_settled=walls[settled])
    return out


def mean_curve_section(
    seeds: dict[tuple[str, str], dict[int, dict[str, Any]]], repeated: list[tuple[str, str]]
) -> list[str]:
    """The seed-averaged curves: where a model's expected score peaks, with less of the
    noise that moves a single run's maximum."""
    lines = [
        "",
        "### Seed-averaged validation curves",
        "",
        "| events | model | seeds | mean Recall@10 by epoch | best ± se (epoch) "
        "| to best s (mean wall) | within 1 SE: epoch (mean wall) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    curves = {}
    for size, model in repeated:
        runs = seeds[(size, model)]
        curve = curves[(size, model)] = mean_curve(runs)
        values = curve_text(curve["scores"], curve["best"])
        best = f"{curve['scores'][curve['best']]:.4f}"
        settled = "–"
        if "error" in curve:
            best += f" ± {curve['error']:.4f}"
            settled = f"{curve['settled'] + 1} ({curve['wall_s_to_settled']:.0f} s)"
        lines.append(
            f"| {size} | {NAMES[model]} | {len(runs)} | {values} | {best} ({curve['best'] + 1}) "
            f"| {curve['wall_s_to_best']:.0f} | {settled} |"
        )
    lines.append("")
    for size, model in itertools.product(dict.fromkeys(s for s, _ in repeated), HYBRIDS):
        ours, peer = curves.get((size, model)), curves.get((size, "lightfm"))
        if ours is None or peer is None:
            continue
        ok = ours["wall_s_to_best"] < peer["wall_s_to_best"]
        lines.append(
            f"- {size}: {NAMES[model]}'s seed-averaged curve peaks before LightFM WARP + "
            "features': "
            f"{verdict(ok)} (epoch {ours['best'] + 1} after {ours['wall_s_to_best']:.0f} s vs "
            f"epoch {peer['best'] + 1} after {peer['wall_s_to_best']:.0f} s)"
        )
        if "settled" in ours and "settled" in peer:
            ok = ours["wall_s_to_settled"] < peer["wall_s_to_settled"]
            lines.append(
                f"- {size}: {NAMES[model]}'s seed-averaged curve gets within one standard "
                "error of its "
                "peak before LightFM's: "
                f"{verdict(ok)} (epoch {ours['settled'] + 1} after "
                f"{ours['wall_s_to_settled']:.0f} s vs epoch {peer['settled'] + 1} after "
                f"{peer['wall_s_to_settled']:.0f} s)"
            )
    return lines


def targets(
    results: dict[tuple[str, str, str], dict[str, Any]], sizes: list[str], models: list[str]
) -> list[str]:
    """Met / not met / not measured for each target, with the numbers behind it."""

    out = []
    load = results.get(("load", sizes[-1], "")) if sizes else None
    if load and "load_s" in load:
        ok = load["load_s"] < 30
        out.append(
            f"- Load {load['rows']:,} rows in under 30 s: {verdict(ok)} "
            f"(`load_interactions` {load['load_s']:.1f} s, raw pyarrow {load['pyarrow_s']:.1f} s)"
        )
    else:
        out.append("- Load 20M rows in under 30 s: not measured")
    fits = [results[("fit", s, m)] for s in sizes for m in OURS if ("fit", s, m) in results]
    fits = [r for r in fits if "peak_rss_gb" in r]
    if fits:
        worst = max(fits, key=memory_gb)
        out.append(
            f"- Peak memory under 8 GB (our fits): {verdict(memory_gb(worst) < 8)} (highest "
            f"{memory_gb(worst):.2f} GB: {worst['model']} on {worst['size']} events; "
            f"measured on: {', '.join(sorted({r['size'] for r in fits}))})"
        )
    else:
        out.append("- Peak memory under 8 GB: not measured")
    linear, ratios = [], []
    for model in OURS:
        rows = [results.get(("fit", s, model)) for s in sizes]
        rows = [r for r in rows if r and r.get("s_per_epoch")]
        if len(rows) >= 2:
            small, large = rows[0], rows[-1]
            ratio = (large["s_per_epoch"] / large["train_pairs"]) / (
                small["s_per_epoch"] / small["train_pairs"]
            )
            ratios.append(ratio)
            linear.append(
                f"{model}: s/epoch per pair x{ratio:.2f} from {small['size']} to {large['size']}"
            )
    if linear:
        # cheaper per pair at scale is fine; more than 25% dearer is not linear
        out.append(
            "- Cost linear in events (s/epoch per training pair grows at most 25%): "
            f"{verdict(max(ratios) <= 1.25)} (" + "; ".join(linear) + ")"
        )
    else:
        out.append("- Cost linear in events: not measured (needs two sizes)")
    for size, model in itertools.product(sizes, HYBRIDS):
        ours, peer = results.get(("fit", size, model)), results.get(("fit", size, "lightfm"))
        if ours and peer and ours.get("epochs") and peer.get("epochs"):
            ok = ours["wall_s_to_best"] < peer["wall_s_to_best"]
            out.append(
                f"- {size}: {NAMES[model]} reaches its best score faster than LightFM WARP + "
                "features: "
                f"{verdict(ok)} (wall {ours['wall_s_to_best']:.0f} s vs "
                f"{peer['wall_s_to_best']:.0f} s; best R@10 {ours['best_recall@10']:.4f} vs "
                f"{peer['best_recall@10']:.4f}; LightFM stopped: {peer['stopped']})"
            )
            # the question a user asks: how long until hybrid is as good as LightFM gets
            level = peer["best_recall@10"]
            reached = [e for e in ours["epochs"] if e["recall@10"] >= level]
            when = f"{reached[0]['elapsed_s'] - reached[0]['val_s']:.0f} s" if reached else "never"
            out.append(
                f"- {size}: wall time until {NAMES[model]} matches LightFM's best R@10 "
                f"({level:.4f}): "
                f"{when} (LightFM needed {peer['wall_s_to_best']:.0f} s)"
            )
            if "settled_epoch" in ours and "settled_epoch" in peer:
                ok = ours["wall_s_to_settled"] < peer["wall_s_to_settled"]
                out.append(
                    f"- {size}: {NAMES[model]} gets within one standard error of its best "
                    "faster than "
                    f"LightFM: {verdict(ok)} (epoch {ours['settled_epoch']} after "
                    f"{ours['wall_s_to_settled']:.0f} s, R@10 {ours['settled_recall@10']:.4f}, "
                    f"best {ours['best_recall@10']:.4f} ± {ours['best_recall@10_se']:.4f}; "
                    f"LightFM epoch {peer['settled_epoch']} after "
                    f"{peer['wall_s_to_settled']:.0f} s, R@10 {peer['settled_recall@10']:.4f}, "
                    f"best {peer['best_recall@10']:.4f} ± {peer['best_recall@10_se']:.4f})"
                )
    return out


# --------------------------------------------------------------------------- main


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; anything else is an argparse error that names the option."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers joined by commas: {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct seeds of 0 or more: {text!r}")
    return seeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--data-size", default="large", help="generate_cars size if missing")
    parser.add_argument("--sizes", default="1M,5M,all", help="event counts, or all")
    parser.add_argument("--models", default=",".join(OURS + PEERS))
    parser.add_argument("--no-load", dest="load", action="store_false", help="skip load timing")
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    parser.add_argument("--setup-timeout", type=float, default=900.0, help="on top of budget")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--val-users", type=int, default=2000)
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=[0],
        help="training seeds, each model fitted once per seed (1,2,3)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--profile", choices=("mf", "hybrid"), help="also profile 50 steps on the 1st size"
    )
    parser.add_argument("--results", help="JSON-lines results (default: DATA_DIR/...)")
    parser.add_argument("--out", default="docs/benchmarks-scale.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite --out from results")
    parser.add_argument(
        "--report-sizes", help="sizes the report lists (default --sizes); unmeasured: not run"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny data, seconds, no report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    command = "python benchmarks/train_scale.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            args.data_dir, args.data_size = str(Path(scratch) / "cars-tiny"), "tiny"
            # one size and one epoch: each child pays for a fresh interpreter and torch import
            args.sizes, args.max_epochs, args.budget_seconds = "all", 1, 20.0
            args.val_users, args.results, args.out = 200, str(Path(scratch) / "r.jsonl"), None
        args.results = args.results or str(Path(args.data_dir) / "train_scale_results.jsonl")
        if not args.report_only:
            run(args)
        report_sizes = [label(parse_size(s)) for s in (args.report_sizes or args.sizes).split(",")]
        # the report lists every model, so that those not measured show as "not run"
        models = [m for m in OURS + PEERS if installed(m)]
        body = render(
            read_results(Path(args.results)),
            report_sizes,
            models,
            command.strip(),
            args.threads,
            args.budget_seconds,
            read_seeds(Path(args.results)),
        )
    print(body)
    if args.out:
        write_generated(Path(args.out), body)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
