"""Atomic writes: files and directories are built under a temporary name beside their target
and renamed into place, so a reader or a crash sees the old version or the new, never a mix."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)`` and move the result to ``path``; a crash leaves no
    partial file behind and keeps any previous file intact."""
    path = Path(path)
    with replacing(path) as (temporary,):
        write(temporary)
    return path


@contextmanager
def replacing(*targets: str | Path) -> Iterator[list[Path]]:
    """Temporary paths beside ``targets``, one each, to write; on leaving the block without an
    error each is flushed to disk and renamed onto its target, else all are removed.

    Several targets are renamed together at the end, so files that belong together (a data
    set's tables) are all written before the first one is replaced.
    """
    targets = [Path(t) for t in targets]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    # A random name the writer creates, so the file gets the usual permissions (mkstemp's
    # are owner-only), and ending in the target's suffix, so that writers choosing a format
    # by suffix (np.save, savefig) write the file as named.
    temporaries = [
        target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
        for target in targets
    ]
    try:
        yield list(temporaries)
        for temporary in temporaries:
            _fsync(temporary)
        for temporary, target in zip(temporaries, targets, strict=True):
            os.replace(temporary, target)
    except OSError as exc:
        # the user gave the target: an error naming the hidden temporary would puzzle them
        names = {str(t): str(target) for t, target in zip(temporaries, targets, strict=True)}
        named = _naming_targets(exc, names)
        if named is exc:
            raise
        raise named from exc
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def replace_directory(
    target: str | Path,
    write: Callable[[Path], None],
    check_existing: Callable[[Path], None] | None = None,
) -> Path:
    """Build a directory with ``write(staging)`` under a temporary name beside ``target``,
    flush its files to disk and rename it to ``target``.

    An existing ``target`` is moved aside and deleted only after the new one is in place, so
    a crash leaves the old directory or the new one; ``check_existing(target)`` may raise to
    refuse replacing it (nothing is changed then).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        for file in sorted(staging.rglob("*")):
            if file.is_file():
                _fsync(file)
        if target.exists():
            if check_existing is not None:
                check_existing(target)
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _naming_targets(exc: OSError, targets: dict[str, str]) -> OSError:
    """``exc`` with each temporary path it names (as its file names, else in its message)
    replaced by its target: changed in place, or a new OSError of the message."""
    named = False
    for attribute in ("filename", "filename2"):
        value = getattr(exc, attribute, None)
        if value is not None and str(value) in targets:
            setattr(exc, attribute, targets[str(value)])
            named = True
    text = str(exc)
    if named or not any(temporary in text for temporary in targets):
        return exc
    for temporary, target in targets.items():
        text = text.replace(temporary, target)
    return OSError(text)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet; an ``embedding`` column of equal-length float arrays is
    stored as a fixed-size list of float32."""
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if name == "embedding":
            matrix = np.stack(values.to_numpy()).astype(np.float32)
            columns[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.reshape(-1)), matrix.shape[1]
            )
        else:
            columns[name] = pa.array(values.tolist() if values.dtype == object else values)
    table = pa.table(columns)
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))
