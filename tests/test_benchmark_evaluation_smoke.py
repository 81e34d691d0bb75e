"""The car evaluation benchmark runs on tiny data and rewrites only its part of the page."""

from __future__ import annotations

import os
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
    command += ["--set", "tune=2"]  # a parameter for embedrec's models: each searches
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hybrid tuning: {'budget_seconds': 2" in done.stderr
    text = page.read_text()
    cars = text.split(CARS[0])[1].split(CARS[1])[0]
    for row in ("| hybrid |", "| mf |", "| EASE |", "| feature similarity (cold) |"):
        assert row in cars
    assert "## Similar listings" in cars and "| hybrid, cold |" in cars
    assert "STALE-TABLE" not in cars
    # the users the means are over, not only those with test events
    assert "the means are over the " in cars
    assert "Produced by `python benchmarks/evaluation.py --size tiny" in cars
    # the hand-written text and the part this run did not measure are left as they were
    assert text.endswith(kept)


SIMILAR = ("<!-- generated:similar:start -->", "<!-- generated:similar:end -->")


def _similar_run(tmp_path: Path, models: str, env: dict | None = None) -> tuple[str, str]:
    page = tmp_path / "evaluation.md"
    kept = f"{SIMILAR[1]}\n\nfindings written by hand\n\n{CARS[0]}\nold cars\n{CARS[1]}\n"
    page.write_text(f"{SIMILAR[0]}\nSTALE-TABLE\n{kept}")
    command = [sys.executable, str(SCRIPT), "--similar", "--smoke", "--size", "tiny"]
    command += ["--similar-models", models, "--data", str(tmp_path), "--out", str(page)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    assert text.endswith(kept) and "STALE-TABLE" not in text
    return text.split(SIMILAR[0])[1].split(SIMILAR[1])[0], done.stderr


def test_similar_listings_by_behaviour_on_tiny_data(tmp_path: Path) -> None:
    section, _ = _similar_run(tmp_path, "hybrid")
    assert "## Similar listings judged by behaviour" in section
    rows = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines()}
    # the hybrid and LightFM embed cold listings; item-kNN knows only warm ones
    assert " ± " in rows["embedrec hybrid"].split(" | ")[2]
    assert " ± " in rows["item-kNN on co-views"].split(" | ")[1]
    assert rows["item-kNN on co-views"].split(" | ")[2] == "–"
    lightfm = True
    for name in ("LightFM, identity + features", "LightFM, features only"):
        cells = rows[name].split(" | ")
        assert (" ± " in cells[2]) or cells[1] == cells[2] == "not installed"
        lightfm = lightfm and " ± " in cells[2]
    assert "- warm: embedrec hybrid " in section and "(goal 1.1x: " in section
    # without LightFM no peer embeds cold listings, and the page says there is no ratio
    cold = "- cold: embedrec hybrid " if lightfm else "- cold: no ratio"
    assert cold in section
    assert "Produced by `python benchmarks/evaluation.py --similar --smoke" in section


def test_similar_listings_report_a_missing_lightfm(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden" / "lightfm"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hidden.parent)}
    section, _ = _similar_run(tmp_path, "mf", env)
    assert "| LightFM, features only | not installed | not installed |" in section
    assert "| LightFM, identity + features | not installed | not installed |" in section
    assert "| item-kNN on co-views | " in section
    # mf embeds no cold listing: no cold ratio, and the warm one is still given
    assert "- cold: no ratio" in section and "- warm: embedrec mf " in section
