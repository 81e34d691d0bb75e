"""The text transform's side-by-side memory benchmark runs on tiny car listings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_text_memory_compares_two_codes_on_tiny_listings(tmp_path: Path) -> None:
    generate = [sys.executable, "-m", "embedrec", "generate", "cars", "--size", "tiny"]
    subprocess.run([*generate, "--out", str(tmp_path)], check=True, capture_output=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "text_memory.py"), "--before", "HEAD"]
    command += ["--runs", "1", "--listings", str(tmp_path / "listings.parquet")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| before (HEAD) |" in done.stdout and "| now |" in done.stdout
    assert "Rows the same in every run." in done.stdout
