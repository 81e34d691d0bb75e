"""Batch outputs: the top k of every user or listing as Parquet, written chunk by chunk.

A run ranks its queries (all users, or all catalogue listings) in chunks of ``chunk_size``
and writes each chunk as one row group, so memory follows the chunk, never users x listings.
Rows are ``(query, rank, listing_id, score)``, rank 1 the best; a query that finds nothing
(a filter left no listing) has no rows.

Under torchrun (``RANK`` and ``WORLD_SIZE`` set) each process takes every ``WORLD_SIZE``-th
chunk, starting at its rank, and the output path is a directory of one
``part-{rank:05d}.parquet`` per rank; pyarrow, pandas and Spark read such a directory as one
table. Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embedrec.data.atomic import replacing

CHUNK_SIZE = 4096
_PART = re.compile(r"part-(\d+)\.parquet")


def torchrun_rank(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(rank, world_size)`` from torchrun's ``RANK`` and ``WORLD_SIZE``; None when
    neither is set. ValueError when only one is set or the values are not a valid pair."""
    environ = os.environ if environ is None else environ
    rank, world = environ.get("RANK"), environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        raise ValueError("RANK and WORLD_SIZE must be set together (as torchrun sets them)")
    try:
        pair = int(rank), int(world)
    except ValueError:
        raise ValueError(f"RANK={rank!r} and WORLD_SIZE={world!r} must be integers") from None
    if not 0 <= pair[0] < pair[1]:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return pair


def chunk_starts(n: int, chunk_size: int, rank: int = 0, world_size: int = 1) -> range:
    """First query of each chunk that ``rank`` of ``world_size`` ranks: every
    ``world_size``-th chunk, so ranks share the queries evenly whatever their order."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    return range(rank * chunk_size, n, world_size * chunk_size)


def id_type(ids: pd.Index | np.ndarray) -> pa.DataType:
    """The Arrow type of an id column: int64 for integer ids, else string."""
    return pa.int64() if pd.api.types.is_integer_dtype(ids.dtype) else pa.string()


def hits_table(
    schema: pa.Schema,
    queries: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    listing_ids: np.ndarray,
) -> pa.Table:
    """One chunk's rows: each query's hits (``rows``, ``scores``: (m, k), best first, padded
    with -1) with their rank and listing id, in the columns of ``schema``."""
    found = rows >= 0
    ranks = np.broadcast_to(np.arange(1, rows.shape[1] + 1, dtype=np.int32), rows.shape)
    columns = [
        np.repeat(queries, found.sum(axis=1)),
        ranks[found],
        listing_ids[rows[found]],
        scores[found].astype(np.float32),
    ]
    return pa.table(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )


def hits_schema(query_column: str, query_ids: pa.DataType, listing_ids: pa.DataType) -> pa.Schema:
    """The columns of a batch output: the query, ``rank``, ``listing_id``, ``score``."""
    return pa.schema(
        [
            (query_column, query_ids),
            ("rank", pa.int32()),
            ("listing_id", listing_ids),
            ("score", pa.float32()),
        ]
    )


def check_output(out: str | Path, part: tuple[int, int] | None = None) -> None:
    """ValueError when ``out`` cannot take the output: one run's file must be named
    ``*.parquet`` (what it holds) and not be a directory; parts need a directory."""
    out = Path(out)
    if part is not None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file; under torchrun the output is a directory of parts")
    elif out.is_dir():
        raise ValueError(f"{out} is a directory; give a file name for the Parquet output")
    elif out.suffix.lower() != ".parquet":
        raise ValueError(f"{out}: the output is Parquet; give a file name ending in .parquet")


def output_path(out: str | Path, part: tuple[int, int] | None = None) -> Path:
    """The file a run writes: ``out`` itself, or for ``part=(rank, world_size)`` its part file
    in the directory ``out``. ValueError when ``out`` is of the other kind (a directory given
    for one file, a file for parts). Rank 0 removes part files of an earlier run with more
    ranks, so the directory holds this run's parts alone."""
    out = Path(out)
    check_output(out, part)
    if part is None:
        return out
    rank, world_size = part
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        for stale in out.iterdir():
            match = _PART.fullmatch(stale.name)
            if match and int(match.group(1)) >= world_size:
                stale.unlink(missing_ok=True)
    return out / f"part-{rank:05d}.parquet"


def write_chunks(path: str | Path, schema: pa.Schema, chunks: Iterable[pa.Table]) -> int:
    """Write ``chunks`` to one Parquet file, a row group each, under a temporary name renamed
    to ``path`` once complete; returns the rows written."""
    written = 0
    with replacing(path) as (temporary,), pq.ParquetWriter(temporary, schema) as writer:
        for chunk in chunks:
            if chunk.num_rows:
                writer.write_table(chunk, row_group_size=chunk.num_rows)
                written += chunk.num_rows
    return written
