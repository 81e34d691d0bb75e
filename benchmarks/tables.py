"""Copy the measured tables of the benchmark pages into docs/benchmarks.md.

    python benchmarks/tables.py            # rewrite the tables section of docs/benchmarks.md
    python benchmarks/tables.py --check    # exit 1 if that section is out of date

Each benchmark writes its own page (MovieLens, scale, index); this gathers their main tables,
verbatim, between the ``tables`` markers of docs/benchmarks.md, so that the overview shows the
numbers themselves and never disagrees with the pages they come from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
START, END = "<!-- tables:start -->", "<!-- tables:end -->"

# (title in the overview, page, the heading the table follows)
TABLES = (
    (
        "MovieLens-100k, warm split",
        "benchmarks-movielens.md",
        "### Warm split (full catalogue, training items excluded)",
    ),
    (
        "MovieLens-100k, cold-start films",
        "benchmarks-movielens.md",
        "### Cold-start split (ranked among the 201 cold films only)",
    ),
    (
        "MovieLens-100k, chosen hyper-parameters",
        "benchmarks-movielens.md",
        "### Chosen hyper-parameters (best validation NDCG@10)",
    ),
    ("Training at scale: loading", "benchmarks-scale.md", "## Loading the interactions (Parquet)"),
    ("Training at scale: events, time and memory", "benchmarks-scale.md", "## Training"),
    (
        "Training at scale: 1M side by side, with the faster validation",
        "benchmarks-scale.md",
        "### 1M side by side again, with the faster validation",
    ),
    (
        "Training at scale: 5M per seed, with bf16 steps",
        "benchmarks-scale.md",
        "#### 5M per seed, with bf16 steps",
    ),
    (
        "Training at scale: 20M per seed, with bf16 steps",
        "benchmarks-scale.md",
        "#### 20M per seed, with bf16 steps",
    ),
    ("Training on a GPU", "benchmarks-scale.md", "## On a GPU (CUDA)"),
    ("Vector index", "index-benchmark.md", "# Vector index benchmark"),
    ("Filters on the real catalogue", "index-benchmark.md", "## Filters on the real catalogue"),
)


def first_table(text: str, heading: str, page: str) -> str:
    """The first markdown table after the line ``heading`` in ``text``."""
    lines = text.splitlines()
    if heading not in lines:
        raise SystemExit(f"{page}: heading {heading!r} not found")
    table: list[str] = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if not table:
        raise SystemExit(f"{page}: no table after {heading!r}")
    return "\n".join(table)


def section(docs: Path = DOCS) -> str:
    """The tables section as it should read, markers included."""
    parts = [START, "", "## The tables", ""]
    for title, page, heading in TABLES:
        anchor = heading.lstrip("# ").lower()
        anchor = "".join(c for c in anchor if c.isalnum() or c in " -").replace(" ", "-")
        table = first_table((docs / page).read_text(), heading, page)
        parts += [f"### {title}", "", f"From [{page}]({page}#{anchor}).", "", table, ""]
    return "\n".join([*parts, END])


def updated(overview: str, docs: Path = DOCS) -> str:
    """``overview`` with its tables section replaced (appended when it has none)."""
    if START in overview and END in overview:
        before, rest = overview.split(START, 1)
        after = rest.split(END, 1)[1]
        return before + section(docs) + after
    return overview.rstrip("\n") + "\n\n" + section(docs) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    path = DOCS / "benchmarks.md"
    current = path.read_text()
    wanted = updated(current)
    if args.check:
        if wanted != current:
            print(f"{path.name} is out of date: run python benchmarks/tables.py", file=sys.stderr)
            return 1
        return 0
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(wanted)
    tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
