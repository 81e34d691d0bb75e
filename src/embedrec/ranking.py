"""Exact top-k ranking by dot product: the kernels that recommendation, evaluation, training,
the vector index and the maps share.

Two kernels with two contracts. :func:`top_k` and :func:`top_k_of_scores` rank whole batches
and break ties towards the lowest row. :func:`search_rows` answers the vector index's few
queries at a time with faiss (ties in no set order), where a millisecond per request counts;
the catalogue then orders the tied rows it returns lowest first
(:func:`ties_to_lowest_row`), so a recommendation lists them as its evaluation ranks them.
Which of several listings tied at the k-th place make the cut may still differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import faiss
import numpy as np
import scipy.sparse as sp
import torch

DOT_CHUNK = 16384


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


def dot_scores(queries: torch.Tensor, vectors: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``queries @ vectors.T`` written into ``out``, ``DOT_CHUNK`` vectors at a time.

    Into one wide block the product ran at half speed on a CPU (152 queries x 440k vectors x
    32 dims: 108 ms, against 54 ms in chunks of 16,384 that stay in cache before the copy).
    """
    for start in range(0, len(vectors), DOT_CHUNK):
        stop = min(start + DOT_CHUNK, len(vectors))
        out[:, start:stop] = queries @ vectors[start:stop].T
    return out


