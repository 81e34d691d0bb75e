"""Where a rank's memory goes: the resident memory of each rank over a short training run
under torchrun, by phase, and the largest arrays a rank holds while it trains.

    python benchmarks/rank_memory.py [--days 70] [--ranks 2] [--steps 200] [--at-step 30]
    python benchmarks/rank_memory.py --smoke      # the tiny car data; under a minute

Runs ``embedrec train`` on the car data partitioned by day (as ``benchmarks/distributed.py``
writes it) under ``torchrun --standalone --nproc_per_node=RANKS``, one thread per rank, with
each epoch cut to ``--steps`` steps. Every rank samples its RSS every 0.2 s with the place its
main thread is at, and at step ``--at-step`` lists the arrays, tensors and tables of 8 MB or
more that it holds, with where they are held, and where its resident memory lies (mapped
from files, glibc's heap in use and freed, Arrow's pool). Prints Markdown: per rank, the peak
RSS of each phase of the run, then the rank 0 list and each rank's breakdown
(docs/benchmarks-distributed.md).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import runpy
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed import SCALE_CONFIG, partitioned  # noqa: E402 - the benchmark's own data

SAMPLE_SECONDS = 0.2
SMALLEST_MB = 8.0
# a run's phases by the embedrec function its main thread is in, the innermost first
PHASES = (
    ("validation_recall", "validation"),
    ("make_whole", "making the model whole"),
    ("seen_by_every_rank", "making the model whole"),
    ("checkpoint.py", "checkpoint"),
    ("train_epoch", "training steps"),
    ("training_pairs", "training pairs in time order"),
    ("build_model", "building the model"),
    ("prepare_training_data", "reading and preparing the data"),
    ("bundle.py", "saving the model"),
    ("save", "saving the model"),
)


# ---------------------------------------------------------------------------- in a rank
def probe(out: Path, steps: int, at_step: int, arguments: list[str]) -> None:
    """Run the embedrec CLI in this process (a rank) with the timeline and the list on."""
    rank = os.environ.get("RANK", "0")
    main = threading.main_thread().ident
    timeline = (out / f"timeline-{rank}.tsv").open("w")
    started = time.perf_counter()

    def sample() -> None:
        while True:
            frame, where = sys._current_frames().get(main), []
            while frame is not None:
                name = frame.f_code.co_filename
                # a module being imported is no phase of the run
                if "/embedrec/" in name and frame.f_code.co_name != "<module>":
                    where.append(f"{name.rsplit('/embedrec/', 1)[1]}:{frame.f_code.co_name}")
                frame = frame.f_back
            rss, high_water = memory_mb()
            timeline.write(f"{time.perf_counter() - started:.1f}\t{rss:.0f}\t{high_water:.0f}\t")
            timeline.write(" < ".join(where) + "\n")
            timeline.flush()
            time.sleep(SAMPLE_SECONDS)

    threading.Thread(target=sample, daemon=True).start()
    import embedrec.training.trainer as trainer

    full_epoch = trainer.train_epoch

    def short_epoch(model, optimizers, pairs, *args, **kwargs):  # noqa: ANN001, ANN202
        config = args[2]
        cut = steps * config.batch_size
        return full_epoch(model, optimizers, tuple(p[:cut] for p in pairs), *args, **kwargs)

    trainer.train_epoch = short_epoch
    backward, calls = torch.Tensor.backward, [0]

    def counted_backward(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls[0] += 1
        if calls[0] == at_step:
            (out / f"held-{rank}.json").write_text(json.dumps(held_arrays()))
            (out / f"breakdown-{rank}.json").write_text(json.dumps(memory_breakdown()))
        return backward(self, *args, **kwargs)

    torch.Tensor.backward = counted_backward
    sys.argv = ["embedrec", *arguments]
    runpy.run_module("embedrec", run_name="__main__")


def memory_mb() -> tuple[float, float]:
    """This process's resident memory now and its high-water mark (VmHWM), in MB."""
    found = {"VmRSS:": float("nan"), "VmHWM:": float("nan")}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(maxsplit=1)[0] if line else ""
        if name in found:
            found[name] = int(line.split()[1]) / 1024
    return found["VmRSS:"], found["VmHWM:"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


def memory_breakdown() -> dict[str, float]:
    """Where this process's resident memory lies, MB: mapped from files (libraries) or
    anonymous; of glibc's heap, what is in use and what is free but kept; Arrow's pool."""
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split()[:2]
        rollup[name.rstrip(":")] = int(value) / 1024
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    heap = libc.mallinfo2()
    import pyarrow as pa

    return {
        "resident": rollup["Rss"],
        "anonymous": rollup["Anonymous"],
        "file-backed": rollup["Rss"] - rollup["Anonymous"],
        "glibc in use (heap and mmap)": (heap.uordblks + heap.hblkhd) / 2**20,
        "glibc free, kept": heap.fordblks / 2**20,
        "Arrow pool": pa.total_allocated_bytes() / 2**20,
    }


def held_arrays() -> list[dict]:
    """The arrays, tensors and tables of ``SMALLEST_MB`` or more that objects of this
    process refer to (each memory block once), with the attribute or key they are under."""
    import numpy as np
    import pandas as pd

    found: dict[int, dict] = {}
    for holder in gc.get_objects():
        if isinstance(holder, dict):
            items = holder.items()
        elif isinstance(holder, list | tuple):
            items = enumerate(holder)
        elif not isinstance(holder, type | ModuleType):
            try:  # instance attributes are kept outside dicts
                items = vars(holder).items()
            except Exception:  # noqa: BLE001 - no __dict__, or one that refuses to be read
                continue
        else:
            continue
        for key, value in list(items):
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                block, size = storage.data_ptr(), storage.nbytes()
            elif isinstance(value, np.ndarray):
                base = value
                while isinstance(base.base, np.ndarray):
                    base = base.base
                block, size = base.__array_interface__["data"][0], base.nbytes
            elif isinstance(value, pd.DataFrame | pd.Index):
                block, size = id(value), int(np.sum(value.memory_usage(deep=True)))
            else:
                continue
            if size >= SMALLEST_MB * 1e6 and block not in found:
                shape = "x".join(str(n) for n in getattr(value, "shape", ()))
                found[block] = {
                    "mb": size / 1e6,
                    "what": f"{type(value).__name__} {shape} {getattr(value, 'dtype', '')}",
                    "under": f"{type(holder).__name__}[{str(key)[:40]}]",
                }
    return sorted(found.values(), key=lambda entry: -entry["mb"])


# ---------------------------------------------------------------------------- the report
def phase_of(stack: str) -> str:
    for marker, phase in PHASES:
        if marker in stack:
            return phase
    return "outside fit (starting, the command's own work)"


def phase_peaks(timeline: Path) -> list[tuple[str, float, float, float]]:
    """(phase, second it starts, peak sampled RSS MB, MB the high-water mark rose by while
    in it) in order of first appearance. The samples miss what lasts less than
    ``SAMPLE_SECONDS``; the high-water mark does not, and rises in the phase that made it."""
    peaks: dict[str, list[float]] = {}
    last_mark = 0.0
    for line in timeline.read_text().splitlines():
        seconds, mb, mark, stack = (line.split("\t") + [""])[:4]
        entry = peaks.setdefault(phase_of(stack), [float(seconds), 0.0, 0.0])
        entry[1] = max(entry[1], float(mb))
        entry[2] += max(0.0, float(mark) - last_mark) if last_mark else 0.0
        last_mark = max(last_mark, float(mark))
    return [(phase, start, peak, rise) for phase, (start, peak, rise) in peaks.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--at-step", type=int, default=30)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.days, args.steps, args.at_step = min(args.days, 30), 5, 2
    work = args.work or Path(tempfile.mkdtemp(prefix="embedrec-rank-memory-"))
    out = work / f"rank-memory-{args.ranks}"
    out.mkdir(parents=True, exist_ok=True)
    events, listings, days = partitioned(work, args.days, args.smoke)
    config = out / "train.toml"
    settings = {"epochs": 1, **SCALE_CONFIG}
    config.write_text(
        "[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={args.ranks}", __file__, "--probe", str(out), str(args.steps),
        str(args.at_step), "--", "train", "--interactions", str(events), "--listings",
        str(listings), "--out", str(out / "model"), "--config", str(config), "--device", "cpu",
    ]  # fmt: skip
    environment = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run(command, check=True, env=environment, capture_output=True, text=True)
    print(
        f"`python benchmarks/rank_memory.py --days {args.days} --ranks {args.ranks} --steps "
        f"{args.steps} --at-step {args.at_step}`; Python {platform.python_version()}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPUs, one thread per rank; {len(days)} days.\n"
    )
    print(
        "| rank | phase | starts at s | peak RSS MB (sampled) | high-water mark rose MB |\n"
        "|---:|---|---:|---:|---:|"
    )
    for rank in range(args.ranks):
        timeline = out / f"timeline-{rank}.tsv"
        for phase, start, peak, rise in phase_peaks(timeline):
            print(f"| {rank} | {phase} | {start:.1f} | {peak:,.0f} | {rise:,.0f} |")
        mark = float(timeline.read_text().splitlines()[-1].split("\t")[2])
        print(f"| {rank} | the whole run's high-water mark (VmHWM) | | {mark:,.0f} | |")
    held = json.loads((out / "held-0.json").read_text())
    print(f"\nRank 0 at step {args.at_step}: what it holds of {SMALLEST_MB:.0f} MB or more\n")
    print("| MB | what | held under |\n|---:|---|---|")
    for entry in held:
        print(f"| {entry['mb']:,.1f} | {entry['what']} | {entry['under']} |")
    print(f"\nTogether: {sum(e['mb'] for e in held):,.0f} MB.")
    for rank in range(args.ranks):
        breakdown = json.loads((out / f"breakdown-{rank}.json").read_text())
        parts = ", ".join(f"{name} {mb:,.0f}" for name, mb in breakdown.items())
        print(f"\nRank {rank} at step {args.at_step}, MB: {parts}.")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        separator = sys.argv.index("--")
        probe(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[separator + 1 :])
    else:
        main()
