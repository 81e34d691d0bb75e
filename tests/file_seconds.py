"""Seconds each test file took, for running the longest first (conftest's ordering).

    pytest -n 2 --dist loadfile --junitxml=/tmp/junit.xml
    python tests/file_seconds.py /tmp/junit.xml     # rewrites tests/file_seconds.json

The figures only order the files: stale ones cost time, never a result.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

FILE = Path(__file__).with_name("file_seconds.json")


def load() -> dict[str, float]:
    """File name (``test_x.py``) to seconds; empty where the file is missing."""
    return json.loads(FILE.read_text()) if FILE.exists() else {}


def main(junit: str) -> None:
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]  # tests.test_x (a class: .Class)
        if not module.startswith("test_"):
            module = case.get("classname", "").split(".")[-2]
        seconds[f"{module}.py"] += float(case.get("time") or 0)
    ordered = dict(sorted(seconds.items(), key=lambda item: -item[1]))
    FILE.write_text(json.dumps({k: round(v, 1) for k, v in ordered.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
