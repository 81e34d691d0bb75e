"""The estimator users hold: parameters, fit, save and load; queries go to a Retriever."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embedrec.bundle import MODEL_FILES, BundleError, read_manifest, write_bundle
from embedrec.data.errors import located_in
from embedrec.data.ids import IdMap
from embedrec.data.io import (
    DEFAULT_EVENT_WEIGHTS,
    MODEL_LISTINGS,
    check_event_weights,
    listings_arrow,
    listings_from_arrow,
    load_interactions,
    load_listings,
)
from embedrec.data.jsonable import json_text
from embedrec.data.packed import PackedTable
from embedrec.data.prepare import Interactions
from embedrec.data.schema import FeatureSpec, SchemaConfig
from embedrec.evaluation.metrics import cut_offs
from embedrec.evaluation.report import warm_cold_report
from embedrec.features.pipeline import FeaturePipeline
from embedrec.memory import release_free_memory
from embedrec.models.base import RecModel, RowSplit
from embedrec.models.registry import MODELS, model_class, readers
from embedrec.retrieval.evaluation import (
    EvaluationTask,
    evaluation_task,
    scorer,
    similar_by_behaviour,
)
from embedrec.retrieval.results import Results
from embedrec.retrieval.retriever import FilterSpec, Retriever
from embedrec.training.checkpoint import Checkpoints, data_digest
from embedrec.training.config import TrainConfig
from embedrec.training.distributed import Group, OwnUsers, launched, seen_by_every_rank
from embedrec.training.phases import run_phases
from embedrec.training.preparation import TrainingData, prepare_training_data
from embedrec.training.trainer import Callback, check_workers, resolve_device
from embedrec.training.tuning import Candidate, search_settings
from embedrec.training.warm_start import (
    WarmStart,
    carry_over,
    check_architecture,
    continue_from,
    warn_of_overlap,
)
from embedrec.version import __version__

logger = logging.getLogger(__name__)
Source = str | Path | pd.DataFrame
# a display preference, not part of what a model is: not saved with it
NOT_SAVED = ("progress",)
# config.json holds parameters, the encoders' vocabularies and the report: kilobytes to megabytes
CONFIG_MAX_BYTES = 64 * 2**20
# held only while a Recommender's retriever lock is made, never while a retriever is built
_LOCK_MAKING = threading.Lock()


class NotFittedError(ValueError, AttributeError):
    """A Recommender queried or saved before ``fit`` or ``load``: a ValueError and an
    AttributeError, as scikit-learn's NotFittedError is; where scikit-learn is imported, an
    instance of its NotFittedError too, so that ``except NotFittedError`` from either module
    catches it."""


@functools.cache
def _also_sklearns(sklearn_error: type[Exception]) -> type[NotFittedError]:
    return type("NotFittedError", (NotFittedError, sklearn_error), {"__module__": __name__})


def not_fitted(message: str) -> NotFittedError:
    """The NotFittedError to raise: also scikit-learn's when a program has imported it (this
    module does not: its import took 0.6 s of every command's start)."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None:
        return NotFittedError(message)
    return _also_sklearns(sklearn_exceptions.NotFittedError)(message)


