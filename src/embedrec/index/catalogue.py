"""The searchable catalogue: listings' fields, their vectors, a vector index and filters."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from embedrec.data.ids import id_index, positions
from embedrec.data.jsonable import plain
from embedrec.index.filters import Filter, FilterCache, allowed_mask, allowed_rows
from embedrec.index.vector_index import VectorIndex


class Catalogue:
    """Listings a query may return: fields, vectors and an index over them.

    Rows are stable: adding appends rows, removing hides them (a later add of the same id
    gets a new row). ``model_rows`` is each row's listing index in the model, -1 for listings
    the model never saw. Cosine searches use unit vectors; dot-product searches the raw ones
    (the same index when the model's vectors are already normalised).

    The hot paths of a server (fields of a few rows, filters, single adds) cost time in the
    rows they touch, not in the catalogue's size: fields come from per-column arrays, added
    rows live apart from the base table, and vectors grow in amortised buffers.

    Parameters
    ----------
    table : pandas.DataFrame
        The listings' fields, ``listing_id`` first; one row per vector.
    vectors : numpy.ndarray
        float32 [n, dim], the listings' vectors in ``table``'s order.
    model_rows : numpy.ndarray
        Each row's listing row in the model, -1 for listings it never saw.
    normalized : bool
        The vectors are unit length already: cosine and dot-product search share an index.
    exact_below : int
        Below this many rows the vector index searches exactly, above approximately.

    Attributes
    ----------
    id_dtype : dtype
        The dtype of ``listing_id``: ids given as text are parsed to it.
    normalized : bool
        As given.
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
        self._base = table.reset_index(drop=True)
        self._columns = {c: _json_column(self._base[c]) for c in self._base.columns}
        self._schema = self._base.iloc[:0]
        self.id_dtype = self._base["listing_id"].dtype
        self._added: list[pd.DataFrame] = []
        self._added_table: pd.DataFrame | None = None
        # filters' converted columns, each cache living as long as its table
        self._base_cache = FilterCache()
        self._added_cache = FilterCache()
        self._added_records: list[dict[str, Any]] = []
        self._added_rows: dict[Any, int] = {}  # ids added after construction -> newest row
        self._row_of = id_index(self._base["listing_id"])
        self._n = len(self._base)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._vectors = vectors
        self._unit = _unit(vectors)
        self._model_rows = np.asarray(model_rows, dtype=np.int64)
        self._live = np.ones(self._n, dtype=bool)
        self._n_live = self._n
        self.normalized = normalized
        self._exact_below = exact_below
        self._indexes: dict[bool, VectorIndex] = {}
        self._row_of_model: np.ndarray | None = None  # model row -> live row, built on demand

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self._n_live

    @property
    def n_rows(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._n]

    @property
    def unit_vectors(self) -> np.ndarray:
        return self._unit[: self._n]

    @property
    def model_rows(self) -> np.ndarray:
        return self._model_rows[: self._n]

    @property
    def live(self) -> np.ndarray:
        return self._live[: self._n]

    @property
    def schema(self) -> pd.DataFrame:
        """An empty frame with the catalogue's columns and dtypes."""
        return self._schema

    @property
    def table(self) -> pd.DataFrame:
        """Fields of every row (removed rows included, in row order). Builds a frame: for
        bulk work, not for per-request paths."""
        added = self._added_frame()
        if added is None:
            return self._base
        return pd.concat([self._base, added], ignore_index=True)

    def _added_frame(self) -> pd.DataFrame | None:
        return self._added_with_cache()[0]

    def _added_with_cache(self) -> tuple[pd.DataFrame | None, FilterCache]:
        with self._lock:
            if self._added and self._added_table is None:
                frame = pd.concat(self._added, ignore_index=True)
                self._added_table = frame.reindex(columns=self._base.columns)
                self._added = [self._added_table]  # one frame, not one per add (memory)
                self._added_cache = FilterCache()
            return (self._added_table if self._added else None), self._added_cache

    # ------------------------------------------------------------------ lookups
    def rows_of(self, ids: Sequence) -> np.ndarray:
        """Row of each id, -1 where the id is unknown or removed."""
        ids = list(ids)
        if not ids:
            return np.zeros(0, dtype=np.int64)
        rows = positions(self._row_of, ids)
        if self._added_rows:
            for position, listing_id in enumerate(ids):
                rows[position] = self._added_rows.get(listing_id, rows[position])
        found = rows >= 0
        rows[found & ~self.live[np.maximum(rows, 0)]] = -1
        return rows

    def rows_of_model_rows(self, model_rows: np.ndarray) -> np.ndarray:
        """Live row holding each model row (a listing the model knows), -1 where none."""
        model_rows = np.asarray(model_rows, dtype=np.int64)
        with self._lock:
            if self._row_of_model is None:
                self._row_of_model = np.zeros(0, dtype=np.int64)
                self._map_model_rows(np.flatnonzero(self.live))
            inverse = self._row_of_model
        out = np.full(len(model_rows), -1, dtype=np.int64)
        inside = (model_rows >= 0) & (model_rows < len(inverse))
        out[inside] = inverse[model_rows[inside]]
        return out

    def _map_model_rows(self, rows: np.ndarray) -> None:
        model_rows = self._model_rows[rows]
        rows, model_rows = rows[model_rows >= 0], model_rows[model_rows >= 0]
        if len(model_rows) and model_rows.max() >= len(self._row_of_model):
            grown = np.full(int(model_rows.max()) + 1, -1, dtype=np.int64)
            grown[: len(self._row_of_model)] = self._row_of_model
            self._row_of_model = grown
        self._row_of_model[model_rows] = rows

    def fields(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """Each row's fields as a JSON-ready dict."""
        rows = np.asarray(rows, dtype=np.int64)
        base = len(self._base)
        in_base = rows[rows < base]
        # column by column: one vectorised conversion per column, not one per value
        values = [convert(column[in_base]) for column, convert in self._columns.values()]
        names = list(self._columns)
        records = iter([dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)])
        return [
            next(records) if row < base else dict(self._added_records[row - base])
            for row in rows.tolist()
        ]

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

    def allowed(self, filters: Sequence[Filter], few: int = 0) -> np.ndarray:
        """Rows passing every filter (base table and added rows evaluated apart): row numbers
        when a column index narrows them to at most ``few`` candidates, else a mask."""
        added, added_cache = self._added_with_cache()
        rows = allowed_rows(filters, self._base, few, self._base_cache) if few else None
        if rows is None:
            mask = allowed_mask(filters, self._base, self._base_cache)
            if added is not None:
                mask = np.concatenate([mask, allowed_mask(filters, added, added_cache)])
            return mask[: self._n]
        if added is not None:
            extra = np.flatnonzero(allowed_mask(filters, added, added_cache)) + len(self._base)
            rows = np.concatenate([rows, extra])
        return rows[rows < self._n]

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
            # candidates from a column index are checked row by row: up to an eighth of the
            # catalogue that costs less than evaluating every filter over every row
            few = max(index.filter_exact_below, len(self._base) // 8)
            allowed = self.allowed(filters, few=few)
            if allowed.dtype == bool and len(allowed) < index.n_rows:  # rows added meanwhile
                allowed = np.pad(allowed, (0, index.n_rows - len(allowed)))
        queries = _unit(queries) if cosine else np.asarray(queries, dtype=np.float32)
        return index.search(queries, k, allowed, exclude)

    # ------------------------------------------------------------------ changes
    def add(self, table: pd.DataFrame, vectors: np.ndarray, model_rows: np.ndarray) -> np.ndarray:
        """Append listings (replacing live ones with the same id); returns their rows."""
        with self._lock:
            self.remove(table["listing_id"].tolist())
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            start, count = self._n, len(vectors)
            self._reserve(start + count)
            stop = start + count
            self._vectors[start:stop] = vectors
            self._unit[start:stop] = _unit(vectors)
            self._model_rows[start:stop] = np.asarray(model_rows, dtype=np.int64)
            self._live[start:stop] = True
            self._n_live += count
            table = table.reset_index(drop=True)
            self._added.append(table)
            self._added_table = None
            if len(self._added) > 64:  # a one-row frame per PUT costs ~40 KB: merge them
                self._added_frame()
            self._added_records += [
                {c: plain(v) for c, v in record.items()}
                for record in table.to_dict(orient="records")
            ]
            rows = np.arange(start, stop)
            for cosine, index in self._indexes.items():
                index.add(_unit(vectors) if cosine else vectors)
            self._n = stop
            # the ids last: readers take no lock, and one that finds a new id must find its
            # row inside ``live`` and ``vectors`` (a follower thread adds while requests read)
            self._added_rows.update(zip(table["listing_id"].tolist(), rows.tolist(), strict=True))
            if self._row_of_model is not None:
                self._map_model_rows(rows)
            return rows

    def _reserve(self, size: int) -> None:
        """Grow the buffers geometrically, so n single adds cost O(n) copies in all."""
        capacity = len(self._vectors)
        if size <= capacity:
            return
        capacity = max(size, int(capacity * 1.5) + 16)

        def grow(array: np.ndarray) -> np.ndarray:
            bigger = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            bigger[: self._n] = array[: self._n]
            return bigger

        self._vectors, self._unit = grow(self._vectors), grow(self._unit)
        self._model_rows, self._live = grow(self._model_rows), grow(self._live)

    def remove(self, ids: Sequence) -> int:
        """Hide listings by id; returns how many were live."""
        with self._lock:
            rows = self.rows_of(list(ids))
            rows = np.unique(rows[rows >= 0])
            if len(rows) == 0:
                return 0
            self._live[rows] = False
            self._n_live -= len(rows)
            if self._row_of_model is not None:
                gone = self._model_rows[rows]
                self._row_of_model[gone[gone >= 0]] = -1
            for index in self._indexes.values():
                index.remove(rows)
            return len(rows)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _json_column(series: pd.Series) -> tuple[np.ndarray, Callable[[np.ndarray], list]]:
    """A column's values and the function turning a slice of them into JSON-ready values."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        # ISO 8601 strings made per slice by NumPy (pandas Timestamps cost ~10 us each)
        aware = getattr(series.dtype, "tz", None) is not None
        values = (series.dt.tz_convert("UTC").dt.tz_localize(None) if aware else series).to_numpy()
        suffix = "+00:00" if aware else ""

        def iso(v: np.ndarray) -> list:
            # whole seconds as Timestamp.isoformat writes them, finer units where present
            whole = (v.astype("datetime64[s]") == v) | np.isnat(v)
            text = np.datetime_as_string(v, unit="s" if whole.all() else "auto").tolist()
            return [None if t == "NaT" else t + suffix for t in text]

        return values, iso
    exact = pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype)
    if exact and not series.hasnans:
        return series.to_numpy(), np.ndarray.tolist
    if pd.api.types.is_float_dtype(series.dtype) and isinstance(series.dtype, np.dtype):

        def floats(v: np.ndarray) -> list:
            return [None if x != x else x for x in v.tolist()]  # NaN is missing

        return series.to_numpy(), floats
    return series.to_numpy(dtype=object), lambda v: [x if type(x) is str else plain(x) for x in v]
