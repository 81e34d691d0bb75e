"""The facade users hold: fit, similar, recommend, save and load."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from embedrec import __version__
from embedrec.bundle import BundleError, read_manifest, write_bundle
from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap
from embedrec.data.io import DEFAULT_EVENT_WEIGHTS, load_interactions, load_listings
from embedrec.data.prepare import Interactions, prepare, time_holdout
from embedrec.data.schema import FeatureSpec, SchemaConfig, infer_schema
from embedrec.index.exact import top_k
from embedrec.models.base import RecModel
from embedrec.models.mf import MatrixFactorization
from embedrec.training.trainer import TrainConfig, TrainResult, train

MODELS: dict[str, type[RecModel]] = {"mf": MatrixFactorization}
Source = str | Path | pd.DataFrame


class Catalogue:
    """The listings a query may return, with their vectors and fields."""

    def __init__(self, table: pd.DataFrame, vectors: np.ndarray, model_rows: np.ndarray):
        self.table = table.reset_index(drop=True)
        self.ids = IdMap(pd.Index(self.table["listing_id"]))
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit_vectors = self.vectors / np.maximum(norms, 1e-12)
        self.model_rows = model_rows  # the model's listing index of each row, -1 if none

    def __len__(self) -> int:
        return len(self.table)

    def fields(self, rows: np.ndarray) -> list[dict[str, Any]]:
        records = self.table.iloc[rows].to_dict(orient="records")
        return [{k: _plain(v) for k, v in record.items()} for record in records]


class Recommender:
    """Learns listing and user embeddings from interactions plus listing features.

    Parameters follow scikit-learn conventions: set in ``__init__``, learned state (ending in
    an underscore) set by ``fit``, which returns self.
    """

    def __init__(
        self,
        model: str = "mf",
        dim: int = 32,
        epochs: int = 30,
        batch_size: int = 2048,
        lr: float = 0.05,
        loss: str = "softmax",
        patience: int = 3,
        validation_fraction: float = 0.1,
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
        self.patience = patience
        self.validation_fraction = validation_fraction
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
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        log = self.log or (lambda _message: None)
        started = time.perf_counter()
        listing_table = load_listings(listings)
        events = load_interactions(interactions, self.event_weights)
        self.feature_specs_ = infer_schema(
            listing_table, self.schema, listing_table.attrs.get("source")
        )
        data = prepare(
            events, listing_table, self.min_user_interactions, self.min_listing_interactions
        )
        config = self._train_config()
        result = TrainResult()
        if self.validation_fraction > 0:
            fit_part, held_out = time_holdout(data, self.validation_fraction)
            log(
                f"training on {len(fit_part):,} pairs, validating on the last "
                f"{len(held_out):,} (time hold-out)"
            )
            model = self._build_model(data)
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
        self.listing_table_ = listing_table
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

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            loss=self.loss,
            patience=self.patience,
            seed=self.seed,
            device=self.device,
        )

    def _build_model(self, data: Interactions) -> RecModel:
        torch.manual_seed(self.seed)
        return MODELS[self.model](len(data.users), len(data.listings), dim=self.dim)

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
        rows = self.listings_.indices(table["listing_id"])
        known = rows >= 0
        unknown = table.loc[~known, "listing_id"].tolist()
        table = table[known]
        with torch.no_grad():
            vectors = self.model_.listing_vectors(torch.as_tensor(rows[known])).numpy()
        return Catalogue(table, vectors, rows[known]), unknown

    # ------------------------------------------------------------------ queries
    def similar(
        self, listing_ids: Sequence, k: int = 10, listings: Source | None = None
    ) -> list[dict[str, Any]]:
        """Top-``k`` listings by cosine similarity to each query listing.

        One dict per query: ``{"query", "results": [{"listing_id", "score", fields...}]}``, or
        ``{"query", "error"}`` when the listing is unknown.
        """
        catalogue, _ = self.catalogue(listings)
        queries, positions = [], []
        out: list[dict[str, Any]] = [{"query": _plain(q)} for q in listing_ids]
        rows = catalogue.ids.indices(list(listing_ids)) if len(listing_ids) else []
        known_rows = self.listings_.indices(list(listing_ids)) if len(listing_ids) else []
        for position, (row, model_row) in enumerate(zip(rows, known_rows, strict=True)):
            if row >= 0:
                queries.append(catalogue.unit_vectors[row])
            elif model_row >= 0:
                with torch.no_grad():
                    vector = self.model_.listing_vectors(torch.tensor([model_row])).numpy()[0]
                queries.append(vector / max(np.linalg.norm(vector), 1e-12))
            else:
                out[position]["error"] = f"unknown listing_id {listing_ids[position]!r}"
                continue
            positions.append(position)
        if positions:
            query_rows = np.asarray([rows[p] for p in positions])
            exclude = _self_exclusion(query_rows, len(catalogue))
            result_rows, scores = top_k(np.stack(queries), catalogue.unit_vectors, k, exclude)
            for position, found, found_scores in zip(positions, result_rows, scores, strict=True):
                out[position]["results"] = _results(catalogue, found, found_scores)
        return out

    def recommend(
        self, user_ids: Sequence, k: int = 10, listings: Source | None = None
    ) -> list[dict[str, Any]]:
        """Top-``k`` listings by score for each known user, excluding listings they have seen."""
        catalogue, _ = self.catalogue(listings)
        user_rows = self.users_.indices(list(user_ids)) if len(user_ids) else np.array([], int)
        out: list[dict[str, Any]] = [{"query": _plain(u)} for u in user_ids]
        known = np.flatnonzero(user_rows >= 0)
        for position in np.flatnonzero(user_rows < 0):
            out[position]["error"] = f"unknown user_id {user_ids[position]!r}"
        if len(known):
            with torch.no_grad():
                queries = self.model_.user_vectors(torch.as_tensor(user_rows[known])).numpy()
            exclude = self._seen_in(catalogue, user_rows[known])
            result_rows, scores = top_k(queries, catalogue.vectors, k, exclude)
            for position, found, found_scores in zip(known, result_rows, scores, strict=True):
                out[position]["results"] = _results(catalogue, found, found_scores)
        return out

    def _seen_in(self, catalogue: Catalogue, user_rows: np.ndarray) -> sp.csr_matrix:
        """Users x catalogue rows: the listings each user interacted with."""
        to_catalogue = np.full(len(self.listings_), -1, dtype=np.int64)
        to_catalogue[catalogue.model_rows] = np.arange(len(catalogue))
        seen = self.seen_[user_rows].tocoo()
        columns = to_catalogue[seen.col]
        keep = columns >= 0
        return sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.float32), (seen.row[keep], columns[keep])),
            shape=(len(user_rows), len(catalogue)),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the model directory (safetensors, JSON and Parquet; atomic)."""
        self._check_fitted()
        seen = self.seen_.tocsr()
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model_.state_dict().items()}
        tensors["seen.indptr"] = torch.as_tensor(seen.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.as_tensor(seen.indices.astype(np.int64))
        config = {
            "model": self.model,
            "model_config": self.model_.config,
            "params": self.get_params(),
            "feature_specs": [s.to_dict() for s in self.feature_specs_],
            "report": self.report_,
        }
        writers = {
            "weights.safetensors": lambda p: save_file(tensors, str(p)),
            "config.json": lambda p: p.write_text(json.dumps(config, indent=2, default=str)),
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
            recommender.model_ = model.eval()
            recommender.users_ = IdMap.load(directory / "users.parquet")
            recommender.listings_ = IdMap.load(directory / "listing_ids.parquet")
            indptr = tensors["seen.indptr"].numpy()
            indices = tensors["seen.indices"].numpy()
            recommender.seen_ = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, indptr),
                shape=(len(recommender.users_), len(recommender.listings_)),
            )
            recommender.listing_table_ = pq.read_table(directory / "listings.parquet").to_pandas()
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
            "lr",
            "loss",
            "patience",
            "validation_fraction",
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


def _self_exclusion(query_rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """Queries x rows: each query's own listing, so it is not its own neighbour."""
    valid = query_rows >= 0
    return sp.csr_matrix(
        (np.ones(valid.sum(), dtype=np.float32), (np.flatnonzero(valid), query_rows[valid])),
        shape=(len(query_rows), n_rows),
    )


def _results(catalogue: Catalogue, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    keep = rows >= 0
    records = catalogue.fields(rows[keep])
    return [
        {"listing_id": record.pop("listing_id"), "score": round(float(score), 6), **record}
        for record, score in zip(records, scores[keep], strict=True)
    ]


def _plain(value: Any) -> Any:
    """A JSON-ready Python value (numpy scalars, timestamps and NaN converted)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


__all__ = ["Catalogue", "DataError", "Recommender", "load"]
