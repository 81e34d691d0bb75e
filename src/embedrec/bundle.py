"""The model directory format: files plus a JSON manifest with a format version and checksums.

Writes are atomic: the directory is built under a temporary name next to the target and
renamed into place, so a crash leaves either the old model or the new one, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, BinaryIO

from embedrec.data.atomic import replace_directory
from embedrec.data.jsonable import json_text

FORMAT = "embedrec-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# what Recommender.save writes, whatever the model: a manifest naming any other set of files is
# refused, so it can neither point outside the directory nor leave a file unchecked
MODEL_FILES = frozenset(
    {"weights.safetensors", "config.json", "users.parquet", "listing_ids.parquet",
     "listings.parquet"}
)  # fmt: skip
# a manifest is a few hundred bytes; a bigger one is not ours and is not read into memory
MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# opening never follows a symbolic link nor waits for a writer (a FIFO)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


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
            checksums[name] = _sha256(staging, name)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": checksums}
        (staging / MANIFEST).write_text(json_text(manifest))

    if Path(target).exists():  # refused before anything is written
        _check_existing(Path(target))
    return replace_directory(target, write, _check_existing)


def check_destination(target: str | Path) -> None:
    """Refuse now what ``write_bundle(target, ...)`` would refuse at the end: a file or a
    folder of other files in the model's place, a file where a folder of its path should be.

    A training run calls it first, so that a wrong ``--out`` stops in a second, not after
    hours of training. Raises BundleError or NotADirectoryError (naming the file in the way).
    """
    target = Path(target)
    if target.exists():
        _check_existing(target)
        return
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            return


def _check_existing(target: Path) -> None:
    if not target.is_dir():
        raise BundleError(f"{target} is a file, not a model directory; not replacing it")
    if not (target / MANIFEST).exists() and any(target.iterdir()):
        raise BundleError(f"{target} exists and is not a model directory; not replacing it")


def read_manifest(directory: str | Path, files: Collection[str] | None = None) -> dict[str, Any]:
    """The manifest of a model directory, after checking format, version and every checksum.

    ``files`` is the exact set of file names the manifest must list (``MODEL_FILES`` for a
    model); without it any set of plain file names is accepted. Every file, the manifest too,
    must be a regular file inside the directory: no path, no symbolic link, no FIFO, no device.
    """
    directory = Path(directory)
    if not directory.is_dir():
        if directory.exists():  # a model is a folder: one is named by its folder, not a file
            raise BundleError(f"{directory}: a file, not a model directory")
        raise BundleError(f"{directory}: no such model directory")
    path = directory / MANIFEST
    try:
        with _open_regular(directory, MANIFEST) as handle:
            text = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{directory}: not an embedrec model directory (no {MANIFEST})") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: corrupt manifest (over {MAX_MANIFEST_BYTES} bytes)")
    try:
        manifest = json.loads(text.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{directory}: not an embedrec model directory (foreign manifest)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{directory}: model format version {manifest.get('format_version')} is not "
            f"supported by this embedrec (reads version {FORMAT_VERSION}); retrain the model"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        # without a list of checksums nothing can be verified: refuse, do not trust it
        raise BundleError(f"{directory}: manifest lists no files with checksums (corrupt?)")
    _check_names(directory, listed, files)
    for name, expected in listed.items():
        try:
            actual = _sha256(directory, name)
        except FileNotFoundError:
            raise BundleError(f"{directory}: file {name} is missing (truncated copy?)") from None
        if actual != expected:
            raise BundleError(f"{directory}: file {name} is corrupt (checksum mismatch)")
    return manifest


def _check_names(directory: Path, listed: dict, files: Collection[str] | None) -> None:
    """Plain file names with well-formed checksums; exactly ``files`` when given."""
    for name, checksum in listed.items():
        plain = name not in ("", ".", "..", MANIFEST) and not any(c in name for c in "/\\\0")
        if not plain:
            raise BundleError(f"{directory}: manifest names {name!r}, not a file of the model")
        if not isinstance(checksum, str) or not _SHA256.fullmatch(checksum):
            raise BundleError(f"{directory}: manifest has no sha256 checksum for {name} (corrupt?)")
    if files is not None and set(listed) != set(files):
        extra, missing = sorted(set(listed) - set(files)), sorted(set(files) - set(listed))
        raise BundleError(
            f"{directory}: manifest lists {', '.join(map(repr, extra)) or 'no extra file'} and "
            f"omits {', '.join(map(repr, missing)) or 'nothing'}; a model directory has exactly "
            f"{', '.join(sorted(files))}"
        )


def _open_regular(directory: Path, name: str) -> BinaryIO:
    """``directory / name`` opened for reading, when it is a regular file itself (checked
    before opening, so that a device is never opened, and again on what was opened)."""
    path = directory / name
    before = os.lstat(path)  # FileNotFoundError: the caller names the file missing
    if not stat.S_ISREG(before.st_mode):
        raise BundleError(f"{directory}: {name} is not a regular file")
    try:
        fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BundleError(f"{directory}: cannot read {name} ({exc.strerror})") from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
        before.st_dev,
        before.st_ino,
    ):
        os.close(fd)
        raise BundleError(f"{directory}: {name} changed while it was read")
    return os.fdopen(fd, "rb")


def _sha256(directory: Path, name: str) -> str:
    digest = hashlib.sha256()
    with _open_regular(directory, name) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
