"""Hand freed memory back to the system.

glibc's malloc and Arrow's memory pool keep what a program frees for its next allocations,
so a step that allocates much for a while (reading a table, transforming features, loading a
model) leaves the process hundreds of MB larger than what it still holds. A long-running
process (a training rank, a serving worker) calls this once such a step is over.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

import pyarrow as pa


def release_free_memory() -> None:
    """Collect garbage, then return the free memory of Arrow's pool and of glibc's heap."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
