"""Top-k ranking and ranking metrics (recall, NDCG, hit rate, MRR, coverage).

All functions work on one batch of users at a time: dense scores for the batch, sparse
matrices for what to exclude and what is relevant. Nothing loops over interactions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch

from embedrec.data.errors import shown
from embedrec.ranking import top_k_of_scores

METRICS = ("recall", "ndcg", "hitrate", "mrr", "coverage")
# averaged over users, so each has a standard error; coverage is one number for all users
PER_USER_METRICS = ("recall", "ndcg", "hitrate", "mrr")
# scores held at once when users are batched automatically: 2**26 floats, 256 MB in float32
SCORES_PER_BATCH = 2**26


def cut_offs(ks: Integral | Iterable[Integral], name: str = "ks") -> tuple[int, ...]:
    """The cut-offs ``ks`` (``recall@k`` for each k) as a tuple of Python ints, in the order
    given, each once; a single whole number is one cut-off. ValueError naming ``name``
    unless they are whole numbers from 1 up, at least one (a str is no list of them)."""
    given = (ks,) if isinstance(ks, Integral) else ks
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise ValueError(f"{name} must be whole numbers from 1 up, got {shown(ks)}")
    given = list(given)
    for k in given:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(
                f"{name} must be whole numbers from 1 up, got {shown(k)} in {shown(ks)}"
            )
    if not given:
        raise ValueError(f"{name} must hold at least one cut-off, got {shown(ks)}")
    return tuple(dict.fromkeys(int(k) for k in given))


def topk_excluding(
    scores: np.ndarray | torch.Tensor,
    exclude: sp.spmatrix | sp.sparray | None,
    k: int,
    candidates: np.ndarray | None = None,
    *,
    workspace: torch.Tensor | None = None,
) -> np.ndarray:
    """Return the ``k`` best item indices per row, best first, as an int64 ``(n_batch, k)`` array.

    Items stored in ``exclude`` (same shape as ``scores``), items outside ``candidates`` and
    items scored NaN or -inf are never returned; rows with fewer than ``k`` such valid items are
    padded with -1. Equal scores are ordered by item index, so results are deterministic.
    ``scores`` may be a torch tensor on any device: the ranking then runs there, and only the
    top ``k`` come back. ``scores`` are not modified: the ranking overwrites a copy, made in
    ``workspace`` when given (a tensor at least as large, of the copy's dtype and device;
    ``evaluate_scorer`` reuses one for every batch, which saves allocating and faulting in a
    fresh block each time).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not isinstance(scores, torch.Tensor):
        scores = np.asarray(scores)
    shape = tuple(scores.shape)
    if len(shape) != 2:
        raise ValueError(f"scores must be 2-D (n_batch, n_items), got shape {shape}")
    if exclude is not None and exclude.shape != shape:
        raise ValueError(f"exclude has shape {exclude.shape}, scores have {shape}")
    if candidates is not None:
        candidates = _item_indices(candidates, shape[1])
        exclude = None if exclude is None else sp.csr_matrix(exclude)[:, candidates]
    local = top_k_of_scores(_private_copy(scores, candidates, workspace), k, exclude)[0]
    if candidates is None:
        return local
    return np.where(local >= 0, candidates[np.maximum(local, 0)], -1)


def _item_indices(candidates: np.ndarray, n_items: int) -> np.ndarray:
    """``candidates`` as sorted distinct int64 item indices; ValueError unless they are whole
    numbers in ``[0, n_items)`` (a boolean mask read as numbers would be items 0 and 1)."""
    given = np.asarray(candidates)
    if given.dtype.kind not in "iu" and not (given.size == 0 and given.dtype.kind == "f"):
        hint = " (for a mask, pass np.flatnonzero(mask))" if given.dtype.kind == "b" else ""
        raise ValueError(f"candidates must be item indices, got dtype {given.dtype}{hint}")
    indices = np.unique(given.astype(np.int64).ravel())
    outside = indices[(indices < 0) | (indices >= n_items)]
    if len(outside):
        raise ValueError(
            f"candidates must be item indices in [0, {n_items}), got {int(outside[0])}"
        )
    return indices


