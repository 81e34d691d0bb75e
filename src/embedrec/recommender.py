"""The facade users hold: fit, similar, recommend, save and load."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from embedrec import __version__
from embedrec.bundle import BundleError, json_text, read_manifest, write_bundle
from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap
from embedrec.data.io import DEFAULT_EVENT_WEIGHTS, load_interactions, load_listings
from embedrec.data.prepare import Interactions, prepare, recent_listings, time_holdout
from embedrec.data.schema import FeatureSpec, SchemaConfig, infer_schema
from embedrec.evaluation.report import warm_cold_report
from embedrec.features.pipeline import FeaturePipeline
from embedrec.index.catalogue import Catalogue, plain
from embedrec.index.exact import top_k_of_scores
from embedrec.index.filters import Filter, allowed_mask, filters_from_mapping, parse_filter
from embedrec.models.base import RecModel
from embedrec.models.deep import DeepHybrid
from embedrec.models.hybrid import HybridTwoTower
from embedrec.models.mf import MatrixFactorization
from embedrec.training.trainer import (
    TrainConfig,
    TrainResult,
    check_workers,
    resolve_device,
    train,
)

MODELS: dict[str, type[RecModel]] = {
    "mf": MatrixFactorization,
    "deep": DeepHybrid,
    "hybrid": HybridTwoTower,
}
FEATURE_MODELS = ("deep", "hybrid")
# parameters that only some models read: set for another model, they are an error, not ignored
MODEL_ONLY_PARAMS = {
    "hidden": FEATURE_MODELS,
    "feature_dim": FEATURE_MODELS,
    "history": ("hybrid",),
    "id_dropout": ("hybrid",),
    "user_ids": ("hybrid",),
    "history_gradient": ("hybrid",),
}
Source = str | Path | pd.DataFrame
FilterSpec = Sequence[str | Filter] | Mapping[str, Any] | None


@dataclass
class EvaluationTask:
    """What ``evaluate`` ranks: users (model rows), their training listings (``seen``) and
    held-out ones (``test``) as users x catalogue-row matrices, and which rows are cold."""

    catalogue: Catalogue
    users: np.ndarray
    seen: sp.csr_matrix
    test: sp.csr_matrix
    cold: np.ndarray
    counts: dict[str, int]


class Recommender:
    """Learns listing and user embeddings from interactions plus listing features.

    Parameters follow scikit-learn conventions: set in ``__init__``, learned state (ending in
    an underscore) set by ``fit``, which returns self.
    """

    def __init__(
        self,
        model: str = "hybrid",
        dim: int = 32,
        epochs: int = 30,
        batch_size: int | None = None,
        lr: float = 0.05,
        loss: str = "softmax",
        logq_scale: float = 1.0,
        temperature: float = 0.1,
        negatives_from: str = "batch",
        negatives: int = 512,
        hidden: int = 128,
        feature_dim: int = 16,
        history: int = 20,
        id_dropout: float = 0.3,
        user_ids: bool = True,
        history_gradient: bool = False,
        precision: str = "auto",
        workers: int = 1,
        patience: int = 3,
        validation_fraction: float = 0.1,
        validation_users: int = 3000,
        refit: bool = True,
        min_user_interactions: int = 1,
        min_listing_interactions: int = 1,
        event_weights: Mapping[str, float] | None = None,
        schema: SchemaConfig | None = None,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
        log: Callable[[str], None] | None = print,
    ) -> None:
        self.model = model
        self.dim = dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.loss = loss
        self.logq_scale = logq_scale
        self.temperature = temperature
        self.negatives_from = negatives_from
        self.negatives = negatives
        self.hidden = hidden
        self.feature_dim = feature_dim
        self.history = history
        self.id_dropout = id_dropout
        self.user_ids = user_ids
        self.history_gradient = history_gradient
        self.precision = precision
        self.workers = workers
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.validation_users = validation_users
        self.refit = refit
        self.min_user_interactions = min_user_interactions
        self.min_listing_interactions = min_listing_interactions
        self.event_weights = dict(event_weights or DEFAULT_EVENT_WEIGHTS)
        self.schema = schema
        self.seed = seed
        self.device = device
        self.progress = progress
        self.log = log

    # ------------------------------------------------------------------ fitting
    def fit(self, interactions: Source, listings: Source) -> Recommender:
        """Train on ``interactions`` (user_id, listing_id, timestamp[, event, weight]) and
        ``listings`` (listing_id plus features). Returns self."""
        self.check_params()
        log = self.log or (lambda _message: None)
        started = time.perf_counter()
        steps = tqdm(total=4, desc="loading", unit="step", disable=not self.progress, leave=False)
        listing_table = load_listings(listings)
        steps.update()
        events = load_interactions(interactions, self.event_weights)
        steps.update()
        self.feature_specs_ = infer_schema(
            listing_table, self.schema, listing_table.attrs.get("source")
        )
        data = prepare(
            events, listing_table, self.min_user_interactions, self.min_listing_interactions
        )
        steps.update()
        self.n_trained_listings_ = len(data.listings)
        # listings without interactions get rows too: feature models can still embed them
        data.listings = data.listings.extend(listing_table["listing_id"])
        self.listing_table_ = _in_order(listing_table, data.listings)
        self.pipeline_ = None
        if self.model in FEATURE_MODELS:
            if not self.feature_specs_:
                raise DataError(
                    f"model {self.model!r} needs listing features, but the listings table "
                    "has none besides listing_id",
                    file=listing_table.attrs.get("source"),
                )
            self.pipeline_ = FeaturePipeline(self.feature_specs_).fit(listing_table)
        steps.update()
        steps.close()
        config = self._train_config(len(data))
        result = TrainResult()
        if self.validation_fraction > 0:
            fit_part, held_out = time_holdout(data, self.validation_fraction)
            log(
                f"training on {len(fit_part):,} pairs, validating on the last "
                f"{len(held_out):,} (time hold-out)"
            )
            model = self._build_model(fit_part)
            result = train(model, fit_part, config, held_out, log=log, progress=self.progress)
            if self.refit:
                log(f"refit on all {len(data):,} pairs for {result.best_epoch} epochs")
                model = self._build_model(data)
                train(
                    model, data, config, log=log, progress=self.progress, epochs=result.best_epoch
                )
        else:
            model = self._build_model(data)
            result = train(model, data, config, log=log, progress=self.progress)
        self.model_ = model.cpu().eval()
        self.users_ = data.users
        self.listings_ = data.listings
        self.seen_ = data.matrix()
        self.report_ = {
            **data.report,
            "best_epoch": result.best_epoch,
            "best_val_recall@10": result.best_score,
            "history": result.history,
            "train_seconds": round(time.perf_counter() - started, 2),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        skipped = {k: v for k, v in data.report.items() if k.startswith("events_skipped") and v}
        if skipped:
            log(
                "skipped: "
                + ", ".join(
                    f"{v:,} {k.removeprefix('events_skipped_')}" for k, v in skipped.items()
                )
            )
        self._catalogue = None
        return self

    def check_params(self) -> None:
        """Raise ValueError naming the first bad parameter; ``fit`` calls it before any work."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        defaults = inspect.signature(Recommender).parameters
        for name, models in MODEL_ONLY_PARAMS.items():
            value = getattr(self, name)
            if self.model not in models and value != defaults[name].default:
                needs = " or ".join(repr(m) for m in models)
                raise ValueError(f"{name}={value!r} needs model {needs}")
        for name in ("hidden", "feature_dim", "history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        dropout = self.id_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
            raise ValueError(f"id_dropout must be a number in [0, 1), got {dropout!r}")
        self._train_config(1)  # TrainConfig checks the training settings
        check_workers(self.workers, resolve_device(self.device))

    def _train_config(self, n_pairs: int) -> TrainConfig:
        # unset: at least ~64 steps an epoch on small data, at most 4096 pairs a step
        batch_size = self.batch_size or min(4096, max(256, n_pairs // 64))
        return TrainConfig(
            epochs=self.epochs,
            batch_size=batch_size,
            lr=self.lr,
            loss=self.loss,
            logq_scale=self.logq_scale,
            temperature=self.temperature,
            negatives_from=self.negatives_from,
            negatives=self.negatives,
            precision=self.precision,
            workers=self.workers,
            patience=self.patience,
            validation_users=self.validation_users,
            seed=self.seed,
            device=self.device,
        )

    def _build_model(self, data: Interactions) -> RecModel:
        """A fresh model whose inputs (features, histories) come from ``data`` only."""
        torch.manual_seed(self.seed)
        if self.model == "mf":
            return MatrixFactorization(len(data.users), len(data.listings), dim=self.dim)
        options: dict[str, Any] = {"feature_dim": self.feature_dim, "hidden": self.hidden}
        if self.model == "hybrid":
            options.update(
                history=self.history,
                id_dropout=self.id_dropout,
                user_ids=self.user_ids,
                history_gradient=self.history_gradient,
            )
        model = MODELS[self.model](
            len(data.users),
            len(data.listings),
            self.n_trained_listings_,
            self.pipeline_.to_dict(),
            dim=self.dim,
            **options,
        )
        self._attach_inputs(model, data)
        return model

    def _attach_inputs(
        self,
        model: RecModel,
        data: Interactions | None = None,
        histories: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if self.pipeline_ is None:
            return
        model.set_catalogue(self.pipeline_.transform(self.listing_table_))
        if isinstance(model, HybridTwoTower):
            rows, lengths = histories or recent_listings(data, model.config["history"])
            model.set_histories(torch.as_tensor(rows), torch.as_tensor(lengths))

    # ------------------------------------------------------------------ catalogue
    def catalogue(self, listings: Source | None = None) -> tuple[Catalogue, list]:
        """The searchable catalogue: the training listings, or ``listings`` when given.

        Returns the catalogue and the ids in ``listings`` the model cannot embed.
        """
        self._check_fitted()
        if listings is None:
            if self._catalogue is None:
                self._catalogue, _ = self._build_catalogue(self.listing_table_)
            return self._catalogue, []
        return self._build_catalogue(load_listings(listings))

    def _build_catalogue(self, table: pd.DataFrame) -> tuple[Catalogue, list]:
        vectors, rows, known = self.embed_listings(table)
        unknown = table.loc[~known, "listing_id"].tolist()
        catalogue = Catalogue(table[known], vectors, rows, normalized=bool(self.model_.normalized))
        return catalogue, unknown

    def embed_listings(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectors of the listings in ``table`` that the model can embed.

        Returns (vectors of the embeddable rows, their model rows (-1: new), a bool mask of
        embeddable rows). Feature models embed every row; ``mf`` only trained listings.
        """
        self._check_fitted()
        rows = self.listings_.indices(table["listing_id"])
        if self.model == "mf":
            known = (rows >= 0) & (rows < self.n_trained_listings_)
            with torch.no_grad():
                vectors = self.model_.listing_vectors(torch.as_tensor(rows[known])).numpy()
            return vectors, rows[known], known
        known = np.ones(len(table), dtype=bool)
        return self._embed_table(table, rows), rows, known

    def _embed_table(self, table: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Vectors from features (and trained ids where ``rows`` has them), in batches."""
        batch = 65536
        if len(table) > batch:  # fail before the first batch on missing feature columns
            self.pipeline_.transform(table.iloc[:1])
        id_rows = torch.as_tensor(np.where(rows < self.n_trained_listings_, rows, -1))
        out = []
        with torch.no_grad():
            for start in range(0, len(table), batch):
                part = table.iloc[start : start + batch]
                features = self.pipeline_.transform(part)
                ids = id_rows[start : start + batch]
                if isinstance(self.model_, HybridTwoTower):
                    out.append(self.model_.embed_features(features, ids).numpy())
                else:
                    out.append(self._deep_listing_vectors(features, ids))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _deep_listing_vectors(self, features: dict, ids: torch.Tensor) -> np.ndarray:
        model = self.model_
        both = torch.cat([model.listing_ids(ids), model.features(features)], dim=1)
        return torch.nn.functional.normalize(both, dim=1).numpy()

    def embed(self, listings: Source) -> pd.DataFrame:
        """Vectors of any listings: trained ones by id and features, new ones by features.

        Returns a frame with ``listing_id`` and ``embedding`` (a float32 array per row).
        """
        catalogue, unknown = self.catalogue(listings)
        if unknown:
            raise DataError(
                f"model {self.model!r} cannot embed listings it was not trained on "
                f"({len(unknown)}, e.g. {unknown[0]!r}); use a feature model "
                "(hybrid or deep)"
            )
        return pd.DataFrame(
            {
                "listing_id": catalogue.table["listing_id"].to_numpy(),
                "embedding": list(catalogue.vectors),
            }
        )

    def warm_up(self, catalogue: Catalogue) -> None:
        """Build now what the first queries on ``catalogue`` would otherwise build.

        The vector index, the map from model rows to catalogue rows and, for ``hybrid``, the
        listing vectors its user tower pools: at 1M listings several seconds, which a server
        should spend before it answers, not inside its first requests.
        """
        self._check_fitted()
        for cosine in (True, False):
            catalogue.index(cosine)
        catalogue.rows_of_model_rows(np.zeros(0, dtype=np.int64))
        if isinstance(self.model_, HybridTwoTower):
            self.model_.all_listing_vectors()

    # ------------------------------------------------------------------ queries
    def similar(
        self,
        listing_ids: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
        catalogue: Catalogue | None = None,
    ) -> list[dict[str, Any]]:
        """Top-``k`` listings by cosine similarity to each query listing.

        One dict per query: ``{"query", "results": [{"listing_id", "score", fields...}]}``, or
        ``{"query", "error"}`` when the listing is unknown. ``filters`` are expressions
        (``"price<=25000"``), Filter objects or an API-style mapping.
        """
        catalogue = catalogue if catalogue is not None else self.catalogue(listings)[0]
        filters = as_filters(filters)
        listing_ids = list(listing_ids)
        out: list[dict[str, Any]] = [{"query": plain(q)} for q in listing_ids]
        rows = catalogue.rows_of(listing_ids)
        model_rows = self.listings_.indices(listing_ids) if listing_ids else rows
        queries, positions = [], []
        for position, (row, model_row) in enumerate(zip(rows, model_rows, strict=True)):
            if row >= 0:
                queries.append(catalogue.unit_vectors[row])
            elif 0 <= model_row < self._embeddable_rows():
                vectors, _, _ = self.embed_listings(self.listing_table_.iloc[[model_row]])
                queries.append(vectors[0])
            else:
                out[position]["error"] = f"unknown listing_id {listing_ids[position]!r}"
                continue
            positions.append(position)
        if positions:
            exclude = [rows[p : p + 1][rows[p : p + 1] >= 0] for p in positions]
            found, scores = catalogue.search(np.stack(queries), k, True, filters, exclude)
            for position, hits, hit_scores in zip(positions, found, scores, strict=True):
                out[position]["results"] = _results(catalogue, hits, hit_scores)
        return out

    def _embeddable_rows(self) -> int:
        return self.n_trained_listings_ if self.model == "mf" else len(self.listings_)

    def recommend(
        self,
        user_ids: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
        catalogue: Catalogue | None = None,
    ) -> list[dict[str, Any]]:
        """Top-``k`` listings by score for each known user, excluding listings they have seen."""
        catalogue = catalogue if catalogue is not None else self.catalogue(listings)[0]
        filters = as_filters(filters)
        user_ids = list(user_ids)
        user_rows = self.users_.indices(user_ids) if user_ids else np.zeros(0, dtype=np.int64)
        out: list[dict[str, Any]] = [{"query": plain(u)} for u in user_ids]
        for position in np.flatnonzero(user_rows < 0):
            out[position]["error"] = f"unknown user_id {user_ids[position]!r}"
        known = np.flatnonzero(user_rows >= 0)
        if len(known):
            found, scores = self._rank_users(catalogue, user_rows[known], k, filters)
            for position, hits, hit_scores in zip(known, found, scores, strict=True):
                out[position]["results"] = _results(catalogue, hits, hit_scores)
        return out

    def _rank_users(
        self,
        catalogue: Catalogue,
        user_rows: np.ndarray,
        k: int,
        filters: list[Filter] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        seen = self._seen_in(catalogue, user_rows)
        with torch.no_grad():
            users = torch.as_tensor(user_rows)
            if self.model_.factorized:
                queries = self.model_.user_vectors(users).numpy()
                exclude = [
                    seen.indices[seen.indptr[i] : seen.indptr[i + 1]] for i in range(len(user_rows))
                ]
                return catalogue.search(queries, k, False, filters, exclude)
            if (catalogue.model_rows < 0).any():
                raise DataError(
                    "model 'deep' scores only listings it was trained with; "
                    "use model 'hybrid' for new listings"
                )
            scores = self.model_.score_matrix(users, torch.as_tensor(catalogue.model_rows))
        scores = scores.numpy()
        blocked = ~catalogue.live
        if filters:
            blocked |= ~allowed_mask(filters, catalogue.table)
        scores[:, blocked] = -np.inf
        return top_k_of_scores(scores, k, seen)

    def recommend_session(
        self,
        session: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
        catalogue: Catalogue | None = None,
    ) -> dict[str, Any]:
        """Recommendations for an anonymous visitor from the listings viewed in a session.

        Session listings may be new: they are looked up in the catalogue (``listings``) and
        embedded from their features. Returns ``{"query", "results"}`` and, when some session
        listings are unknown, ``"unknown"``; ``"error"`` when none is known.
        """
        catalogue = catalogue if catalogue is not None else self.catalogue(listings)[0]
        session = list(session)
        rows = catalogue.rows_of(session)
        out: dict[str, Any] = {"query": [plain(s) for s in session]}
        unknown = [s for s, r in zip(session, rows, strict=True) if r < 0]
        if unknown:
            out["unknown"] = [plain(u) for u in unknown]
        rows = rows[rows >= 0]
        if len(rows) == 0:
            out["error"] = "none of the session's listings is known"
            return out
        pooled = catalogue.vectors[rows].mean(axis=0, keepdims=True)
        if isinstance(self.model_, HybridTwoTower):
            with torch.no_grad():
                query = self.model_.user_from(torch.as_tensor(pooled)).numpy()
            cosine = False
        else:
            query, cosine = pooled, True
        found, scores = catalogue.search(query, k, cosine, as_filters(filters), [rows])
        out["results"] = _results(catalogue, found[0], scores[0])
        return out

    def evaluate(
        self, interactions: Source, listings: Source | None = None, ks: Sequence[int] = (10, 20)
    ) -> dict[str, Any]:
        """Ranking metrics on held-out ``interactions`` (later than training).

        Each known user's ranking of the catalogue (``listings``, or the training listings)
        excludes what they saw in training. Reported ``overall``, for ``warm`` listings and for
        ``cold`` ones (never seen in training, embedded from features), with ``counts`` of what
        was evaluated and skipped. Each metric averaged over users comes with its standard
        error (``"recall@10_se"``).
        """
        task = self.evaluation_task(interactions, listings)
        report = warm_cold_report(self.scorer(task), task.seen, task.test, task.cold, ks)
        report["counts"] = task.counts
        return report

    def evaluation_task(
        self, interactions: Source, listings: Source | None = None
    ) -> EvaluationTask:
        """Held-out interactions as matrices over (known users) x (catalogue rows), so that
        any scorer (ours or a baseline) is evaluated on exactly the same task."""
        catalogue, _ = self.catalogue(listings)
        events = load_interactions(interactions, self.event_weights)
        user_rows = self.users_.indices(events["user_id"])
        rows = catalogue.rows_of(events["listing_id"].tolist())
        known = (user_rows >= 0) & (rows >= 0)
        users, local = np.unique(user_rows[known], return_inverse=True)
        test = sp.csr_matrix(
            (np.ones(int(known.sum()), dtype=np.float32), (local, rows[known])),
            shape=(len(users), catalogue.n_rows),
        )
        test.data[:] = 1.0
        cold = (catalogue.model_rows < 0) | (catalogue.model_rows >= self.n_trained_listings_)
        counts = {
            "events": len(events),
            "events_skipped_unknown_user": int((user_rows < 0).sum()),
            "events_skipped_not_in_catalogue": int((rows < 0).sum()),
            "users": len(users),
            "catalogue": len(catalogue),
            "cold_listings": int(cold.sum()),
        }
        seen = self._seen_in(catalogue, users)
        return EvaluationTask(catalogue, users, seen, test, cold, counts)

    def scorer(self, task: EvaluationTask) -> Callable[[np.ndarray], np.ndarray]:
        """Scores of this model for rows of ``task.users``, over the task's catalogue."""
        catalogue = task.catalogue

        def score(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                user_batch = torch.as_tensor(task.users[batch])
                if self.model_.factorized:
                    return self.model_.user_vectors(user_batch).numpy() @ catalogue.vectors.T
                # the deep model scores rows of its own table; others cannot be ranked
                scores = np.full((len(batch), catalogue.n_rows), -np.inf, dtype=np.float32)
                scorable = catalogue.model_rows >= 0
                scores[:, scorable] = self.model_.score_matrix(
                    user_batch, torch.as_tensor(catalogue.model_rows[scorable])
                ).numpy()
                return scores

        return score

    def _seen_in(self, catalogue: Catalogue, user_rows: np.ndarray) -> sp.csr_matrix:
        """Users x catalogue rows: the listings each user interacted with."""
        seen = self.seen_[user_rows].tocoo()
        columns = catalogue.rows_of_model_rows(seen.col)
        keep = columns >= 0
        return sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.float32), (seen.row[keep], columns[keep])),
            shape=(len(user_rows), catalogue.n_rows),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the model directory (safetensors, JSON and Parquet; atomic)."""
        self._check_fitted()
        seen = self.seen_.tocsr()
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model_.state_dict().items()}
        tensors["seen.indptr"] = torch.as_tensor(seen.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.as_tensor(seen.indices.astype(np.int64))
        if isinstance(self.model_, HybridTwoTower):
            tensors["histories.rows"] = self.model_.histories.contiguous()
            tensors["histories.lengths"] = self.model_.history_lengths.contiguous()
        config = {
            "model": self.model,
            "model_config": self.model_.config,
            "params": self.get_params(),
            "feature_specs": [s.to_dict() for s in self.feature_specs_],
            "n_trained_listings": self.n_trained_listings_,
            "pipeline": self.pipeline_.to_dict() if self.pipeline_ else None,
            "report": self.report_,
        }
        writers = {
            "weights.safetensors": lambda p: save_file(tensors, str(p)),
            "config.json": lambda p: p.write_text(json_text(config)),
            "users.parquet": self.users_.save,
            "listing_ids.parquet": self.listings_.save,
            "listings.parquet": lambda p: pq.write_table(
                pa.Table.from_pandas(self.listing_table_, preserve_index=False), p
            ),
        }
        meta = {
            "embedrec_version": __version__,
            "model": self.model,
            "trained_at": self.report_.get("trained_at"),
        }
        return write_bundle(directory, writers, meta)

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a model directory written by ``save``, checking format and checksums."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
            tensors = load_file(str(directory / "weights.safetensors"))
            params = config["params"]
            recommender = cls(**{k: v for k, v in params.items() if k != "schema"})
            model_class = MODELS[config["model"]]
            model = model_class(**config["model_config"])
            model.load_state_dict(
                {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
            )
            recommender.users_ = IdMap.load(directory / "users.parquet")
            recommender.listings_ = IdMap.load(directory / "listing_ids.parquet")
            indptr = tensors["seen.indptr"].numpy()
            indices = tensors["seen.indices"].numpy()
            recommender.seen_ = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, indptr),
                shape=(len(recommender.users_), len(recommender.listings_)),
            )
            recommender.listing_table_ = pq.read_table(directory / "listings.parquet").to_pandas()
            recommender.n_trained_listings_ = config["n_trained_listings"]
            recommender.pipeline_ = (
                FeaturePipeline.from_dict(config["pipeline"]) if config["pipeline"] else None
            )
            histories = None
            if "histories.rows" in tensors:
                histories = (tensors["histories.rows"], tensors["histories.lengths"])
            recommender._attach_inputs(model, histories=histories)
            recommender.model_ = model.eval()
            recommender.feature_specs_ = [FeatureSpec.from_dict(s) for s in config["feature_specs"]]
            recommender.report_ = config["report"]
            recommender.manifest_ = manifest
            recommender._catalogue = None
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            raise BundleError(f"{directory}: cannot load the model ({exc})") from None
        return recommender

    def get_params(self) -> dict[str, Any]:
        names = (
            "model",
            "dim",
            "epochs",
            "batch_size",
            "logq_scale",
            "temperature",
            "negatives_from",
            "negatives",
            "hidden",
            "feature_dim",
            "history",
            "id_dropout",
            "user_ids",
            "history_gradient",
            "precision",
            "workers",
            "lr",
            "loss",
            "patience",
            "validation_fraction",
            "validation_users",
            "refit",
            "min_user_interactions",
            "min_listing_interactions",
            "event_weights",
            "seed",
            "device",
        )
        return {name: getattr(self, name) for name in names}

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this Recommender is not fitted yet: call fit() or load()")


def load(directory: str | Path) -> Recommender:
    """Load a saved model directory."""
    return Recommender.load(directory)


def _in_order(table: pd.DataFrame, ids: IdMap) -> pd.DataFrame:
    """The rows of ``table`` in the order of ``ids`` (every id must be in the table)."""
    positions = pd.Index(table["listing_id"]).get_indexer(ids.ids)
    ordered = table.iloc[positions].reset_index(drop=True)
    ordered.attrs = dict(table.attrs)
    return ordered


def as_filters(filters: FilterSpec) -> list[Filter]:
    """Filters from expressions, Filter objects or an API-style mapping."""
    if not filters:
        return []
    if isinstance(filters, Mapping):
        return filters_from_mapping(filters)
    return [f if isinstance(f, Filter) else parse_filter(f) for f in filters]


def _results(catalogue: Catalogue, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    keep = rows >= 0
    records = catalogue.fields(rows[keep])
    return [
        {"listing_id": record.pop("listing_id"), "score": round(float(score), 6), **record}
        for record, score in zip(records, scores[keep], strict=True)
    ]


__all__ = ["Catalogue", "DataError", "Recommender", "load"]
