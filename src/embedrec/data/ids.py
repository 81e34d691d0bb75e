"""Map external ids (strings or integers, exactly as given) to contiguous indices, once."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedrec.data.errors import DataError

# The one spelling of an integer that names an integer id: ASCII digits, no leading zero, no
# sign but "-", no spaces (int() also reads " 003 ", "+3", "1_000" and other scripts' digits).
_CANONICAL_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_INT64 = range(-(2**63), 2**63)
_INT64_CHARACTERS = len(str(-(2**63)))
# The rules for string ids. "/" cannot be addressed in a URL path, nor can "." and ".." (dot
# segments: browsers and HTTP clients drop them from a path, %2E%2E too); control characters
# (Unicode category Cc: NUL, line breaks, DEL, C1) break logs, terminals and PostgreSQL text.
# A column (invalid_ids) and one id (id_problem) are judged alike: tests compare them on
# every character.
MAX_ID_LENGTH = 256
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f/]")
DOT_SEGMENTS = (".", "..")


def parse_id(raw: str, dtype: Any) -> int | str:
    """An id typed in by a user (command line, URL path) as the catalogue stores its ids.

    For integer ids (``dtype``) a canonical ASCII integer within int64 becomes an int; any
    other text stays the string, so it matches no integer id (unknown, never a different one).
    """
    if (
        pd.api.types.is_integer_dtype(dtype)
        and len(raw) <= _INT64_CHARACTERS  # before int(), which refuses 4,300 digits and more
        and _CANONICAL_INTEGER.fullmatch(raw)
    ):
        number = int(raw)
        if number in _INT64:
            return number
    return raw


def holds_integers(ids: pd.Index) -> bool:
    """Whether ``ids`` (an :func:`id_index`) are integer ids; else they are string ids."""
    return pd.api.types.is_integer_dtype(ids.dtype)


def as_ids_like(ids: pd.Index, values: pd.Series) -> pd.Series:
    """``values`` in the type of ``ids`` (an :func:`id_index`), so that the same id matches
    whichever type its source gave it: a CSV types its id column on its own, so one slug
    among numbers makes every id of that file a string.

    For string ids an integer becomes its plain decimal text (64: "64"); for integer ids a
    string that writes an integer plainly (:func:`parse_id`) becomes that integer. A whole
    float is the integer it writes (64.0: 64). Any other value is kept as it is, to match
    no id. ``values`` already of the ids' type come back as they are (the same object).
    """
    integers = holds_integers(ids)
    if _kind(values) == ("integer" if integers else "string"):
        return values
    # per distinct id: an event table repeats its ids many times
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    retyped = np.empty(len(distinct), dtype=object)
    retyped[:] = [_like(integers, value) for value in distinct]
    converted = pd.Series(retyped[codes], index=values.index, name=values.name)
    if integers and pd.api.types.infer_dtype(converted) == "integer":
        return converted.astype(np.int64)
    return converted


def as_id_like(value: object, dtype: Any) -> object:
    """One id in the type of the ids of ``dtype``, by the rules of :func:`as_ids_like`: for
    callers that hold a single id, such as a request's, rather than a column."""
    return _like(pd.api.types.is_integer_dtype(dtype), value)


