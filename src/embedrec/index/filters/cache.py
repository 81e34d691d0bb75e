"""The columns of one catalogue table converted for filtering, and the indexes built on them,
kept between queries.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pandas as pd

# Columns of tables this large are converted once into a FilterCache (float arrays, factorised
# codes, sorted indexes); smaller ones cost less to convert than to look up.
CACHED_ROWS = 10_000


class FilterCache:
    """Columns of one table converted for filtering, and the indexes built on them.

    A catalogue answers many filtered queries over the same, unchanged table: the table's
    owner keeps one cache with it and passes it to :func:`allowed_mask` and
    :func:`allowed_rows`. The table must not change in place while the cache is in use. Safe
    to share between threads: each entry is computed once, by the first thread that needs it,
    while other entries stay readable; at most ``max_entries`` are kept (least recently used
    go first; one per column and kind, so a catalogue's usual filters all stay).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._computing: dict[Any, threading.Lock] = {}
        self._table: weakref.ref[pd.DataFrame] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, table: pd.DataFrame, key: Any, value: Any) -> None:
        """Keep ``value`` as the entry ``key`` of ``table``, replacing any."""
        with self._lock:
            self._check_table(table)
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, table: pd.DataFrame, key: Any, compute: Callable[[], Any]) -> Any:
        """The entry ``key`` of ``table``, computed by ``compute()`` if not kept."""
        with self._lock:
            self._check_table(table)
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                if key in self._entries:  # computed by the thread this one waited for
                    return self._entries[key]
            value = compute()
            with self._lock:
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                self._computing.pop(key, None)
        return value

    def _check_table(self, table: pd.DataFrame) -> None:
        if self._table is None:
            self._table = weakref.ref(table)
        elif self._table() is not table:
            raise ValueError("a FilterCache holds the columns of one table, not of another")


def cached(cache: FilterCache | None, table: pd.DataFrame, key: Any, compute: Any) -> Any:
    if cache is None or len(table) < CACHED_ROWS:
        return compute()
    return cache.get(table, key, compute)
