"""A fit's own search of training settings, within a time budget, on its time hold-out.

The candidates are a short list, best first by what won on the data measured so far
(docs/benchmarks-movielens.md): all trained listings as negatives at a milder temperature,
then the same with gradients through the histories, then one setting at a time. The
settings as given are always tried first and in full; a later candidate starts while the
budget lasts and stops at its end (the epoch that passes it is its last), so a short budget
can only add to what a fit without one does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from embedrec.data.prepare import Interactions
from embedrec.models.base import RecModel
from embedrec.models.registry import MODELS
from embedrec.training.config import TrainConfig
from embedrec.training.distributed import Group
from embedrec.training.trainer import (
    Callback,
    TrainingDiverged,
    TrainResult,
    agreed_elapsed,
    train,
)

logger = logging.getLogger(__name__)

CATALOGUE_NEGATIVES = {"negatives_from": "catalogue", "negatives": 2048, "temperature": 0.2}
SEARCH: tuple[dict[str, Any], ...] = (
    {},
    CATALOGUE_NEGATIVES,
    CATALOGUE_NEGATIVES | {"history_gradient": True},
    {"temperature": 0.2},
    {"temperature": 0.05},
    {"id_dropout": 0.0},
    {"id_dropout": 0.5},
    {"logq_scale": 1.5},
    {"lr": 0.1},
    {"lr": 0.02},
)
# read by models with L2-normalised vectors only
NORMALIZED_ONLY = ("temperature",)
# read by models that score a batch's users against shared listing vectors only: the others
# score each pair against its own sampled listings
FACTORIZED_ONLY = ("negatives_from", "negatives", "temperature", "logq_scale")
SOFTMAX_ONLY = ("negatives_from", "negatives", "logq_scale")


@dataclass
class Candidate:
    """Settings a fit may train with: what they change from those given, the training
    settings, and how to build a model with them for a set of pairs."""

    changes: dict[str, Any]
    config: TrainConfig
    build: Callable[[Interactions], RecModel]


@dataclass
class Search:
    """The candidate that won, its run on the training part, and what the search did."""

    chosen: Candidate
    model: RecModel | None  # kept only when asked: a refit builds its own
    result: TrainResult
    report: dict[str, Any]


def search_settings(given: dict[str, Any], model: type[RecModel]) -> list[dict[str, Any]]:
    """The changes to ``given`` that a search tries for ``model``, in order: each change
    without the settings the model does not read, when it makes settings not tried before."""
    of_any_model = {name for cls in MODELS.values() for name in cls.hyperparameters}
    unread = of_any_model - set(model.hyperparameters)
    if not model.normalized:
        unread |= set(NORMALIZED_ONLY)
    if not model.factorized:
        unread |= set(FACTORIZED_ONLY)
    if given["loss"] != "softmax":
        unread |= set(SOFTMAX_ONLY)
    tried: list[dict[str, Any]] = []
    out = []
    for changes in SEARCH:
        changes = {k: v for k, v in changes.items() if k not in unread and given.get(k) != v}
        settings = given | changes
        if settings not in tried:
            tried.append(settings)
            out.append(changes)
    return out


def run_search(
    candidates: Sequence[Candidate],
    budget: float,
    fit_part: Interactions,
    held_out: Interactions,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    group: Group | None = None,
    keep_model: bool = True,
) -> Search:
    """Train each candidate on ``fit_part`` with early stopping on ``held_out`` while
    ``budget`` seconds last (the first in full); the winner has the highest validation
    Recall@10 (the first of equals). A candidate whose training diverges loses (stopped
    "diverged"); when all tried do, the first one's TrainingDiverged is raised. A callback
    that stops a run stops the search. The winner's model is kept with ``keep_model`` only
    (the others are dropped as they lose)."""
    started = time.perf_counter()
    tried: list[dict[str, Any]] = []
    best: tuple[Candidate, RecModel | None, TrainResult] | None = None
    best_score = float("-inf")
    diverged: TrainingDiverged | None = None
    for index, candidate in enumerate(candidates):
        # the slowest rank's time: every rank tries the same candidates
        left = budget - agreed_elapsed(time.perf_counter() - started, group)
        if index > 0 and left <= 0:
            break
        config = candidate.config
        if index > 0:
            cap = left if config.time_budget is None else min(left, config.time_budget)
            config = replace(config, time_budget=cap)
        logger.info("tuning: candidate %d of %d: %s", index + 1, len(candidates), candidate.changes)
        model = candidate.build(fit_part)
        candidate_started = time.perf_counter()
        try:
            result = train(model, fit_part, config, held_out, callbacks, progress, group=group)
        except TrainingDiverged as exc:
            # a setting tried (a higher lr) may diverge where others do not: it only loses
            logger.warning("tuning: candidate %d of %d: %s", index + 1, len(candidates), exc)
            diverged = diverged or exc
            result = TrainResult(
                stopped="diverged", seconds=time.perf_counter() - candidate_started
            )
        score = result.best_score if result.best_score is not None else float("-inf")
        tried.append(
            {
                "changes": candidate.changes,
                "val_recall@10": result.best_score,
                "best_epoch": result.best_epoch,
                "epochs": len(result.history),
                "stopped": result.stopped,
                "seconds": round(result.seconds, 2),
            }
        )
        if result.stopped != "diverged" and (best is None or score > best_score):
            best, best_score = (candidate, model if keep_model else None, result), score
        del model  # at most the best so far is held while the next one trains
        if result.stopped == "callback":
            break  # a callback that stops a run stops the search
    if best is None:  # every candidate tried diverged
        assert diverged is not None
        raise diverged
    chosen, model, result = best
    report = {
        "budget_seconds": budget,
        "seconds": round(time.perf_counter() - started, 2),
        "candidates": len(candidates),
        "tried": tried,
        "chosen": chosen.changes,
    }
    logger.info("tuning: chose %s of %d tried", chosen.changes or "the settings given", len(tried))
    return Search(chosen, model, result, report)
