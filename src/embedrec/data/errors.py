"""The one error type for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data, located as precisely as we can: file, row and column.

    ``row`` is the 1-based data row (the header is not counted); for CSV files the message
    also gives the line number in the file, so an editor can jump to it.
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
