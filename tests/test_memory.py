"""release_free_memory hands back what Arrow's pool and glibc's heap kept after a free."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedrec.memory import release_free_memory

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc"
)


def anonymous_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Anonymous line in smaps_rollup")


def free_arrow_memory() -> None:
    """Allocate about 200 MB in Arrow's pool and free it."""
    texts = pa.array([f"listing {i} " * 8 for i in range(2_000_000)])
    assert texts.nbytes > 150 * 2**20


def held_then_released(allocate_and_free: Callable[[], object]) -> tuple[float, float]:
    """MB still held after ``allocate_and_free``, then after ``release_free_memory``."""
    release_free_memory()
    before = anonymous_mb()
    kept = allocate_and_free()  # noqa: F841 - what it returns stays alive until the end
    held = anonymous_mb() - before
    release_free_memory()
    return held, anonymous_mb() - before


def test_what_arrow_freed_is_handed_back() -> None:
    """A listings table read and then replaced (a serving worker's mapped table, a rank's
    prepared one) left about 200 MB at 1M listings in Arrow's pool."""
    held, released = held_then_released(free_arrow_memory)
    assert held > 100, f"Arrow's allocator returned the pages by itself ({held:.0f} MB held)"
    assert released < 50, f"{released:.0f} MB of freed Arrow memory still held"


def test_what_the_heap_freed_is_handed_back() -> None:
    """Many arrays below glibc's mmap threshold (as feature transforms and pandas make) come
    from its heap, which keeps their pages once they are freed."""

    def allocate_and_free() -> np.ndarray:
        arrays = [np.ones(16_000, dtype=np.float64) for _ in range(2_000)]  # 125 KB: 244 MB
        return arrays[-1]  # the last one pins the heap's top: only a trim hands back the rest

    held, released = held_then_released(allocate_and_free)
    assert held > 100, f"glibc returned the pages by itself ({held:.0f} MB held)"
    assert released < 50, f"{released:.0f} MB of freed heap still held"


def test_training_hands_back_what_was_freed_before_it() -> None:
    """A fit hands back, once its training pairs are ready, what was freed before its steps:
    on a rank, the copies made while reading the data and transforming the features."""
    import pandas as pd

    from embedrec import Recommender

    rng = np.random.default_rng(0)
    interactions = pd.DataFrame(
        {
            "user_id": rng.integers(0, 40, 600),
            "listing_id": rng.integers(0, 30, 600),
            "timestamp": np.arange(600) * 60,
        }
    )
    listings = pd.DataFrame({"listing_id": np.arange(30)})
    recommender = Recommender(model="mf", epochs=1, validation_fraction=0, progress=False)
    recommender.fit(interactions, listings)  # what a first fit loads (libraries) stays
    release_free_memory()
    before = anonymous_mb()
    free_arrow_memory()
    assert anonymous_mb() - before > 100  # held by Arrow's pool until someone hands it back
    recommender.fit(interactions, listings)
    held = anonymous_mb() - before
    assert held < 50, f"{held:.0f} MB freed before training still held after it"