class Recommender:
    """Learns listing and user embeddings from interactions plus listing features.

    An estimator in scikit-learn's sense: parameters are set in ``__init__`` and kept as
    given (``get_params``, ``set_params`` and ``sklearn.base.clone`` work, without importing
    scikit-learn, whose import alone took 1.4 s of every command's start), ``fit`` learns
    the state whose names end in an underscore and returns self. The CLI and the TOML
    config read their defaults from this signature.

    Parameters
    ----------
    model : str
        A registered model (``embedrec.models.MODELS``): ``"hybrid"`` (two towers with
        listing features; cold start), ``"mf"`` (dot product of id embeddings) or
        ``"deep"`` (ids and features through dense layers to a score).
    dim : int
        Embedding dimensions.
    epochs : int
        Most epochs; early stopping usually ends sooner.
    batch_size : int or None
        Pairs per step; None: at least ~64 steps an epoch, at most 4096 pairs a step.
    lr : float
        Learning rate of the row-wise Adagrad on embedding tables (dense layers use AdamW).
    loss : {"softmax", "bpr"}
        Sampled softmax with in-batch negatives and a logQ correction, or BPR.
    logq_scale : float
        Weight of the popularity (logQ) correction; above 1 keeps some popularity.
    temperature : float
        Divides the scores of L2-normalised models in the softmax.
    negatives_from : {"batch", "catalogue"}
        Softmax negatives: the batch's own listings, or drawn uniformly from every trained
        listing (all of them when there are at most ``negatives``).
    negatives : int
        Negatives shared by a batch.
    hidden, feature_dim : int
        Width of the dense layers, and of each feature's embedding (``hybrid``, ``deep``).
    history : int
        Recent listings a user vector reads, at most 1000 (``hybrid``).
    id_dropout : float
        Share of training pairs whose listing id is hidden, so that features alone learn to
        place a listing; half that for user ids (``hybrid``).
    user_ids : bool
        Whether user vectors read a user id embedding besides the history (``hybrid``).
    history_gradient : bool
        Train the listing tower through the history vectors too (``hybrid``).
    recent_half_life : float or None
        Listings back at which a view weighs half in the first half of a user vector, which
        meets listings' id embeddings; the second half, which meets their features, reads
        the plain mean of the history. 0 or None: one space, id and features mixed
        (``hybrid``).
    precision : {"auto", "fp32", "bf16"}
        Matrix products of training steps; "auto": bf16 on CPUs with bf16 instructions.
    workers : int
        Processes training at once on shared weights (Hogwild; CPU, fork only).
    patience : int
        Training stops once more than ``patience`` epochs in a row bring no gain in
        validation Recall@10 (3: it stops after the fourth).
    validation_fraction : float
        The last share of interactions (by time) held out for early stopping, ranked among
        the listings with an event in it; 0: none.
    validation_users : int
        Hold-out users scored for early stopping, drawn by a hash of their ids: the same
        users whatever the seed or the number of ranks.
    refit : bool
        After early stopping, train again on everything for the best number of epochs.
    time_budget : float or None
        Seconds a training run may take; the epoch that passes it is the last.
    tune : float or None
        Seconds for fit to search training settings on its own time hold-out before the
        refit (None: train with the settings given). The settings given are tried first and
        in full, then a short list of others (all trained listings as negatives, gradients
        through the histories, temperature, id dropout, popularity correction, learning
        rate) while the budget lasts; the highest validation Recall@10 wins.
        ``report_["tuning"]`` says what was tried and chosen. A warm start (``init_from``)
        does not search again: with ``tune`` it trains with what the old model's search
        chose (nothing, if it had none), as a nightly update given the full train's
        settings should.
    min_user_interactions, min_listing_interactions : int
        Users and listings with fewer interactions are skipped (and counted).
    event_weights : mapping or None
        Weight of each ``event`` type, a finite number >= 0 (events of weight 0 are skipped,
        and counted); None: view 1, favorite 3, contact 5.
    schema : SchemaConfig or None
        Feature types and columns to drop; None: inferred from the listings table.
    seed : int
        Seeds every random draw of fit (initial weights, shuffles, negatives, dropout).
    device : str
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    progress : bool or None
        Progress bars; None: only when the output is a terminal.

    Attributes
    ----------
    model_ : RecModel
        The trained network (CPU, eval mode).
    users_, listings_ : IdMap
        User and listing ids in model row order.
    listing_table_ : pandas.DataFrame
        Fields of the model's listings, in row order.
    n_trained_listings_ : int
        Listing rows with interactions (the rest are known by their features only).
    seen_ : scipy.sparse.csr_matrix
        Users x listings the user interacted with in training.
    feature_specs_ : list of FeatureSpec
        The feature columns and their types.
    pipeline_ : FeaturePipeline or None
        The fitted feature encoders.
    report_ : dict
        Counts of what was read and skipped, the validation history, the best epoch and
        timings.
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
        recent_half_life: float | None = 2.0,
        precision: str = "auto",
        workers: int = 1,
        patience: int = 3,
        validation_fraction: float = 0.1,
        validation_users: int = 3000,
        refit: bool = True,
        time_budget: float | None = None,
        tune: float | None = None,
        min_user_interactions: int = 1,
        min_listing_interactions: int = 1,
        event_weights: dict[str, float] | None = None,
        schema: SchemaConfig | None = None,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
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
        self.recent_half_life = recent_half_life
        self.precision = precision
        self.workers = workers
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.validation_users = validation_users
        self.refit = refit
        self.time_budget = time_budget
        self.tune = tune
        self.min_user_interactions = min_user_interactions
        self.min_listing_interactions = min_listing_interactions
        self.event_weights = event_weights
        self.schema = schema
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ parameters
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter's default: the one source the CLI and the TOML config read."""
        return {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self"
        }

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every ``__init__`` parameter and its value (``deep``: scikit-learn's signature;
        no parameter is an estimator)."""
        return {name: getattr(self, name) for name in self.defaults()}

    def set_params(self, **params: Any) -> Recommender:
        """Set parameters by name; an unknown name raises ValueError naming it. Returns self."""
        valid = self.defaults()
        for name in params:
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for Recommender; valid: {', '.join(valid)}"
                )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __getstate__(self) -> dict[str, Any]:
        # for copies in memory (copy.deepcopy, multiprocessing): the retriever the first query
        # cached holds locks (its catalogue's, its filter caches'), which neither copies nor
        # pickles, and is rebuilt on demand. A model is saved as files, never pickled (save)
        state = self.__dict__.copy()
        state.pop("_retriever", None)
        state.pop("_retriever_lock", None)
        return state

    def __repr__(self) -> str:
        defaults = self.defaults()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return f"Recommender({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def check_params(self, continuing: bool = False) -> None:
        """Raise ValueError naming the first bad parameter; ``fit`` calls it before any work.
        ``continuing``: for a warm start, whose ``tune`` continues the old search and so
        needs no hold-out of its own."""
        chosen = model_class(self.model)
        defaults = self.defaults()
        for name in sorted({n for cls in MODELS.values() for n in cls.hyperparameters}):
            value = getattr(self, name)
            if name not in chosen.hyperparameters and value != defaults[name]:
                needs = " or ".join(repr(m) for m in readers(name))
                raise ValueError(f"{name}={value!r} needs model {needs}")
        chosen.check_params(self.get_params())
        self.train_config(1)  # TrainConfig checks the training settings
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be a number in [0, 1), got {fraction!r}")
        if self.event_weights is not None:
            check_event_weights(self.event_weights)
        # "false" or "no" from a config would read as true
        for name in ("user_ids", "history_gradient", "refit"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool | np.bool_):
            raise ValueError(f"progress must be true, false or None, got {self.progress!r}")
        for name in ("min_user_interactions", "min_listing_interactions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.schema is not None and not isinstance(self.schema, SchemaConfig):
            raise ValueError(
                f"schema must be a SchemaConfig (a config's [features] table), got {self.schema!r}"
            )
        tune = self.tune
        if tune is not None:
            if isinstance(tune, bool) or not isinstance(tune, Real) or not tune > 0:
                raise ValueError(f"tune must be a positive number of seconds, got {tune!r}")
            if self.validation_fraction <= 0 and not continuing:
                raise ValueError("tune searches on the time hold-out: validation_fraction > 0")
        check_workers(self.workers, resolve_device(self.device))

    def train_config(self, n_pairs: int) -> TrainConfig:
        """The training settings for ``n_pairs`` training pairs (sizes an unset batch)."""
        params = self.get_params()
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = min(4096, max(256, n_pairs // 64))
        names = inspect.signature(TrainConfig).parameters
        return TrainConfig(
            **{k: v for k, v in params.items() if k in names} | {"batch_size": batch_size}
        )

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        interactions: Source,
        listings: Source,
        callbacks: Sequence[Callback] = (),
        since: object = None,
        until: object = None,
        init_from: str | Path | Recommender | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
    ) -> Recommender:
        """Train on ``interactions`` (user_id, listing_id, timestamp[, event, weight]) and
        ``listings`` (listing_id plus features): DataFrames, CSV or Parquet files, folders of
        Parquet files (Hive partitions become columns), globs or URIs (``s3://``, ``gs://``,
        ``file://``).

        ``callbacks`` are called after every epoch as ``callback(epoch, metrics, elapsed)``
        and stop training by returning True. ``since`` and ``until`` (ISO dates or times)
        train on the events with since <= timestamp < until; what lies outside is not read
        where partitions or Parquet statistics tell. Returns self.

        ``init_from`` (a model directory or a fitted Recommender) continues that model, as a
        nightly update does on the last day's events: its users, listings and learned vectors
        keep their rows, new users, listings and category values get fresh rows, and its
        feature encoders are kept (new values appended). Its model and the settings the model
        reads (``dim``, ``hidden``, ...) must equal this Recommender's, else ValueError names
        the first that differs: ``sklearn.base.clone(old)`` has them. Validation, early
        stopping and the refit run on the new events, each run starting from the old weights.

        ``checkpoint_dir``: a checkpoint there after every epoch (and every
        ``checkpoint_every`` steps); ``resume`` continues from its last one. Launched by
        ``torchrun`` with several processes, fit trains data-parallel: each process reads the
        events of its own users and every process ends with the same model.
        """
        self.check_params(continuing=init_from is not None)
        if (checkpoint_every is not None or resume) and checkpoint_dir is None:
            raise ValueError("checkpoint_every and resume need a checkpoint_dir")
        group = Group.join(resolve_device(self.device)) if launched() else None
        previous = None if init_from is None else self._previous(init_from)
        started = time.perf_counter()
        # a warm start keeps the old model's encoders: fitting new ones would be thrown away
        prepared = self.prepare(
            interactions,
            listings,
            since,
            until,
            group,
            fit_features=previous is None,
            model_ids=None if previous is None else previous._id_columns(),
        )
        source = None if isinstance(init_from, Recommender) else str(init_from)
        if previous is not None:
            warn_of_overlap(previous.report_, prepared.data.report["first_event"], source)
            prepared = continue_from(previous, prepared, source)
        data = prepared.data
        # training looks no id up: the maps stay packed until a query or a save reads them
        data.users.pack()
        data.listings.pack()
        # what reading and preparing freed (the events in pandas, the listings table whole):
        # a rank of a 70-day run kept about 1.3 GB of it in Arrow's pool and glibc's heap
        release_free_memory()
        # each rank trains the rows of its own users only, numbered among them
        own = None if group is None else OwnUsers.of(data, group)
        pairs = data if own is None else own.local(data)
        n_pairs = len(data)  # sizes an unset batch; a rank's events are dropped below
        checkpoints = None
        if checkpoint_dir is not None:
            checkpoints = Checkpoints(
                checkpoint_dir,
                self._fingerprint(data, prepared.listings, group),
                checkpoint_every,
                group,
            )
        if own is not None:
            # the events by the run's user rows are made again from ``pairs`` at the end:
            # both numberings cost a rank 8 bytes a pair more through training
            prepared.data = data = data.subset(np.arange(0))
        searched, tune, continued = None, self.tune, None
        if previous is not None and tune is not None:
            # an update is to be cheap: the search the old model ran is continued, not redone
            tuning = previous.report_.get("tuning") or {}
            continued = {"chosen": tuning.get("chosen", {}), "continued_from": source}
            searched, tune = [continued["chosen"]], None
        outcome = run_phases(
            pairs,
            self._candidates(prepared, n_pairs, group, own, searched),
            self.validation_fraction,
            self.refit,
            callbacks,
            self.progress,
            group,
            checkpoints,
            resume,
            tune,
        )
        model, result = outcome.model, outcome.result
        validation_pairs, refit_epochs = outcome.validation_pairs, outcome.refit_epochs
        self.model_ = model.cpu().eval()
        self.users_ = data.users
        self.listings_ = data.listings
        if own is None:
            self.seen_ = data.seen_matrix()
        else:
            # each rank trained its own users' rows on their events: the pairs seen and the
            # model are made whole on every rank, so that the one rank 0 saves covers all
            mine = own.numbered_among_all(pairs, data.users)
            self.seen_ = seen_by_every_rank(mine, group, data.rows_seen_apart())
            # this rank's events are read no more: freed before the whole tables are made
            # (320 MB a rank on 70 days of the large car data)
            del pairs
            self.model_.make_whole(group.sum_in_place)
        self.listing_table_ = prepared.listings.frame()
        self.n_trained_listings_ = prepared.n_trained_listings
        self.feature_specs_ = prepared.feature_specs
        self.pipeline_ = prepared.pipeline
        self.report_ = {
            **data.report,
            # the window trained on, which a warm start from this model checks
            **{k: _iso(data.report[k]) for k in ("first_event", "last_event")},
            "best_epoch": result.best_epoch,
            "best_val_recall@10": result.best_score,
            "validation_pairs": validation_pairs,
            "refit_epochs": refit_epochs,
            "stopped": result.stopped,
            "history": result.history,
            "train_seconds": round(time.perf_counter() - started, 2),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "init_from": None,
            "tuning": outcome.tuning if continued is None else continued,
        }
        if isinstance(prepared, WarmStart):
            self.seen_ = prepared.seen(self.seen_)
            self.report_ |= prepared.report()
        self._retriever = None
        # the loaded directory's checksums and version describe a model no longer held: the
        # serving cache keys its stored vectors on them
        self.__dict__.pop("manifest_", None)
        return self

    def _id_columns(self) -> dict[str, pd.Index]:
        """The fitted ids by the column that holds them."""
        return {"user_id": self.users_.ids, "listing_id": self.listings_.ids}

    def _previous(self, init_from: str | Path | Recommender) -> Recommender:
        """The fitted model a warm start continues, once its architecture is checked."""
        # a warm start reads the old model's weights, ids and histories, not its catalogue
        previous = (
            init_from
            if isinstance(init_from, Recommender)
            else Recommender.load(init_from, inputs=False)
        )
        previous._check_fitted()
        check_architecture(previous.get_params(), self.get_params())
        return previous

    def prepare(
        self,
        interactions: Source,
        listings: Source,
        since: object = None,
        until: object = None,
        group: Group | None = None,
        fit_features: bool = True,
        model_ids: Mapping[str, pd.Index] | None = None,
    ) -> TrainingData:
        """The data preparation ``fit`` runs: load, validate, map ids, count what is skipped
        and fit the feature encoders the chosen model needs (``group``: this rank's share of
        a distributed run; ``fit_features=False``: check that the features are there but
        leave the encoders to the caller, as a warm start does; ``model_ids``: the ids of
        the model a warm start continues by column, ``user_id`` and ``listing_id``: the new
        ids take their types)."""
        chosen = model_class(self.model)
        return prepare_training_data(
            interactions,
            listings,
            self.event_weights or DEFAULT_EVENT_WEIGHTS,
            self.schema,
            self.min_user_interactions,
            self.min_listing_interactions,
            features_for=self.model if chosen.needs_features else None,
            progress=self.progress,
            since=since,
            until=until,
            group=group,
            fit_features=fit_features,
            model_ids=model_ids,
        )

    def _candidates(
        self,
        prepared: TrainingData,
        n_pairs: int,
        group: Group | None,
        own: OwnUsers | None,
        searched: list[dict[str, Any]] | None = None,
    ) -> list[Candidate]:
        """The settings fit trains with: those given, then, with ``tune``, the others it
        searches; or the changes to those given in ``searched``."""
        given = self.get_params()
        if searched is None:
            searched = [{}]
            if self.tune is not None:
                searched = search_settings(given, model_class(self.model))
        # every model built shares the catalogue's feature tensors of the first: the search's
        # and the refit's models train on the same listings (15 s a model at 1M listings).
        # Not on a GPU: a model moved there frees its host copy, which sharing would keep
        derived: list[object | None] = []
        on_cpu = resolve_device(self.device).type == "cpu"

        def build(part: Interactions, variant: Recommender) -> RecModel:
            reuse = derived[0] if derived else None
            model = variant.build_model(prepared, part, group, own, reuse=reuse)
            if not derived and on_cpu:
                derived.append(model.listing_inputs())
            return model

        candidates = []
        for changes in searched:
            variant = self if not changes else Recommender(**(given | changes))
            config = variant.train_config(n_pairs)
            config.warm_up = not isinstance(prepared, WarmStart)
            candidates.append(
                Candidate(
                    changes,
                    config,
                    lambda part, v=variant: build(part, v),
                )
            )
        return candidates

    def _fingerprint(
        self, data: Interactions, listings: PackedTable, group: Group | None
    ) -> dict[str, Any]:
        """What a checkpoint must share with this fit to be resumed by it."""
        changeable = ("epochs", "time_budget", "progress", "device")
        params = {k: v for k, v in self.get_params().items() if k not in changeable}
        pairs = len(data) if group is None else group.total(len(data))
        return params | {
            "users": len(data.users),
            "listings": len(data.listings),
            "pairs": pairs,
            "ranks": 1 if group is None else group.world,
            # other data of the same counts is refused too
            "data": data_digest(data, listings, group),
        }

    def build_model(
        self,
        prepared: TrainingData,
        data: Interactions,
        row_split: RowSplit | None = None,
        own: OwnUsers | None = None,
        reuse: object | None = None,
    ) -> RecModel:
        """A fresh model of ``prepared``'s shape, with its weights drawn from ``seed`` and its
        inputs (histories) taken from ``data`` only (the training part of a hold-out); for a
        warm start, with the old model's weights and inputs carried over. ``row_split``: the
        ranks of a distributed run, among which the model may share out the catalogue;
        ``own``: the users of this rank, the only ones whose rows the model holds (``data``
        then numbers its users among them); ``reuse``: another such model's
        ``listing_inputs()``, shared instead of derived again."""
        generator = torch.Generator().manual_seed(int(self.seed))  # NumPy integers too
        shape = prepared.shape()
        if own is not None:
            shape = replace(shape, user_rows=own.rows)
        model = model_class(self.model).create(shape, self.get_params(), generator)
        model.row_split = row_split
        listings = prepared.listings
        table = listings if model.packed_inputs else listings.frame()
        if reuse is None:
            model.set_inputs(table, data)
        else:  # only a model whose listing_inputs() returned something takes them back
            model.set_inputs(table, data, reuse)
        if isinstance(prepared, WarmStart):
            carry_over(model, prepared)
        return model

    # ------------------------------------------------------------------ queries
    def retriever(self, listings: Source | None = None) -> Retriever:
        """Retrieval over the training listings, or over ``listings`` (e.g. today's
        catalogue; with a feature model, its new listings are embedded from features)."""
        self._check_fitted()
        if listings is not None:
            table = load_listings(listings)
            with located_in(table.attrs.get("source")):  # its features checked, embedded
                return self._build_retriever(table)
        retriever = getattr(self, "_retriever", None)
        if retriever is None:
            # threads whose first queries meet build it once: each build embeds and indexes
            # the whole catalogue (minutes and gigabytes at 1M listings)
            with self._lock_of_retriever():
                retriever = getattr(self, "_retriever", None)
                if retriever is None:
                    retriever = self._retriever = self._build_retriever(None)
        return retriever

    def _lock_of_retriever(self) -> threading.Lock:
        # made on first use, not in __init__ (scikit-learn's estimators set only their
        # parameters there), and left out of copies, which make their own
        with _LOCK_MAKING:
            return self.__dict__.setdefault("_retriever_lock", threading.Lock())

    def _build_retriever(self, catalogue: pd.DataFrame | None) -> Retriever:
        return Retriever.build(
            self.model_,
            self.users_,
            self.listings_,
            self.seen_,
            self.listing_table_,
            catalogue,
            name=self.model,
        )

    def similar(
        self,
        listing_ids: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
    ) -> list[Results]:
        """``Retriever.similar`` over the training listings or ``listings``."""
        return self.retriever(listings).similar(listing_ids, k, filters)

    def recommend(
        self,
        user_ids: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
    ) -> list[Results]:
        """``Retriever.recommend`` over the training listings or ``listings``."""
        return self.retriever(listings).recommend(user_ids, k, filters)

    def recommend_session(
        self,
        session: Sequence,
        k: int = 10,
        listings: Source | None = None,
        filters: FilterSpec = None,
    ) -> Results:
        """``Retriever.recommend_session`` over the training listings or ``listings``."""
        return self.retriever(listings).recommend_session(session, k, filters)

    def embed(self, listings: Source) -> pd.DataFrame:
        """Vectors of any listings: trained ones by id and features, new ones by features.

        Returns a frame with ``listing_id`` and ``embedding`` (a float32 array per row).
        """
        return self.retriever(listings).embed()

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        interactions: Source,
        listings: Source | None = None,
        ks: int | Sequence[int] = (10, 20),
        since: object = None,
        until: object = None,
    ) -> dict[str, Any]:
        """Ranking metrics on held-out ``interactions`` (later than training).

        Each known user's ranking of the catalogue (``listings``, or the training listings)
        excludes what they saw in training. Reported ``overall``, for ``warm`` listings and for
        ``cold`` ones (never seen in training, embedded from features), with ``counts`` of what
        was evaluated and skipped. Each metric averaged over users comes with its standard
        error (``"recall@10_se"``). ``similar`` judges similar listings by behaviour: how often
        the next listing a visitor viewed in a session is among the first one's k similar
        listings (``hit@k``), for warm and cold first listings. ``since`` and ``until``
        evaluate the events in that window only, as in ``fit``. ``ks``: whole numbers from
        1 up, or one (else ValueError naming ``ks``, before any work).
        """
        ks = cut_offs(ks)
        retriever = self.retriever(listings)
        weights = self.event_weights or DEFAULT_EVENT_WEIGHTS
        events = load_interactions(interactions, weights, since=since, until=until)
        task = evaluation_task(retriever, events)
        report = warm_cold_report(scorer(retriever, task), task.seen, task.test, task.cold, ks)
        report["counts"] = task.counts
        report["similar"] = similar_by_behaviour(retriever, events, ks)
        return report

    def evaluation_task(
        self,
        interactions: Source,
        listings: Source | None = None,
        retriever: Retriever | None = None,
        since: object = None,
        until: object = None,
    ) -> EvaluationTask:
        """Held-out interactions as matrices over (known users) x (catalogue rows), so that
        any scorer (ours or a baseline) is evaluated on exactly the same task."""
        retriever = retriever or self.retriever(listings)
        weights = self.event_weights or DEFAULT_EVENT_WEIGHTS
        events = load_interactions(interactions, weights, since=since, until=until)
        return evaluation_task(retriever, events)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the model directory (safetensors, JSON and Parquet; atomic)."""
        self._check_fitted()
        seen = self.seen_.tocsr()
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model_.state_dict().items()}
        tensors["seen.indptr"] = torch.as_tensor(seen.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.as_tensor(seen.indices.astype(np.int64))
        tensors |= {k: v.contiguous() for k, v in self.model_.extra_state().items()}
        config = {
            "model": self.model,
            "model_config": self.model_.config,
            "params": {
                k: v.to_dict() if isinstance(v, SchemaConfig) else v
                for k, v in self.get_params().items()
                if k not in NOT_SAVED
            },
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
                listings_arrow(self.listing_table_, MODEL_LISTINGS), p
            ),
        }
        meta = {
            "embedrec_version": __version__,
            "model": self.model,
            "trained_at": self.report_.get("trained_at"),
        }
        return write_bundle(directory, writers, meta)

    @classmethod
    def load(cls, directory: str | Path, inputs: bool = True) -> Recommender:
        """Load a model directory written by ``save``, checking format and checksums.

        With ``inputs=False`` the model's inputs are not derived from its listings (the
        feature tensors: a minute at 1M listings), for a model that a warm start only
        continues, or whose caller restores them with ``model_.load_input_tensors``.
        """
        directory = Path(directory)
        manifest = read_manifest(directory, MODEL_FILES)
        config_size = (directory / "config.json").stat().st_size
        if config_size > CONFIG_MAX_BYTES:  # parsed whole, a huge one would take gigabytes
            raise BundleError(
                f"{directory}: cannot load the model (config.json is {config_size / 2**20:,.0f} "
                f"MiB, more than a model's metadata takes: at most {CONFIG_MAX_BYTES // 2**20})"
            )
        try:
            config = json.loads((directory / "config.json").read_text())
            tensors = _load_weights(directory / "weights.safetensors")
            params = dict(config["params"])
            if isinstance(params.get("schema"), dict):  # saved as its dict (older models: none)
                params["schema"] = SchemaConfig(**params["schema"])
            recommender = cls(**params)
            model = model_class(config["model"])(**config["model_config"])
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
            recommender.listing_table_ = listings_from_arrow(
                pq.read_table(directory / "listings.parquet"), MODEL_LISTINGS
            )
            recommender.n_trained_listings_ = config["n_trained_listings"]
            recommender.pipeline_ = (
                FeaturePipeline.from_dict(config["pipeline"]) if config["pipeline"] else None
            )
            if inputs:
                model.set_inputs(recommender.listing_table_, None)
            model.load_extra_state(
                {k: v for k, v in tensors.items() if not k.startswith(("model.", "seen."))}
            )
            recommender.model_ = model.eval()
            recommender.feature_specs_ = [FeatureSpec.from_dict(s) for s in config["feature_specs"]]
            if not isinstance(config["report"], dict):
                raise TypeError(f"config.json's report is no object: {config['report']!r:.60}")
            recommender.report_ = config["report"]
            recommender.manifest_ = manifest
            recommender._retriever = None
        # a config.json of the wrong shape (its checksum in the manifest rewritten with it)
        # fails wherever it is first read: a reload answered 500 for a pipeline that was a list
        except (
            LookupError, TypeError, ValueError, AttributeError, ArithmeticError, RuntimeError,
            OSError,
        ) as exc:  # fmt: skip
            saved_by = manifest.get("embedrec_version")
            # a newer embedrec may save what this one cannot read (a parameter it added)
            other = (
                f"; saved by embedrec {saved_by}, this is {__version__}"
                if saved_by != __version__
                else ""
            )
            raise BundleError(f"{directory}: cannot load the model ({exc}){other}") from None
        saved_by = manifest.get("embedrec_version")
        if not _saved_by_this_or_older(saved_by):
            # it loaded, but may hold what this embedrec does not know of and ignores
            logger.warning(
                "%s: the model was saved by embedrec %s, and this is embedrec %s: loaded, but "
                "what a newer version saved may be ignored",
                directory,
                "(no version named)" if saved_by is None else saved_by,
                __version__,
            )
        return recommender

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise not_fitted("this Recommender is not fitted yet: call fit() or load()")

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` or ``load`` made this Recommender (scikit-learn's
        ``check_is_fitted`` asks)."""
        return hasattr(self, "model_")

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's description of the estimator, which its ``check_is_fitted`` reads
        (scikit-learn 1.6 and later). Only scikit-learn calls it, so only then is it imported."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))


def _saved_by_this_or_older(version: object) -> bool:
    """Whether a manifest's ``embedrec_version`` is this embedrec's release or an older one
    (compared by release numbers, 0.10.0 after 0.9.2); False where it is missing or unread."""
    if not isinstance(version, str):
        return False
    release = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if release is None:
        return False
    numbers = [int(n) for n in release[1].split(".")]
    ours = [int(n) for n in re.match(r"\d+(?:\.\d+)*", __version__)[0].split(".")]
    width = max(len(numbers), len(ours))
    return numbers + [0] * (width - len(numbers)) <= ours + [0] * (width - len(ours))


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file. A file that is no safetensors file (its checksum in the
    manifest rewritten with it) raises safetensors' own error, which is no ValueError or
    OSError: here it becomes the ValueError that ``load`` reports as a BundleError."""
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(f"{path.name} is not a safetensors file: {exc}") from None


def load(directory: str | Path) -> Recommender:
    """Load a saved model directory."""
    return Recommender.load(directory)


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()
