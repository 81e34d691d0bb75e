"""Read and validate interactions and listings: CSV files, DataFrames, or Parquet as a
file, a folder (Hive partitions become columns), a glob or a URI (``sources.py``).

Every problem is a DataError naming the file, the row within that file and the column.
Nothing here drops rows: skipping (weight 0, unknown listings, rare users) happens in ``prepare``
and is counted there. A time window (``since``, ``until``) keeps the events inside it; the
count of rows read is kept in the frame's ``attrs``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embedrec.data.csvtext import first_non_utf8, leading_zero_field, raw_header, row_line
from embedrec.data.errors import CSV_SUFFIXES, DataError, shown
from embedrec.data.ids import (
    MAX_ID_LENGTH,
    as_ids_like,
    holds_floats,
    holds_integers,
    id_problem,
    invalid_ids,
    not_whole,
    shard_of,
    whole_float_ids,
)
from embedrec.data.schema import MISSING_MARKERS
from embedrec.data.sources import (
    MAX_EPOCH_SECONDS,
    Dataset,
    Piece,
    Window,
    is_dataset,
    local_csv,
)
from embedrec.geo import LAT_LON_COLUMNS

logger = logging.getLogger(__name__)

ID_COLUMNS = ("user_id", "listing_id")
INTERACTION_COLUMNS = ("user_id", "listing_id", "timestamp")
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "favorite": 3.0, "contact": 5.0}
_INTEGER_ID = r"-?(?:0|[1-9][0-9]{0,18})"  # 19 digits at most; int64's bound is checked
_WHOLE_FLOAT_ID = _INTEGER_ID + r"\.0+"
_DECIMAL_ID = _INTEGER_ID + r"(?:\.[0-9]+)?"
# a CSV column of digit strings only, one of which is a zero and more digits, holds codes
# (postal codes), not numbers
_DIGITS = r"[0-9]+"
_LEADING_ZERO = r"0[0-9]"
_INT64_MAX = np.iinfo(np.int64).max
# what pandas infers of a column of ids that are strings or numbers ("mixed-integer", ints
# beside strings, is refused apart); a float or decimal id is checked for a whole number later
_ID_KINDS = frozenset({"string", "integer", "floating", "mixed-integer-float", "decimal", "empty"})
# an event's weight (event weight times the weight column) is kept as float32
MAX_WEIGHT = float(np.finfo(np.float32).max)

Source = str | Path | pd.DataFrame
# rows of interactions validated at a time: few fixed costs, and a bounded pandas copy
CHUNK_ROWS = 1 << 18


def check_event_weights(
    weights: object, key: Callable[[str], str] = lambda event: f"event_weights[{event!r}]"
) -> None:
    """Raise ValueError unless ``weights`` maps events to finite numbers >= 0, naming the
    first bad weight by ``key(event)``. As with the ``weight`` column, 0 is allowed: such
    events are skipped in training, and counted."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"event weights must map each event to its weight, got {weights!r}")
    if not weights:  # no event could be read: not the default weights in disguise
        raise ValueError("event weights name no event; leave them out for the defaults")
    named: dict[str, str] = {}
    for event, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, Real) or not _is_weight(value):
            raise ValueError(f"{key(event)} must be a finite number >= 0, got {value!r}")
        same = named.setdefault(_event_name(event), event)
        if same != event:
            raise ValueError(
                f"{key(same)} and {key(event)} name one event: events are matched without "
                "case and surrounding spaces"
            )


def _event_name(event: object) -> str:
    """How an event is matched, in the data and in the weights: without case or spaces
    around it."""
    return str(event).strip().lower()


def _is_weight(value: Real) -> bool:
    return math.isfinite(value) and value >= 0


def read_table(path: str | Path, codes: bool = True) -> pd.DataFrame:
    """Read a CSV or Parquet file, chosen by extension.

    CSV id columns that hold only integers within int64 (canonical, or whole floats: 64.0)
    become integers; any other id (with leading zeros, spaces, letters) stays the exact string
    from the file. With ``codes``, another CSV column of digit strings of which one has a
    leading zero and more than one digit (a postal code: ``01067``) is the text written, not
    numbers (``0`` and ``10`` alone are numbers); without, it is numbers, as pandas reads it
    (an events file, whose numbers are times and weights, is not read twice for it).
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a CSV or Parquet file", file=str(path))
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = table_frame(pq.read_table(path))
        elif path.suffix.lower() == ".csv" or suffixes.endswith((".csv.gz", ".csv.zst")):
            frame = _read_csv(path, codes)
        else:
            raise DataError("unknown file type; use a .csv or .parquet file", file=str(path))
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(path, exc), file=str(path)) from None
    except (pa.ArrowException, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"cannot read the file: {exc}", file=str(path)) from None
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty", file=str(path)) from None
    if frame.empty:
        raise DataError("the file holds no rows", file=str(path))
    frame.attrs["source"] = str(path)
    return frame


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """Where the file stops being UTF-8: the decoder's own position counts from the start
    of one of pandas' buffers, not of the file."""
    advice = (
        "is not UTF-8 text (the file seems to be in another encoding, such as Latin-1 or "
        "Windows-1252); save it as UTF-8 (in Excel: CSV UTF-8)"
    )
    try:
        found = first_non_utf8(str(path))
    except (OSError, pa.ArrowException):
        found = None
    if found is None:
        return f"cannot read the file: byte 0x{exc.object[exc.start]:02x} {advice}"
    line, character, byte = found
    return f"cannot read the file: line {line}, character {character}: byte 0x{byte:02x} {advice}"


