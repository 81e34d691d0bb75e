"""Where tables live: a Parquet file, a folder of them, a glob, or a URI (``file://``,
``s3://``, ``gs://``), read as record batches that remember their file and row.

Folders may be Hive-partitioned (``date=2026-11-01/``): the keys become columns. A time
window (``since``, ``until``) is pushed down to the reader: day partitions outside it are
never opened and row groups whose timestamp statistics lie outside it are never read.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from embedrec.data.errors import CSV_SUFFIXES, DataError

CLOUD_EXTRA = "pip install 'embedrec[cloud]'"
# scheme -> (pyarrow's own filesystem module, the fsspec package of the cloud extra); some
# pyarrow builds (conda's pyarrow-core, source builds) come without S3 or GCS support
CLOUD_SCHEMES = {
    "s3": ("pyarrow._s3fs", "s3fs"),
    "gs": ("pyarrow._gcsfs", "gcsfs"),
    "gcs": ("pyarrow._gcsfs", "gcsfs"),
}
# partition keys read as the UTC day of the rows below them, when every value is a date
DAY_KEYS = ("date", "day", "dt")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_WILDCARDS = re.compile(r"[*?\[]")
# a file named alone must say it is Parquet; in folders and globs every data file is read
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_ALONE = (
    "CSV is read from one local file (a path or a file:// URI); folders, globs and other "
    "URIs are read as Parquet"
)


# numeric timestamps are epoch seconds; one this large (past the year 5000) is refused as
# most likely milliseconds, so a time window must never skip the rows that hold one
MAX_EPOCH_SECONDS = 1e11


@dataclass(frozen=True)
class Window:
    """Rows with ``since <= timestamp < until`` (epoch seconds, UTC; None: unbounded)."""

    since: int | None = None
    until: int | None = None

    @classmethod
    def parse(cls, since: object = None, until: object = None) -> Window:
        """From ISO-8601 dates or times (``2026-11-01``, ``2026-11-01T12:00:00+01:00``;
        without a zone, UTC; other text is refused), datetimes or epoch seconds (numbers)."""
        window = cls(_seconds(since, "since"), _seconds(until, "until"))
        if window.since is not None and window.until is not None and window.since >= window.until:
            raise ValueError(f"since ({since}) must be earlier than until ({until})")
        return window

    def __bool__(self) -> bool:
        return self.since is not None or self.until is not None

    def mask(self, seconds: np.ndarray) -> np.ndarray:
        keep = np.ones(len(seconds), dtype=bool)
        if self.since is not None:
            keep &= seconds >= self.since
        if self.until is not None:
            keep &= seconds < self.until
        return keep

    def keeps_day(self, day: str) -> bool:
        start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
        after_since = self.since is None or start + 86_400 > self.since
        return after_since and (self.until is None or start < self.until)

    def expression(self, field: pa.Field) -> ds.Expression | None:
        """The window as a filter on ``field`` for row-group statistics; None where the
        column's type has no order we can compare (text timestamps are parsed later)."""
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        if not (numeric or pa.types.is_timestamp(field.type)):
            return None
        column = ds.field(field.name)
        inside = ds.scalar(True)
        for value, bound in ((self.since, "since"), (self.until, "until")):
            if value is None:
                continue
            if numeric:
                scalar = pa.scalar(value)
            else:
                # in the column's own unit: a bound past what that unit holds in 64 bits
                # (after 2262 in nanoseconds) is clamped to it instead of failing the cast
                unit = field.type.unit
                ticks = value * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
                ticks = max(-(2**63) + 1, min(2**63 - 1, ticks))
                scalar = pa.scalar(ticks).cast(pa.timestamp(unit, field.type.tz))
            inside &= column >= scalar if bound == "since" else column < scalar
        if numeric:
            # rows whose number is no epoch seconds are read, so that they are refused
            inside |= (column >= MAX_EPOCH_SECONDS) | (column <= -MAX_EPOCH_SECONDS)
        return inside

    def describe(self) -> str:
        def show(value: int | None) -> str:
            return "-" if value is None else datetime.fromtimestamp(value, UTC).isoformat()

        return f"since {show(self.since)} until {show(self.until)}"


