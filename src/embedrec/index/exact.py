"""Exact top-k search by dot product, vectorised over a batch of queries."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` with the highest dot product with each query.

    ``exclude`` (queries x rows, sparse) removes rows per query; ``allowed`` (bool per row)
    removes rows for every query. Returns (rows, scores), each (n_queries, k), best first;
    where fewer than k rows qualify, rows are -1 and scores -inf.
    """
    n_queries = len(queries)
    rows_out = np.full((n_queries, k), -1, dtype=np.int64)
    scores_out = np.full((n_queries, k), -np.inf, dtype=np.float32)
    for start in range(0, n_queries, batch_size):
        stop = min(start + batch_size, n_queries)
        scores = queries[start:stop] @ vectors.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        block = None if exclude is None else exclude[start:stop]
        rows_out[start:stop], scores_out[start:stop] = top_k_of_scores(scores, k, block)
    return rows_out, scores_out


def top_k_of_scores(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``scores`` (modified in place), as in ``top_k``."""
    n_queries, n_rows = scores.shape
    rows_out = np.full((n_queries, k), -1, dtype=np.int64)
    scores_out = np.full((n_queries, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or k <= 0:
        return rows_out, scores_out
    if exclude is not None:
        block = exclude.tocoo()
        scores[block.row, block.col] = -np.inf
    take = min(k, n_rows)
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    rows_out[:, :take] = np.where(np.isfinite(best_scores), best, -1)
    scores_out[:, :take] = best_scores
    return rows_out, scores_out
