"""Reading interactions where they live: time and peak memory of ``load_interactions``.

    python benchmarks/reading.py [--events 2000000] [--days 91] [--files-per-day 2]
    python benchmarks/reading.py --smoke          # 20,000 events; seconds

Writes synthetic events (user_id, listing_id, timestamp, event) once as a folder partitioned
by day (``date=YYYY-MM-DD/part-N.parquet``) and once as a single Parquet file, then reads them
in fresh child processes (``--child``, one JSON line on stdout) so that each peak RSS is its
own: the folder whole, the folder with a one-week ``since``/``until`` window, the single file,
and for reference the single file read whole into pandas by pyarrow without validation.
Prints a Markdown table (docs/benchmarks-distributed.md, "Reading").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

START = pd.Timestamp("2026-08-01", tz="UTC")


def generate(root: Path, events: int, days: int, files_per_day: int, seed: int = 0) -> None:
    """Events spread evenly over ``days``, in time order, as a day-partitioned folder and
    as one file."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, size=events))
    users = rng.integers(0, max(events // 20, 1), size=events)
    listings = rng.integers(0, max(events // 40, 1), size=events)
    kinds = np.array(["view", "favorite", "contact"])
    table = pa.table(
        {
            "user_id": pa.array(np.char.add("u", users.astype(str))),
            "listing_id": pa.array(np.char.add("l", listings.astype(str))),
            "timestamp": pa.array(
                (START.value // 1000 + seconds * 1_000_000).astype("datetime64[us]"),
                type=pa.timestamp("us", tz="UTC"),
            ),
            "event": pa.array(kinds[rng.choice(3, size=events, p=[0.85, 0.1, 0.05])]),
        }
    )
    pq.write_table(table, root / "events.parquet")
    day_of = seconds // 86_400
    bounds = np.searchsorted(day_of, np.arange(days + 1))
    for day in range(days):
        part = table.slice(bounds[day], bounds[day + 1] - bounds[day])
        folder = root / "events" / f"date={(START + pd.Timedelta(days=day)).date()}"
        folder.mkdir(parents=True)
        cuts = np.linspace(0, part.num_rows, files_per_day + 1).astype(int)
        for n in range(files_per_day):
            pq.write_table(part.slice(cuts[n], cuts[n + 1] - cuts[n]), folder / f"part-{n}.parquet")


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    # Linux: the peak restarts from the current RSS, so that the imports' peak is not counted
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def child(spec: dict) -> dict:
    from embedrec.data.io import load_interactions

    reset_peak()
    baseline = rss_mb("VmRSS")
    started = time.perf_counter()
    if spec["how"] == "pandas":
        frame = pq.read_table(spec["source"]).to_pandas()
        attrs = {"rows_read": len(frame), "files_read": 1}
    else:
        frame = load_interactions(spec["source"], since=spec["since"], until=spec["until"])
        attrs = frame.attrs
    return {
        "seconds": time.perf_counter() - started,
        "events": len(frame),
        "rows_read": attrs["rows_read"],
        "files_read": attrs["files_read"],
        "baseline_mb": baseline,
        "peak_mb": rss_mb("VmHWM"),
    }


def measure(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=91)
    parser.add_argument("--files-per-day", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="20,000 events over 14 days")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.smoke:
        args.events, args.days = 20_000, 14
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        generate(root, args.events, args.days, args.files_per_day)
        week = (START + pd.Timedelta(days=args.days // 2)).date()
        until = week + pd.Timedelta(days=7).to_pytimedelta()
        runs = [
            ("folder, whole", str(root / "events"), None, None, "embedrec"),
            (f"folder, {week} to {until}", str(root / "events"), str(week), str(until), "embedrec"),
            ("one file", str(root / "events.parquet"), None, None, "embedrec"),
            ("one file, pyarrow to pandas, no checks", str(root / "events.parquet"), None, None),
        ]
        print(
            f"{args.events:,} events over {args.days} days, {args.files_per_day} files a day; "
            f"Python {platform.python_version()}, pyarrow {pa.__version__}, "
            f"{os.cpu_count()} CPUs\n"
        )
        print(
            "| read | events | rows read | files read | seconds | peak RSS MB "
            "| before the read MB | added by the read MB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, source, since, until_, *how in runs:
            spec = {"source": source, "since": since, "until": until_}
            result = measure({**spec, "how": how[0] if how else "pandas"})
            print(
                f"| {label} | {result['events']:,} | {result['rows_read']:,} | "
                f"{result['files_read']:,} | {result['seconds']:.2f} | {result['peak_mb']:.0f} | "
                f"{result['baseline_mb']:.0f} | {result['peak_mb'] - result['baseline_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
