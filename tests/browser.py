"""Headless Chromium for the browser tests: Debian's system browser driven by Playwright.

Needs `apt-get install chromium` and `pip install playwright` (`playwright install` is not
needed). Test modules call :func:`require` at import, so they are skipped, with the reason,
where either is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SHOTS = Path(__file__).resolve().parents[1] / "test-output"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebGL (Plotly's scattergl) through the software rasteriser, as there is no GPU.
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
]


def executable() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


def require() -> None:
    """Skip the calling test module unless Playwright and Chromium are installed."""
    pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install playwright")
    if executable() is None:
        pytest.skip("Chromium missing: apt-get install chromium", allow_module_level=True)


def launch() -> Iterator:
    """A browser for a module-scoped fixture (``yield from launch()``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable(), args=ARGS)
        yield browser
        browser.close()
