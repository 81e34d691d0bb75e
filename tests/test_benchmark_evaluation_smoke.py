"""The car evaluation benchmark runs on tiny data and rewrites only its part of the page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluation.py"
CARS = ("<!-- generated:cars:start -->", "<!-- generated:cars:end -->")
MOVIELENS = ("<!-- generated:movielens:start -->", "<!-- generated:movielens:end -->")


def test_evaluation_benchmark_on_tiny_data(tmp_path: Path) -> None:
    page = tmp_path / "evaluation.md"
    kept = f"{CARS[1]}\n\nfindings written by hand\n\n{MOVIELENS[0]}\nold films\n{MOVIELENS[1]}\n"
    page.write_text(f"{CARS[0]}\nSTALE-TABLE\n{kept}")
    command = [sys.executable, str(SCRIPT), "--size", "tiny", "--models", "hybrid,mf"]
    command += ["--epochs", "2", "--skip-movielens", "--data", str(tmp_path), "--out", str(page)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    cars = text.split(CARS[0])[1].split(CARS[1])[0]
    for row in ("| hybrid |", "| mf |", "| EASE |", "| feature similarity (cold) |"):
        assert row in cars
    assert "## Similar listings" in cars and "| hybrid, cold |" in cars
    assert "STALE-TABLE" not in cars
    assert "Produced by `python benchmarks/evaluation.py --size tiny" in cars
    # the hand-written text and the part this run did not measure are left as they were
    assert text.endswith(kept)