def _read_csv(path: Path, codes: bool = True) -> pd.DataFrame:
    written = raw_header(str(path))
    if written:
        _check_header(written, str(path))
    header = pd.read_csv(path, nrows=0).columns
    # ids are never "missing" because they read like NA or null: they are kept as written
    na_values = {c: ([""] if c in ID_COLUMNS else sorted(MISSING_MARKERS)) for c in header}
    frame = pd.read_csv(
        path,
        dtype={c: str for c in ID_COLUMNS if c in header},
        keep_default_na=False,
        na_values=na_values,
    )
    if written and len(written) == len(frame.columns):
        frame = _without_empty_unnamed(frame, written, str(path))
    if codes:
        frame = _codes_as_text(frame, path, na_values)
    for column in ID_COLUMNS:
        if column in frame.columns:
            frame[column] = _typed_ids(frame[column].astype(object))
    return frame


def _codes_as_text(frame: pd.DataFrame, path: Path, na_values: dict) -> pd.DataFrame:
    """``frame`` with each column that pandas read as numbers but whose file writes digit
    strings only, one of them with a leading zero and more than one digit (``01067``: the
    postal codes of Dresden, 01xxx-09xxx in Germany), as the text written: codes, not numbers
    (1067). A column of ``0``, ``7`` and ``10`` stays numbers, and so does one with a sign, a
    decimal point or an exponent anywhere. Only columns whose numbers could be such digits
    (whole, not negative) are read again, as text, and only where a field of the file may
    start with a zero and a digit (one scan of its bytes, a fraction of pandas' read)."""
    maybe = [
        column
        for column in frame.columns
        if column not in ID_COLUMNS and _whole_and_not_negative(frame[column])
    ]
    if not maybe or not leading_zero_field(str(path)):
        return frame
    text = pd.read_csv(
        path,
        usecols=maybe,
        dtype=str,
        keep_default_na=False,
        na_values={column: na_values[column] for column in maybe},
    )
    codes = {}
    for column in maybe:
        written = text[column].dropna().str.strip()
        if written.str.fullmatch(_DIGITS).all() and written.str.match(_LEADING_ZERO).any():
            codes[column] = text[column].set_axis(frame.index)
    if codes:
        frame = frame.assign(**codes)
    return frame