def dot_scorer(
    vectors: torch.Tensor, bias: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``queries -> queries @ vectors.T (+ bias)`` by ``dot_scores``, into one block that is
    reused (and grown when needed) for every call: the result is overwritten by the next call.

    A fresh block a call is mapped and faulted in again: for 152 queries x 440k vectors the
    product took 215 ms into a new 268 MB block against 134 ms into a reused one.
    """
    blocks: list[torch.Tensor] = []

    def score(queries: torch.Tensor) -> torch.Tensor:
        if not blocks or len(blocks[0]) < len(queries):
            shape = (len(queries), len(vectors))
            blocks[:] = [torch.empty(shape, dtype=vectors.dtype, device=vectors.device)]
        scores = dot_scores(queries, vectors, blocks[0][: len(queries)])
        return scores if bias is None else scores.add_(bias)

    return score


def top_k_of_scores(
    scores: np.ndarray | torch.Tensor, k: int, exclude: sp.spmatrix | sp.sparray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``scores`` (float, modified in place), as in ``top_k``.

    Columns stored in ``exclude`` and columns scored NaN or -inf are never returned. Equal
    scores go to the lowest column first, also at the cut, so results are deterministic; the
    evaluation ranks with this same function. A torch tensor is ranked on its device.
    """
    scores = torch.from_numpy(scores) if isinstance(scores, np.ndarray) else scores
    n, m = scores.shape
    rows_out = np.full((n, max(k, 0)), -1, dtype=np.int64)
    scores_out = np.full((n, max(k, 0)), -np.inf, dtype=np.float32)
    if n == 0 or m == 0 or k <= 0:
        return rows_out, scores_out
    device = scores.device
    scores.nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    if exclude is not None:
        block = sp.coo_matrix(exclude)
        rows = torch.from_numpy(block.row.astype(np.int64)).to(device)
        scores[rows, torch.from_numpy(block.col.astype(np.int64)).to(device)] = -math.inf
    kk = min(k, m)
    # torch's top-k is one multi-threaded pass, ~10x faster than numpy's partition here. It
    # picks arbitrary members of a tie at the cut, so take one more: where it equals the k-th,
    # those rows are redone with ties going to the lowest indices
    values, cols = torch.topk(scores, min(kk + 1, m), dim=1)
    tied = np.zeros(n, dtype=bool)
    if kk < m:
        tied = ((values[:, kk] == values[:, kk - 1]) & (values[:, kk] > -math.inf)).cpu().numpy()
    values, cols = values[:, :kk], cols[:, :kk]
    redo = np.flatnonzero(tied)
    if len(redo):
        redo_rows = torch.from_numpy(redo).to(device)
        kth = values[redo_rows, -1]
        cols[redo_rows] = _lowest_index_topk(scores[redo_rows], kth, kk)
        values[redo_rows] = torch.gather(scores[redo_rows], 1, cols[redo_rows])
    values, cols = values.cpu().numpy(), cols.cpu().numpy()
    order = np.lexsort((cols, -values), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    rows_out[:, :kk] = np.where(values == -np.inf, -1, cols)
    scores_out[:, :kk] = values
    return rows_out, scores_out


def _lowest_index_topk(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the ``k`` best scores per row (unordered), ties at ``kth`` to lowest indices."""
    m = scores.shape[1]
    # one key orders everything: above the cut first, then tied columns by index, then the rest
    dtype = torch.float32 if m <= 2**24 else torch.float64
    position = -torch.arange(m, dtype=dtype, device=scores.device)
    cut = kth.unsqueeze(1)
    key = torch.where(scores == cut, position, -math.inf)
    key = key.masked_fill_(scores > cut, math.inf)
    return torch.topk(key, k, dim=1, sorted=False).indices


def neighbours(
    vectors: np.ndarray, rows: np.ndarray, k: int, max_scores: int = 2**24
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` with the highest dot product with each of ``rows``, the
    row itself left out (also against exact duplicates), as in :func:`top_k`; queries go in
    batches of at most ``max_scores`` scores at once."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(vectors)
    own = sp.csr_matrix((np.ones(len(rows), bool), (np.arange(len(rows)), rows)), (len(rows), n))
    batch = max(1, min(len(rows), max_scores // max(n, 1)))
    return top_k(vectors[rows], vectors, k, exclude=own, batch_size=batch)


def empty_result(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of ``m`` queries that found nothing: -1 and -inf."""
    return np.full((m, k), -1, dtype=np.int64), np.full((m, k), -np.inf, dtype=np.float32)


def search_rows(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    exclude: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of float32 ``vectors`` by dot product over ``rows`` (None: all), minus
    each query's ``exclude`` (sorted distinct rows, or None); (rows, scores), best first,
    padded with -1 / -inf. Equal scores come in no set order."""
    m = len(queries)
    n_candidates = len(vectors) if rows is None else len(rows)
    if n_candidates == 0:
        return empty_result(m, k)
    fetch = min(n_candidates, k + (max(len(e) for e in exclude) if exclude else 0))
    if rows is not None and m < _FEW_QUERIES:
        scores, found = _knn_of_rows(queries, vectors, rows, fetch)
    else:
        # np.take copies the rows twice as fast as fancy indexing
        candidates = vectors if rows is None else np.take(vectors, rows, axis=0)
        # faiss.knn scores fewer than 20 queries with SIMD loops instead of BLAS: numpy's
        # threaded BLAS took 25 ms instead of 0.3 ms for one query on a busy two-core machine.
        scores, found = faiss.knn(
            queries, np.ascontiguousarray(candidates), fetch, metric=faiss.METRIC_INNER_PRODUCT
        )
        found = found.astype(np.int64, copy=False)
        if rows is not None:
            found = np.where(found >= 0, rows[np.maximum(found, 0)], -1)
    if exclude:
        return drop_excluded(found, scores, exclude, k)
    out_rows, out_scores = empty_result(m, k)
    out_rows[:, :fetch] = found[:, :k]
    out_scores[:, :fetch] = np.where(found[:, :k] >= 0, scores[:, :k], -np.inf)
    return out_rows, out_scores


def drop_excluded(
    rows: np.ndarray, scores: np.ndarray, exclude: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` found ``rows`` (and their scores) per query that are neither -1 nor
    in that query's ``exclude``, padded with -1 / -inf."""
    out_rows, out_scores = empty_result(len(rows), k)
    for i, e in enumerate(exclude):
        # a few exclusions (the usual case) compare directly; np.isin costs more to set up
        dropped = (rows[i][:, None] == e).any(axis=1) if len(e) <= 64 else np.isin(rows[i], e)
        keep = (rows[i] >= 0) & ~dropped
        r, s = rows[i][keep][:k], scores[i][keep][:k]
        out_rows[i, : len(r)], out_scores[i, : len(s)] = r, s
    return out_rows, out_scores


# Below this many queries, scoring the kept rows where they lie beats copying them out first
# (1% of 1M rows, one query: 0.10 instead of 0.15 ms); above it, the copy buys BLAS.
_FEW_QUERIES = 20


def _knn_of_rows(
    q: np.ndarray, vectors: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """faiss's top-k by inner product over ``rows`` of ``vectors``, read in place."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    scores = np.empty((len(q), k), dtype=np.float32)
    found = np.empty((len(q), k), dtype=np.int64)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(q),
        faiss.swig_ptr(vectors),
        faiss.swig_ptr(rows),
        vectors.shape[1],
        len(q),
        len(vectors),
        len(rows),
        k,
        faiss.swig_ptr(scores),
        faiss.swig_ptr(found),
        0,  # every query scans the same rows
    )
    return scores, found


def ties_to_lowest_row(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's results (rows and scores, best first, -1 padding last) with equal scores
    in the order of their rows."""
    if rows.size == 0:
        return rows, scores
    padding = rows < 0
    by_row = np.where(padding, np.iinfo(np.int64).max, rows)
    by_score = np.where(padding, np.inf, -scores.astype(np.float64))
    order = np.lexsort((by_row, by_score), axis=-1)
    return np.take_along_axis(rows, order, -1), np.take_along_axis(scores, order, -1)
