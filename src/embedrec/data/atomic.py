"""Atomic writes: files and directories are built under a temporary name beside their target
and renamed into place, so a reader or a crash sees the old version or the new, never a mix."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


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
        remove_abandoned(target)
    # A name the writer creates, so the file gets the usual permissions (mkstemp's are
    # owner-only), named by its writer as a staging folder is (the next write removes it
    # once that writer is gone) and ending in the target's suffix, so that writers choosing
    # a format by suffix (np.save, savefig) write the file as named.
    temporaries = [_named_by_writer(target, "tmp", target.suffix) for target in targets]
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
    refuse replacing it (nothing is changed then). Ctrl-C waits for the two renames, and
    any other error between them puts the old directory back. The temporary folders are
    named by their writer, so that the next write beside them removes those of a writer
    that was killed (``remove_abandoned``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    staging = _named_by_writer(target, "staging")
    retired = _named_by_writer(target, "retired")
    try:
        staging.mkdir()
        write(staging)
        for file in sorted(staging.rglob("*")):
            if file.is_file():
                _fsync(file)
        if target.exists() and check_existing is not None:
            check_existing(target)
        with _interrupts_deferred():
            if target.exists():
                retired.mkdir()
                os.replace(target, retired / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                if (retired / target.name).exists():
                    os.replace(retired / target.name, target)
                raise
    finally:
        for folder in (staging, retired):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return target


# a temporary's name says who writes it: the writer's host (hashed: a name may hold any
# character), process id and the process's start time, which tells a later process of the
# same id apart; a file's ends in its target's suffix
_WRITER_NAME = (
    r"\.(?P<kind>staging|retired|tmp)\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.(?P<start>\d+)"
    r"\.[0-9a-f]+"
)


def _named_by_writer(target: Path, kind: str, suffix: str = "") -> Path:
    start = _process_start(os.getpid()) or "0"
    return target.with_name(
        f".{target.name}.{kind}.{_host()}.{os.getpid()}.{start}.{uuid.uuid4().hex[:8]}{suffix}"
    )


def remove_abandoned(target: str | Path) -> int:
    """Remove the temporaries beside ``target`` (folders of ``replace_directory``, files of
    ``replacing``) whose writer was killed mid-write (kill -9, a lost host): those whose
    process, named in the temporary's name, is gone from this host or is another process
    now. One of a live writer, of another host or of a name not ours is kept. Where a
    killed writer had moved the old ``target`` aside and not yet put the new one in place,
    the old one is put back. Returns how many were removed (and logs it)."""
    target = Path(target)
    pattern = re.compile(
        re.escape(f".{target.name}") + _WRITER_NAME + f"(?:{re.escape(target.suffix)})?"
    )
    try:
        names = [entry.name for entry in os.scandir(target.parent)]
    except OSError:  # no folder yet, or none to list: nothing was left there
        return 0
    removed = 0
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match is None or not _writer_gone(match["host"], int(match["pid"]), match["start"]):
            continue
        left = target.parent / name
        kept = left / target.name
        if match["kind"] == "retired" and kept.is_dir() and not target.exists():
            os.replace(kept, target)
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
        else:
            with suppress(OSError):
                left.unlink()
        removed += not os.path.lexists(left)
    if removed:
        logger.info("removed %d temporaries beside %s that a killed write left", removed, target)
    return removed


def _writer_gone(host: str, pid: int, start: str) -> bool:
    """Whether the writer ``pid`` (started at ``start``) of ``host`` is provably gone."""
    if host != _host():
        return False  # its processes cannot be seen from here
    now = _process_start(pid)
    if now is not None:
        return now != start or _process_state(pid) in ("Z", "X")
    if Path("/proc/self/stat").exists():
        return True  # the process table is readable, and the pid is not in it
    try:  # no /proc (macOS): a pid that can be signalled may be the writer still
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot); None where unknown."""
    fields = _process_fields(pid)
    return fields[19] if fields else None


def _process_state(pid: int) -> str | None:
    fields = _process_fields(pid)
    return fields[0] if fields else None


def _process_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` from the third on (state, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the second field, the command's name in parentheses, may hold spaces and ')'
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 19 else None


@functools.cache
def _host() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) held back until the block ends, then raised: a directory swapped
    halfway would leave neither the old nor the new in place. Only the main thread of a
    process that lets Python raise KeyboardInterrupt can hold it back; elsewhere it is a
    no-op."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


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
