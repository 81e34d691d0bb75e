"""Recommendation quality on MovieLens-100k: embedrec's models against the usual peers.

    python benchmarks/movielens.py                       # full run, ~1.5-2 h on 1 thread
    python benchmarks/movielens.py --smoke               # seconds; 50 users, or synthetic data
    python benchmarks/movielens.py --out docs/benchmarks-movielens.md --json results.json
    python benchmarks/movielens.py --only LightFM,centroid  # some methods only
    python benchmarks/movielens.py --only "embedrec hybrid" --reuse results.json --out ...
                                        # rerun some methods, the other rows from a --json file
    python benchmarks/movielens.py --text-on-off --seeds 0 --out docs/benchmarks-movielens.md
                                                         # hybrid with and without film titles

Install the peers first (the ``bench`` extra brings implicit; LightFM 1.17 does not build
through PEP 517, so it needs a legacy build by pip 25.2, run from a throwaway location so the
venv's own pip stays as it is):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m pip install --target /tmp/pip252 pip==25.2
    PYTHONPATH=/tmp/pip252 .venv/bin/python -m pip install \
        --no-use-pep517 --no-build-isolation lightfm==1.17

(the legacy build needs cython, numpy, scipy and setuptools already in the venv). A peer that
is not installed is reported as such and skipped.

Protocol (see ``embedrec.datasets.movielens``): positives are ratings >= 4; per user, the last
fifth of their positives by (timestamp, item id) is the test (users with >= 5 positives), and
validation is carved out of train by the same rule. Every method is tuned on validation only
(chosen by NDCG@10), refit on train with the chosen configuration and evaluated once on test:
Recall, NDCG, HitRate and Coverage at 10 over the full catalogue (all 1,682 films) with
training items excluded. Cold start: a fifth of the items with >= 5 positives
(``default_rng(42)``) lose all their interactions; every user's positives on them are the
test, ranked among those items only, which models know only by genres and release year. Cold
runs are tuned again on a cold validation split (the same rule applied to the cold training
split).

Peers' content features (``content_features``): one-hot genres, the release year one-hot as
decade, 5-year span and year, and the year as a number in [0, 1]. LightFM runs three ways
(item identity features only, content features only, both) over 54 configurations (WARP and
BPR, 32/64/128 components, learning rate 0.01/0.05/0.1, item_alpha 0/1e-6/1e-5); each is
trained once with ``fit_partial`` and scored on validation after 1 to 50 epochs
(``EPOCH_COUNTS``), so the number of epochs is chosen on validation too. The content centroid
ranks films by the cosine between a user's mean feature vector and theirs.

Our models go through the public ``Recommender`` with ``validation_fraction=0``: its own
early stopping holds out the globally latest interactions, which is not this protocol's
validation, so the number of epochs is a grid parameter chosen on the protocol's validation.
``embedrec hybrid (defaults)`` is the exception: ``Recommender()`` as it comes, untuned, and
the report gives its ratio to the best tuned peer (cold) and to EASE (warm).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from report_page import write_generated  # noqa: E402

from embedrec.data.schema import SchemaConfig  # noqa: E402
from embedrec.datasets.movielens import (  # noqa: E402
    ProtocolSplit,
    dataset_dir,
    is_cached,
    load_movielens_100k,
    movielens_protocol_split,
    read_atomic,
)
from embedrec.evaluation import EASE, ItemKNN, Popularity, evaluate_scorer  # noqa: E402
from embedrec.recommender import Recommender  # noqa: E402

ScoreFn = Callable[[np.ndarray], np.ndarray]
K = 10
SELECT = f"ndcg@{K}"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
TEXT_START, TEXT_END = "<!-- text:start -->", "<!-- text:end -->"
DEFAULTS_ROW = "embedrec hybrid (defaults)"
# what `embedrec hybrid (defaults)` should reach against the best tuned peer (cold split)
# and against EASE (warm split), on Recall@10 and NDCG@10
COLD_GOAL, WARM_GOAL = 1.10, 1.05


# ---------------------------------------------------------------------- data in index form
@dataclass
class Context:
    """What every method sees: the id universe, item features and run settings."""

    users: pd.Index  # every user id, sorted: row u of every matrix
    items: pd.Index  # every film id, sorted: column i of every matrix (the full catalogue)
    item_table: pd.DataFrame  # listing_id, genres, year in ``items`` order
    threads: int = 1
    seed: int = 0
    smoke: bool = False
    _features: sp.csr_matrix | None = field(default=None, repr=False)

    def csr(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """Users x items binary matrix of ``frame``'s (user_id, listing_id) pairs."""
        rows = self.users.get_indexer(frame["user_id"])
        cols = self.items.get_indexer(frame["listing_id"])
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(len(self.users), len(self.items)),
        )
        matrix.data[:] = 1.0
        return matrix

    def feature_matrix(self) -> sp.csr_matrix:
        """Every film's content features, the only cold-start information (``FEATURE_BLOCKS``).

        One-hot genres (multi-valued); the release year as buckets (decade, 5-year span and
        the year itself, one-hot; "unknown" when missing) and as a number scaled to [0, 1]
        over the catalogue's years (0 when missing).
        """
        if self._features is None:
            self._features = content_features(self.item_table)
        return self._features