def _kind(values: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(values.dtype):
        return "integer"
    if isinstance(values.dtype, pd.StringDtype):
        return "string"
    return pd.api.types.infer_dtype(values, skipna=True)


def _like(integers: bool, value: object) -> object:
    """One id in the type of integer (``integers``) or string ids, else ``value``."""
    if isinstance(value, float | np.floating) and _is_whole(float(value)):
        value = int(value)
    if integers and isinstance(value, str):
        return parse_id(value, np.dtype(np.int64))
    if not integers and isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    return value


def holds_floats(values: pd.Series) -> bool:
    """Whether ``values`` are ids given as floats: pandas turns a column of integers with a
    missing value into float64 (64.0), and it stays so once the gap is dropped."""
    if pd.api.types.is_float_dtype(values.dtype):
        return True
    floats = ("floating", "mixed-integer-float")
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in floats


def not_whole(values: pd.Series) -> np.ndarray:
    """Mask of the float ids (:func:`holds_floats`) that name no integer id: a fraction
    (64.5), NaN, infinity, or beyond int64."""
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    whole = np.isfinite(numbers) & (numbers == np.round(numbers))
    return ~(whole & (numbers >= _INT64.start) & (numbers < _INT64.stop))


def whole_float_ids(values: pd.Series) -> pd.Series:
    """Float ids that are all whole (:func:`not_whole`) as the integer ids they write:
    64.0 is the id 64, found by 64 and returned as 64."""
    if values.dtype == object:  # Python ints among them may pass float64's 2**53
        integers = np.array([int(value) for value in values], dtype=np.int64)
    else:
        integers = values.to_numpy(dtype=np.float64).astype(np.int64)
    return pd.Series(integers, index=values.index, name=values.name)


def _is_whole(number: float) -> bool:
    return math.isfinite(number) and number.is_integer() and _INT64.start <= number < _INT64.stop


def id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a string id, or None when it can (see :func:`invalid_ids`)."""
    if not text.strip():
        return "is empty"
    if len(text) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if text in DOT_SEGMENTS:
        return "is a dot segment, which a URL path cannot name"
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    if found.group() == "/":
        return "contains '/'"
    return f"contains the control character U+{ord(found.group()):04X}"


def invalid_ids(text: pd.Series) -> np.ndarray:
    """Mask of the string ids that break the rules of :func:`id_problem`, over the whole
    column at once: Arrow kernels and NumPy over the UTF-8 bytes, not a Python call per row."""
    values = pa.array(text.astype("string[pyarrow]"))
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    masks = [_invalid_chunk(chunk) for chunk in chunks]
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def _invalid_chunk(chunk: pa.Array) -> np.ndarray:
    if not pa.types.is_large_string(chunk.type):
        chunk = chunk.cast(pa.large_string())
    _, offset_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[chunk.offset :][: len(chunk) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    # "/", C0 controls and DEL are single bytes in UTF-8; the C1 controls U+0080-U+009F are
    # 0xC2 followed by 0x80-0x9F (0xC2 is only ever a lead byte). Much faster than a regex.
    forbidden = (data < 0x20) | (data == 0x7F) | (data == 0x2F)
    forbidden[:-1] |= (data[:-1] == 0xC2) & (data[1:] >= 0x80) & (data[1:] <= 0x9F)
    rows = np.zeros(len(chunk), dtype=bool)
    hits = np.flatnonzero(forbidden) + offsets[0]
    rows[np.searchsorted(offsets, hits, side="right") - 1] = True
    too_long = pc.greater(pc.utf8_length(chunk), MAX_ID_LENGTH)
    blank = pc.equal(pc.binary_length(pc.utf8_trim_whitespace(chunk)), 0)
    dots = pc.is_in(chunk, value_set=pa.array(DOT_SEGMENTS, pa.large_string()))
    refused = pc.or_(pc.or_(too_long, blank), dots).fill_null(True)
    return rows | refused.to_numpy(zero_copy_only=False)


class IdMap:
    """A bijection between external ids and the indices 0..n-1.

    Ids keep their type: integers come back as integers, strings as strings. ``pack`` holds
    string ids as one Arrow array until the next lookup needs the index again.
    """

    def __init__(self, ids: pd.Index) -> None:
        if not ids.is_unique:
            raise ValueError("ids must be unique")
        self._lookup: pd.Index | None = id_index(ids)
        self._packed: pa.Array | pa.ChunkedArray | None = None

    @classmethod
    def from_values(cls, values: pd.Series | np.ndarray | list) -> IdMap:
        """The distinct ids, sorted: a model trained on the same events in another row order
        numbers them alike (and so draws the same initial vectors for them), as a
        distributed run's maps are numbered. Ids that do not sort (a mix of types) keep
        their order of first appearance."""
        distinct = pd.Index(pd.unique(pd.Series(values)), dtype=_dtype_of(values))
        try:
            return cls(distinct.sort_values())
        except TypeError:
            return cls(distinct)

    def pack(self) -> IdMap:
        """Hold string ids as one Arrow array, a fifth of their size as Python strings (the
        2M user ids of the large car data: 24 against 130 MB), until a lookup needs the
        index: for a fit, whose training looks no id up. Integer ids are compact already.
        Returns self."""
        if self._lookup is not None and self._lookup.dtype == object:
            try:
                self._packed = pa.array(self._lookup.to_numpy(), type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return self  # not all strings: kept as they are
            self._lookup = None
        return self

    @property
    def _index(self) -> pd.Index:
        if self._lookup is None:
            assert self._packed is not None
            self._lookup = id_index(self._packed.to_numpy(zero_copy_only=False))
            self._packed = None
        return self._lookup

    def __len__(self) -> int:
        return len(self._packed) if self._lookup is None else len(self._lookup)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    @property
    def ids(self) -> pd.Index:
        return self._index

    def indices(self, values: pd.Series | np.ndarray | list) -> np.ndarray:
        """Index of each value, -1 where the id is unknown (vectorised)."""
        return positions(self._index, values)

    def subset(self, rows: np.ndarray) -> IdMap:
        """The map of the ids at ``rows`` (distinct), in that order; packed if this one is."""
        subset = IdMap.__new__(IdMap)
        # distinct ids of a map: nothing to check
        if self._lookup is None:
            subset._lookup, subset._packed = None, self._packed.take(pa.array(rows))
        else:
            subset._lookup, subset._packed = self._lookup[rows], None
        return subset

    def external(self, indices: np.ndarray) -> list:
        """External ids of ``indices``, as plain Python values (JSON-ready)."""
        return self._index[np.asarray(indices, dtype=np.int64)].tolist()

    def extend(self, values: pd.Series | np.ndarray | list) -> IdMap:
        """A new map with the unknown ``values`` appended (existing indices unchanged), in the
        type of this map's ids (:func:`as_ids_like`). Raises DataError for a value that
        cannot be: a string that writes no integer, for integer ids."""
        distinct = pd.Series(pd.unique(pd.Series(values)))
        new = id_index(as_ids_like(self._index, distinct))
        if holds_integers(self._index) and not holds_integers(new):
            stray = next(v for v in new if not isinstance(v, int | np.integer))
            raise DataError(
                f"id {stray!r} is not an integer, and the ids it joins are integers; "
                "give integer ids in plain decimal (42, not 042)"
            )
        # positions, not isin: an Arrow-backed index's isin against object ids took 12 s at 1M
        new = new[positions(self._index, new) < 0]
        if len(new) == 0:
            return self
        return IdMap(self._index.append(new))

    def digest(self) -> bytes:
        """The ids in their order as a 16-byte blake2b digest, the same for equal maps in
        any process, packed or not; read from the packed buffers, without unpacking them."""
        digest = hashlib.blake2b(digest_size=16)
        if self._lookup is not None and self._lookup.dtype != object:
            digest.update(b"int64")
            digest.update(np.ascontiguousarray(self._lookup.to_numpy(np.int64)).data)
            return digest.digest()
        packed = self._packed
        if packed is None:  # ids not packed: all strings are packed for this, the rest hashed
            try:
                packed = pa.array(self._lookup.to_numpy(), type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                digest.update(b"mixed")
                digest.update(pd.util.hash_array(self._lookup.to_numpy()).data)
                return digest.digest()
        digest.update(b"string")
        for chunk in packed.chunks if isinstance(packed, pa.ChunkedArray) else [packed]:
            kind = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
            _, offset_buffer, data = chunk.buffers()
            offsets = np.frombuffer(
                offset_buffer, kind, len(chunk) + 1, chunk.offset * kind(0).nbytes
            )
            digest.update(np.diff(offsets).astype(np.int64).data)  # each id's length
            if len(chunk):
                digest.update(memoryview(data)[offsets[0] : offsets[-1]])
        return digest.digest()

    def save(self, path: Path) -> None:
        ids = self._packed if self._lookup is None else pa.array(self._lookup.tolist())
        pq.write_table(pa.table({"id": ids}), path)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        column = pq.read_table(path).column("id").to_pylist()
        return cls(id_index(column))


def shard_of(ids: pd.Series, shards: int) -> np.ndarray:
    """The shard (0..shards-1) of each id, by a hash that is the same in every process and on
    every machine (pandas' SipHash with its fixed key), so each user's events meet on one
    rank whichever file they come from."""
    hashes = pd.util.hash_pandas_object(pd.Series(ids).reset_index(drop=True), index=False)
    return (hashes.to_numpy() % np.uint64(shards)).astype(np.int64)


def id_index(values: pd.Index | pd.Series | np.ndarray | list) -> pd.Index:
    """Ids as an index that looks values up quickly: int64 for integer ids, else objects.

    pandas 3 reads strings as Arrow-backed ``str``; looking up a Python list in such an index
    (or strings in an object index) converts the whole index on every call, 70 ms at 1M ids,
    so every id index and every lookup uses the same two dtypes.
    """
    index = pd.Index(values)
    if pd.api.types.is_integer_dtype(index.dtype):
        return index.astype(np.int64)
    return index.astype(object)


def positions(index: pd.Index, values: pd.Index | pd.Series | np.ndarray | list) -> np.ndarray:
    """Position of each value in ``index`` (an :func:`id_index`), -1 where absent. A value of
    the other type matches the id it writes (:func:`as_ids_like`: 64 finds "64")."""
    if len(values) <= 16:  # a request's few ids: hash lookups, not get_indexer's overhead
        return np.fromiter((_position(index, v) for v in values), np.int64, len(values))
    if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.StringDtype):
        # Arrow strings become Python strings for the lookup: those of the distinct ids only
        # (10M events of 1M users: 1.0 s and 412 MB at the peak against 2.8 s and 897 MB)
        codes, distinct = pd.factorize(values)
        return np.append(_positions(index, distinct), -1)[codes]  # a missing value's code: -1
    return _positions(index, values)


def _positions(index: pd.Index, values: pd.Index | pd.Series | np.ndarray | list) -> np.ndarray:
    found = _exact_positions(index, values)
    missed = np.flatnonzero(found < 0)
    if len(missed):  # only the misses may be ids of the other type
        missed_values = pd.Series(pd.Index(values)[missed])
        retyped = as_ids_like(index, missed_values)
        if retyped is not missed_values:
            found[missed] = _exact_positions(index, retyped)
    return found


def _exact_positions(
    index: pd.Index, values: pd.Index | pd.Series | np.ndarray | list
) -> np.ndarray:
    if index.dtype == object:  # no dtype inference over the values
        query = pd.Index(np.asarray(values, dtype=object), dtype=object)
        return index.get_indexer(query).astype(np.int64)
    return index.get_indexer(id_index(values)).astype(np.int64)


def _position(index: pd.Index, value: object) -> int:
    position = _exact_position(index, value)
    retyped = _like(holds_integers(index), value)
    if position < 0 and retyped is not value:
        return _exact_position(index, retyped)
    return position


def _exact_position(index: pd.Index, value: object) -> int:
    try:
        position = index.get_loc(value)
    except (KeyError, TypeError, ValueError):
        return -1
    return position if isinstance(position, int) else -1


def _dtype_of(values: pd.Series | np.ndarray | list) -> object:
    series = pd.Series(values)
    return series.dtype if pd.api.types.is_integer_dtype(series.dtype) else object
