"""The training loop: shuffled mini-batches of (user, listing) pairs kept as tensors."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from embedrec.data.ids import IdMap
from embedrec.data.prepare import Interactions, time_order
from embedrec.evaluation.metrics import evaluate_scorer
from embedrec.memory import release_free_memory
from embedrec.models.base import RecModel
from embedrec.ranking import dot_scorer
from embedrec.training.checkpoint import EPOCH_TOTALS, Checkpoints, Position, Snapshot
from embedrec.training.config import TrainConfig
from embedrec.training.distributed import Group, combine_standard_errors
from embedrec.training.losses import (
    bpr,
    in_batch_softmax,
    nonzero,
    sampled_softmax,
    shared_negatives_softmax,
    weighted_mean,
)
from embedrec.training.optim import RowWiseAdagrad
from embedrec.training.parallel import fork_available, run_workers, share_weights, unshare_weights

# draws the validation users (the key of a hash of their ids); fixed, unlike the training seed
VALIDATION_HASH_KEY = "embedrec-val-000"  # 16 characters, as pandas asks
# (user, listing) scores a validation holds at once: 64 MB of float32, a quarter of what
# evaluate_scorer holds by default, for validations about 20% longer (1% of an epoch)
VALIDATION_SCORES = 2**24
FIRST_REFRESH_STEP = 64
logger = logging.getLogger(__name__)
# called after each epoch with its number, its metrics and the seconds since training
# started; returning True stops training after that epoch
Callback = Callable[[int, dict[str, float], float], bool | None]


class TrainingDiverged(ValueError):
    """Training's loss or weights became NaN or infinite: the model would answer no query,
    so none is kept. A ValueError: settings or weights are what makes training diverge."""


@dataclass
class TrainResult:
    """What a training run did: its best epoch (the last one without validation) and that
    epoch's validation score, one history entry per epoch, its wall time, and why it
    stopped: ``"epochs"``, ``"patience"``, ``"time budget"`` or ``"callback"`` (and, for a
    candidate of a search of settings, ``"diverged"``)."""

    best_epoch: int = 0
    best_score: float | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = "epochs"


class EarlyStopping:
    """The stopping rule: a run stops after ``patience`` epochs in a row without a higher
    validation score than the best so far (ties are no gain).

    With ``warm_up`` the first epoch is no candidate unless it is the last: a model barely
    trained, nearly popularity, can top a small hold-out by chance (on MovieLens-100k it
    did for 2 fits of 3 with ``recent_half_life``, and the refit of that one epoch lost a
    third of the warm test's recall). A warm start, whose first epoch continues a trained
    model, has none."""

    def __init__(self, patience: int, warm_up: bool = False) -> None:
        self.patience = patience
        self.warm_up = warm_up
        self.best: float | None = None
        self.bad_epochs = 0
        self.scored = 0  # epochs scored so far

    def update(self, score: float, last: bool = False) -> bool:
        """Record an epoch's score (``last``: the run's last epoch); True when it is the
        best so far."""
        self.scored += 1
        if self.warm_up and self.scored == 1 and not last:
            return False
        if self.best is None or score > self.best:
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs > self.patience

    def state(self) -> list:
        return [self.best, self.bad_epochs, self.scored]

    def restore(self, state: list) -> None:
        # a checkpoint written before ``scored`` was kept is past any warm-up
        self.best, self.bad_epochs, self.scored = (*state, 1)[:3]


def bf16_steps(precision: str, device: torch.device) -> bool:
    """Whether training steps on ``device`` run their matrix products in bfloat16."""
    if precision != "auto":
        return precision == "bf16"
    if device.type != "cpu":
        return False
    # private, so looked up defensively: a torch without them trains in fp32
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_device(device: str) -> torch.device:
    """The torch device for ``device``: "auto" (CUDA when available), "cpu", "cuda" or
    "cuda:N". Raises ValueError for any other name or a CUDA device this machine lacks."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if resolved.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= available:
            raise ValueError(
                f"device {device!r}: this machine has {available} CUDA device(s) usable by "
                f"torch {torch.__version__}; use 'auto' or 'cpu'"
            )
    return resolved