FEATURE_BLOCKS = "genres, decade, 5-year span, year (one-hot), year (number in [0, 1])"


def content_features(item_table: pd.DataFrame) -> sp.csr_matrix:
    """Genres one-hot plus the release year as buckets and as a scaled number."""
    genres = item_table["genres"].fillna("").str.get_dummies(sep="|").add_prefix("genre:")
    year = pd.to_numeric(item_table["year"], errors="coerce")

    def bucket(prefix: str, width: int) -> pd.DataFrame:
        labels = (year // width * width).map(
            lambda y: f"{prefix}:unknown" if pd.isna(y) else f"{prefix}:{int(y)}"
        )
        return pd.get_dummies(labels)

    low, high = year.min(), year.max()
    scaled = ((year - low) / (high - low if high > low else 1.0)).fillna(0.0)
    blocks = [genres, bucket("decade", 10), bucket("span5", 5), bucket("year", 1)]
    onehot = pd.concat(blocks, axis=1).astype(np.float32).to_numpy()
    number = scaled.to_numpy(dtype=np.float32)[:, None]
    return sp.csr_matrix(np.hstack([onehot, number]).astype(np.float32))


# ---------------------------------------------------------------------- methods
Fit = Callable[[Context, pd.DataFrame, dict[str, Any]], ScoreFn]
# (context, train, params without epochs, epoch counts) -> (epochs, scorer) after each count
Sweep = Callable[
    [Context, pd.DataFrame, dict[str, Any], Sequence[int]], Iterator[tuple[int, ScoreFn]]
]


