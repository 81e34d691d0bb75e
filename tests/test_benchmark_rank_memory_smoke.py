"""The rank memory benchmark runs end to end on the tiny car data under torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rank_memory.py"


@pytest.mark.slow
def test_rank_memory_benchmark_smoke(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--smoke", "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # both ranks sampled their memory while they trained, each phase with its peak
    for rank in (0, 1):
        assert f"| {rank} | training steps | " in out
    peaks = [line.split("|")[4] for line in out.splitlines() if "| training steps |" in line]
    assert all(float(peak.replace(",", "")) > 100 for peak in peaks)
    # rank 0 listed what it held at the step asked for, the feature tables among it
    held = out.split("what it holds of")[1]
    assert "Parameter" in held and "Together:" in held
    # and where each rank's resident memory lay then, its libraries and heap apart
    for rank in (0, 1):
        line = next(x for x in out.splitlines() if x.startswith(f"Rank {rank} at step 2, MB:"))
        assert "file-backed" in line and "glibc in use" in line and "Arrow pool" in line