def _seconds(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime | date | np.datetime64):
        moment = pd.Timestamp(value)
    elif isinstance(value, str):
        moment = pd.Timestamp(_iso_moment(value, what))
    else:
        raise ValueError(f"{what}: {value!r} is no date or time; {_ISO_FORMS}")
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment
    return int(moment.timestamp() // 1)


_ISO_FORMS = "use ISO-8601 (2026-11-01, 2026-11-01T12:00:00 or 2026-11-01T12:00:00+01:00)"


def _iso_moment(text: str, what: str) -> datetime:
    """ISO-8601 only: pandas' own parser also reads "01.10.2026" (month first, as January
    10), "today" and "Dec 1 2026", so a window would silently start on another day than
    the one meant."""
    if not text.strip():  # a nightly job's unset variable: no bound would read every day
        raise ValueError(f"{what}: empty; {_ISO_FORMS}")
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: cannot read {text!r} as a date or time; {_ISO_FORMS}") from None


@dataclass
class Piece:
    """Record batches of one file, starting at row ``offset`` (0-based) of that file."""

    file: str
    offset: int
    batch: pa.RecordBatch
    # optional columns that other files have and this one lacks (in ``batch``: all null)
    absent: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A source resolved to its files, after the window dropped the day partitions outside
    it; nothing but the listing is read until ``pieces``."""

    name: str
    filesystem: pafs.FileSystem
    base: str
    files: list[str]
    prefix: str
    files_found: int

    @classmethod
    def open(cls, source: str | Path, window: Window | None = None) -> Dataset:
        name = str(source)
        filesystem, path, prefix = _filesystem(name)
        base, files = _list(filesystem, path, prefix + path)
        found = len(files)
        if window:
            files = _in_window(files, base, window)
        return cls(name, filesystem, base, files, prefix, found)

    def pieces(
        self,
        required: Sequence[str] = (),
        optional: Sequence[str] | None = None,
        window: Window | None = None,
        time_column: str = "timestamp",
    ) -> Iterator[Piece]:
        """Batches in file order. Read are the ``required`` columns (each file must have
        them) and those of ``optional`` any file has (None: every column)."""
        if not self.files:
            return
        try:
            dataset = ds.dataset(
                self.files,
                filesystem=self.filesystem,
                format="parquet",
                partitioning="hive",
                partition_base_dir=self.base,
            )
        except (pa.ArrowException, OSError) as exc:  # pyarrow reads the first file's schema
            raise _unreadable(exc, self.prefix + self.files[0]) from None
        fragments = list(dataset.get_fragments())
        schema = self._schema(dataset.schema, fragments, required)
        columns = None
        if optional is not None:
            wanted = [*required, *optional]
            columns = [c for c in dict.fromkeys(wanted) if c in schema.names]
        expression = None
        if window and time_column in schema.names:
            expression = window.expression(schema.field(time_column))
        for fragment in fragments:
            name = self.prefix + fragment.path
            try:
                has = {*fragment.physical_schema.names, *_partition_keys(fragment)}
                absent = tuple(c for c in optional or () if c in schema.names and c not in has)
                kept, against = expression, schema
                if window and _own_zone(fragment.physical_schema, schema, time_column):
                    # statistics compare in the file's own zone (or its lack of one): the
                    # window's bounds as the same instants in that type
                    against = fragment.physical_schema
                    kept = window.expression(against.field(time_column))
                for offset, part in _row_group_runs(fragment, kept, against):
                    for batch in part.to_batches(schema=schema, columns=columns):
                        yield Piece(name, offset, batch, absent)
                        offset += batch.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable(exc, name) from None

    def _schema(
        self, schema: pa.Schema, fragments: list[ds.Fragment], required: Sequence[str]
    ) -> pa.Schema:
        """Every file's columns together; a file missing a required column, or whose column
        types cannot join the others', is named."""
        for fragment in fragments:
            name = self.prefix + fragment.path
            try:
                physical = fragment.physical_schema
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable(exc, name) from None
            keys = _partition_keys(fragment)
            missing = [c for c in required if c not in physical.names and c not in keys]
            if missing:
                raise DataError(
                    f"missing required column(s) {', '.join(missing)} "
                    f"(the file has: {', '.join(physical.names)})"
                    f"{_index_in_metadata(physical, missing[0])}",
                    file=name,
                    column=missing[0],
                )
            schema, physical = _zones_agreed(schema, physical)
            try:
                schema = pa.unify_schemas([schema, physical], promote_options="permissive")
            except (pa.ArrowException, TypeError) as exc:
                raise DataError(
                    f"its column types do not match the other files': {exc}", file=name
                ) from None
        return schema


def _zones_agreed(schema: pa.Schema, physical: pa.Schema) -> tuple[pa.Schema, pa.Schema]:
    """Both schemas with each timestamp column that they give in different zones, or one
    with a zone and one without, in UTC: the same instants (a time without a zone is UTC, as
    in text), where pyarrow would refuse to join them. A folder of events whose writer
    began to write zones, or wrote each partition in another, is one table."""
    for field in physical:
        if not pa.types.is_timestamp(field.type) or field.name not in schema.names:
            continue
        at = schema.get_field_index(field.name)
        other = schema.field(at)
        if not pa.types.is_timestamp(other.type) or other.type.tz == field.type.tz:
            continue
        schema = schema.set(at, other.with_type(pa.timestamp(other.type.unit, "UTC")))
        physical = physical.set(
            physical.get_field_index(field.name),
            field.with_type(pa.timestamp(field.type.unit, "UTC")),
        )
    return schema, physical


def _own_zone(physical: pa.Schema, schema: pa.Schema, column: str) -> bool:
    """Whether a file gives the timestamp ``column`` in another zone than the dataset."""
    if column not in physical.names or column not in schema.names:
        return False
    own, joined = physical.field(column).type, schema.field(column).type
    return pa.types.is_timestamp(own) and pa.types.is_timestamp(joined) and own.tz != joined.tz


def _unreadable(exc: Exception, name: str) -> DataError:
    hint = ""
    if name.lower().endswith(CSV_SUFFIXES):
        hint = f" ({_CSV_ALONE})"
    return DataError(f"cannot read the file: {exc}{hint}", file=name)


def is_dataset(source: str | Path) -> bool:
    """Whether ``source`` is read through pyarrow.dataset: anything but one local CSV file
    (a path or a ``file://`` URI)."""
    return local_csv(source) is None


def local_csv(source: str | Path) -> str | None:
    """The path of ``source`` where it names one local CSV file, else None. A path that
    exists is that file even where its name holds glob characters (``events[1].csv``)."""
    text = str(source)
    if not text.lower().endswith(CSV_SUFFIXES):
        return None
    scheme = _scheme(text)
    if scheme == "file":
        return unquote(urlsplit(text).path)
    if scheme != "":
        return None
    if _WILDCARDS.search(text) is not None and not Path(text).exists():
        return None
    return text


def _scheme(name: str) -> str:
    scheme = urlsplit(name).scheme.lower()
    return scheme if len(scheme) > 1 else ""  # C:\data is a Windows path, not a scheme


def _filesystem(name: str) -> tuple[pafs.FileSystem, str, str]:
    """The filesystem, the path within it and the prefix that turns a path into a name."""
    scheme = _scheme(name)
    if scheme == "":
        return pafs.LocalFileSystem(), name, ""
    if scheme == "file":
        return pafs.LocalFileSystem(), unquote(urlsplit(name).path), "file://"
    if scheme not in CLOUD_SCHEMES:
        known = ", ".join(f"{s}://" for s in ("file", *CLOUD_SCHEMES))
        raise DataError(f"unknown URI scheme {scheme!r}; known: {known}", file=name)
    native, package = CLOUD_SCHEMES[scheme]
    if _importable(native):
        # a URI parser would read a glob's [ ] as an address: only the part before it goes in
        glob = _WILDCARDS.search(name)
        head = name if glob is None else name[: name.rfind("/", 0, glob.start())]
        try:
            filesystem, path = pafs.FileSystem.from_uri(head)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot open: {exc}", file=name) from None
        return filesystem, path + name[len(head) :], f"{scheme}://"
    if _importable(package):
        import fsspec

        handler = pafs.FSSpecHandler(fsspec.filesystem(scheme))
        return pafs.PyFileSystem(handler), name.split("://", 1)[1], f"{scheme}://"
    raise DataError(
        f"reading {scheme}:// needs a filesystem this installation lacks (pyarrow was built "
        f"without it and {package} is not installed): {CLOUD_EXTRA}",
        file=name,
    )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _list(filesystem: pafs.FileSystem, path: str, name: str) -> tuple[str, list[str]]:
    """The folder partition keys are read below, and the data files, sorted."""
    glob = _WILDCARDS.search(path)
    if glob is not None and filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        glob = None  # a file or folder named so, not a pattern
    if glob is None:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError("file or folder not found", file=name)
        if info.type == pafs.FileType.File:
            if path.lower().endswith(CSV_SUFFIXES):
                raise DataError(f"cannot read CSV here: {_CSV_ALONE}", file=name)
            if not path.lower().endswith(PARQUET_SUFFIXES):
                raise DataError("unknown file type; use a .csv or .parquet file", file=name)
            return str(Path(path).parent), [path]
        base, pattern, recursive = path.rstrip("/"), None, True
    else:
        base = path[: glob.start()].rsplit("/", 1)[0] if "/" in path[: glob.start()] else "."
        pattern = _glob_regex(path)
        # a wildcard in the file name alone lists one folder, not the tree below it
        recursive = "/" in path[glob.start() :] or "**" in path
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=recursive))
    except FileNotFoundError:
        infos = []
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot list the folder: {exc}", file=name) from None
    files = sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and not _hidden(info.path, base)
        and (pattern is None or pattern.fullmatch(_relative(info.path, base, path)))
    )
    if not files:
        what = "no files match" if pattern else "no Parquet files in the folder"
        raise DataError(what, file=name)
    return base, files


