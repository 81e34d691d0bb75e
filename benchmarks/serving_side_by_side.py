"""Serving throughput at 1M listings, this tree against an earlier commit, side by side: two
servers up at once, the load generator alternating between them in short runs.

Runs of one server minutes apart differ on a shared host by more than many changes do (the
same code gave 1,258 and 1,846 similar-listing requests a second half an hour apart); runs
alternated every few seconds expose both servers to the same host. The earlier commit's
package is taken with ``git archive`` into a temporary folder that its server imports first.

    python benchmarks/serving_side_by_side.py --before 4e8cf4b

Prints a markdown table: per endpoint, the median over ``--rounds`` of requests per second,
p50 and p99 (ms) for each server, the ratio of the medians, and every round's req/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import large_model, package_at  # noqa: E402
from serving import Server, ids_of, wrk_load  # noqa: E402

SCENARIOS = ("similar", "recommend")


def start(model: Path, listings: Path, store: Path, workers: int, path: Path | None) -> Server:
    """A server of this tree, or of the package under ``path``."""
    before = os.environ.get("PYTHONPATH")
    if path is not None:
        os.environ["PYTHONPATH"] = str(path)
    try:
        return Server(model, store, workers, listings)
    finally:
        if path is not None:
            if before is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedrec-serving-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="runs per server and endpoint")
    parser.add_argument("--seconds", type=float, default=6.0, help="per run")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")

    model, listings, interactions = large_model(args.work)
    ids, users = ids_of(listings, interactions)
    folder = Path(tempfile.mkdtemp(prefix="embedrec-before-"))
    servers = {}
    try:
        for name, path in (("before", package_at(args.before, folder)), ("now", None)):
            store = folder / f"{name}.sqlite"
            print(f"starting the {name} server", file=sys.stderr, flush=True)
            servers[name] = start(model, listings, store, args.workers, path)
        runs = {(s, n): [] for s in SCENARIOS for n in servers}
        for scenario in SCENARIOS:
            config = {"scenario": scenario, "concurrency": args.concurrency, "ids": ids,
                      "users": users}  # fmt: skip
            for server in servers.values():  # warm-up
                wrk_load({**config, "url": server.url, "seconds": 2.0}, folder)
            for _ in range(args.rounds):
                for name, server in servers.items():
                    run = wrk_load({**config, "url": server.url, "seconds": args.seconds}, folder)
                    runs[scenario, name].append(run)
                    print(scenario, name, round(run["rps"]), file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"`python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`: "
          f"{args.workers} workers each, {args.rounds} alternated runs of {args.seconds:g} s "
          f"per server and endpoint, wrk with {args.concurrency} connections.\n")  # fmt: skip
    print("| endpoint | before req/s | now req/s | now / before | before p50 / p99 ms "
          "| now p50 / p99 ms | runs, req/s (before; now) |")  # fmt: skip
    print("|---|---:|---:|---:|---|---|---|")
    for scenario in SCENARIOS:
        med = {}
        for name in servers:
            rows = runs[scenario, name]
            med[name] = [
                statistics.median(r[key] for r in rows) for key in ("rps", "p50_ms", "p99_ms")
            ]
        every = "; ".join(
            " / ".join(str(round(r["rps"])) for r in runs[scenario, name]) for name in servers
        )
        print(f"| {scenario} | {med['before'][0]:.0f} | {med['now'][0]:.0f} "
              f"| {med['now'][0] / med['before'][0]:.2f} "
              f"| {med['before'][1]:.1f} / {med['before'][2]:.1f} "
              f"| {med['now'][1]:.1f} / {med['now'][2]:.1f} | {every} |")  # fmt: skip


if __name__ == "__main__":
    main()
