"""The distributed-training benchmark runs end to end on the tiny car data under torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distributed.py"


@pytest.mark.slow
def test_distributed_benchmark_smoke(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--smoke", "--parts", "scale,ceiling,hogwild,warm"]
    done = subprocess.run(
        [*command, "--work", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| 1 | " in out and "| 2 | " in out  # one row per rank count
    assert "Weak-scaling efficiency" in out and "goal 0.85" in out
    # the bytes per step come from the trained model: dense and sparse parameters both seen
    per_step = out.split("Bytes a rank sends per step")[1].split("\n")[0]
    assert " parameters, ring all-reduce" in per_step and " tables, all-gathered" in per_step
    # two copies of one process at once, each on its own core (where the host has two)
    ceiling = out.split("## The host's ceiling")[1].split("## ")[0]
    assert "The ceiling of weak-scaling efficiency" in ceiling or "use one core" in ceiling
    assert "| Hogwild, 2 workers | " in out and "| DDP, 2 ranks | " in out
    for model in ("full retrain", "update with --init-from", "before the update"):
        assert f"| {model} | " in out
    assert "Wall time, update over full retrain" in out
