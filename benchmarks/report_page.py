"""Write a benchmark's generated report into its page, keeping what people wrote around it.

The generated part sits between two HTML comments (invisible when the page is rendered), so a
rerun replaces the measured tables and leaves the hand-written findings after them intact.
"""

from __future__ import annotations

from pathlib import Path

from embedrec.data.atomic import write_atomic

START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def write_generated(path: Path, body: str, start: str = START, end: str = END) -> None:
    """Put ``body`` between the ``start`` and ``end`` markers of ``path`` (a new page holds
    only the marked block). An existing page without both markers is left untouched: a
    SystemExit names the markers to add, so a rerun never overwrites text written by hand."""
    path = Path(path)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if not path.exists():
        text = block + "\n"
    else:
        old = path.read_text(encoding="utf-8")
        if start not in old or end not in old:
            raise SystemExit(
                f"{path}: no {start} ... {end} markers around the generated part; add them, "
                "or write to a new file with --out"
            )
        before, rest = old.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
