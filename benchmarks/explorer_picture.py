"""The README's picture of the explorer page: `embedrec serve` on the demo model, drawn by a
headless Chromium (Debian's `chromium`).

    python benchmarks/explorer_picture.py [--model-dir DIR] [--out docs/explorer.png]

The model is the one `make demo` (or `python benchmarks/maps.py`) saves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the service did not become ready within {seconds:.0f} s: {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = Path.home() / ".cache" / "embedrec" / "model-small-seed0"
    parser.add_argument("--model-dir", type=Path, default=default_model)
    parser.add_argument("--out", type=Path, default=Path("docs") / "explorer.png")
    parser.add_argument("--listing", default="qashqai-dresden")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    port = _free_port()
    with tempfile.TemporaryDirectory() as scratch:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedrec",
                "serve",
                str(args.model_dir),
                "--port",
                str(port),
                "--store",
                str(Path(scratch) / "store.sqlite"),
            ],
            env={k: v for k, v in os.environ.items() if k != "EMBEDREC_API_TOKEN"},  # read-only
        )
        try:
            _wait_ready(f"http://127.0.0.1:{port}/healthz/ready", 300)
            shot = Path(scratch) / "explorer.png"
            subprocess.run(
                [
                    browser,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--window-size=1400,1000",
                    "--virtual-time-budget=20000",
                    f"--screenshot={shot}",
                    f"http://127.0.0.1:{port}/#listing={args.listing}&k=10",
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(shutil.copy(shot, args.out.with_suffix(".png.tmp")), args.out)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(args.out)


if __name__ == "__main__":
    main()
