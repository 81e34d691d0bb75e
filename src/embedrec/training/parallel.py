"""Hogwild training: worker processes take turns through an epoch's batches on shared weights.

On a 2-core machine two one-thread processes took 24.2 ms per hybrid step together, against
34.7 ms for one process with two threads (5M car events; a 20M epoch took 106 s instead of
150-164 s): the small kernels of a step leave cores idle that a second process fills.
Workers update the weights without locks (as LightFM and implicit's BPR do with threads), so
a run is not reproducible bit for bit.

Weights and optimizer state live in anonymous shared memory that forked workers inherit, not
in ``/dev/shm``, which containers often cap at 64 MB.
"""

from __future__ import annotations

import mmap
import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

POLL_SECONDS = 0.2


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def shared_zeros(n: int, dtype: torch.dtype) -> torch.Tensor:
    """A zero tensor in anonymous shared memory: forked processes see each other's writes."""
    if n == 0:  # nothing to share; frombuffer refuses an empty buffer
        return torch.zeros(0, dtype=dtype)
    buffer = mmap.mmap(-1, n * torch.empty((), dtype=dtype).element_size())
    return torch.frombuffer(buffer, dtype=dtype, count=n)


def to_shared(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` in anonymous shared memory."""
    shared = shared_zeros(tensor.numel(), tensor.dtype).view(tensor.shape)
    return shared.copy_(tensor)


def share_weights(parameters: Iterable[torch.nn.Parameter], states: Iterable[dict]) -> None:
    """Move parameters and optimizer state tensors into shared memory, in place (the
    optimizers keep their references)."""
    for param in parameters:
        param.data = to_shared(param.data)
    for state in states:
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                state[key] = to_shared(value)


def unshare_weights(parameters: Iterable[torch.nn.Parameter], states: Iterable[dict]) -> None:
    """Back to private memory, so that nothing of a finished run stays mapped."""
    for param in parameters:
        param.data = param.data.clone()
    for state in states:
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.clone()


def run_workers(
    step: Callable[[int, int], float],
    batches: range,
    workers: int,
    progress_label: str | None,
    disable_progress: bool | None = None,
) -> float:
    """Run ``step(batch, worker)`` for every batch number in ``batches`` in ``workers``
    forked processes, worker w taking ``batches[w::workers]``; returns the sum of the losses
    ``step`` returned. A worker that fails stops the others, and its error is raised here.
    ``step`` draws its random numbers from generators it is given per worker, not from
    torch's global one."""
    counts = shared_zeros(workers, torch.int64)
    losses = shared_zeros(workers, torch.float64)
    context = multiprocessing.get_context("fork")
    receivers, processes = [], []
    threads = max(1, torch.get_num_threads() // workers)
    for worker in range(workers):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_work,
            args=(
                step,
                worker,
                batches[worker::workers],
                threads,
                counts,
                losses,
                sender,
            ),
            daemon=True,
        )
        process.start()
        sender.close()
        receivers.append(receiver)
        processes.append(process)
    bar = tqdm(
        total=len(batches),
        desc=progress_label,
        unit="batch",
        leave=False,
        disable=disable_progress,
    )
    try:
        while any(p.is_alive() for p in processes):
            _raise_failure(processes, receivers)
            bar.update(int(counts.sum()) - bar.n)
            time.sleep(POLL_SECONDS)
        _raise_failure(processes, receivers)
    finally:
        bar.close()
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    return float(losses.sum())


def _raise_failure(processes: list, receivers: list) -> None:
    for worker, (process, receiver) in enumerate(zip(processes, receivers, strict=True)):
        if receiver.poll():
            try:
                message = receiver.recv()
            except EOFError:  # the worker finished and closed its end
                message = None
            if message is not None:
                raise RuntimeError(f"training worker {worker} failed:\n{message}")
        if process.exitcode not in (None, 0):
            raise RuntimeError(
                f"training worker {worker} stopped with exit code {process.exitcode}"
                + (" (killed: out of memory?)" if process.exitcode < 0 else "")
            )


def _work(step, worker, batches, threads, counts, losses, errors) -> None:  # noqa: ANN001
    try:
        torch.set_num_threads(threads)
        for batch in batches:
            losses[worker] += step(batch, worker)
            counts[worker] += 1
    except BaseException:  # noqa: BLE001 - any failure is reported to the parent
        errors.send(traceback.format_exc())
        raise SystemExit(1) from None