def _working_type(scores: np.ndarray | torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """The dtype (at least float32) and device the ranking of ``scores`` runs in."""
    if isinstance(scores, torch.Tensor):
        return torch.promote_types(scores.dtype, torch.float32), scores.device
    array_dtype = np.result_type(scores.dtype, np.float32)
    return torch.from_numpy(np.empty(0, array_dtype)).dtype, torch.device("cpu")


def _private_copy(
    scores: np.ndarray | torch.Tensor, columns: np.ndarray | None, workspace: torch.Tensor | None
) -> torch.Tensor:
    """Scores of ``columns`` (None: all) in their working type as a tensor ``top_k_of_scores``
    may overwrite: a view of ``workspace`` where it fits, else a new tensor."""
    dtype, device = _working_type(scores)
    n, m = scores.shape
    if isinstance(scores, torch.Tensor):
        scores = scores.detach()
    fits = workspace is not None and columns is None and workspace.shape[0] >= n
    if fits and (workspace.dtype, workspace.device, workspace.shape[1]) == (dtype, device, m):
        target = workspace[:n]
        if isinstance(scores, torch.Tensor):
            target.copy_(scores)
        else:
            target.numpy()[...] = scores
        return target
    if isinstance(scores, torch.Tensor):
        if columns is not None:
            return scores[:, torch.as_tensor(columns, device=device)].to(dtype)
        return scores.to(dtype, copy=True)
    array_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if columns is not None:
        return torch.from_numpy(scores[:, columns].astype(array_dtype, copy=False))
    return torch.from_numpy(np.array(scores, dtype=array_dtype))


def _binary(matrix: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """Canonical CSR copy holding 1.0 where ``matrix`` is positive."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    matrix.data = (matrix.data > 0).astype(np.float32)
    matrix.eliminate_zeros()
    return matrix


def ranking_metrics(
    topk: np.ndarray,
    test: sp.spmatrix | sp.sparray,
    ks: Sequence[int] = (10, 20),
    n_items: int | None = None,
    standard_errors: bool = False,
) -> dict[str, float]:
    """Recall, NDCG, hit rate, MRR and coverage at each k, averaged over users with test items.

    ``topk`` row u holds user u's recommendations (distinct item indices, best first, -1 for
    padding); ``test`` row u marks u's relevant items (positive entries). Recall divides hits by
    ``min(k, |test_u|)``, NDCG uses binary gains and the ideal DCG of ``min(k, |test_u|)`` hits.
    Coverage is the share of ``n_items`` (default ``test.shape[1]``) recommended in the top k of
    at least one evaluated user. With no evaluated users every metric is NaN.

    With ``standard_errors``, each per-user mean also gets its standard error under
    ``"<metric>@<k>_se"`` (sample standard deviation over users / sqrt(users); NaN for one
    user): differences between two scores much smaller than that are noise.
    """
    topk = np.asarray(topk, dtype=np.int64)
    relevant = _binary(test)
    n_users, width = relevant.shape
    if topk.ndim != 2 or topk.shape[0] != n_users:
        raise ValueError(f"topk has shape {topk.shape}, expected ({n_users}, K)")
    n_items = width if n_items is None else n_items
    # a list of every item may be narrower than k: the slots beyond it hold no item anyway
    if max(ks) > topk.shape[1] and topk.shape[1] < n_items:
        raise ValueError(f"k={max(ks)} needs at least {max(ks)} recommendations per user")
    n_relevant = np.diff(relevant.indptr)
    users = np.flatnonzero(n_relevant > 0)
    if len(users) == 0:
        errors = PER_USER_METRICS if standard_errors else ()
        return {
            **{f"{name}@{k}": float("nan") for k in ks for name in METRICS},
            **{f"{name}@{k}_se": float("nan") for k in ks for name in errors},
        }
    topk, n_relevant = topk[users], n_relevant[users]
    hit = _is_relevant(relevant[users], topk)
    discounts = 1.0 / np.log2(np.arange(2, topk.shape[1] + 2))
    ideal = np.cumsum(discounts)
    result: dict[str, float] = {}
    for k in ks:
        hit_k = hit[:, :k]
        hits = hit_k.sum(axis=1)
        cap = np.minimum(min(k, topk.shape[1]), n_relevant)  # k may pass int32's range
        first = np.argmax(hit_k, axis=1)
        recommended = topk[:, :k]
        per_user = {
            "recall": hits / cap,
            "ndcg": (hit_k @ discounts[:k]) / ideal[cap - 1],
            "hitrate": (hits > 0).astype(np.float64),
            "mrr": np.where(hits > 0, 1.0 / (first + 1), 0.0),
        }
        for name, values in per_user.items():
            result[f"{name}@{k}"] = float(np.mean(values))
        distinct = np.unique(recommended[recommended >= 0])
        result[f"coverage@{k}"] = len(distinct) / n_items if n_items else float("nan")
        if standard_errors:
            for name, values in per_user.items():
                spread = np.std(values, ddof=1) if len(values) > 1 else float("nan")
                result[f"{name}@{k}_se"] = float(spread / math.sqrt(len(values)))
    return result


def _is_relevant(relevant: sp.csr_matrix, topk: np.ndarray) -> np.ndarray:
    """Boolean ``topk.shape`` array: is ``topk[u, j]`` stored in row u of ``relevant``."""
    n_users, n_items = relevant.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(relevant.indptr))
    keys = np.sort(rows * n_items + relevant.indices)
    queries = np.arange(n_users, dtype=np.int64)[:, None] * n_items + topk
    pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return (topk >= 0) & (keys[pos] == queries)


def evaluate_scorer(
    score_fn: Callable[[np.ndarray], np.ndarray],
    train: sp.spmatrix | sp.sparray,
    test: sp.spmatrix | sp.sparray,
    ks: Sequence[int] = (10, 20),
    batch_size: int | None = None,
    candidates: np.ndarray | None = None,
    standard_errors: bool = False,
    overwrite_scores: bool = False,
    scores_per_batch: int | None = None,
) -> dict[str, float]:
    """Rank items for every user with test items and return ``ranking_metrics`` plus ``users``.

    ``score_fn(user_indices)`` returns ``(len(user_indices), n_items)`` scores (an array, or a
    torch tensor on any device, ranked where it lies). Each user's training items (the
    non-zero entries of ``train``, negative weights too) are excluded from the ranking and
    dropped from their relevant set (they could never be hit). With ``candidates`` (item
    indices; ValueError for others), only those items are ranked and relevant, and coverage
    is relative to their number. Users are scored ``batch_size`` at a time; by default as
    many as keep a batch's scores near ``scores_per_batch`` floats (default
    ``SCORES_PER_BATCH``; 16 to 1,024 users), so memory stays bounded however large the
    catalogue.
    ``standard_errors`` adds each mean's standard error (see ``ranking_metrics``).
    ``overwrite_scores``: the ranking may overwrite what ``score_fn`` returns (a block the
    next call overwrites anyway, as ``ranking.dot_scorer``'s), instead of a copy of it: one
    batch's scores less in memory (256 MB against a million listings) and no copy per batch.
    """
    ks = cut_offs(ks)
    train = sp.csr_matrix(train)
    if train.shape != test.shape:
        raise ValueError(f"train has shape {train.shape}, test has {test.shape}")
    # one set both leaves the ranking and the relevant items: a stored zero was left out of
    # the ranking but stayed relevant, a relevant item no scorer could hit
    if not train.has_canonical_format or not train.data.all():
        train = train.copy()
        train.sum_duplicates()
        train.eliminate_zeros()
    relevant = _binary(test)
    relevant = relevant - relevant.multiply(train != 0)
    n_items = relevant.shape[1]
    if candidates is not None:
        candidates = _item_indices(candidates, n_items)
        keep = np.zeros(n_items, dtype=np.float32)
        keep[candidates] = 1.0
        relevant = relevant @ sp.diags(keep)
    relevant = _binary(relevant)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    n_ranked = n_items if candidates is None else len(candidates)
    # no ranking is longer than what it ranks: a cut-off of 10**9 held 10**9 slots a user
    depth = min(max(ks), max(n_ranked, 1))
    if batch_size is None:
        budget = scores_per_batch or SCORES_PER_BATCH
        batch_size = max(16, min(1024, budget // max(n_items, 1)))
    elif batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    topk = np.full((len(users), depth), -1, dtype=np.int64)
    workspace = None
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = score_fn(batch)
        if not isinstance(scores, torch.Tensor):
            scores = np.asarray(scores)
        if tuple(scores.shape) != (len(batch), n_items):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}, expected {(len(batch), n_items)}"
            )
        in_place = (
            overwrite_scores
            and candidates is None
            and isinstance(scores, torch.Tensor)
            and _working_type(scores)[0] == scores.dtype
        )
        if in_place:
            topk[start : start + len(batch)] = top_k_of_scores(scores, depth, train[batch])[0]
            continue
        if workspace is None and candidates is None:
            dtype, device = _working_type(scores)
            workspace = torch.empty((batch_size, n_items), dtype=dtype, device=device)
        topk[start : start + len(batch)] = topk_excluding(
            scores, train[batch], depth, candidates, workspace=workspace
        )
    result = ranking_metrics(
        topk, relevant[users], ks, n_items=n_ranked, standard_errors=standard_errors
    )
    result["users"] = len(users)
    return result
