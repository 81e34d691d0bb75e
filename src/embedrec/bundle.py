"""The model directory format: files plus a JSON manifest with a format version and checksums.

Writes are atomic: the directory is built under a temporary name next to the target and
renamed into place, so a crash leaves either the old model or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedrec.data.atomic import replace_directory
from embedrec.data.jsonable import json_text

FORMAT = "embedrec-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A model directory that is missing, corrupt, truncated or not ours."""


def write_bundle(
    target: str | Path, writers: dict[str, Callable[[Path], None]], meta: dict[str, Any]
) -> Path:
    """Write a model directory: ``writers`` maps file names to functions writing that file."""

    def write(staging: Path) -> None:
        checksums = {}
        for name, write_file in writers.items():
            write_file(staging / name)
            checksums[name] = _sha256(staging / name)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": checksums}
        (staging / MANIFEST).write_text(json_text(manifest))

    def check_existing(target: Path) -> None:
        if not (target / MANIFEST).exists() and any(target.iterdir()):
            raise BundleError(f"{target} exists and is not a model directory; not replacing it")

    return replace_directory(target, write, check_existing)


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
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        # without a list of checksums nothing can be verified: refuse, do not trust it
        raise BundleError(f"{directory}: manifest lists no files with checksums (corrupt?)")
    for name, expected in files.items():
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
