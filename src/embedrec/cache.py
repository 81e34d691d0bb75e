"""Where embedrec keeps files between runs: downloaded data, the demo's data and model, and
the server's start-up cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$EMBEDREC_CACHE``; else ``$XDG_CACHE_HOME/embedrec``; else ``~/.cache/embedrec``."""
    if os.environ.get("EMBEDREC_CACHE"):
        return Path(os.environ["EMBEDREC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedrec"
