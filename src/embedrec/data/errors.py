"""The one error type for bad input data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from embedrec.data.csvtext import row_line

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zst")


class DataError(ValueError):
    """Bad input data, located as precisely as we can: file, row and column.

    ``row`` is the 1-based data row (the header is not counted); for CSV files the message
    also gives the line the row starts on, so an editor can jump to it (a quoted field may
    span lines, and blank lines are no rows: the line is found by reading the file again).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.column:
            where.append(f"column '{self.column}'")
        return (", ".join(where) + ": " if where else "") + self.message

    def in_file(self, file: str) -> DataError:
        """This error located in ``file``, the source of the table it was raised for (with a
        CSV file's line number for its row)."""
        line = self.line
        if line is None and self.row is not None and file.lower().endswith(CSV_SUFFIXES):
            line = row_line(file, self.row)
        return DataError(self.message, file=file, row=self.row, column=self.column, line=line)


@contextmanager
def located_in(file: str | None) -> Iterator[None]:
    """DataErrors raised inside that name no file are about ``file``: a check of a table's
    columns or values knows the table, not where it was read from."""
    try:
        yield
    except DataError as exc:
        if exc.file is not None or not file:
            raise
        raise exc.in_file(file) from None


def shown(value: Any) -> str:
    """A value as an error message shows it: text quoted, numbers plain (95.0, not the
    ``np.float64(95.0)`` that NumPy's repr gives a value taken from an array)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**24:
        # JSON integers have no bound: a message quotes the start of one, not all its digits
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[:12]}... ({len(digits)} digits)"
    return repr(value)


def os_error_message(exc: OSError) -> str:
    """The file system's refusal in one line, naming the path."""
    if exc.filename is None:
        return str(exc)
    if isinstance(exc, FileExistsError | NotADirectoryError):
        # a folder to create or enter is a file (mkdir's "File exists" says it the other way)
        return f"{exc.filename}: a file is where a folder is needed"
    return f"{exc.filename}: {exc.strerror}"
