"""The model directory format: files plus a JSON manifest with a format version and checksums.

Writes are atomic: the directory is built under a temporary name next to the target and
renamed into place, so a crash leaves either the old model or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "embedrec-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def json_text(value: Any) -> str:
    """``value`` as indented JSON; NumPy numbers (a parameter taken from an array or a
    DataFrame) are written as JSON numbers, anything else unknown as its string."""

    def plain(item: Any) -> Any:
        return item.item() if hasattr(item, "item") and hasattr(item, "dtype") else str(item)

    return json.dumps(value, indent=2, default=plain)


class BundleError(ValueError):
    """A model directory that is missing, corrupt, truncated or not ours."""


def write_bundle(
    target: str | Path, writers: dict[str, Callable[[Path], None]], meta: dict[str, Any]
) -> Path:
    """Write a model directory: ``writers`` maps file names to functions writing that file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        checksums = {}
        for name, write in writers.items():
            write(staging / name)
            checksums[name] = _sha256(staging / name)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": checksums}
        (staging / MANIFEST).write_text(json_text(manifest))
        _fsync_dir(staging)
        if target.exists():
            if not (target / MANIFEST).exists() and any(target.iterdir()):
                raise BundleError(f"{target} exists and is not a model directory; not replacing it")
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / "model")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a model directory, after checking format, version and every checksum."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"{directory}: no such model directory")
    path = directory / MANIFEST
    if not path.exists():
        raise BundleError(f"{directory}: not an embedrec model directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{directory}: not an embedrec model directory (foreign manifest)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{directory}: model format version {manifest.get('format_version')} is not "
            f"supported by this embedrec (reads version {FORMAT_VERSION}); retrain the model"
        )
    for name, expected in manifest.get("files", {}).items():
        file = directory / name
        if not file.exists():
            raise BundleError(f"{directory}: file {name} is missing (truncated copy?)")
        if _sha256(file) != expected:
            raise BundleError(f"{directory}: file {name} is corrupt (checksum mismatch)")
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    for file in directory.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
