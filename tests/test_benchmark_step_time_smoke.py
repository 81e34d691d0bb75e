"""The step-time benchmark builds each variant from the same pairs and times it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs the benchmark script
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", *args], capture_output=True, text=True, timeout=300
    )


def test_step_time_smoke_times_every_variant() -> None:
    done = run("--variants", "default;hidden=64,negatives=64;precision=bf16")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == [
        "default",
        "hidden=64,negatives=64",
        "precision=bf16",
    ]
    assert rows[0].endswith("| +0% |")
    assert all(len(row.split("|")[3].split(",")) == 2 for row in rows)  # two rounds each


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("wings=2", "variant 'wings=2': Recommender has no parameter 'wings'"),
        ("precision=fp8", "variant 'precision=fp8': precision must be one of auto, fp32, bf16"),
        ("hidden=0", "variant 'hidden=0': hidden must be"),
    ],
)
def test_step_time_names_a_bad_variant_before_making_data(
    variant: str, message: str, tmp_path: Path
) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from step_time import main

    data = tmp_path / "cars"
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(data), "--variants", f"default;{variant}"])
    assert str(stopped.value).startswith(message)
    assert not data.exists()  # checked before any data is generated