@dataclass
class Method:
    name: str
    fit: Fit
    grid: list[dict[str, Any]]
    warm: bool = True
    cold: bool = False
    missing: str | None = None  # why it cannot run (a package not installed)
    # epochs read off one training run per configuration (instead of a grid axis)
    sweep: Sweep | None = None
    tuned: bool = True  # False: run with its one configuration, no validation runs


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in order."""
    combos: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos


def fit_popularity(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    return Popularity().fit(ctx.csr(train)).score


def fit_itemknn(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    return ItemKNN(**params).fit(ctx.csr(train)).score


def fit_ease(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    return EASE(**params).fit(ctx.csr(train)).score


def _factor_scorer(users: np.ndarray, items: np.ndarray, bias: np.ndarray | None = None):
    def score(batch: np.ndarray) -> np.ndarray:
        scores = users[batch] @ items.T
        return scores if bias is None else scores + bias[None, :]

    return score


def fit_als(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        **params, random_state=ctx.seed, num_threads=ctx.threads, calculate_training_loss=False
    )
    model.fit(ctx.csr(train), show_progress=False)
    return _factor_scorer(np.asarray(model.user_factors), np.asarray(model.item_factors))


def fit_bpr(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(**params, random_state=ctx.seed, num_threads=ctx.threads)
    model.fit(ctx.csr(train), show_progress=False)
    # the item factors carry the item bias in their last column, the user factors a 1 there
    return _factor_scorer(np.asarray(model.user_factors), np.asarray(model.item_factors))


# LightFM: epochs are not a grid axis but read off one training run per configuration,
# scored on validation after each of these epoch counts (fit_partial, one epoch at a time);
# a run stops once PATIENCE epochs have passed since its best (not counting smoke runs)
EPOCH_COUNTS = (1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50)
SMOKE_EPOCH_COUNTS = (1, 2)
PATIENCE = 15


def lightfm_sweep(variant: str) -> Sweep:
    """LightFM trained on the items that have training interactions, one epoch at a time.

    ``variant``: "ids" (an identity column per trained item; the rest score -inf),
    "features" (``Context.feature_matrix`` only, no identity columns: every film, trained or
    cold, is the sum of its features' vectors) or "ids+features" (both; cold films get their
    features only). Item feature rows are normalised to sum 1, as LightFM's Dataset does.
    Users have their identity features (LightFM's default). Training on the trained columns
    only keeps the sampler from drawing the held-out cold items as negatives. Yields
    ``(epochs, scorer)`` after each count in ``counts``; stops early if LightFM diverges.
    """

    def sweep(
        ctx: Context, train: pd.DataFrame, params: dict[str, Any], counts: Sequence[int]
    ) -> Iterator[tuple[int, ScoreFn]]:
        from lightfm import LightFM

        matrix = ctx.csr(train)
        trained = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        n_items = len(ctx.items)
        identity = sp.csr_matrix(
            (np.ones(len(trained), dtype=np.float32), (trained, np.arange(len(trained)))),
            shape=(n_items, len(trained)),
        )
        blocks = {
            "ids": [identity],
            "features": [ctx.feature_matrix()],
            "ids+features": [identity, ctx.feature_matrix()],
        }[variant]
        features = sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float32)
        sums = np.asarray(features.sum(axis=1)).ravel()
        features = sp.csr_matrix(
            sp.diags((1.0 / np.maximum(sums, 1e-12)).astype(np.float32)) @ features,
            dtype=np.float32,
        )
        known = np.zeros(n_items, dtype=bool)
        known[trained] = True
        interactions = matrix[:, trained].tocoo()
        model = LightFM(random_state=ctx.seed, **params)
        done = 0
        for count in sorted(counts):
            try:
                while done < count:
                    model.fit_partial(
                        interactions,
                        item_features=features[trained],
                        epochs=1,
                        num_threads=ctx.threads,
                    )
                    done += 1
            except ValueError:  # "Not all estimated parameters are finite": diverged
                return
            item_bias, item_vectors = model.get_item_representations(features)
            _, user_vectors = model.get_user_representations()
            bias = item_bias.astype(np.float32)
            if variant == "ids":
                bias = np.where(known, bias, -np.inf).astype(np.float32)
            yield count, _factor_scorer(user_vectors.copy(), item_vectors.copy(), bias)

    return sweep


def fit_of_sweep(sweep: Sweep) -> Fit:
    """A Fit training ``params["epochs"]`` epochs through ``sweep``."""

    def fit(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
        params = dict(params)
        epochs = params.pop("epochs")
        scorers = list(sweep(ctx, train, params, [epochs]))
        if not scorers:
            raise RuntimeError(f"diverged within {epochs} epochs: {params}")
        return scorers[-1][1]

    return fit


def fit_centroid(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    """Content centroid: cosine between a user's feature centroid and each film's features.

    Each film is its ``Context.feature_matrix`` row, each column weighted by its inverse
    document frequency over the catalogue (``idf``: log((1 + films) / (1 + films with it)) + 1)
    and, with ``centre``, less the catalogue's mean film (so that features every film shares
    do not dominate the cosine); rows are then L2-normalised. A user's centroid is the mean
    of their training positives' rows. Cold films are ranked like any other.
    """
    features = ctx.feature_matrix().toarray().astype(np.float64)
    if params.get("idf", False):
        films_with = (features != 0).sum(axis=0)
        features = features * (np.log((1.0 + len(features)) / (1.0 + films_with)) + 1.0)
    if params.get("centre", False):
        features = features - features.mean(axis=0, keepdims=True)
    items = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    matrix = ctx.csr(train)
    positives = np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    centroids = (matrix @ items) / positives[:, None]
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return _factor_scorer(centroids.astype(np.float32), items.astype(np.float32))


def fit_content_regression(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    """Content regression: each user's own linear model over the films' features, fitted in
    closed form as implicit ALS fits a user against fixed item factors.

    The factors are the ``Context.feature_matrix`` rows plus a constant. User ``u``'s weights
    solve ``(X'X + c X_u'X_u + l I) w = (1 + c) X_u'1``: every film with training positives
    is a negative of weight 1 (``X``), the user's positives (``X_u``) weigh ``1 + c``
    (``confidence``), ``l`` is ``l2``. Cold films are ranked like any other.
    """
    features = ctx.feature_matrix().toarray().astype(np.float64)
    factors = np.hstack([features, np.ones((len(features), 1))])
    matrix = ctx.csr(train).astype(np.float64)
    trained = factors[np.asarray(matrix.sum(axis=0)).ravel() > 0]
    width = factors.shape[1]
    gram = trained.T @ trained + params["l2"] * np.eye(width)
    # each user's sum of outer products of their positives' factors, through one product
    outer = np.einsum("ij,ik->ijk", factors, factors).reshape(len(factors), -1)
    systems = gram + params["confidence"] * (matrix @ outer).reshape(-1, width, width)
    targets = (1.0 + params["confidence"]) * (matrix @ factors)
    weights = np.linalg.solve(systems, targets[..., None])[..., 0]
    return _factor_scorer(weights.astype(np.float32), factors.astype(np.float32))


def fit_feature_popularity(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
    """Popularity predicted from features: a ridge fit of log(1 + count) on genres + decade."""
    from sklearn.linear_model import Ridge

    counts = np.asarray(ctx.csr(train).sum(axis=0)).ravel()
    features = ctx.feature_matrix()
    trained = counts > 0
    model = Ridge(alpha=1.0).fit(features[trained], np.log1p(counts[trained]))
    predicted = model.predict(features).astype(np.float32)
    return lambda batch: np.tile(predicted, (len(batch), 1))


def fit_recommender(model: str) -> Fit:
    """A Fit running ``Recommender(model=...)`` and scoring with its own vectors."""

    def fit(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
        rec = Recommender(
            model=model,
            validation_fraction=0.0,  # epochs are tuned on the protocol's validation split
            seed=ctx.seed,
            device="cpu",
            progress=False,
            **params,
        )
        rec.fit(train[["user_id", "listing_id", "timestamp"]], ctx.item_table)
        return recommender_scorer(rec, ctx)

    return fit


def fit_recommender_defaults(model: str) -> Fit:
    """A Fit running ``Recommender(model=...)`` with every default (``embedrec train``'s
    too): its own early stopping on the latest 10% of interactions, then a refit. Only the
    device is fixed to the CPU and the seed to the run's; ``params`` is empty but in smoke
    runs (a short training)."""

    def fit(ctx: Context, train: pd.DataFrame, params: dict[str, Any]) -> ScoreFn:
        rec = Recommender(model=model, seed=ctx.seed, device="cpu", progress=False, **params)
        rec.fit(train[["user_id", "listing_id", "timestamp"]], ctx.item_table)
        tuning = rec.report_.get("tuning")
        if tuning is not None:  # what fit's own search (``tune``) tried and chose
            tried = [(t["changes"], t["val_recall@10"], t["epochs"]) for t in tuning["tried"]]
            print(f"tune: chose {tuning['chosen']} from {tried}", file=sys.stderr)
        return recommender_scorer(rec, ctx)

    return fit


def recommender_scorer(rec: Recommender, ctx: Context) -> ScoreFn:
    """Scores of context users against every context item, from a fitted Recommender.

    The catalogue holds every item of ``ctx.item_table``; ``mf`` embeds only trained items, so
    the rest score -inf (ranked last). Feature models embed never-trained items from features.
    """
    catalogue = rec.retriever().catalogue
    columns = catalogue.rows_of(list(ctx.items))
    present = np.flatnonzero(columns >= 0)
    user_rows = rec.users_.indices(ctx.users)
    vectors = catalogue.vectors[columns[present]]
    model_rows = catalogue.model_rows[columns[present]]

    def score(batch: np.ndarray) -> np.ndarray:
        rows = user_rows[batch]
        if (rows < 0).any():
            raise ValueError("a user to score has no training interactions")
        out = np.full((len(batch), len(ctx.items)), -np.inf, dtype=np.float32)
        out[:, present] = rec.model_.score_listings(rows, vectors, model_rows, strict=False)
        return out

    return score


def methods(smoke: bool, changed: dict[str, Any] | None = None) -> list[Method]:
    """Every method with its tuning grid (LightFM's the widest: see ``lightfm``); ``changed``:
    parameters of the defaults row set otherwise (a lever tried), named in its row."""
    full = not smoke
    changed = changed or {}
    # batch_size 512: with ~36k training pairs, 2048 made only ~18 steps an epoch (validation
    # NDCG@10 of hybrid: 0.086 at 2048, 0.121 at 512); the data-sized default is close to 512
    ours = (
        grid(dim=[32, 64], epochs=[10, 20, 40], batch_size=[512])
        if full
        else [{"dim": 16, "epochs": 2, "batch_size": 256}]
    )
    # hybrid: a softmax over all 1,682 films (negatives_from="catalogue", more negatives than
    # films) keeps popularity, which the batch's logQ-corrected negatives remove; its
    # L2-normalised vectors need the temperature tuned with it. Gradients through the
    # history's films (history_gradient) lifted validation NDCG@10 at 10 epochs from 0.161 to
    # 0.164 without user ids and from 0.172 to 0.180 with them
    hybrid = (
        grid(
            negatives_from=["catalogue"],
            negatives=[2048],
            history_gradient=[True],
            user_ids=[False, True],
            temperature=[0.2, 0.3],
            epochs=[10, 20],
        )
        if full
        else [{"dim": 16, "epochs": 2, "batch_size": 256, "negatives_from": "catalogue"}]
    )
    # LightFM: both losses, three widths, three learning rates, three item regularisations,
    # each trained once up to 50 epochs and scored at EPOCH_COUNTS (54 runs, up to 648 points)
    lightfm = (
        grid(
            loss=["warp", "bpr"],
            no_components=[32, 64, 128],
            learning_rate=[0.01, 0.05, 0.1],
            item_alpha=[0.0, 1e-6, 1e-5],
        )
        if full
        else [{"loss": "warp", "no_components": 8, "learning_rate": 0.05, "item_alpha": 0.0}]
    )
    out = [
        Method("popularity", fit_popularity, [{}]),
        Method(
            "item-kNN",
            fit_itemknn,
            grid(neighbours=[50, 100, 200], shrink=[0.0, 10.0]) if full else [{}],
        ),
        Method(
            "EASE",
            fit_ease,
            grid(l2=[50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]) if full else [{}],
        ),
        Method(
            "ALS (implicit)",
            fit_als,
            grid(factors=[32, 64], regularization=[0.01, 0.1], alpha=[1.0, 10.0], iterations=[20])
            if full
            else [{"factors": 8, "iterations": 2}],
        ),
        Method(
            "BPR (implicit)",
            fit_bpr,
            grid(factors=[32, 64], learning_rate=[0.01, 0.05], iterations=[100, 300])
            if full
            else [{"factors": 8, "iterations": 2}],
        ),
        *(
            Method(
                name,
                fit_of_sweep(lightfm_sweep(variant)),
                lightfm,
                warm=warm,
                cold=variant != "ids",
                sweep=lightfm_sweep(variant),
            )
            for name, variant, warm in (
                ("LightFM (ids)", "ids", True),
                ("LightFM (features only)", "features", True),
                ("LightFM (ids + features)", "ids+features", True),
            )
        ),
        Method(
            "content centroid (cosine)",
            fit_centroid,
            grid(idf=[False, True], centre=[False, True]) if full else [{"centre": True}],
            cold=True,
        ),
        Method(
            "content regression (per user)",
            fit_content_regression,
            grid(l2=[30.0, 100.0, 300.0, 1000.0], confidence=[3.0, 10.0, 30.0])
            if full
            else [{"l2": 100.0, "confidence": 10.0}],
            cold=True,
        ),
        Method(
            "feature popularity (ridge)",
            fit_feature_popularity,
            [{}],
            warm=False,
            cold=True,
            tuned=False,
        ),
        Method("embedrec mf", fit_recommender("mf"), ours),
        Method("embedrec deep", fit_recommender("deep"), ours, cold=True),
        Method("embedrec hybrid", fit_recommender("hybrid"), hybrid, cold=True),
        Method(
            " ".join([DEFAULTS_ROW, *(f"{k}={v}" for k, v in changed.items())]),
            fit_recommender_defaults("hybrid"),
            [dict(changed)] if full else [{"dim": 16, "epochs": 2, "batch_size": 256, **changed}],
            cold=True,
            tuned=False,
        ),
    ]
    for method in out:
        module = {"ALS": "implicit", "BPR": "implicit", "LightFM": "lightfm"}.get(
            method.name.split()[0]
        )
        if module:
            try:
                __import__(module)
            except ImportError:
                method.missing = f"{module} is not installed (see benchmarks/movielens.py)"
    return out


# ---------------------------------------------------------------------- running
def evaluate(
    ctx: Context,
    method: Method,
    params: dict[str, Any],
    train: pd.DataFrame,
    test: pd.DataFrame,
    candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit on ``train`` and rank for ``test`` users (training items excluded)."""
    torch.manual_seed(ctx.seed)
    started = time.perf_counter()
    score = method.fit(ctx, train, params)
    seconds = time.perf_counter() - started
    return {**metrics_of(ctx, score, train, test, candidates), "fit_seconds": seconds}


def metrics_of(
    ctx: Context,
    score: ScoreFn,
    train: pd.DataFrame,
    test: pd.DataFrame,
    candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    return evaluate_scorer(
        score,
        ctx.csr(train),
        ctx.csr(test),
        ks=(K,),
        candidates=candidates,
        standard_errors=True,
    )


def tune(
    ctx: Context,
    method: Method,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    log: Callable[[str], None],
    candidates: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best validation NDCG@10 (first one on ties), and every trial.

    A method with a ``sweep`` trains each configuration once and adds a trial (with its
    ``epochs``) at each epoch count, until PATIENCE epochs have passed since its best."""
    trials = []
    kind = "valid" if candidates is None else "cold valid"
    counts = SMOKE_EPOCH_COUNTS if ctx.smoke else EPOCH_COUNTS
    for params in method.grid:
        if method.sweep is None:
            result = evaluate(ctx, method, params, train, valid, candidates=candidates)
            trials.append({"params": params, **result})
            log(f"  {kind} {method.name:32s} {params}  ndcg@10 {result[SELECT]:.4f}")
            continue
        torch.manual_seed(ctx.seed)
        started = time.perf_counter()
        best, best_epochs, curve = -1.0, 0, []
        for epochs, score in method.sweep(ctx, train, params, counts):
            seconds = time.perf_counter() - started
            result = metrics_of(ctx, score, train, valid, candidates)
            trials.append({"params": {**params, "epochs": epochs}, **result, "seconds": seconds})
            curve.append(f"{epochs}:{result[SELECT]:.4f}")
            if result[SELECT] > best:
                best, best_epochs = result[SELECT], epochs
            if epochs - best_epochs >= PATIENCE:
                break
        log(f"  {kind} {method.name:32s} {params}  ndcg@10 {' '.join(curve) or 'diverged'}")
    best = max(range(len(trials)), key=lambda i: (trials[i][SELECT], -i))
    return trials[best]["params"], trials


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = (
        (lambda message: print(message, file=sys.stderr, flush=True))
        if args.verbose
        else (lambda message: None)
    )
    interactions, items, source = load_data(args)
    split = movielens_protocol_split(interactions)
    ctx = Context(
        users=pd.Index(np.sort(interactions["user_id"].unique())),
        items=pd.Index(items["listing_id"].to_numpy()),
        item_table=items.reset_index(drop=True),
        threads=args.threads,
        seed=args.seed,
        smoke=args.smoke,
    )
    cold_columns = ctx.items.get_indexer(split.cold_items)
    cold_valid_columns = ctx.items.get_indexer(split.cold_valid_items)
    wanted = set(args.only.split(",")) if args.only else None
    reused = reused_rows(args.reuse) if args.reuse else {}
    rows = []
    for method in methods(args.smoke, dict(parse_setting(s) for s in args.set)):
        if wanted and not any(w.lower() in method.name.lower() for w in wanted):
            if method.name in reused:
                rows.append(reused[method.name])
            continue
        row: dict[str, Any] = {"name": method.name, "warm": method.warm, "cold": method.cold}
        if method.missing:
            row["missing"] = method.missing
            log(f"skip {method.name}: {method.missing}")
            rows.append(row)
            continue
        started = time.perf_counter()
        row.update(tuned=method.tuned, grid_size=len(method.grid), sweep=bool(method.sweep))
        if method.warm and method.tuned:
            params, trials = tune(ctx, method, split.valid_train, split.valid, log)
        else:
            params, trials = method.grid[0], []
        row.update(params=params, trials=trials)
        cold_params = params
        if method.cold and method.tuned:
            # cold runs are tuned on cold items too: films drawn from the cold training split
            # by the same rule, ranked among themselves
            cold_params, cold_trials = tune(
                ctx, method, split.cold_valid_train, split.cold_valid, log, cold_valid_columns
            )
            row.update(cold_params=cold_params, cold_trials=cold_trials)
        if method.warm:
            row["test"] = evaluate(ctx, method, params, split.train, split.test)
            log(f"test  {method.name:32s} {params}  {fmt(row['test'])}")
        if method.cold:
            row["cold_test"] = evaluate(
                ctx, method, cold_params, split.cold_train, split.cold_test, candidates=cold_columns
            )
            log(f"cold  {method.name:32s} {cold_params}  {fmt(row['cold_test'])}")
        row["total_seconds"] = time.perf_counter() - started
        rows.append(row)
    results = {
        "source": source,
        "counts": counts(split, ctx),
        "rows": rows,
        "environment": environment(args),
        "command": "python benchmarks/movielens.py " + shlex.join(sys.argv[1:]),
    }
    if reused:
        results["reused_from"] = json.loads(args.reuse.read_text(encoding="utf-8"))["command"]
    return results


def reused_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier run's ``--json`` file by method name, each marked reused."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        return {row["name"]: {**row, "reused": True} for row in earlier["rows"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        message = f"--reuse {path}: not the --json file of an earlier run ({error})"
        raise SystemExit(message) from None


# ---------------------------------------------------------------------- film titles on/off
def text_on_off(args: argparse.Namespace, log: Callable[[str], None]) -> str:
    """``embedrec hybrid`` with the defaults of ``embedrec train``, with and without the films'
    titles as free text, warm and cold splits, median over ``--seeds``; the other features
    (genres, year) stay."""
    interactions, items = load_movielens_100k(args.cache_dir)
    item = read_atomic(dataset_dir(args.cache_dir) / "ml-100k.item")
    title = pd.Series(item["movie_title"].to_numpy(), index=item["item_id"].astype(np.int64))
    items = items.assign(title=title.reindex(items["listing_id"]).to_numpy())
    split = movielens_protocol_split(interactions)
    users = pd.Index(np.sort(interactions["user_id"].unique()))
    index = pd.Index(items["listing_id"].to_numpy())
    cold = index.get_indexer(split.cold_items)
    # a title of two or three words would be inferred as a category: set its type
    with_text = {"schema": SchemaConfig(types={"title": "text"})}
    method = Method(DEFAULTS_ROW, fit_recommender_defaults("hybrid"), [])
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for seed in seeds:
        for text, results in runs.items():
            table = items if text == "on" else items.drop(columns="title")
            ctx = Context(users, index, table.reset_index(drop=True), args.threads, seed)
            params = with_text if text == "on" else {}
            warm = evaluate(ctx, method, params, split.train, split.test)
            cold_run = evaluate(ctx, method, params, split.cold_train, split.cold_test, cold)
            results.append({"warm": warm, "cold": cold_run})
            log(f"text {text} seed {seed}  warm {fmt(warm)}  cold {fmt(cold_run)}")
    lines = [
        "## Film titles as text features, on and off",
        "",
        "`embedrec hybrid` with the defaults that `embedrec train` uses (`Recommender()`, its "
        "own early stopping) on the protocol's warm and cold test splits, once with each "
        "film's title as free text (hashed words and character trigrams) beside genres and "
        "year, once without it. Median over seeds "
        f"{', '.join(map(str, seeds))} (training only; the split is fixed). Cold: ranked among "
        "the 201 cold films, which the model knows by their features alone.",
        "",
        "| titles | cold Recall@10 | cold NDCG@10 | warm Recall@10 | warm NDCG@10 | "
        "cold Recall@10 per seed |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for text, results in runs.items():

        def median(part: str, key: str, results: list = results) -> str:
            return f"{np.median([r[part][key] for r in results]):.4f}"

        per_seed = " / ".join(f"{r['cold'][f'recall@{K}']:.4f}" for r in results)
        lines.append(
            f"| {text} | {median('cold', f'recall@{K}')} | {median('cold', SELECT)} | "
            f"{median('warm', f'recall@{K}')} | {median('warm', SELECT)} | {per_seed} |"
        )
    env = environment(args)
    lines += [
        "",
        f"Produced by `python benchmarks/movielens.py {' '.join(sys.argv[1:])}` on "
        f"{env['machine']}; {env['os']}.",
    ]
    return "\n".join(lines)


def load_data(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """MovieLens-100k; in smoke mode a 50-user subset, or synthetic data when not cached."""
    if not args.smoke:
        interactions, items = load_movielens_100k(args.cache_dir)
        return interactions, items, "MovieLens-100k"
    if is_cached(args.cache_dir):
        interactions, items = load_movielens_100k(args.cache_dir, download=False)
        users = np.sort(interactions["user_id"].unique())[:50]
        return interactions[interactions["user_id"].isin(users)], items, "MovieLens-100k, 50 users"
    return (*synthetic(), "synthetic stand-in (MovieLens not cached)")


def synthetic(n_users: int = 60, n_items: int = 80, seed: int = 0):
    """A MovieLens-shaped stand-in: users prefer one genre, ratings 1-5, genres and years."""
    rng = np.random.default_rng(seed)
    genres = np.array(["Drama", "Comedy", "Action", "Horror"])
    item_genre = rng.integers(0, len(genres), n_items)
    items = pd.DataFrame(
        {
            "listing_id": np.arange(1, n_items + 1),
            "genres": [
                g if rng.random() < 0.5 else f"{g}|{genres[(i + 1) % len(genres)]}"
                for i, g in zip(item_genre, genres[item_genre], strict=True)
            ],
            "year": rng.integers(1950, 1999, n_items).astype(np.float64),
        }
    )
    user_genre = rng.integers(0, len(genres), n_users)
    users = np.repeat(np.arange(1, n_users + 1), 25)
    liked = rng.random(len(users)) < 0.7
    pool = [np.flatnonzero(item_genre == g) for g in range(len(genres))]
    chosen = np.where(
        liked,
        [rng.choice(pool[user_genre[u - 1]]) for u in users],
        rng.integers(0, n_items, len(users)),
    )
    interactions = pd.DataFrame(
        {
            "user_id": users,
            "listing_id": chosen + 1,
            "timestamp": 880_000_000 + rng.integers(0, 10_000_000, len(users)),
            "rating": np.where(
                liked, rng.integers(4, 6, len(users)), rng.integers(1, 4, len(users))
            ).astype(np.float64),
        }
    ).drop_duplicates(["user_id", "listing_id"])
    return interactions.reset_index(drop=True), items


def counts(split: ProtocolSplit, ctx: Context) -> dict[str, int]:
    def size(frame: pd.DataFrame) -> str:
        return f"{len(frame):,} positives, {frame['user_id'].nunique():,} users"

    return {
        "users": len(ctx.users),
        "items": len(ctx.items),
        "train": size(split.train),
        "valid_train": size(split.valid_train),
        "valid": size(split.valid),
        "test": size(split.test),
        "cold_items": len(split.cold_items),
        "cold_train": size(split.cold_train),
        "cold_test": size(split.cold_test),
        "cold_valid_items": len(split.cold_valid_items),
        "cold_valid_train": size(split.cold_valid_train),
        "cold_valid": size(split.cold_valid),
    }


def environment(args: argparse.Namespace) -> dict[str, str]:
    versions = {}
    for package in ("embedrec", "torch", "numpy", "scipy", "pandas", "implicit", "lightfm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        **versions,
        "machine": f"{cpu}, {os.cpu_count()} cores visible, {args.threads} thread(s) used",
        "os": platform.platform(),
    }


# ---------------------------------------------------------------------- report
def fmt(metrics: dict[str, Any]) -> str:
    return "  ".join(
        f"{name} {metrics[f'{name}@{K}']:.4f}" for name in ("recall", "ndcg", "hitrate", "coverage")
    )


def _with_error(metrics: dict[str, Any], name: str) -> str:
    return f"{metrics[f'{name}@{K}']:.4f} ± {metrics[f'{name}@{K}_se']:.4f}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(none)"


def ratios(results: dict[str, Any]) -> list[str]:
    """``embedrec hybrid (defaults)`` (and the tuned ``embedrec hybrid``) over the best tuned
    peer on the cold split and over EASE on the warm split, with the goals met or not."""
    rows = {row["name"]: row for row in results["rows"]}
    peers = [row for row in results["rows"] if not row["name"].startswith("embedrec")]
    lines = ["### Ours against the peers", ""]
    checks = [
        ("cold_test", "cold", COLD_GOAL, [r for r in peers if "cold_test" in r and r["tuned"]]),
        ("test", "warm", WARM_GOAL, [rows["EASE"]] if "test" in rows.get("EASE", {}) else []),
    ]
    table = [
        f"| split | ours | against | Recall@{K} ratio | NDCG@{K} ratio | goal | met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for key, split, goal, against in checks:
        if not against:
            continue
        best = {
            metric: max(against, key=lambda r, m=metric: r[key][f"{m}@{K}"])
            for metric in ("recall", "ndcg")
        }
        for name in (DEFAULTS_ROW, "embedrec hybrid"):
            if key not in rows.get(name, {}):
                continue
            ratio = {m: rows[name][key][f"{m}@{K}"] / best[m][key][f"{m}@{K}"] for m in best}
            peer = " / ".join(dict.fromkeys(best[m]["name"] for m in best))
            met = all(r >= goal for r in ratio.values())
            goal_text = f">= {goal:.2f}x" if name == DEFAULTS_ROW else "(tuned, for reference)"
            table.append(
                f"| {split} | {name} | {peer} | {ratio['recall']:.3f}x | {ratio['ndcg']:.3f}x | "
                f"{goal_text} | {('yes' if met else '**no**') if name == DEFAULTS_ROW else ''} |"
            )
    if len(table) == 2:
        return []
    return [
        *lines,
        *table,
        "",
        f"Cold: against the best tuned peer of the cold table on each metric (the row named "
        f"first has the best Recall@{K}, the second, if any, the best NDCG@{K}); warm: against "
        f"EASE. The goal is met when both ratios reach it.",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """The report's tables, hyper-parameters and environment as markdown."""
    header = (
        f"| method | Recall@{K} | NDCG@{K} | HitRate@{K} | Coverage@{K} | fit s |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |"
    )

    def name(row: dict[str, Any]) -> str:
        return row["name"] + (" *" if row.get("reused") else "")

    def table(key: str, flag: str) -> str:
        lines = [header]
        for row in results["rows"]:
            if row.get("missing") and row[flag]:
                lines.append(f"| {name(row)} | not installed | | | | |")
            elif key in row:
                m = row[key]
                lines.append(
                    f"| {name(row)} | {_with_error(m, 'recall')} | {_with_error(m, 'ndcg')} | "
                    f"{m[f'hitrate@{K}']:.4f} | {m[f'coverage@{K}']:.4f} | "
                    f"{m['fit_seconds']:.1f} |"
                )
        return "\n".join(lines)

    c = results["counts"]

    def tried(row: dict[str, Any], key: str) -> str:
        n = len(row[key])
        if not row.get("sweep"):
            return str(n)
        return f"{n} ({row['grid_size']} configs x epochs)"

    tuned = [
        f"| {name(row)} | {tried(row, 'trials')} | {_params(row['params'])} | "
        f"{max(t[SELECT] for t in row['trials']):.4f} |"
        for row in results["rows"]
        if row.get("trials")
    ]
    cold_tuned = [
        f"| {name(row)} | {tried(row, 'cold_trials')} | {_params(row['cold_params'])} | "
        f"{max(t[SELECT] for t in row['cold_trials']):.4f} |"
        for row in results["rows"]
        if row.get("cold_trials")
    ]
    untuned = [
        f"| {name(row)} | 0 | {_params(row['params'])} | |"
        for row in results["rows"]
        if row.get("tuned") is False
    ]
    env = results["environment"]
    return "\n".join(
        [
            f"Data: {results['source']}; {c['users']:,} users, {c['items']:,} films. "
            f"Warm: train {c['train']}; test {c['test']} (validation: {c['valid_train']} to "
            f"fit, {c['valid']} to score). Cold: {c['cold_items']} cold films; train "
            f"{c['cold_train']}; test {c['cold_test']} (validation: {c['cold_valid_items']} "
            f"cold films of that train, {c['cold_valid_train']} to fit, {c['cold_valid']} to "
            "score).",
            "",
            "### Warm split (full catalogue, training items excluded)",
            "",
            table("test", "warm"),
            "",
            f"### Cold-start split (ranked among the {c['cold_items']} cold films only)",
            "",
            table("cold_test", "cold"),
            "",
            "Recall and NDCG: mean over test users ± its standard error. fit s: seconds to fit"
            " on the (cold) training split with the chosen configuration, scoring excluded.",
            "",
            "### Chosen hyper-parameters (best validation NDCG@10)",
            "",
            "| method | configs tried | chosen | validation NDCG@10 |",
            "| --- | ---: | --- | ---: |",
            *tuned,
            *untuned,
            "",
            "Cold runs, tuned on the cold validation split (ranked among its cold films):",
            "",
            "| method | configs tried | chosen | cold validation NDCG@10 |",
            "| --- | ---: | --- | ---: |",
            *cold_tuned,
            "",
            "Not tuned: "
            + (
                "`(defaults)`: `Recommender()`'s and `embedrec train`'s defaults (no grid, no "
                "validation run; only device=cpu and the seed are set), on both splits; "
                if any(row["name"] == DEFAULTS_ROW for row in results["rows"])
                else ""
            )
            + "feature popularity has no parameters. LightFM's configs x epochs: each of its "
            f"configurations is trained once, scored on validation after "
            f"{', '.join(map(str, EPOCH_COUNTS))} epochs, and stopped once {PATIENCE} epochs have "
            "passed without a gain (a run that diverges stops there); every (configuration, "
            "epochs) pair scored is a config tried.",
            "",
            *ratios(results),
            "### Environment",
            "",
            f"- command: `{results['command'].strip()}`",
            *(
                [
                    "- rows not run by that command (marked *) are those of the earlier run "
                    f"`{results['reused_from'].strip()}`, on the same data and split"
                ]
                if results.get("reused_from")
                else []
            ),
            f"- machine: {env['machine']}; {env['os']}",
            "- versions: "
            + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("machine", "os")),
        ]
    )


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as (key, value): the value as JSON (0.5, true, "x"), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run in seconds (no download)")
    parser.add_argument("--out", type=Path, help="markdown file to write the results into")
    parser.add_argument("--json", type=Path, help="also write every trial as JSON here")
    parser.add_argument("--cache-dir", help="data cache (default $EMBEDREC_CACHE or ~/.cache)")
    parser.add_argument("--only", help="comma-separated substrings of method names to run")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="with --only: the other methods' rows from this --json file of an earlier run",
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for every method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", dest="verbose", action="store_false")
    parser.add_argument(
        "--text-on-off",
        action="store_true",
        help="only hybrid with and without film titles (writes between the text markers)",
    )
    parser.add_argument("--seeds", default="0", help="seeds of --text-on-off, comma-separated")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the defaults row changed (a lever), e.g. --set id_dropout=0.5; "
        "repeatable; the row is named after it and not compared with the goal",
    )
    args = parser.parse_args(argv)
    if args.text_on_off:
        torch.set_num_threads(args.threads)
        with threadpool_limits(args.threads):
            report = text_on_off(args, lambda message: print(message, file=sys.stderr))
        print(report)
        if args.out:
            write_generated(args.out, report, TEXT_START, TEXT_END)
        return 0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="implicit")
    with threadpool_limits(args.threads):
        results = run(args)
    report = markdown(results)
    print(report)
    if args.out:
        write_generated(args.out, report, RESULTS_START, RESULTS_END)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
