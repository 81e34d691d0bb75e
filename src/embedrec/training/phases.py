"""The phases of a fit: train with a time hold-out for early stopping (or search settings
on it, within a time budget), then train again on every pair for the best number of epochs
(the refit), with checkpoints across both."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from embedrec.data.errors import DataError
from embedrec.data.prepare import Interactions, time_holdout
from embedrec.models.base import RecModel
from embedrec.training.checkpoint import CheckpointError, Checkpoints
from embedrec.training.distributed import Group
from embedrec.training.trainer import Callback, TrainResult, train
from embedrec.training.tuning import Candidate, run_search

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """The trained model and what its training did."""

    model: RecModel
    result: TrainResult  # the phase with validation, or the only one
    validation_pairs: int
    refit_epochs: int | None
    tuning: dict | None = None  # what the search of settings did, when one ran


def run_phases(
    data: Interactions,
    candidates: Sequence[Candidate],
    validation_fraction: float,
    refit: bool,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    group: Group | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    tune: float | None = None,
) -> Outcome:
    """Train a model that a candidate's ``build(pairs)`` creates on ``data``: with
    ``validation_fraction`` above 0, on the earlier pairs with the last ones (by time) for
    early stopping, then, with ``refit``, again on all pairs for the best epoch count.
    Without ``tune`` the first candidate trains; with it, the candidates are searched for
    ``tune`` seconds on that hold-out (``run_search``), and the winner is refitted; the
    search writes no checkpoints. ``resume`` continues from the last of ``checkpoints``, in
    whichever phase it was written."""
    snapshot = checkpoints.latest() if resume and checkpoints is not None else None
    phase = snapshot.position.phase if snapshot is not None else None
    if phase == "fit" and snapshot.position.epoch - 1 > candidates[0].config.epochs:
        done, asked = snapshot.position.epoch - 1, candidates[0].config.epochs
        raise CheckpointError(
            f"the checkpoint has {done} epochs done, more than the {asked} asked for: resume "
            f"with --epochs {done} or more, or train again without --resume"
        )
    chosen, tuning = candidates[0], None
    if validation_fraction <= 0:
        model = chosen.build(data)
        result = train(
            model,
            data,
            chosen.config,
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
    if group is not None:
        _check_pairs_before_holdout(fit_part, validation_fraction, group)
    validation_pairs = _total(len(held_out), group)
    logger.info(
        "training on %s pairs, validating on the last %s (time hold-out)",
        f"{_total(len(fit_part), group):,}",
        f"{validation_pairs:,}",
    )
    if phase == "refit":
        assert snapshot is not None
        result = TrainResult(**snapshot.state["fit_result"])
        tuning = snapshot.state.get("tuning")
        if tuning is not None:  # the search's winner, by its changes
            chosen = next(c for c in candidates if c.changes == tuning["chosen"])
    elif tune is not None:
        search = run_search(
            candidates, tune, fit_part, held_out, callbacks, progress, group, keep_model=not refit
        )
        # without a refit the winner's model is the outcome; with one, none was kept
        chosen, model, result, tuning = search.chosen, search.model, search.result, search.report
    else:
        model = chosen.build(fit_part)
        result = train(
            model,
            fit_part,
            chosen.config,
            held_out,
            callbacks,
            progress,
            group=group,
            checkpoints=checkpoints,
            phase="fit",
            resume=snapshot,
        )
    if not refit:
        return Outcome(model, result, validation_pairs, None, tuning)
    logger.info(
        "refit on all %s pairs for %d epochs", f"{_total(len(data), group):,}", result.best_epoch
    )
    model = chosen.build(data)
    if checkpoints is not None:
        checkpoints.carry = {"fit_result": asdict(result), "tuning": tuning}
    refitted = train(
        model,
        data,
        chosen.config,
        None,
        callbacks,
        progress,
        epochs=result.best_epoch,
        group=group,
        checkpoints=checkpoints,
        phase="refit",
        resume=snapshot if phase == "refit" else None,
    )
    return Outcome(model, result, validation_pairs, len(refitted.history), tuning)


def _check_pairs_before_holdout(fit_part: Interactions, fraction: float, group: Group) -> None:
    """Raise DataError on every rank when a rank has no pair before the time hold-out's cut:
    its steps would have nothing to cycle through while the others wait on it."""
    message = group.first_error(
        None
        if len(fit_part)
        else "no training pairs on this rank before the time hold-out: every pair of its "
        f"users is among the last {fraction:.0%} by time, held out to validate; train with "
        "fewer ranks or a smaller validation_fraction"
    )
    if message is not None:
        raise DataError(message)


def _total(count: int, group: Group | None) -> int:
    return count if group is None else group.total(count)
