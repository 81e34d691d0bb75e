"""The training-at-scale benchmark runs end to end on tiny data and prints its tables."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_scale.py"


@pytest.mark.slow
def test_benchmark_scale_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "| events | rows | pyarrow read s |" in done.stdout
    assert "| events | model | train pairs |" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| all | embedrec ")]
    # mf, hybrid and hybrid with two worker processes always run; peers where installed
    assert [row.split("|")[2].strip() for row in rows] == [
        "embedrec mf",
        "embedrec hybrid",
        "embedrec hybrid, 2 workers",
    ]
    assert not any("failed" in row for row in rows)
    # the protocol names what the runs recorded: their validation users and our step precision
    assert "one fixed sample of 200 validation users" in done.stdout
    assert re.search(r'`precision="auto"`: (bf16|fp32) steps;', done.stdout)
    # with LightFM installed (benchmarks/README-movielens-peers.md) the smoke run includes it
    # and compares; without it, its row must not pretend to have run
    peer = [line for line in done.stdout.splitlines() if line.startswith("| all | LightFM ")]
    if importlib.util.find_spec("lightfm") is None:
        assert not peer
    else:
        assert len(peer) == 1 and "failed" not in peer[0]
        assert "embedrec hybrid, 2 workers gets within one standard error" in done.stdout


@pytest.mark.slow
def test_benchmark_scale_smoke_reports_time_to_best_over_seeds() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--models", "mf", "--seeds", "0,1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "## Time to best over training seeds" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| all | embedrec mf |")]
    # the main table's row, one row per seed, then the seed-averaged curve over both
    assert [row.split("|")[3].strip() for row in rows[1:]] == ["0", "1", "2"]
    assert "- all, embedrec mf: median wall time to best" in done.stdout
    assert "### Seed-averaged validation curves" in done.stdout
    assert "(1) | " in rows[-1]  # --smoke runs one epoch: the curve peaks there


@pytest.mark.parametrize(
    ("seeds", "message"), [("1,x", "whole numbers"), ("1,1", "distinct seeds")]
)
def test_benchmark_scale_names_bad_seeds(
    seeds: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from train_scale import parse_args

    with pytest.raises(SystemExit) as stopped:
        parse_args(["--smoke", "--seeds", seeds])
    assert stopped.value.code == 2
    assert f"argument --seeds: expected {message}" in capsys.readouterr().err


def test_mean_curve_averages_the_epochs_every_seed_ran() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from train_scale import mean_curve

    def run(scores: list[float], epoch_s: float) -> dict:
        return {
            "epochs": [
                {"recall@10": v, "recall@10_se": 0.05, "elapsed_s": (i + 1) * epoch_s, "val_s": 1}
                for i, v in enumerate(scores)
            ]
        }

    # seed 1's fourth epoch is beyond seed 0's run: left out, though it would be the peak
    curve = mean_curve({0: run([0.1, 0.3, 0.4], 10.0), 1: run([0.2, 0.4, 0.38, 0.9], 20.0)})
    assert curve["scores"] == pytest.approx([0.15, 0.35, 0.39])
    assert curve["best"] == 2 and curve["wall_s_to_best"] == pytest.approx(44.0)
    # the seeds' mean standard error (0.05), not divided by their number: 0.35 is within it
    assert curve["error"] == pytest.approx(0.05)
    assert curve["settled"] == 1 and curve["wall_s_to_settled"] == pytest.approx(29.0)