def _relative(path: str, base: str, pattern: str) -> str:
    """``path`` written as the glob was: relative globs match relative paths."""
    if base == "." and not pattern.startswith(("./", "/")):
        return path.removeprefix("./")
    return path


def _hidden(path: str, base: str) -> bool:
    # as Spark and pyarrow do: _SUCCESS, _temporary/, .crc files are not data
    below = path[len(base) :].lstrip("/").split("/")
    return any(part.startswith(("_", ".")) for part in below)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` stay within a folder, ``**`` crosses folders, ``[...]`` is a set."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def _keys(path: str, base: str) -> dict[str, str]:
    below = path[len(base) :].lstrip("/").split("/")[:-1]
    return dict(part.split("=", 1) for part in below if "=" in part)


def _in_window(files: list[str], base: str, window: Window) -> list[str]:
    """Drop the files under day partitions outside the window, before any is opened."""
    keys = [_keys(path, base) for path in files]
    for key in DAY_KEYS:
        days = [unquote(k.get(key, "")) for k in keys]
        if all(_DAY.fullmatch(day) for day in days):
            for path, day in zip(files, days, strict=True):
                try:
                    datetime.fromisoformat(day)
                except ValueError as exc:
                    message = f"partition {key}={day} is no date ({exc})"
                    raise DataError(message, file=path) from None
            return [path for path, day in zip(files, days, strict=True) if window.keeps_day(day)]
    return files


def _index_in_metadata(schema: pa.Schema, column: str) -> str:
    """A note when ``column`` is a pandas index the file keeps in its metadata only: pandas
    writes a RangeIndex (``set_index`` makes one of ids 1, 2, 3, ...) as its start, stop and
    step, no column that a Parquet reader sees."""
    try:
        indexes = (schema.pandas_metadata or {}).get("index_columns", [])
    except ValueError:  # metadata that is no JSON: no pandas index to name
        return ""
    for index in indexes:
        if isinstance(index, dict) and index.get("kind") == "range" and index.get("name") == column:
            return (
                f"; {column} is the pandas index the file was written with, kept in its "
                "metadata as a range, not as a column: write it with "
                "frame.reset_index().to_parquet(...)"
            )
    return ""


def _partition_keys(fragment: ds.Fragment) -> set[str]:
    return set(ds.get_partition_keys(fragment.partition_expression))


def _row_group_runs(
    fragment: ds.Fragment, expression: ds.Expression | None, schema: pa.Schema
) -> Iterator[tuple[int, ds.Fragment]]:
    """Runs of consecutive row groups the window's statistics keep, each with its first row
    in the file, so that every batch knows the rows it holds."""
    if expression is None:
        yield 0, fragment
        return
    fragment.ensure_complete_metadata()
    sizes = np.array([group.num_rows for group in fragment.row_groups], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    kept = sorted(
        group.id
        for part in fragment.split_by_row_group(expression, schema=schema)
        for group in part.row_groups
    )
    runs = np.split(np.asarray(kept, dtype=np.int64), np.flatnonzero(np.diff(kept) != 1) + 1)
    for run in runs:
        if len(run):
            yield int(starts[run[0]]), fragment.subset(row_group_ids=run.tolist())