def _whole_and_not_negative(values: pd.Series) -> bool:
    """Whether a column read from a CSV file is numbers that digits alone could write."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return False
    if pd.api.types.is_integer_dtype(dtype):
        return bool((values >= 0).all())
    numbers = values.dropna().to_numpy(dtype=np.float64)
    return bool(np.isfinite(numbers).all() and (numbers >= 0).all() and (numbers % 1 == 0).all())


def _check_header(names: list[str], name: str) -> None:
    """The header as written: pandas renames a repeated name (``event``, ``event.1``), so
    the second column would be read as another one, or not at all."""
    if len(names) == 1:
        for separator, called in ((";", "';'"), ("\t", "tabs")):
            if separator in names[0]:
                raise DataError(
                    f"the header is one column {shown(names[0][:60])}: the file seems to be "
                    f"separated by {called}; embedrec reads comma-separated CSV (save it "
                    "with ',' between the columns, or as Parquet)",
                    file=name,
                )
    seen: dict[str, int] = {}
    for position, column in enumerate(names, start=1):
        if not column.strip():
            continue
        first = seen.setdefault(column, position)
        if first != position:
            raise DataError(
                f"the header names column {shown(column)} twice (columns {first} and "
                f"{position}); rename or remove one",
                file=name,
                column=column,
            )


def _without_empty_unnamed(frame: pd.DataFrame, names: list[str], name: str) -> pd.DataFrame:
    """Columns without a name in the header are dropped where they hold nothing (a
    spreadsheet's trailing separators: pandas calls them ``Unnamed: 5``); one that holds
    values is refused, as it could be any column."""
    unnamed = [i for i, column in enumerate(names) if not column.strip()]
    if not unnamed:
        return frame
    for position in unnamed:
        values = frame.iloc[:, position]
        filled = values.notna().to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            filled = filled & (values.astype(str).str.strip() != "").to_numpy()
        if filled.any():
            row = int(np.flatnonzero(filled)[0])
            raise DataError(
                f"column {position + 1} has no name in the header but holds values "
                f"({shown(values.iloc[row])}); name it in the header or remove it",
                file=name,
                row=row + 1,
                line=row_line(name, row + 1),
            )
    logger.info("%s: dropped %d empty column(s) without a name in the header", name, len(unnamed))
    return frame.drop(columns=frame.columns[unnamed])


def _typed_ids(text: pd.Series) -> pd.Series:
    """A CSV id column as integers where it writes only integers: plainly, or as whole
    floats (64.0, as pandas writes a column of integers that had a missing value). Such a
    column with a fraction (64.5) becomes floats, refused at that row by the checks."""
    if text.isna().any():
        return text
    if _int64_text(text):
        return text.astype(np.int64)
    written_as_floats = text.str.fullmatch(_WHOLE_FLOAT_ID).any()
    if not written_as_floats or not text.str.fullmatch(_DECIMAL_ID).all():
        return text  # string ids, exactly as written
    # from the text, not through float64, whose integers end at 2**53
    integers = text.str.replace(r"\.0+$", "", regex=True)
    if _int64_text(integers):
        return integers.astype(np.int64)
    return text.astype(np.float64)


def _int64_text(text: pd.Series) -> bool:
    """Whether every value writes an integer that fits int64: up to 18 digits any does; of
    19 digits, those up to 9223372036854775807 (compared as text: same length, digits)."""
    if not text.str.fullmatch(_INTEGER_ID).all():
        return False
    digits = text.str.removeprefix("-")
    longest = digits.str.len() == 19
    if not longest.any():
        return True
    negative = text.str.startswith("-")
    bound = str(_INT64_MAX)
    return bool(
        (digits[longest & ~negative] <= bound).all()
        and (digits[longest & negative] <= str(_INT64_MAX + 1)).all()
    )


def load_interactions(
    source: Source,
    event_weights: Mapping[str, float] | None = None,
    since: object = None,
    until: object = None,
    shard: tuple[int, int] | None = None,
    model_ids: Mapping[str, pd.Index] | None = None,
) -> pd.DataFrame:
    """Validated interactions: user_id, listing_id, timestamp (int64 epoch seconds), weight.

    ``weight`` is the event's weight (``event_weights``, default view 1, favorite 3,
    contact 5; each a finite number >= 0, else ValueError) times the optional ``weight``
    column. ``since`` and ``until`` (ISO dates or
    times, UTC unless they say otherwise) keep the events with since <= timestamp < until;
    Parquet outside the window is not read where partitions or row-group statistics tell.
    ``attrs`` holds ``rows_read`` (rows read, in the window or not) and ``files_read``.
    ``shard`` = (k, n) keeps only the events of the users in shard k of n (``shard_of``), chunk
    by chunk, so that a process of a distributed run holds only its own part (and logs no
    count of a window's events: ``read_message`` of every shard's is its caller's to log).
    ``model_ids``: the ids of the model a warm start continues, by column: ``user_id`` is
    read in the type of its ids (:func:`_as_model_ids`).
    """
    source = _checked_source(source, "interactions")
    weights = event_weights or DEFAULT_EVENT_WEIGHTS
    check_event_weights(weights)
    users = (model_ids or {}).get("user_id")
    window = Window.parse(since, until)

    def kept(part: pd.DataFrame) -> pd.DataFrame:
        mask = window.mask(part["timestamp"].to_numpy()) if window else None
        if shard is not None:
            mine = shard_of(part["user_id"], shard[1]) == shard[0]
            mask = mine if mask is None else mask & mine
        return part if mask is None else part[mask]

    if isinstance(source, pd.DataFrame) or not is_dataset(source):
        # the columns read besides the ids are times, events and weights: no codes
        frame, name = _frame(source, codes=False)
        out, rows = kept(_interactions(frame, name, weights, users)), len(frame)
        files = 0 if isinstance(source, pd.DataFrame) else 1
    else:
        out, name, rows, files = _read_interactions(source, weights, window, kept, users)
    if out.empty and shard is None:
        raise DataError(no_events(window, rows, files), file=name)
    out = out.reset_index(drop=True)
    out.attrs.update(source=name, rows_read=rows, files_read=files)
    # a shard's events are a part: its caller says how many every shard read together
    if window and shard is None:
        logger.info(read_message(window, len(out), rows, files))
    return out


def _read_interactions(
    source: str | Path,
    weights: Mapping[str, float],
    window: Window,
    kept: Callable[[pd.DataFrame], pd.DataFrame],
    users: pd.Index | None,
) -> tuple[pd.DataFrame, str, int, int]:
    """Chunk by chunk, so that only the four validated columns of each are kept."""
    dataset = Dataset.open(source, window)
    parts, rows, files, chunk = [], 0, set(), []

    def flush() -> None:
        part = _validated(chunk, lambda frame: _interactions(frame, dataset.name, weights, users))
        parts.append(kept(part))
        chunk.clear()

    for piece in dataset.pieces(INTERACTION_COLUMNS, ("event", "weight"), window):
        if chunk and piece.absent != chunk[0].absent:
            flush()  # a chunk's pieces lack the same columns
        chunk.append(piece)
        rows += piece.batch.num_rows
        files.add(piece.file)
        # small files give small batches; validating them together saves the fixed costs
        if sum(p.batch.num_rows for p in chunk) >= CHUNK_ROWS:
            flush()
    if chunk:
        flush()
    if rows == 0 and not window:
        raise DataError(_no_rows(dataset), file=dataset.name)
    empty = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in INTERACTION_COLUMNS})
    empty["weight"] = pd.Series(dtype=np.float32)
    out = pd.concat(parts, ignore_index=True) if parts else empty
    return out, dataset.name, rows, len(files)


def read_message(window: Window, events: int, rows: int, files: int) -> str:
    """What a read in ``window`` kept of the rows it read."""
    return f"read {events:,} events {window.describe()} ({rows:,} rows read from {files:,} file(s))"


def no_events(window: Window, rows: int, files: int | None = None) -> str:
    """What an empty window read; ``files``: how many files it read rows of, where none
    tells a day whose partition is missing from one whose events all lie outside the
    window (or whose file holds no rows)."""
    if files == 0 and rows == 0 and window:
        return (
            f"no events {window.describe()}: none of its partitions (date=...) or row "
            "groups lies in that window (0 rows read)"
        )
    return f"no events {window.describe()} ({rows:,} rows read)"


def _no_rows(dataset: Dataset) -> str:
    n = len(dataset.files)
    return "the file holds no rows" if n == 1 else f"the {n} files hold no rows"


def _validated(
    pieces: list[Piece], validate: Callable[[pd.DataFrame], pd.DataFrame]
) -> pd.DataFrame:
    """``validate`` on the pieces as one frame; an error names the file of its row and
    counts the row from the start of that file."""
    sizes = np.array([piece.batch.num_rows for piece in pieces], dtype=np.int64)
    frame = table_frame(pa.Table.from_batches([piece.batch for piece in pieces]))
    # a column these files lack is no column of theirs, not a column of missing values
    frame = frame.drop(columns=list(pieces[0].absent))
    try:
        return validate(frame)
    except DataError as exc:
        if exc.row is None:
            raise
        piece = int(np.searchsorted(np.cumsum(sizes), exc.row - 1, side="right"))
        row = exc.row - int(sizes[:piece].sum()) + pieces[piece].offset
        raise DataError(exc.message, file=pieces[piece].file, row=row, column=exc.column) from None


def _interactions(
    frame: pd.DataFrame,
    name: str,
    event_weights: Mapping[str, float],
    model_users: pd.Index | None = None,
) -> pd.DataFrame:
    _require_columns(frame, INTERACTION_COLUMNS, name)
    frame = _text_from_bytes(frame, name)
    user_ids, listing_ids = (_checked_ids(frame[column], name, column) for column in ID_COLUMNS)
    # the listing ids meet the listings table in ``prepare``, which skips the unknown ones
    user_ids = _as_model_ids(user_ids, model_users, name, "user_id")
    out = pd.DataFrame({"user_id": user_ids, "listing_id": listing_ids})
    out["timestamp"] = _parse_timestamps(frame["timestamp"], name)
    # multiplied in float64: a product beyond float32 is refused, not stored as infinity
    weight = np.ones(len(frame), dtype=np.float64)
    if "event" in frame.columns:
        weight *= _event_weights(frame["event"], event_weights, name)
    if "weight" in frame.columns:
        weight *= _positive_numbers(frame["weight"], name, "weight")
    too_large = weight > MAX_WEIGHT
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        column = "weight" if "weight" in frame.columns else "event"
        _fail(f"weight {weight[row]:g} is above {MAX_WEIGHT:g}", name, row, column)
    out["weight"] = weight.astype(np.float32)
    return out


def load_listings(source: Source, model_ids: Mapping[str, pd.Index] | None = None) -> pd.DataFrame:
    """Validated listings: unique, non-empty listing_id plus feature columns.

    Numbers may be missing (NaN) but not infinite; lat/lon must be valid coordinates.
    ``model_ids``: as for :func:`load_interactions`; ``listing_id`` is read in the type of
    its ids.
    """
    source = _checked_source(source, "listings")
    model_listings = (model_ids or {}).get("listing_id")
    if isinstance(source, pd.DataFrame) or not is_dataset(source):
        frame, name = _frame(source)
        return _listings(frame, name, model_listings)
    dataset = Dataset.open(source)
    pieces = list(dataset.pieces(("listing_id",)))
    sizes = np.array([piece.batch.num_rows for piece in pieces], dtype=np.int64)
    if sizes.sum() == 0:
        raise DataError(_no_rows(dataset), file=dataset.name)
    # one frame: a duplicate may sit in another file than its first
    return _validated(pieces, lambda frame: _listings(frame, dataset.name, model_listings))


def _listings(frame: pd.DataFrame, name: str, model_listings: pd.Index | None) -> pd.DataFrame:
    _require_columns(frame, ("listing_id",), name)
    frame = _text_from_bytes(frame, name)
    given = frame["listing_id"]
    listing_ids = _checked_ids(given, name, "listing_id")
    if model_listings is not None:
        listing_ids = _as_model_ids(listing_ids, model_listings, name, "listing_id")
    if listing_ids is not given:
        frame = frame.assign(listing_id=listing_ids)
    frame = _dates(frame, name)
    duplicated = frame["listing_id"].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        _fail(
            f"duplicate listing_id {shown(frame['listing_id'].iloc[row])}", name, row, "listing_id"
        )
    for column, dtype in frame.dtypes.items():
        is_object = pd.api.types.is_object_dtype(dtype)
        kind = pd.api.types.infer_dtype(frame[column], skipna=True) if is_object else None
        if kind == "decimal":
            # Parquet DECIMAL (prices in SQL exports) arrives as Python Decimals: numbers,
            # for the encoders, the schema and filters alike
            frame = frame.assign(**{column: frame[column].astype(np.float64)})
            dtype = frame[column].dtype
        mixed = kind == "mixed"
        if mixed:  # lists, or values of several kinds
            joined = _lists_joined(frame[column], name, str(column))
            if joined is not None:
                frame = frame.assign(**{column: joined})
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isinf(values)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                _fail(f"non-finite number {values[row]}", name, row, column)
    for lat, lon in LAT_LON_COLUMNS:
        for column, limit in ((lat, 90.0), (lon, 180.0)):
            if column in frame.columns:
                _check_coordinate(frame[column], limit, name, column)
        if lat in frame.columns and lon in frame.columns:
            _check_pair(frame[lat], frame[lon], name, (lat, lon))
    frame = frame.reset_index(drop=True)
    frame.attrs["source"] = name
    return frame


def _text_from_bytes(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with its columns of bytes read as UTF-8 text, as Spark's ``binaryAsString``
    reads them: Hive and Impala write strings as Parquet BINARY without the UTF-8 mark, which
    would otherwise make ids and categories ``b'...'`` that no query or filter names. A value
    that is no UTF-8 (an image, a UUID's 16 bytes) is refused naming its row."""
    for column, dtype in frame.dtypes.items():
        values = frame[column]
        if not pd.api.types.is_object_dtype(dtype):
            continue
        if pd.api.types.infer_dtype(values, skipna=True) != "bytes":
            continue
        try:
            text = pa.array(values, type=pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            row = next(i for i, v in enumerate(values) if not _utf8(v))
            message = (
                f"{shown(values.iloc[row])} is not UTF-8 text (a column of bytes is read as "
                "text; leave binary data, such as images, out of the table)"
            )
            _fail(message, name, row, str(column))
        frame = frame.assign(**{column: text.to_pandas().set_axis(frame.index)})
    return frame


def _utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lists_joined(values: pd.Series, name: str, column: str) -> pd.Series | None:
    """A column of lists (Parquet's list type, arrays as Spark and pandas write them) as the
    ``a|b|c`` strings of a multi-valued feature (an empty list: missing); None when it holds
    no list. A mapping is no feature value: refused naming its row."""
    mapping = values.map(lambda v: isinstance(v, dict)).to_numpy(dtype=bool)
    if mapping.any():
        row = int(np.flatnonzero(mapping)[0])
        _fail("a mapping is no feature value (give its fields as columns)", name, row, column)
    listed = values.map(lambda v: isinstance(v, list | tuple | np.ndarray)).to_numpy(dtype=bool)
    if not listed.any():
        return None

    def joined(items: Any) -> str | None:
        parts = [str(item) for item in items if item is not None and item == item]
        return "|".join(parts) if parts else None

    out = values.astype(object).copy()
    out[listed] = values[listed].map(joined)
    return out


def table_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table (a Parquet file's) as a DataFrame with every column of the table a
    column. pandas writes a frame's named index as columns that its metadata marks as the
    index (``listings.set_index("listing_id").to_parquet(...)``), which ``to_pandas`` would
    take out of the columns: the listing_id missing, a feature silently dropped. An unnamed
    index (``__index_level_0__``, or an unnamed range kept in the metadata) holds no data."""
    frame = table.to_pandas()
    named = [level for level in frame.index.names if level is not None]
    if not named and isinstance(frame.index, pd.RangeIndex):
        return frame
    if named:
        frame = frame.reset_index(level=named)
    # in the table's order, as the file lists its columns (a range index, which is none of
    # them, last)
    order = [c for c in table.column_names if c in frame.columns]
    order += [c for c in frame.columns if c not in order]
    return frame[order].reset_index(drop=True)


def _checked_source(source: object, argument: str) -> Source:
    """A path or a DataFrame; a pyarrow Table as its DataFrame. Anything else is refused
    here: as text it would be taken for a path (a dict's or a polars frame's text reads as a
    broken glob)."""
    if isinstance(source, pa.Table):
        return table_frame(source)
    if isinstance(source, str | Path | pd.DataFrame):
        return source
    raise TypeError(
        f"{argument}: expected a path, a URI, a glob, a pandas DataFrame or a pyarrow Table, "
        f"got {type(source).__module__}.{type(source).__qualname__}"
    )


def _frame(source: Source, codes: bool = True) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        name = source.attrs.get("source", "<DataFrame>")
        if source.empty:
            raise DataError("the table holds no rows", file=name)
        repeated = source.columns[source.columns.duplicated()]
        if len(repeated):
            column = str(repeated[0])
            raise DataError(f"two columns are named {column!r}", file=name, column=column)
        if not all(isinstance(column, str) for column in source.columns):
            # columns are named by text everywhere (schema, config, filters): 5 is "5"
            names = [str(column) for column in source.columns]
            if len(set(names)) < len(names):
                raise DataError(f"two columns have one name as text: {names}", file=name)
            source = source.set_axis(names, axis=1)
        sparse = [c for c, dtype in source.dtypes.items() if isinstance(dtype, pd.SparseDtype)]
        if sparse:  # pyarrow, which packs the listings while a fit trains, refuses sparse data
            source = source.assign(**{c: source[c].sparse.to_dense() for c in sparse})
        return _without_arrow_dtypes(source), name
    frame = read_table(local_csv(source) or source, codes)
    frame.attrs["source"] = str(source)  # a file:// URI named as given
    return frame, str(source)


def _without_arrow_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its columns of pandas' Arrow dtypes (``pd.read_parquet(...,
    dtype_backend="pyarrow")``) converted as a Parquet file's are read: the validation and
    everything after it know those types (an Arrow timestamp has no NaT, and its lists
    would reach the feature encoders unjoined)."""
    arrow = [c for c, dtype in frame.dtypes.items() if isinstance(dtype, pd.ArrowDtype)]
    if not arrow:
        return frame
    return frame.assign(**{c: pa.array(frame[c]).to_pandas().set_axis(frame.index) for c in arrow})


def _fail(message: str, name: str, row: int, column: str) -> None:
    """Raise for the 0-based position ``row``; messages count rows from 1."""
    line = row_line(name, row + 1) if name.lower().endswith(CSV_SUFFIXES) else None
    raise DataError(message, file=name, row=row + 1, column=column, line=line)


def _require_columns(frame: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        # a DataFrame's index is not read (it is no column of a file, nor of sklearn's X)
        indexed = [f"; {c} is the DataFrame's index" for c in missing if c in frame.index.names]
        hint = f"{indexed[0]}: pass frame.reset_index()" if indexed else ""
        raise DataError(
            f"missing required column(s) {', '.join(missing)} (the file has: {have}){hint}",
            file=name,
            column=missing[0],
        )


def _as_model_ids(ids: pd.Series, model: pd.Index | None, name: str, column: str) -> pd.Series:
    """``ids`` in the type of ``model``'s (:func:`as_ids_like`), so that a model with string
    ids continued on a day whose ids read as integers keeps one type of id. Raises for a
    string that writes no integer where the model's ids are integers."""
    if model is None:
        return ids
    typed = as_ids_like(model, ids)
    if holds_integers(model) and not pd.api.types.is_integer_dtype(typed.dtype):
        row = int(np.flatnonzero([isinstance(v, str) for v in typed])[0])
        _fail(
            f"{column} {ids.iloc[row]!r} is not an integer, but the model this continues "
            f"holds integer ids; write integer ids plainly (42, not 042)",
            name,
            row,
            column,
        )
    return typed


def _checked_ids(ids: pd.Series, name: str, column: str) -> pd.Series:
    """``ids`` checked (:func:`_check_ids`); float ids as the integer ids they write (64.0
    is 64), so that they meet the integer ids of other tables, models and queries. A
    category column's ids are its values, of their own type (integers stay integers)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        kind = ids.cat.categories.dtype
        ids = ids.astype(object if ids.isna().any() else kind)
    _check_ids(ids, name, column)
    if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=True) == "decimal":
        return _decimal_ids(ids, name, column)
    if not holds_floats(ids):
        return ids
    bad = not_whole(ids)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"{column} {shown(ids.iloc[row])} is not a whole number ({int(bad.sum())} such "
            "rows); ids given as numbers must be integers within 64 bits (64.0 is the id 64)",
            name,
            row,
            column,
        )
    return whole_float_ids(ids)


def _decimal_ids(ids: pd.Series, name: str, column: str) -> pd.Series:
    """Parquet DECIMAL ids (``decimal128(18, 0)``, as SQL exports write a NUMBER column) as
    the integers they write, as whole float ids are, so that they meet the integer ids of
    other tables, models and queries; a fraction, or more than 64 bits, is refused."""
    # each distinct id checked once: events repeat their users and listings many times
    codes, distinct = pd.factorize(ids)
    whole_values = np.array(
        [
            v.is_finite() and v == v.to_integral_value() and -_INT64_MAX - 1 <= v <= _INT64_MAX
            for v in distinct
        ],
        dtype=bool,
    )
    whole = whole_values[codes]
    if not whole.all():
        bad = ~whole
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"{column} {str(ids.iloc[row])!r} is not a whole number within 64 bits "
            f"({int(bad.sum())} such rows); ids given as decimals must be integers within 64 "
            "bits (64.00 is the id 64)",
            name,
            row,
            column,
        )
    integers = np.array([int(v) for v in distinct], dtype=np.int64)[codes]
    return pd.Series(integers, index=ids.index, name=ids.name)


def _check_ids(ids: pd.Series, name: str, column: str) -> None:
    bad = ids.isna().to_numpy()
    invalid = np.zeros(len(ids), dtype=bool)
    if ids.dtype == object or pd.api.types.is_string_dtype(ids.dtype):
        text = ids.astype(str)
        invalid = invalid_ids(text) & ~bad
        blank = (text.str.strip() == "").to_numpy() if invalid.any() else invalid
        bad, invalid = bad | blank, invalid & ~blank
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(f"empty {column} ({int(bad.sum())} such rows)", name, row, column)
    if invalid.any():
        row = int(np.flatnonzero(invalid)[0])
        value = str(ids.iloc[row])
        shown = repr(value if len(value) <= 40 else value[:40] + "...")
        _fail(
            f"{column} {shown} {id_problem(value)} ({int(invalid.sum())} such rows); ids "
            f"have 1 to {MAX_ID_LENGTH} characters, no '/' and no control characters, and "
            "are not '.' or '..'",
            name,
            row,
            column,
        )
    _check_id_types(ids, name, column)


def _check_id_types(ids: pd.Series, name: str, column: str) -> None:
    """Integer ids fit an int64 (a larger one would wrap to another id), and a column's ids
    are of one type (a string id and an integer one could not be saved together)."""
    if pd.api.types.is_unsigned_integer_dtype(ids.dtype):
        _refuse_out_of_range(ids.to_numpy() > _INT64_MAX, ids, name, column)
    kind = pd.api.types.infer_dtype(ids, skipna=True)
    if kind == "boolean":  # a mask given for the ids, most likely; True and False name no one
        _fail(
            f"{column} {ids.iloc[0]} is a boolean: ids are strings or integers",
            name,
            0,
            column,
        )
    if kind not in _ID_KINDS and kind != "mixed-integer":
        _refuse_id_type(ids, name, column)
    if ids.dtype != object:
        return
    if kind == "mixed-integer":
        is_integer = np.array([isinstance(v, int | np.integer) for v in ids])
        row = int(np.flatnonzero(is_integer != is_integer[0])[0])
        _fail(
            f"{column} {ids.iloc[row]!r} is of type {type(ids.iloc[row]).__name__}, row 1's "
            f"id of type {type(ids.iloc[0]).__name__}: a column's ids are all strings or all "
            "integers (convert them to one type)",
            name,
            row,
            column,
        )
    if kind == "integer":
        outside = np.array([not -_INT64_MAX - 1 <= v <= _INT64_MAX for v in ids])
        _refuse_out_of_range(outside, ids, name, column)


def _refuse_id_type(ids: pd.Series, name: str, column: str) -> None:
    """Ids neither text nor numbers (UUID objects, datetimes, tuples), or text mixed with
    fractions: refused at the first such row, as an id the CLI and HTTP name as text could
    not query them (a UUID object is no string) or the save after training would fail."""
    values = ids.to_numpy(dtype=object)
    row = 0
    if isinstance(values[0], str):  # the first that is not
        texts = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        row = int(np.argmin(texts))
    value = values[row]
    mixed = f", row 1's id of type {type(values[0]).__name__}" if row else ""
    _fail(
        f"{column} {shown(value)} is of type {type(value).__name__}{mixed}: ids are strings "
        "or integers (convert them, e.g. with .astype(str))",
        name,
        row,
        column,
    )


def _refuse_out_of_range(outside: np.ndarray, ids: pd.Series, name: str, column: str) -> None:
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        _fail(
            f"integer id out of range: {ids.iloc[row]} (ids must fit in a signed 64-bit "
            "integer; give them as strings)",
            name,
            row,
            column,
        )


def _parse_timestamps(values: pd.Series, name: str) -> np.ndarray:
    if values.isna().any():
        _fail(
            "missing timestamp", name, int(np.flatnonzero(values.isna().to_numpy())[0]), "timestamp"
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        return _epoch_seconds(pd.to_datetime(values, utc=True))
    if pd.api.types.is_numeric_dtype(values):
        seconds = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(seconds)
        if bad.any():
            _fail(
                "timestamp is not a finite number", name, int(np.flatnonzero(bad)[0]), "timestamp"
            )
        _check_epoch_seconds(seconds, values, name)
        return seconds.astype(np.int64)
    text = values.astype(str)
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    is_number = np.isfinite(numeric)
    parsed = pd.to_datetime(text.where(~is_number), utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy() & ~is_number
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"cannot parse timestamp {shown(text.iloc[row])}: use ISO-8601 "
            "(2026-11-01T12:30:00Z) or epoch seconds",
            name,
            row,
            "timestamp",
        )
    _check_epoch_seconds(np.where(is_number, numeric, 0.0), text, name)
    seconds = _epoch_seconds(parsed.fillna(pd.Timestamp(0, tz="UTC")))
    return np.where(is_number, np.nan_to_num(numeric), seconds).astype(np.int64)


def _epoch_seconds(moments: pd.Series) -> np.ndarray:
    """Epoch seconds of UTC datetimes, through a resolution of seconds: a year past 2262
    (a typo, say) has no nanoseconds since 1970 in 64 bits, but it has seconds."""
    return moments.astype("datetime64[s, UTC]").astype(np.int64).to_numpy()


def _check_epoch_seconds(seconds: np.ndarray, values: pd.Series, name: str) -> None:
    """Numbers are epoch seconds: one far past any date in seconds is most likely epoch
    milliseconds (or finer), which read as seconds would land tens of thousands of years
    ahead and be dropped by every time window without a word."""
    beyond = np.abs(seconds) >= MAX_EPOCH_SECONDS
    if beyond.any():
        row = int(np.flatnonzero(beyond)[0])
        _fail(
            f"timestamp {values.iloc[row]} is not epoch seconds: as seconds it lies past the "
            "year 5100; give epoch seconds (milliseconds divided by 1000) or ISO-8601",
            name,
            row,
            "timestamp",
        )
    _check_not_dates_as_numbers(seconds, values, name)


def _check_not_dates_as_numbers(seconds: np.ndarray, values: pd.Series, name: str) -> None:
    """Dates written as numbers, which read as epoch seconds land in 1970 without a word:
    YYYYMMDD (20260824: August 1970) and a spreadsheet's serial days with their time of day
    (46258.59: the first day of 1970). Refused where every number of the chunk is one."""
    numbers = seconds[np.isfinite(seconds) & (seconds != 0)]
    if len(numbers) == 0:
        return
    low, high = numbers.min(), numbers.max()
    whole = bool(np.all(numbers == np.floor(numbers)))
    if whole and low >= 19000101 and high <= 21001231:
        month, day = (numbers // 100) % 100, numbers % 100
        if np.all((month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)):
            looks = "a date written as YYYYMMDD"
        else:
            return
    elif not whole and low >= 20000 and high <= 80000:
        looks = "a spreadsheet's serial day (days since 1899-12-30)"
    else:
        return
    row = int(np.flatnonzero(np.isfinite(seconds) & (seconds != 0))[0])
    _fail(
        f"timestamp {values.iloc[row]} looks like {looks}, which as epoch seconds would fall "
        "in 1970; give ISO-8601 (2026-08-24T12:30:00Z) or epoch seconds",
        name,
        row,
        "timestamp",
    )


def _event_weights(events: pd.Series, weights: Mapping[str, float], name: str) -> np.ndarray:
    missing = events.isna().to_numpy()
    if missing.any():
        _fail("missing event", name, int(np.flatnonzero(missing)[0]), "event")
    text = events.astype(str).str.strip().str.lower()
    weights = {_event_name(event): weight for event, weight in weights.items()}
    known = pd.Index(list(weights))
    position = known.get_indexer(text)
    bad = position < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"unknown event {shown(events.iloc[row])}; known events: {', '.join(known)} "
            "(set more in the config's [events] table)",
            name,
            row,
            "event",
        )
    return np.asarray([weights[k] for k in known], dtype=np.float64)[position]


def _positive_numbers(values: pd.Series, name: str, column: str) -> np.ndarray:
    missing = values.isna().to_numpy()
    if missing.any():
        _fail(f"missing {column}", name, int(np.flatnonzero(missing)[0]), column)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) | (numbers < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"{column} must be a finite number >= 0, got {shown(values.iloc[row])}",
            name,
            row,
            column,
        )
    return numbers


def _check_pair(lat: pd.Series, lon: pd.Series, name: str, columns: tuple[str, str]) -> None:
    """Half a coordinate pair is refused, naming the missing half: the listing would have
    no location, and radius filters would pass it over in silence. Both missing is fine."""
    given = np.stack([lat.notna().to_numpy(), lon.notna().to_numpy()])
    half = given[0] != given[1]
    if half.any():
        row = int(np.flatnonzero(half)[0])
        missing, present = columns if given[1, row] else columns[::-1]
        message = f"{missing} is missing where {present} is given (give both or neither)"
        _fail(message, name, row, missing)


def _check_coordinate(values: pd.Series, limit: float, name: str, column: str) -> None:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    not_number = np.isnan(numbers) & values.notna().to_numpy()
    out_of_range = np.abs(np.nan_to_num(numbers)) > limit
    bad = not_number | out_of_range | np.isinf(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(
            f"{column} must be a number in [-{limit:g}, {limit:g}], got {shown(values.iloc[row])}",
            name,
            row,
            column,
        )


# a model's own listings as messages name them: by the model directory's file, not by a
# path of the machine that trained or serves it
MODEL_LISTINGS = "model listings.parquet"
# the attrs key naming a listings frame's columns of dates (without a time of day)
DATE_COLUMNS = "date_columns"
# an ISO 8601 date alone
_DAY = r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*"
# an ISO 8601 date, or date and time (seconds, fractions and a zone optional)
_ISO_DATE = (
    r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?\s*"
)


def _dates(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Dates as Parquet's timestamp columns are read (no feature, not filtered as text):
    columns of dates (Parquet's date type, Python dates) and, in a CSV file, columns that
    hold ISO dates only, missing values aside (UTC where any gives a zone). A CSV value of
    the same shape that is no date (2026-02-30) is refused naming its row. The columns of
    dates without a time of day are named in ``attrs[DATE_COLUMNS]``, so that answers write
    their values as dates (2026-11-01), not as midnights."""
    csv = name.lower().endswith(CSV_SUFFIXES)
    days = date_columns(frame)  # a frame validated before (the model's own listings)
    for column in frame.columns.drop("listing_id"):
        values = frame[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind == "date":
            frame = frame.assign(**{column: pd.to_datetime(values)})
            days.append(str(column))
            continue
        text = values.dropna()
        if not csv or kind != "string" or text.empty:
            continue
        if not (
            text.head(1000).str.fullmatch(_ISO_DATE).all() and text.str.fullmatch(_ISO_DATE).all()
        ):
            continue
        zoned = text.str.strip().str.contains(r"[T ][0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})$")
        dates = pd.to_datetime(
            values.str.strip(), format="ISO8601", utc=bool(zoned.any()), errors="coerce"
        )
        bad = (dates.isna() & values.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            message = f"{shown(values.iloc[row])} is no date, but the column's others are"
            _fail(message, name, row, column)
        frame = frame.assign(**{column: dates})
        if text.str.fullmatch(_DAY).all():
            days.append(str(column))
    frame.attrs[DATE_COLUMNS] = days
    return frame


def date_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that hold dates without a time of day (see :func:`_dates`)."""
    return [c for c in frame.attrs.get(DATE_COLUMNS, ()) if c in frame.columns]


def listings_arrow(frame: pd.DataFrame, source: str | None = None) -> pa.Table:
    """A validated listings table as Arrow, for the files a model keeps of it: its columns of
    dates as Arrow dates (``date32``), which :func:`listings_from_arrow` knows again. Arrow
    keeps the frame's ``attrs``; ``source`` replaces the file they name (the training
    listings' path on the machine that trained the model)."""
    if source is not None:
        frame = frame.copy(deep=False)
        frame.attrs = {**frame.attrs, "source": source}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column in date_columns(frame):
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, table[column].cast(pa.date32()))
    return table


def listings_from_arrow(table: pa.Table, source: str | None = None) -> pd.DataFrame:
    """A listings table that :func:`listings_arrow` wrote, as the validated frame was: its
    Arrow dates as timestamps (filtered as such) named in ``attrs[DATE_COLUMNS]``; errors
    about its rows name ``source`` (else the file its attrs name)."""
    days = [f.name for f in table.schema if pa.types.is_date(f.type)]
    for column in days:
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, table[column].cast(pa.timestamp("s")))
    frame = table.to_pandas()
    frame.attrs[DATE_COLUMNS] = days
    if source is not None:
        frame.attrs["source"] = source
    return frame
