"""A CSV file read again as text, for what pandas does not say: the line a row starts on,
the first byte that is not UTF-8, the header as written, whether a field may start with a
leading zero. Only error paths, the header and that one scan of the bytes read it, so its
Python loops never slow a file that reads cleanly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

# bytes decoded at a time while looking for one that is not UTF-8
_BLOCK = 1 << 24
# a zero and a digit after a field's start, a quote or a space: where the file has none, no
# field writes digits with a leading zero (a few that are no such field only cost a check).
# Arrow's regular expressions scan about three times as fast as Python's.
_LEADING_ZERO = r'[\n\r,"\t ]0[0-9]'


def _bytes(path: str) -> pa.NativeFile:
    # a file:// URI names a local file; Arrow decompresses .gz and .zst by their suffix
    if path.lower().startswith("file://"):
        path = unquote(urlsplit(path).path)
    return pa.input_stream(path, compression="detect")


@contextmanager
def _text(path: str) -> Iterator[io.TextIOWrapper]:
    with _bytes(path) as raw:
        yield io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _records(path: str) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on, blank lines left out as pandas leaves them."""
    with _text(path) as handle:
        reader = csv.reader(handle)
        start = 1
        for record in reader:
            if record:
                yield start, record
            start = reader.line_num + 1


def row_line(path: str, row: int) -> int | None:
    """The line data row ``row`` (1-based, after the header) of a CSV file starts on: a
    quoted field may span lines and blank lines are no rows. None where the file cannot be
    read again or has no such row."""
    try:
        for number, (line, _) in enumerate(_records(path)):
            if number == row:
                return line
    except (OSError, pa.ArrowException, csv.Error):
        return None
    return None


def raw_header(path: str) -> list[str] | None:
    """The header's names as written (pandas renames a repeated one: ``price.1``), or None
    where the file cannot be read as text."""
    try:
        return next((record for _, record in _records(path)), [])
    except (OSError, pa.ArrowException, csv.Error):
        return None


def leading_zero_field(path: str) -> bool:
    """Whether a field of the file may write digits with a leading zero (``01067``): False
    only where none does. True too where the file cannot be read again."""
    carry = b""
    try:
        with _bytes(path) as raw:
            while True:
                block = raw.read(_BLOCK)
                data = carry + block
                bytes_ = pa.array([data], pa.large_binary())
                if pc.match_substring_regex(bytes_, _LEADING_ZERO)[0].as_py():
                    return True
                if not block:
                    return False
                carry = data[-2:]  # a match may begin in one block and end in the next
    except (OSError, pa.ArrowException):
        return True


def first_non_utf8(path: str) -> tuple[int, int, int] | None:
    """(line, character in that line, the byte) of the file's first byte that is not UTF-8,
    or None where there is none."""
    line, carry = 1, b""
    with _bytes(path) as raw:
        while True:
            block = raw.read(_BLOCK)
            data = carry + block
            # whole lines at a time: a character is never cut between two blocks
            cut = data.rfind(b"\n") + 1 if block else len(data)
            data, carry = data[:cut], data[cut:]
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                before = data[: exc.start]
                start = before.rfind(b"\n") + 1
                column = len(before[start:].decode("utf-8")) + 1
                return line + before.count(b"\n"), column, data[exc.start]
            line += data.count(b"\n")
            if not block:
                return None