def check_workers(workers: int, device: torch.device) -> None:
    """Raise ValueError unless ``workers`` processes can train on ``device`` here."""
    if workers > 1 and (device.type != "cpu" or not fork_available()):
        raise ValueError(
            f"workers={workers} needs the CPU and processes started by fork (Linux); "
            f"here the device is {device} and fork is "
            f"{'available' if fork_available() else 'not available'}"
        )


def train(
    model: RecModel,
    data: Interactions,
    config: TrainConfig,
    validation: Interactions | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    epochs: int | None = None,
    group: Group | None = None,
    checkpoints: Checkpoints | None = None,
    phase: str = "fit",
    resume: Snapshot | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``epochs`` (default ``config.epochs``) epochs.

    With ``validation`` (later interactions), each epoch is scored by Recall@10 of the
    held-out pairs, ranking the full catalogue with each user's training listings excluded;
    training stops after ``config.patience`` epochs without gain and the best epoch's
    weights are restored. It also stops after the epoch that passes ``config.time_budget``
    and when a callback returns True. ``progress``: a bar per epoch (None: on a terminal).
    Every random draw comes from a generator seeded with ``config.seed``.

    ``group``: this process's place in a distributed run (``data`` and ``validation`` hold
    its own users, numbered among them, and ``model`` holds their rows only: ``OwnUsers``).
    ``checkpoints``: written after every epoch (and every ``every_steps`` steps), under the
    name ``phase``; ``resume``: a checkpoint of this phase to continue from.

    Raises TrainingDiverged (on every rank) after an epoch whose loss or weights are NaN or
    infinite. The checkpoints written until then stay for inspection: an epoch's holds
    finite weights, one written every ``every_steps`` steps may not.
    """
    device = group.device if group else resolve_device(config.device)
    check_workers(config.workers, device)
    if group and config.workers > 1:
        raise ValueError(
            "workers (Hogwild processes on one host) and torchrun ranks do not combine: "
            "use one or the other"
        )
    generator = torch.Generator().manual_seed(rank_seed(config.seed, group))
    model.generator = generator
    model.to(device)
    pairs, log_q, trained = training_pairs(model, data, config, device, group)
    model.forget_untrained_ids(trained)
    # what reading the data, transforming the features and ordering the pairs freed: on a
    # rank of a 70-day run about 270 MB that its training steps would never use again
    release_free_memory()
    optimizers = make_optimizers(model, config)
    stepper = data_parallel(model, group)
    result = TrainResult()
    best_state = None
    stopping = EarlyStopping(config.patience, config.warm_up)
    started = time.perf_counter()
    validated = False
    first_epoch, first_batch, steps = 1, 0, 0
    if resume is not None:
        first_epoch, first_batch, steps = _restore(
            resume, model, optimizers, generator, result, stopping
        )
        best_state = resume.best_weights
        logger.info("resumed at epoch %d, batch %d", first_epoch, first_batch)
    model.set_training_pairs(pairs[0], pairs[1])
    # the ranks share out the work of the listing cache's refreshes
    model.row_split = group

    def save(
        epoch: int,
        batch: int,
        steps: int,
        epoch_state: torch.Tensor,
        epoch_totals: dict[str, float] | None = None,
    ) -> None:
        assert checkpoints is not None
        checkpoints.save(
            Position(phase, epoch, batch, steps),
            model,
            optimizers,
            {"epoch": epoch_state, "now": generator.get_state()},
            best_state,
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_score": result.best_score,
                "stopping": stopping.state(),
            },
            epoch_totals,
        )

    try:
        last_epoch = epochs or config.epochs
        for epoch in range(first_epoch, last_epoch + 1):
            epoch_started = time.perf_counter()
            if resume is not None and epoch == first_epoch and first_batch:
                # within an epoch: the cache its steps read since the last refresh, as the
                # stopped run read it (new vectors from the weights now would differ)
                model.restore_cache(resume.caches)
            elif not validated:  # a validation refreshed the model after the last step
                model.refresh()
            epoch_state = generator.get_state()
            # the loss summed over the batches before a resumed epoch's first, their count
            # and seconds: kept in its checkpoint (none in one written before they were kept:
            # the epoch's figures are then those of the batches taken since)
            before = {name: 0.0 for name in EPOCH_TOTALS}
            if resume is not None and epoch == first_epoch and first_batch:
                epoch_state = resume.generator_states["epoch"]
                before = resume.epoch_totals or before
            label = f"epoch {epoch}"
            on_step = None
            # Hogwild's steps run in worker processes: its checkpoints follow epochs only
            if checkpoints is not None and checkpoints.every_steps and config.workers == 1:

                def on_step(
                    batch: int,
                    done: int,
                    loss_sum: float,
                    batches: int,
                    epoch: int = epoch,
                    state: torch.Tensor = epoch_state,
                    epoch_started: float = epoch_started,
                    seconds_before: float = before["train_seconds"],
                ) -> None:
                    if checkpoints.due(done):
                        seconds = seconds_before + time.perf_counter() - epoch_started
                        totals = {
                            "loss_sum": loss_sum,
                            "batches": batches,
                            "train_seconds": seconds,
                        }
                        save(epoch, batch, done, state, totals)

            loss, steps = train_epoch(
                model,
                optimizers,
                pairs,
                log_q,
                trained,
                config,
                generator,
                label,
                steps,
                progress,
                group=group,
                start_batch=first_batch if epoch == first_epoch else 0,
                epoch_state=epoch_state,
                on_step=on_step,
                stepper=stepper,
                before=(before["loss_sum"], int(before["batches"])),
            )
            check_finite(model, loss, epoch, group)
            now = time.perf_counter()
            # seconds: since training started, as the log shows; train_seconds: this epoch's
            # steps and cache refreshes alone, without validation and checkpoints (a resumed
            # epoch's with those of its batches before the stop)
            entry = {
                "epoch": epoch,
                "loss": loss,
                "seconds": now - started,
                "train_seconds": before["train_seconds"] + now - epoch_started,
            }
            message = f"epoch {epoch:3d}  loss {loss:.4f}"
            validated = validation is not None and (
                len(validation) > 0 if group is None else group.total(len(validation)) > 0
            )
            if validated:
                validation_started = time.perf_counter()
                score, error = validation_recall(model, data, validation, config, group)
                entry["validation_seconds"] = time.perf_counter() - validation_started
                if math.isnan(score):
                    # no hold-out user has a training pair (a warm start's day, whose users
                    # came the day before): a score of 0 would stop at the first epoch
                    message += "  val recall@10 - (no validation user has a training pair)"
                    result.best_epoch = epoch
                else:
                    entry["val_recall@10"], entry["val_recall@10_se"] = score, error
                    message += f"  val recall@10 {score:.4f} (se {error:.4f})"
                    if stopping.update(score, last=epoch == last_epoch):
                        result.best_score, result.best_epoch = score, epoch
                        best_state = copy.deepcopy(model.state_dict())
            else:
                result.best_epoch = epoch
            result.history.append(entry)
            elapsed = time.perf_counter() - started
            logger.info("%s  (%.1fs)", message, entry["seconds"])
            if checkpoints is not None:
                save(epoch + 1, 0, steps, generator.get_state())
            metrics = {
                k: v for k, v in entry.items() if k not in ("epoch", "seconds", "train_seconds")
            }
            stop = [bool(callback(epoch, metrics, elapsed)) for callback in callbacks]
            if group is not None:  # a callback on one rank stops every rank
                stop = [group.max(int(any(stop))) > 0]
            if validated and stopping.stop:
                result.stopped = "patience"
                logger.info(
                    "early stop after %d epochs without gain; best epoch %d",
                    stopping.bad_epochs,
                    result.best_epoch,
                )
            elif config.time_budget is not None and agreed_elapsed(elapsed, group) > (
                config.time_budget
            ):
                result.stopped = "time budget"
                logger.info("time budget of %.0fs spent after epoch %d", config.time_budget, epoch)
            elif any(stop):
                result.stopped = "callback"
                logger.info("stopped by a callback after epoch %d", epoch)
            if result.stopped != "epochs":
                break
    finally:
        release_held_rows(stepper)
        model.set_training_pairs(None, None)
        # after training, ranks call the model on their own (rank 0 saves it)
        model.row_split = None
    if best_state is not None:
        model.load_state_dict(best_state)
        model.refresh()  # the cache held the last epoch's vectors
    elif result.best_epoch == 0 and result.history:
        # stopped after the first epoch (a budget, a callback): the model is that epoch's
        result.best_epoch = result.history[-1]["epoch"]
        result.best_score = result.history[-1].get("val_recall@10", result.best_score)
    result.seconds = time.perf_counter() - started
    return result


def check_finite(model: RecModel, loss: float, epoch: int, group: Group | None) -> None:
    """Raise TrainingDiverged on every rank when an epoch's mean loss or the weights on any
    rank are not finite. Once an epoch, so it costs the steps nothing: the loss is the one
    the epoch summed anyway, and a sum of each weight is NaN or infinite when any of its
    values is (the last step's update shows in no loss yet)."""
    sums = torch.stack([p.detach().sum().float() for p in model.parameters()])
    problem = None
    if not math.isfinite(loss):
        problem = f"loss {loss}"
    elif not bool(sums.isfinite().all()):
        problem = "weights not finite"
    message = None
    if problem is not None:
        message = f"training diverged at epoch {epoch}: {problem}; lower lr or check the weights"
    if group is not None:  # a rank that diverged stops every rank, as bad data on one does
        message = group.first_error(message)
    if message is not None:
        raise TrainingDiverged(message)


def rank_seed(seed: int, group: Group | None) -> int:
    """The seed of a rank's shuffles and negatives: ``seed`` itself on rank 0 (as in a run
    of one process), a different stream on each other rank."""
    if group is None or group.rank == 0:
        return int(seed)  # torch seeds from Python integers only, not NumPy ones
    return int(np.random.SeedSequence((seed, group.rank)).generate_state(1, np.uint64)[0] >> 1)


def agreed_elapsed(elapsed: float, group: Group | None) -> float:
    """The slowest rank's elapsed seconds: every rank stops after the same epoch."""
    return elapsed if group is None else group.max(int(elapsed * 1000)) / 1000


def _restore(
    snapshot: Snapshot,
    model: RecModel,
    optimizers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    result: TrainResult,
    stopping: EarlyStopping,
) -> tuple[int, int, int]:
    """Load a checkpoint's weights, optimizer and random states into this run; returns the
    epoch, the batch within it and the steps to continue from."""
    model.load_state_dict(snapshot.weights)
    for optimizer, saved in zip(optimizers, snapshot.optimizers, strict=True):
        optimizer.load_state_dict(saved)
    generator.set_state(snapshot.generator_states["now"])
    state = snapshot.state
    result.history = list(state["history"])
    result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
    stopping.restore(state["stopping"])
    position = snapshot.position
    # train_epoch counts a resumed epoch's steps from its start
    return position.epoch, position.batch, position.steps - position.batch


class _Step(torch.nn.Module):
    """A training step's loss as a module's forward, for DistributedDataParallel to wrap:
    its backward then all-reduces the gradients in buckets while it runs."""

    def __init__(self, model: RecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return _batch_loss(self.model, *args, **kwargs)


def data_parallel(model: RecModel, group: Group | None) -> torch.nn.Module:
    """What a step calls for its loss: the model's own, or one that sums gradients across
    ranks.

    The rows a rank's model holds of its own (``held_rows``: its users', its listings' ids)
    are read by no other rank: they stay out of DDP, and their gradient, the rank's own, is
    scaled as DDP's mean over the ranks scales every other (``release_held_rows`` undoes
    this after training)."""
    step = _Step(model)
    if group is None:
        return step
    tables = {name: model.get_submodule(name.removesuffix(".weight")) for name in model.held_rows}
    # DDP's one way to leave parameters out (private, stable since torch 1.8): their shapes
    # differ between ranks, which DDP's checks at construction would refuse
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        step, [f"model.{name}" for name in tables]
    )
    wrapped = DistributedDataParallel(
        step,
        device_ids=[group.device.index] if group.device.type == "cuda" else None,
        # the listing cache and other buffers are recomputed on every rank alike
        **_no_buffer_sync(),
    )
    wrapped.held_row_hooks = [
        table.weight.register_hook(lambda grad: grad / group.world) for table in tables.values()
    ]
    return wrapped


def release_held_rows(stepper: torch.nn.Module) -> None:
    """Remove the scaling of the held rows' gradients that ``data_parallel`` added."""
    for hook in getattr(stepper, "held_row_hooks", ()):
        hook.remove()


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's option not to broadcast buffers before each forward, by its name in this torch
    (``broadcast_buffers`` became ``forward_sync_buffers``)."""
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def training_pairs(
    model: RecModel,
    data: Interactions,
    config: TrainConfig,
    device: torch.device,
    group: Group | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The pairs as tensors on ``device``: (users, listings, weights), in time order for a
    sequential model; each listing's log sampling frequency (logQ, scaled); trained listings.
    In a distributed run the frequencies count every rank's pairs."""
    # a model that reads what a user viewed before a pair gets each user's pairs in time order
    order = time_order(data) if model.sequential else slice(None)
    users = torch.as_tensor(data.user_idx[order], device=device)
    listings = torch.as_tensor(data.listing_idx[order], device=device)
    # a few strong events should not drown many views: weights grow with the log
    weights = torch.as_tensor(np.log1p(data.weight[order]), device=device)
    counts = np.bincount(data.listing_idx, minlength=len(data.listings)).astype(np.float64)
    if group is not None:
        counts = group.sum(counts)
    log_q = config.logq_scale * torch.as_tensor(
        np.log(np.maximum(counts, 1) / counts.sum()), dtype=torch.float32, device=device
    )
    # negatives come from listings someone interacted with: a listing known only by its
    # features must not learn that its features are a negative
    trained = torch.as_tensor(np.flatnonzero(counts), device=device)
    return (users, listings, weights), log_q, trained


def make_optimizers(model: RecModel, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Row-wise Adagrad for the sparse embedding tables, AdamW for every other weight."""
    sparse_params = [
        p
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding) and m.sparse
        for p in m.parameters()
    ]
    sparse_ids = {id(p) for p in sparse_params}
    dense_params = [p for p in model.parameters() if id(p) not in sparse_ids]
    optimizers: list[torch.optim.Optimizer] = []
    if sparse_params:
        optimizers.append(
            RowWiseAdagrad(sparse_params, lr=config.lr, weight_decay=config.weight_decay)
        )
    if dense_params:
        optimizers.append(
            torch.optim.AdamW(dense_params, lr=config.dense_lr, weight_decay=config.weight_decay)
        )
    return optimizers


def train_epoch(
    model: RecModel,
    optimizers: list[torch.optim.Optimizer],
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    log_q: torch.Tensor,
    trained: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    progress_label: str | None,
    steps_before: int = 0,
    progress: bool | None = None,
    group: Group | None = None,
    start_batch: int = 0,
    epoch_state: torch.Tensor | None = None,
    on_step: Callable[[int, int, float, int], None] | None = None,
    stepper: torch.nn.Module | None = None,
    before: tuple[float, int] = (0.0, 0),
) -> tuple[float, int]:
    """One pass over the shuffled pairs (users, listings, weights), with a progress bar
    labelled ``progress_label`` (shown when ``progress``; None: on a terminal), after
    ``steps_before`` steps of earlier epochs; returns the mean loss and the steps taken so
    far. ``stepper`` computes a batch's loss (``data_parallel``; default: the model's own).
    With ``config.workers``
    above 1 the batches are shared out among that many worker processes (``parallel``).
    Random draws of worker w come from its own generator.

    In a distributed run (``group``) every rank takes the same number of batches of
    ``batch_size`` pairs, cycling through its own pairs, so that a rank with fewer pairs
    never leaves the others waiting. A resumed epoch starts at ``start_batch``, shuffled as
    the random state ``epoch_state`` shuffles it, and ``before`` holds the loss summed over
    the batches it took before (its checkpoint's) and their count: the mean loss returned is
    over those and this run's. ``on_step(batch, steps, loss_sum, batches)`` follows each step
    of a single process, with the epoch's loss summed so far and the batches it sums.
    """
    stepper = stepper if stepper is not None else _Step(model)
    users, listings, weights = pairs
    model.train()
    now = generator.get_state()
    if start_batch and epoch_state is not None:
        generator.set_state(epoch_state)
    order = torch.randperm(len(users), generator=generator).to(users.device)
    if start_batch:
        generator.set_state(now)
    bf16 = bf16_steps(config.precision, users.device)
    size = config.batch_size
    n_batches = -(-len(users) // size)
    if group is not None:
        n_batches = group.max(n_batches)
    workers = min(config.workers, n_batches)
    parallel = workers > 1
    seeds: list[int] = []
    generators = [generator]  # one process draws from it alone, as before workers existed
    if parallel:
        seeds = [int(torch.randint(2**62, (1,), generator=generator)) for _ in range(workers)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
    cycle = torch.arange(size, device=users.device)

    def step(index: int, worker: int) -> float:
        model.generator = generators[worker]
        if group is None:
            batch = order[index * size : (index + 1) * size]
        else:
            batch = order[(index * size + cycle) % len(order)]
        with torch.autocast(users.device.type, torch.bfloat16, enabled=bf16):
            loss = stepper(
                batch,
                users[batch],
                listings[batch],
                weights[batch],
                log_q,
                trained,
                config,
                generators[worker],
                group,
            )
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        # each worker refreshes its own copy of the cache, once per refresh point it passes
        done = steps_before + index + 1
        if refresh_due(done - workers, done):
            model.refresh()
        value = float(loss.detach())
        if on_step is not None:
            # one process: the epoch's loss summed up to this step, as the loop below adds it
            on_step(index + 1, done, total + value, counted + index + 1 - start_batch)
        return value

    total, counted = before
    if not parallel:
        batches = tqdm(
            range(start_batch, n_batches),
            desc=progress_label,
            unit="batch",
            leave=False,
            disable=show_progress(progress, progress_label),
        )
        for index in batches:  # one addition at a time: a resumed sum adds as the whole did
            total += step(index, 0)
    else:
        first = 0
        if not all(optimizer.state for optimizer in optimizers):
            # the optimizers create their state on their first step: it must exist before
            # it moves to shared memory
            total, first = total + step(0, 0), 1
        params = list(model.parameters())
        states = [state for optimizer in optimizers for state in optimizer.state.values()]
        share_weights(params, states)
        model.fill_cache()
        try:
            total += run_workers(
                step,
                range(first, n_batches),
                workers,
                progress_label,
                show_progress(progress, progress_label),
            )
        finally:
            unshare_weights(params, states)
        model.refresh()  # the workers' caches stayed in the workers
    # a resumed epoch's: over the batches before its checkpoint too, where it kept their sum
    return total / max(counted + n_batches - start_batch, 1), steps_before + n_batches


def show_progress(progress: bool | None, label: str | None) -> bool | None:
    """tqdm's ``disable`` for a bar: None (a terminal decides) unless set, off without label."""
    if label is None:
        return True
    return None if progress is None else not progress


def refresh_due(after: int, upto: int) -> bool:
    """Whether a model's cached listing vectors are refreshed between training steps
    ``after`` (exclusive) and ``upto``.

    Besides at every epoch, they are refreshed whenever the steps taken double, from
    ``FIRST_REFRESH_STEP``: histories read the cache, and in the first epoch a cache of the
    untrained tower made them noise. A refresh runs the listing tower over the catalogue
    (about 2 s for 440k listings on two cores), two to six times in the first epoch on
    1M-20M car events. There the first epoch's validation Recall@10 went from 0.0051-0.0061
    to 0.0064-0.0071 at 1M events and from 0.0038-0.0039 to 0.0048 at 5M; without user ids
    (refreshes from step 16), from 0.0016 to 0.0052 (docs/benchmarks-scale.md).
    """
    if upto < FIRST_REFRESH_STEP:
        return False
    return 1 << (upto.bit_length() - 1) > after  # the last power of two up to ``upto``


def _batch_loss(
    model: RecModel,
    pairs: torch.Tensor,
    users: torch.Tensor,
    listings: torch.Tensor,
    weights: torch.Tensor,
    log_q: torch.Tensor,
    trained: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    group: Group | None = None,
) -> torch.Tensor:
    loss = _rank_loss(
        model, pairs, users, listings, weights, log_q, trained, config, generator, group
    )
    if group is None:
        return loss
    # each rank's loss is its batch's weighted mean: scaled so that DDP's mean over ranks is
    # the weighted mean over the global batch, as one process with every rank's batch has it
    local = weights.sum().detach()
    return loss * (group.world * local / nonzero(group.sum(local)))


def _rank_loss(
    model: RecModel,
    pairs: torch.Tensor,
    users: torch.Tensor,
    listings: torch.Tensor,
    weights: torch.Tensor,
    log_q: torch.Tensor,
    trained: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    group: Group | None,
) -> torch.Tensor:
    temperature = config.temperature if model.normalized else 1.0
    if not model.factorized:
        # no vectors to share across the batch: score each positive against sampled negatives
        negatives = torch.randint(len(log_q), (len(listings), 16), generator=generator).to(
            listings.device
        )
        candidates = torch.cat([listings.unsqueeze(1), negatives], dim=1)
        logits = model.pair_scores(users.unsqueeze(1), candidates)
        target = torch.zeros(len(users), dtype=torch.long, device=logits.device)
        losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        return weighted_mean(losses, weights)
    user_vectors = model.user_vectors(users, pairs)
    listing_vectors = model.listing_vectors(listings)
    if config.loss == "softmax" and config.negatives_from == "catalogue":
        negatives = trained
        if len(trained) > config.negatives:
            drawn = torch.randint(len(trained), (config.negatives,), generator=generator)
            negatives = trained[drawn.to(trained.device)]
        return sampled_softmax(
            user_vectors,
            listing_vectors,
            listings,
            model.listing_vectors(negatives),
            negatives,
            weights,
            temperature,
        )
    if config.loss == "softmax" and group is not None:
        # the shared negatives are the first listings of every rank's batch, with gradients
        share = -(-config.negatives // group.world)
        negatives = group.gather(listings[:share])
        return shared_negatives_softmax(
            user_vectors,
            listing_vectors,
            listings,
            log_q[listings],
            group.gather_with_grad(listing_vectors[:share]),
            negatives,
            log_q[negatives],
            weights,
            temperature,
        )
    if config.loss == "softmax":
        return in_batch_softmax(
            user_vectors,
            listing_vectors,
            listings,
            log_q[listings],
            weights,
            temperature,
            config.negatives,
        )
    # bpr: a uniformly drawn listing is the negative
    negatives = torch.randint(len(log_q), listings.shape, generator=generator).to(listings.device)
    return bpr(
        user_vectors, listing_vectors, model.listing_vectors(negatives), weights, temperature
    )


def validation_sample(
    seen: sp.csr_matrix,
    held_out: sp.csr_matrix,
    n: int,
    ids: IdMap | None = None,
    group: Group | None = None,
) -> np.ndarray:
    """Sorted rows of the ``n`` users with pairs in both matrices whose ids (``ids``, else
    their rows) hash lowest: the same users every epoch, whatever the training seed and the
    number of ranks. In a distributed run the ``n`` are chosen among every rank's users, and
    each rank gets the rows of its own, so that 1 and 2 ranks are validated on the same users
    and their scores compare."""
    # users first seen in the hold-out have untrained vectors: they say nothing about epochs
    users = np.flatnonzero((np.diff(held_out.indptr) > 0) & (np.diff(seen.indptr) > 0))
    keys = _validation_keys(users if ids is None else ids.subset(users).ids)
    if group is None:
        if len(users) <= n:
            return users
        return np.sort(users[np.argpartition(keys, n - 1)[:n]])
    # the n lowest keys of every rank's users: each rank offers its own n lowest
    lowest = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    offered = np.sort(keys)[:n]
    lowest[: len(offered)] = offered
    every = group.gather(torch.from_numpy(lowest)).numpy()
    threshold = np.partition(every, n - 1)[n - 1]
    return users[keys <= threshold]


def _validation_keys(ids: pd.Index | np.ndarray) -> np.ndarray:
    """A hash of each id, the same in every process (pandas' SipHash with a fixed key),
    as non-negative int64 (collectives carry no uint64)."""
    hashes = pd.util.hash_pandas_object(
        pd.Series(ids).reset_index(drop=True), index=False, hash_key=VALIDATION_HASH_KEY
    )
    return (hashes.to_numpy() >> np.uint64(1)).astype(np.int64)


@torch.no_grad()
def validation_recall(
    model: RecModel,
    train_data: Interactions,
    validation: Interactions,
    config: TrainConfig,
    group: Group | None = None,
) -> tuple[float, float]:
    """Recall@10 on a fixed sample of validation users, among the listings with an event in
    the validation pairs, and its standard error over those users. The sample is the same
    every epoch and whatever the training seed, so that runs
    with different seeds are compared on the same users. In a distributed run each rank
    scores its share of the sample and every rank gets the same mean and error."""
    model.eval()
    model.refresh()
    device = next(model.parameters()).device
    held_out = validation.matrix()
    seen = train_data.matrix()
    # an unfactorised model scores every (user, listing) pair through its MLP: fewer users
    sample = config.validation_users if model.factorized else max(1, config.validation_users // 6)
    users = validation_sample(seen, held_out, sample, train_data.users, group)
    # ranked among the listings live in the hold-out (those with an event in it), as a test
    # ranks the catalogue of its own days: among every listing the fit knows, sold ones
    # included, the hold-out favoured longer training and less id dropout, both of which
    # the next week's catalogue, a quarter of it new, rejected (docs/evaluation.md)
    live = np.unique(validation.listing_idx)
    if group is not None:
        live = np.unique(group.gather_rows(live))
    all_listings = torch.arange(len(train_data.listings), device=device)
    listing_vectors = model.catalogue_vectors(len(all_listings)) if model.factorized else None

    dots = None if listing_vectors is None else dot_scorer(listing_vectors)

    def score(rows: np.ndarray) -> torch.Tensor:
        # ranked on the model's device: only each user's top 10 travel back
        batch = torch.as_tensor(users[rows], device=device)
        if dots is None:
            return model.score_matrix(batch, all_listings)
        return dots(model.user_vectors(batch))

    if len(users):
        metrics = evaluate_scorer(
            score,
            seen[users],
            held_out[users],
            ks=(10,),
            standard_errors=True,
            overwrite_scores=True,
            scores_per_batch=VALIDATION_SCORES,
            candidates=live,
        )
        local = (metrics["users"], metrics["recall@10"], metrics["recall@10_se"])
    else:
        local = (0, float("nan"), float("nan"))
    model.train()
    if group is None:
        return float(local[1]), float(local[2])
    every = group.gather(torch.tensor([local], dtype=torch.float64)).numpy()
    return combine_standard_errors(every[:, 0], every[:, 1], every[:, 2])
