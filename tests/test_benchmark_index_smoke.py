"""The index benchmark runs end to end at tiny sizes and prints its markdown table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "index.py"


def test_benchmark_index_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "| kind | rows | build s |" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("| ivf |")]
    assert len(table) == 4  # no filter, a category, a price range, a random 30%
    assert all(row.split("|")[8].strip() == "1.0000" for row in table[1:])  # filters: exact
