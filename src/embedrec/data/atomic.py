"""Atomic file writes: a temporary file in the target's folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)`` and move the result to ``path``; a crash leaves no
    partial file behind and keeps any previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


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
