"""The device check runs end to end on tiny data: two fits with one seed agree exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def test_device_check_smoke(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| model | epochs | fit s, cpu |" in done.stdout
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["mf", "deep", "hybrid"]
    for r in results:  # the same device twice: the same batches, the same arithmetic
        assert r["max_loss_rel_diff"] == 0.0
        assert r["max_vector_abs_diff"] == 0.0
        assert r["top10_agreement"] == 1.0
        assert r["val_recall@10"][0] == r["val_recall@10"][1] > 0
