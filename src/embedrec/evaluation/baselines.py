"""Classic baselines on a user x item interaction matrix: popularity, item-kNN and EASE.

Each has ``fit(train) -> self`` and ``score(users) -> float32 (len(users), n_items)``, where
``users`` are row indices of the training matrix; ``score`` fits ``evaluate_scorer``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def _as_csr(train: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    matrix = sp.csr_matrix(train, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    return matrix


class _Fitted:
    _train: sp.csr_matrix | None = None

    @property
    def train(self) -> sp.csr_matrix:
        """The training matrix given to ``fit`` (float32 CSR)."""
        if self._train is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(train) first")
        return self._train

    def _check_fitted(self) -> None:
        self.train  # noqa: B018 - the property raises when not fitted


def _dense_gram(x: sp.csr_matrix, block_size: int = 1024) -> np.ndarray:
    """``X^T X`` as a dense float64 array, built in row blocks so no sparse copy of it exists."""
    xt = x.T.tocsr().astype(np.float64)
    n_items = x.shape[1]
    gram = np.empty((n_items, n_items), dtype=np.float64)
    for start in range(0, n_items, block_size):
        gram[start : start + block_size] = (xt[start : start + block_size] @ x).toarray()
    return gram


class Popularity(_Fitted):
    """Scores every item by its number of training interactions (its column sum)."""

    def fit(self, train: sp.spmatrix | sp.sparray) -> Popularity:
        self._train = _as_csr(train)
        self.counts = np.asarray(self._train.sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return np.tile(self.counts, (len(users), 1))


class ItemKNN(_Fitted):
    """Item-item cosine kNN: score = user row @ S, S keeping each item's top ``neighbours``.

    ``S[i, j] = x_i . x_j / (|x_i| |x_j| + shrink)`` over the item columns of the (binary or
    weighted) matrix, zero on the diagonal and zero outside column j's ``neighbours`` largest
    non-zero similarities. It is built sparsely ``block_size`` target items at a time, so peak
    memory is one block's co-occurrences plus the pruned result.
    """

    def __init__(self, neighbours: int = 100, shrink: float = 0.0, block_size: int = 512) -> None:
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        self.neighbours = neighbours
        self.shrink = shrink
        self.block_size = block_size

    def fit(self, train: sp.spmatrix | sp.sparray) -> ItemKNN:
        x = _as_csr(train)
        n_items = x.shape[1]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0), dtype=np.float32).ravel())
        xt = x.T.tocsr()
        empty = np.empty(0, dtype=np.int64)
        blocks = [(empty, empty, np.empty(0, dtype=np.float32))]
        for start in range(0, n_items, self.block_size):
            # co-occurrences of a block of target items (rows) with every item (columns)
            gram = (xt[start : start + self.block_size] @ x).tocsr()
            target = np.repeat(np.arange(gram.shape[0]), np.diff(gram.indptr)) + start
            neighbour = gram.indices
            sim = gram.data / (norms[target] * norms[neighbour] + self.shrink)
            keep = (neighbour != target) & (sim != 0) & np.isfinite(sim)
            target, neighbour, sim = target[keep], neighbour[keep], sim[keep]
            order = np.lexsort((neighbour, -sim, target))
            target, neighbour, sim = target[order], neighbour[order], sim[order]
            rank = np.arange(len(target)) - np.searchsorted(target, target)
            keep = rank < self.neighbours
            blocks.append((neighbour[keep], target[keep], sim[keep]))
        rows, cols, vals = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
        self.similarity = sp.csr_matrix(
            (vals, (rows, cols)), shape=(n_items, n_items), dtype=np.float32
        )
        self._neighbours_of = self.similarity.T.tocsr()
        self._train = x
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.train[users] @ self.similarity).toarray().astype(np.float32, copy=False)

    def similar(self, items: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` most similar items to each of ``items``, best first, never the item itself.

        Only stored neighbours (non-zero similarity, within the top ``neighbours``) are returned;
        rows are padded with -1. Equal similarities are ordered by item index.
        """
        self._check_fitted()
        rows = self._neighbours_of[np.asarray(items, dtype=np.int64)]
        which = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        order = np.lexsort((rows.indices, -rows.data, which))
        rank = np.arange(len(order)) - rows.indptr[which]
        keep = rank < k
        out = np.full((rows.shape[0], k), -1, dtype=np.int64)
        out[which[keep], rank[keep]] = rows.indices[order[keep]]
        return out


class EASE(_Fitted):
    """EASE (Steck 2019): B = I - P / diag(P), P = (X^T X + l2 I)^-1, diagonal of B zero.

    Needs a dense ``n_items x n_items`` inverse (float64 while solving, float32 kept), so more
    than ``max_items`` items raise ``ValueError`` instead of exhausting memory.
    """

    def __init__(self, l2: float = 500.0, max_items: int = 40_000) -> None:
        self.l2 = l2
        self.max_items = max_items

    def fit(self, train: sp.spmatrix | sp.sparray) -> EASE:
        x = _as_csr(train)
        n_items = x.shape[1]
        if n_items > self.max_items:
            gib = 2 * 8 * n_items**2 / 2**30
            raise ValueError(
                f"EASE needs a dense {n_items} x {n_items} inverse (about {gib:.0f} GiB); "
                f"more than max_items={self.max_items} items. Filter rare items first."
            )
        gram = _dense_gram(x)
        gram[np.diag_indices(n_items)] += self.l2
        # torch's LAPACK: scipy's OpenBLAS crashed here beside torch's OpenMP runtime
        p = torch.linalg.inv(torch.from_numpy(gram)).numpy()
        p /= -np.diag(p)[None, :]
        p[np.diag_indices(n_items)] = 0.0
        self.weights = p.astype(np.float32)
        self._train = x
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train[users] @ self.weights, dtype=np.float32)
