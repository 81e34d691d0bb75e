"""The reading benchmark runs end to end on small data and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reading.py"


@pytest.mark.slow
def test_benchmark_reading_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| folder")]
    whole, week = rows
    # the whole folder is 14 days of 2 files; the week opens 7 of them
    assert (whole[2].strip(), whole[4].strip()) == ("20,000", "28")
    assert week[4].strip() == "14"
    assert "| one file | 20,000 |" in done.stdout
