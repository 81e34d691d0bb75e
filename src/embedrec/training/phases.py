"""The phases of a fit: train with a time hold-out for early stopping, then train again on
every pair for the best number of epochs (the refit), with checkpoints across both."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from embedrec.data.prepare import Interactions, time_holdout
from embedrec.models.base import RecModel
from embedrec.training.checkpoint import Checkpoints
from embedrec.training.config import TrainConfig
from embedrec.training.distributed import Group
from embedrec.training.trainer import Callback, TrainResult, train

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """The trained model and what its training did."""

    model: RecModel
    result: TrainResult  # the phase with validation, or the only one
    validation_pairs: int
    refit_epochs: int | None


def run_phases(
    data: Interactions,
    config: TrainConfig,
    build: Callable[[Interactions], RecModel],
    validation_fraction: float,
    refit: bool,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    group: Group | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
) -> Outcome:
    """Train a model that ``build(pairs)`` creates on ``data``: with ``validation_fraction``
    above 0, on the earlier pairs with the last ones (by time) for early stopping, then,
    with ``refit``, again on all pairs for the best epoch count. ``resume`` continues from
    the last of ``checkpoints``, in whichever phase it was written."""
    snapshot = checkpoints.latest() if resume and checkpoints is not None else None
    phase = snapshot.position.phase if snapshot is not None else None
    if validation_fraction <= 0:
        model = build(data)
        result = train(
            model,
            data,
            config,
            None,
            callbacks,
            progress,
            group=group,
            checkpoints=checkpoints,
            phase="fit",
            resume=snapshot,
        )
        return Outcome(model, result, 0, None)
    cut = None if group is None else group.quantile(data.timestamp, 1.0 - validation_fraction)
    fit_part, held_out = time_holdout(data, validation_fraction, cut)
    validation_pairs = _total(len(held_out), group)
    logger.info(
        "training on %s pairs, validating on the last %s (time hold-out)",
        f"{_total(len(fit_part), group):,}",
        f"{validation_pairs:,}",
    )
    if phase == "refit":
        assert snapshot is not None
        result = TrainResult(**snapshot.state["fit_result"])
    else:
        model = build(fit_part)
        result = train(
            model,
            fit_part,
            config,
            held_out,
            callbacks,
            progress,
            group=group,
            checkpoints=checkpoints,
            phase="fit",
            resume=snapshot,
        )
    if not refit:
        return Outcome(model, result, validation_pairs, None)
    logger.info(
        "refit on all %s pairs for %d epochs", f"{_total(len(data), group):,}", result.best_epoch
    )
    model = build(data)
    if checkpoints is not None:
        checkpoints.carry = {"fit_result": asdict(result)}
    refitted = train(
        model,
        data,
        config,
        None,
        callbacks,
        progress,
        epochs=result.best_epoch,
        group=group,
        checkpoints=checkpoints,
        phase="refit",
        resume=snapshot if phase == "refit" else None,
    )
    return Outcome(model, result, validation_pairs, len(refitted.history))


def _total(count: int, group: Group | None) -> int:
    return count if group is None else group.total(count)
