"""A table held compressed in memory while a fit trains, unpacked whole or in part on demand."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

BATCH_ROWS = 65_536
CODEC = "zstd"


class PackedTable:
    """A DataFrame held as zstd-compressed Arrow record batches of ``BATCH_ROWS`` rows.

    A fit needs its listings table only to derive the model's inputs and, at the end, to
    keep it in the model; in between, every process would hold it whole (481 MB for the
    million listings of the ``large`` car data, 94 MB packed: packing takes 0.6 s,
    unpacking 0.25 s). ``pieces`` unpacks it, or a rank's share, one batch at a time, so a
    model's inputs are derived without the whole table unpacked. A frame that Arrow cannot
    give back with the same columns and dtypes (a column of mixed Python objects, say) is
    kept as it is.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.attrs = dict(frame.attrs)
        self._length = len(frame)
        self._columns = frame.columns
        self._frame: pd.DataFrame | None = frame
        try:
            table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=CODEC)
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table, max_chunksize=BATCH_ROWS)
        # the stream's buffer grows by doubling: a copy of the bytes written holds only those
        self._buffer = pa.py_buffer(sink.getvalue().to_pybytes())
        first = self._to_frame(table.slice(0, 1))
        if list(first.dtypes) == list(frame.dtypes):
            self._frame = None

    def __len__(self) -> int:
        return self._length

    @property
    def packed_bytes(self) -> int:
        """The bytes the packed table holds (0 when kept as a frame)."""
        return 0 if self._frame is not None else self._buffer.size

    def frame(self) -> pd.DataFrame:
        """The whole table, a fresh DataFrame with a default index."""
        if self._frame is not None:
            return self._frame.reset_index(drop=True)
        return self._to_frame(pa.ipc.open_stream(self._buffer).read_all())

    def pieces(self, start: int = 0, step: int = 1) -> Iterator[pd.DataFrame]:
        """Rows ``start``, ``start + step``, ... (``iloc[start::step]``) as DataFrames of at
        most ``BATCH_ROWS`` rows with default indexes, unpacked one at a time; one empty
        piece when no row is selected."""
        if self._frame is not None:
            yield from frame_pieces(self._frame.iloc[start::step])
            return
        reader = pa.ipc.open_stream(self._buffer)
        offset, given = 0, False
        for batch in reader:
            first = start - offset if start > offset else (start - offset) % step
            rows = np.arange(first, batch.num_rows, step)
            offset += batch.num_rows
            if len(rows):
                given = True
                yield self._to_frame(pa.Table.from_batches([batch.take(pa.array(rows))]))
        if not given:
            yield self._to_frame(reader.schema.empty_table())

    def _to_frame(self, table: pa.Table) -> pd.DataFrame:
        frame = table.to_pandas()
        frame.columns = self._columns  # Arrow names every column by a string
        frame.attrs = dict(self.attrs)
        return frame


def as_packed(table: pd.DataFrame | PackedTable) -> PackedTable:
    """``table`` as a PackedTable (packed when a DataFrame)."""
    return table if isinstance(table, PackedTable) else PackedTable(table)


def frame_pieces(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """``frame`` in pieces of at most ``BATCH_ROWS`` rows with default indexes; one empty
    piece when it has no row."""
    for first in range(0, max(len(frame), 1), BATCH_ROWS):
        yield frame.iloc[first : first + BATCH_ROWS].reset_index(drop=True)


def row_pieces(
    table: pd.DataFrame | PackedTable, start: int = 0, step: int = 1
) -> Iterator[pd.DataFrame]:
    """Rows ``start``, ``start + step``, ... of a DataFrame or a PackedTable, in pieces."""
    if isinstance(table, PackedTable):
        return table.pieces(start, step)
    return frame_pieces(table.iloc[start::step])
