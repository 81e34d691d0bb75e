"""The host scaling benchmark runs its three steps on 1 and 2 ranks under torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "host_scaling.py"


@pytest.mark.slow
def test_host_scaling_benchmark_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        cells[1].strip(): cells[2:]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and (cells := line.split("|")) and "ms" not in line
    }
    assert set(rows) == {
        "compute",
        "compute + collectives",
        "compute + collectives in 4 parts each",
    }
    for one, two, efficiency, _ in rows.values():
        assert float(one) > 0 and float(two) > 0  # each world ran and timed its steps
        assert 0 < float(efficiency) < 10
