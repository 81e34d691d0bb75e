"""The server's one-OpenMP-thread-per-search setting reaches the threads that answer requests
(OpenMP keeps the setting per thread: a new thread starts from the default)."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from embedrec.index.vector_index import VectorIndex, set_search_threads


@pytest.fixture
def restored():
    before = faiss.omp_get_max_threads()
    yield
    set_search_threads(None)
    faiss.omp_set_num_threads(before)


def _a_new_threads_default() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(faiss.omp_get_max_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_a_search_in_a_new_thread_uses_the_threads_set_once(restored):
    # a new thread's default, not this thread's: the test runner may have set this one
    if _a_new_threads_default() < 2:
        pytest.skip("one OpenMP thread by default here: nothing to limit")
    rng = np.random.default_rng(0)
    index = VectorIndex(kind="ivf").build(rng.normal(size=(4000, 16)).astype(np.float32))
    set_search_threads(1)
    seen: list[int] = []

    def search() -> None:
        seen.append(faiss.omp_get_max_threads())  # the new thread's default
        index.search(rng.normal(size=(1, 16)).astype(np.float32), 5)
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=search)
    thread.start()
    thread.join()
    assert seen[0] > 1 and seen[1] == 1
