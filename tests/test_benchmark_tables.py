"""docs/benchmarks.md shows the benchmark pages' own tables, and they agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_overview_tables_match_their_pages() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    overview = (ROOT / "docs" / "benchmarks.md").read_text()
    for title in ("MovieLens-100k, warm split", "Training at scale", "Vector index"):
        assert f"### {title}" in overview
    assert "| embedrec hybrid |" in overview and "| ivf | 1,000,000 |" in overview


def test_check_fails_on_a_stale_overview(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tables
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for page in {page for _, page, _ in tables.TABLES}:
        text = (ROOT / "docs" / page).read_text()
        (tmp_path / page).write_text(text.replace("| embedrec hybrid |", "| embedrec hybrid2 |"))
    overview = (ROOT / "docs" / "benchmarks.md").read_text()
    assert tables.updated(overview, tmp_path) != overview
    assert "embedrec hybrid2" in tables.updated(overview, tmp_path)
