"""The model build benchmark runs end to end on the tiny car data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "model_build.py"


def test_model_build_benchmark_smoke(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--smoke", "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert [row[2].strip() for row in rows] == ["derived again", "shared with the first model"]
    for row in rows:  # seconds, and high-water marks that only rise
        seconds, before, after = (float(cell.replace(",", "")) for cell in row[3:6])
        assert seconds >= 0 and 0 < before <= after
