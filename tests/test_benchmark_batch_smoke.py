"""The batch-output benchmark measures every run it reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark script
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "batch_outputs.py"


def test_batch_outputs_smoke_reports_time_memory_and_rows() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("| scale |", 1)[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| tiny")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("`recommend`", "one query (load + 1)"),
        ("`similar`", "one query (load + 1)"),
        ("`recommend`", "all users"),
        ("`similar`", "all listings"),
    ]
    # tiny data: 300 users and 600 listings, ten rows each
    assert [r[5].strip() for r in rows] == ["1"] * 4  # ranks
    assert [r[6].strip() for r in rows[2:]] == ["3,000", "6,000"]
    assert all(float(r[7]) > 0 and float(r[8]) > 0.05 for r in rows)  # seconds, GiB
