"""What a fit's second model costs to build: the refit's (or a search candidate's) model,
built while the first one lives, deriving the catalogue's feature tensors again or sharing
the first model's (``listing_inputs``, what ``fit`` does).

    python benchmarks/model_build.py [--days 3] [--rounds 3]
    python benchmarks/model_build.py --smoke      # the tiny car data; seconds

Prepares the car data partitioned by day (as ``benchmarks/distributed.py`` writes it; the
`large` data's 1M listings by default) in a fresh child process per build, then builds a
`hybrid` model and, with the first alive, a second one. Prints Markdown: the second build's
seconds and the process's high-water mark (VmHWM) before and after it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed import partitioned  # noqa: E402 - the benchmark's own data


def high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def build_twice(events: str, listings: str, share: bool) -> dict:
    """In this process: prepare, build one model, then another with the first alive."""
    from embedrec.recommender import Recommender

    recommender = Recommender(device="cpu", progress=False)
    prepared = recommender.prepare(events, listings)
    first = recommender.build_model(prepared, prepared.data)
    before = high_water_mb()
    started = time.perf_counter()
    reuse = first.listing_inputs() if share else None
    second = recommender.build_model(prepared, prepared.data, reuse=reuse)
    seconds = time.perf_counter() - started
    assert second is not first
    return {
        "listings": len(prepared.listings),
        "seconds": seconds,
        "before_mb": before,
        "after_mb": high_water_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("EVENTS", "LISTINGS", "SHARE"))
    args = parser.parse_args()
    if args.child:
        events, listings, share = args.child
        print(json.dumps(build_twice(events, listings, share == "share")))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="embedrec-build-"))
    events, listings, _ = partitioned(work, args.days, args.smoke)
    rows = []
    for round_ in range(1, (1 if args.smoke else args.rounds) + 1):
        for share in ("derive", "share"):
            command = [sys.executable, __file__, "--child", str(events), str(listings), share]
            result = json.loads(subprocess.run(command, check=True, capture_output=True,
                                               text=True).stdout.splitlines()[-1])  # fmt: skip
            rows.append((round_, share, result))
    print(
        f"`python benchmarks/model_build.py --days {args.days}`; {rows[0][2]['listings']:,} "
        f"listings; Python {platform.python_version()}, torch {torch.__version__}.\n"
    )
    print("| round | second model's catalogue features | seconds | VmHWM before MB | after MB |")
    print("|---:|---|---:|---:|---:|")
    for round_, share, r in rows:
        how = "shared with the first model" if share == "share" else "derived again"
        print(
            f"| {round_} | {how} | {r['seconds']:.1f} | {r['before_mb']:,.0f} "
            f"| {r['after_mb']:,.0f} |"
        )


if __name__ == "__main__":
    main()
