"""The car text on/off benchmark runs on tiny data and rewrites only its part of the page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluation.py"
TEXT = ("<!-- generated:text:start -->", "<!-- generated:text:end -->")


def test_text_on_off_on_tiny_data(tmp_path: Path) -> None:
    page = tmp_path / "evaluation.md"
    kept = f"{TEXT[1]}\n\nfindings written by hand\n"
    page.write_text(f"{TEXT[0]}\nSTALE-TABLE\n{kept}")
    command = [sys.executable, str(SCRIPT), "--text-on-off", "--size", "tiny", "--epochs", "1"]
    command += ["--seeds", "0", "--data", str(tmp_path), "--out", str(page)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    table = text.split(TEXT[0])[1].split(TEXT[1])[0]
    assert "## Text features on and off" in table and "STALE-TABLE" not in table
    assert "| hybrid | on |" in table and "| hybrid | off |" in table
    assert "Produced by `python benchmarks/evaluation.py --text-on-off" in table
    assert text.endswith(kept)
