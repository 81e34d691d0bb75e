"""A benchmark rerun replaces its generated part of a page and keeps the hand-written rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    from report_page import END, START, write_generated
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_a_new_page_holds_the_marked_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    write_generated(page, "# Results\n\n| a |\n")
    assert page.read_text() == f"{START}\n# Results\n\n| a |\n{END}\n"


def test_a_rerun_keeps_the_text_around_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    findings = "\n\n## Findings\n\nwritten by hand\n"
    page.write_text(f"intro\n{START}\nold table\n{END}{findings}")
    write_generated(page, "new table")
    assert page.read_text() == f"intro\n{START}\nnew table\n{END}{findings}"
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]  # no temporary file left


def test_a_page_without_markers_is_never_overwritten(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("findings written by hand\n")
    with pytest.raises(SystemExit, match="markers"):
        write_generated(page, "table")
    assert page.read_text() == "findings written by hand\n"


def test_the_pages_in_docs_have_their_markers() -> None:
    for name, start in [
        ("benchmarks-scale.md", START),
        ("index-benchmark.md", START),
        ("serving.md", START),
        ("serving.md", "<!-- replicas:start -->"),
        ("evaluation.md", "<!-- generated:cars:start -->"),
        ("evaluation.md", "<!-- generated:movielens:start -->"),
        ("benchmarks-movielens.md", "<!-- results:start -->"),
    ]:
        text = (ROOT / "docs" / name).read_text()
        assert text.count(start) == 1 and text.count(start.replace("start", "end")) == 1, name
