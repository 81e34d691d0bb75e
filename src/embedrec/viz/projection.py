"""2-D projections of listing vectors (PCA, t-SNE, UMAP) for plotting."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy as np

from embedrec.ranking import neighbours

METHODS = ("pca", "tsne", "umap")
# the methods as their authors write them, for titles
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
MIN_LEARNING_RATE = 50.0  # t-SNE's, as scikit-learn's "auto" rate has it


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def sample_rows(n: int, sample: int | None, seed: int) -> np.ndarray:
    """Sorted row indices: all of range(n), or a seeded sample of `sample` of them."""
    if sample is None or sample >= n:
        return np.arange(n)
    if sample < 1:
        raise ValueError(f"sample must be positive or None, got {sample}")
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def project(
    vectors: np.ndarray,
    method: str = "pca",
    sample: int | None = 50_000,
    seed: int = 0,
    n_jobs: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Project the cosine geometry of `vectors` (n, d) to 2-D.

    Returns (rows, coords): the indices of the projected rows into `vectors` (sorted; all rows,
    or a seeded sample of at most `sample`) and a float32 (len(rows), 2) array of coordinates.
    The same inputs and seed give the same output. Rows are L2-normalised first, so Euclidean
    distance in the methods below ranks neighbours exactly as cosine similarity does.
    Raises ValueError when a vector holds NaN or infinity.
    """
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose one of {METHODS}")
    x = np.asarray(vectors, dtype=np.float32)
    # up front, for every method: a NaN row has no neighbours (exact_knn answers -1), which
    # openTSNE's precomputed neighbours read out of bounds and kill the process with
    if x.ndim == 2:
        not_finite = int((~np.isfinite(x).all(axis=1)).sum())
        if not_finite:
            raise ValueError(
                f"vectors must be finite: {not_finite:,} of {len(x):,} rows hold NaN or infinity"
            )
    x = normalise(x)
    rows = sample_rows(len(x), sample, seed)
    x = x[rows]
    if len(x) < 3:
        raise ValueError(f"need at least 3 vectors to project, got {len(x)}")
    if (x == x[0]).all():
        # one point, however many rows: t-SNE's scaling by its spread would make every
        # coordinate NaN, and a map of NaN shows nothing
        coords = np.zeros((len(x), 2), np.float32)
    elif method == "pca":
        coords = _pca(x, seed)
    elif method == "tsne":
        coords = _tsne(x, seed, n_jobs)
    else:
        coords = _umap(x, seed, n_jobs)
    return rows, np.ascontiguousarray(coords, dtype=np.float32)


def _method_module(module: str, package: str, method: str) -> ModuleType:
    """``module``, or a ModuleNotFoundError that names the method and the package to install
    (embedrec depends on it, so only a broken or trimmed environment lacks it)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the {method} projection needs the package {package}, which is not installed "
            f"here ({exc}): pip install {package}",
            name=module,
        ) from exc


def _pca(x: np.ndarray, seed: int) -> np.ndarray:
    PCA = _method_module("sklearn.decomposition", "scikit-learn", "pca").PCA  # noqa: N806

    if x.shape[1] < 2:
        return np.column_stack([x[:, 0], np.zeros(len(x), np.float32)])
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def exact_knn(x: np.ndarray, k: int, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of unit rows `x` by cosine: (indices, cosine similarities).

    Rows are sorted by decreasing similarity. With `include_self` the row itself comes first;
    otherwise it is excluded even when exact duplicates exist.
    """
    # Brute force in batches: exact, deterministic, and on 2 cores faster than Annoy at 50k.
    n = len(x)
    idx, sim = neighbours(np.ascontiguousarray(x, dtype=np.float32), np.arange(n), min(k, n - 1))
    if include_self:
        idx = np.column_stack([np.arange(n), idx])
        sim = np.column_stack([np.ones(n, np.float32), sim])
    return idx, sim


def _tsne(x: np.ndarray, seed: int, n_jobs: int) -> np.ndarray:
    _method_module("openTSNE", "openTSNE", "tsne")  # its absence said plainly, first
    from openTSNE import TSNEEmbedding, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    # openTSNE refuses perplexity >= n/3; small inputs get the largest valid value.
    perplexity = float(min(30.0, (len(x) - 1) / 3.0 - 1e-3))
    idx, sim = exact_knn(x, int(3 * perplexity))
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0)).astype(np.float32)
    aff = affinity.PerplexityBasedNN(
        perplexity=perplexity, knn_index=PrecomputedNeighbors(idx, dist), n_jobs=n_jobs
    )
    init = initialization.pca(x, random_state=seed)
    # FFT-interpolated gradients scale linearly; below 10k points Barnes-Hut on one thread is
    # quicker (thread start-up per iteration dominates there, badly so on a busy machine).
    small = len(x) < 10_000
    emb = TSNEEmbedding(
        init,
        aff,
        negative_gradient_method="bh" if small else "fft",
        n_jobs=1 if small else n_jobs,
        random_state=seed,
    )
    # 250 exaggerated + 250 plain iterations (default 500): clusters are settled by then and
    # it keeps 50k points well under two minutes on 2 cores. openTSNE's learning rate is
    # n / exaggeration; below 50 (scikit-learn's floor) a few dozen listings collapsed into
    # one spot 1e-40 wide that Barnes-Hut never pulled apart.
    exaggeration = 12
    emb = emb.optimize(
        n_iter=250,
        exaggeration=exaggeration,
        momentum=0.5,
        learning_rate=max(len(x) / exaggeration, MIN_LEARNING_RATE),
    )
    emb = emb.optimize(n_iter=250, momentum=0.8, learning_rate=max(len(x), MIN_LEARNING_RATE))
    return np.asarray(emb)


def _umap(x: np.ndarray, seed: int, n_jobs: int) -> np.ndarray:
    umap = _method_module("umap", "umap-learn", "umap")
    n_neighbors = min(15, len(x) - 1)
    idx, sim = exact_knn(x, n_neighbors - 1, include_self=True)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0)).astype(np.float32)
    with warnings.catch_warnings():
        # umap warns that a fixed random_state disables parallel SGD (reproducibility wins),
        # and that precomputed neighbours come without a search index (no transform needed).
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=n_neighbors,
            min_dist=0.1,
            metric="euclidean",
            random_state=seed,
            n_jobs=n_jobs,
            precomputed_knn=(idx.astype(np.int32), dist),
            # the spectral start needs more points than dimensions + 1 (scipy's eigsh)
            init="spectral" if len(x) > 3 else "pca",
        )
        return reducer.fit_transform(x)
