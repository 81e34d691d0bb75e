"""Time and peak memory of fitting and transforming a catalogue's text columns, this tree
against an earlier commit: each run in a fresh process, the two codes alternated.

    python benchmarks/text_memory.py --before 089a942~1 [--runs 2] [--listings FILE]

Reads the ``large`` car data's listings (1M; ``embedrec generate cars --size large``,
cached) or ``--listings`` (a Parquet file with ``title`` and ``description``), fits and
transforms both columns with ``TextEncoder``, and prints a markdown table: seconds, and the
memory the process added at its peak (VmHWM after the read, reset through
/proc/self/clear_refs) and at the end. The rows of both codes must be the same; a run whose
checksum differs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import package_at  # noqa: E402
from distributed import CACHE  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
from embedrec.data.schema import FeatureSpec
from embedrec.features.text import TextEncoder

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

listings = pd.read_parquet(sys.argv[2], columns=["title", "description"])
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
before = status("VmRSS")
started = time.perf_counter()
checksum = 0
for column in ("description", "title"):
    spec = FeatureSpec(name=column, kind="text", columns=(column,))
    for array in TextEncoder(spec).fit(listings).transform(listings).values():
        checksum = (checksum * 31 + int(array.sum(dtype=np.int64))) % 1_000_000_007
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak": status("VmHWM") - before,
                  "held": status("VmRSS") - before, "checksum": checksum}))
"""


def run(src: Path, listings: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(listings)],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--listings", type=Path, help="default: the large car data's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = CACHE / "cars-large-seed0"
        if args.listings is None and not (source / "listings.parquet").exists():
            subprocess.run(
                [sys.executable, "-m", "embedrec", "generate", "cars", "--size", "large"]
                + ["--out", str(source)],
                check=True,
            )
        listings = args.listings or source / "listings.parquet"
        codes = {
            f"before ({args.before})": package_at(args.before, Path(folder) / "before"),
            "now": Path(__file__).resolve().parents[1] / "src",
        }
        results: dict[str, list[dict]] = {name: [] for name in codes}
        for _ in range(args.runs):
            for name, src in codes.items():
                results[name].append(run(src, listings))
    checksums = {r["checksum"] for runs in results.values() for r in runs}
    print("| code | seconds | peak memory added, MB | held at the end, MB |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        cells = [
            ", ".join(f"{r[key]:,.{1 if key == 'seconds' else 0}f}" for r in runs)
            for key in ("seconds", "peak", "held")
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    print()
    print("Rows the same in every run." if len(checksums) == 1 else "ROWS DIFFER between runs.")


if __name__ == "__main__":
    main()
