"""The searchable catalogue: listings' fields, their vectors, a vector index and filters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from embedrec.index.filters import Filter, allowed_mask
from embedrec.index.vector_index import VectorIndex


class Catalogue:
    """Listings a query may return: fields, vectors and an index over them.

    Rows are stable: adding appends rows, removing hides them (a later add of the same id
    gets a new row). ``model_rows`` is each row's listing index in the model, -1 for listings
    the model never saw. Cosine searches use unit vectors; dot-product searches the raw ones
    (the same index when the model's vectors are already normalised).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        vectors: np.ndarray,
        model_rows: np.ndarray,
        normalized: bool = False,
        exact_below: int = 50_000,
    ) -> None:
        self._lock = threading.RLock()
        self._tables = [table.reset_index(drop=True)]
        self._table: pd.DataFrame | None = self._tables[0]
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.unit_vectors = _unit(self.vectors)
        self.model_rows = np.asarray(model_rows, dtype=np.int64)
        self.normalized = normalized
        self.live = np.ones(len(self.vectors), dtype=bool)
        self._row_of = pd.Index(self._tables[0]["listing_id"])
        self._added: dict[Any, int] = {}  # ids added after construction -> their newest row
        self._exact_below = exact_below
        self._indexes: dict[bool, VectorIndex] = {}

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return int(self.live.sum())

    @property
    def n_rows(self) -> int:
        return len(self.vectors)

    @property
    def table(self) -> pd.DataFrame:
        """Fields of every row (removed rows included, in row order)."""
        with self._lock:
            if self._table is None:
                self._table = pd.concat(self._tables, ignore_index=True)
                self._tables = [self._table]
            return self._table

    def rows_of(self, ids: Sequence) -> np.ndarray:
        """Row of each id, -1 where the id is unknown or removed."""
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        rows = self._row_of.get_indexer(pd.Index(list(ids))).astype(np.int64)
        if self._added:
            for position, listing_id in enumerate(ids):
                rows[position] = self._added.get(listing_id, rows[position])
        found = rows >= 0
        rows[found & ~self.live[np.maximum(rows, 0)]] = -1
        return rows

    def fields(self, rows: np.ndarray) -> list[dict[str, Any]]:
        records = self.table.iloc[rows].to_dict(orient="records")
        return [{k: plain(v) for k, v in record.items()} for record in records]

    # ------------------------------------------------------------------ search
    def index(self, cosine: bool) -> VectorIndex:
        """The vector index for cosine (unit vectors) or dot-product search, built lazily."""
        key = cosine or self.normalized
        with self._lock:
            if key not in self._indexes:
                vectors = self.unit_vectors if key else self.vectors
                index = VectorIndex(exact_below=self._exact_below).build(vectors)
                dead = np.flatnonzero(~self.live)
                if len(dead):
                    index.remove(dead)
                self._indexes[key] = index
            return self._indexes[key]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        cosine: bool,
        filters: Sequence[Filter] | None = None,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query that pass every filter, minus each query's ``exclude``."""
        index = self.index(cosine)
        allowed = None
        if filters:
            allowed = allowed_mask(filters, self.table)
            if len(allowed) < index.n_rows:  # rows added since the table snapshot
                allowed = np.pad(allowed, (0, index.n_rows - len(allowed)))
        queries = _unit(queries) if cosine else np.asarray(queries, dtype=np.float32)
        return index.search(queries, k, allowed, exclude)

    # ------------------------------------------------------------------ changes
    def add(self, table: pd.DataFrame, vectors: np.ndarray, model_rows: np.ndarray) -> np.ndarray:
        """Append listings (replacing live ones with the same id); returns their rows."""
        with self._lock:
            self.remove(table["listing_id"].tolist())
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            start = self.n_rows
            rows = np.arange(start, start + len(vectors))
            self.vectors = np.concatenate([self.vectors, vectors])
            self.unit_vectors = np.concatenate([self.unit_vectors, _unit(vectors)])
            self.model_rows = np.concatenate([self.model_rows, np.asarray(model_rows)])
            self.live = np.concatenate([self.live, np.ones(len(vectors), dtype=bool)])
            self._tables.append(table.reset_index(drop=True))
            self._table = None
            self._added.update(zip(table["listing_id"].tolist(), rows.tolist(), strict=True))
            for cosine, index in self._indexes.items():
                index.add(_unit(vectors) if cosine else vectors)
            return rows

    def remove(self, ids: Sequence) -> int:
        """Hide listings by id; returns how many were live."""
        with self._lock:
            rows = self.rows_of(list(ids))
            rows = rows[rows >= 0]
            if len(rows) == 0:
                return 0
            self.live[rows] = False
            for index in self._indexes.values():
                index.remove(rows)
            return len(rows)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def plain(value: Any) -> Any:
    """A JSON-ready Python value (numpy scalars, timestamps and NaN converted)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return value
