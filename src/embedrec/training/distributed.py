"""Data-parallel training over torch.distributed, in processes launched by ``torchrun``.

Each process (rank) holds the events of its own users (a stable hash of user_id, so that a
user's history, which the hybrid reads, stays whole on one rank) and, while it trains, the
model's rows of those users only (``OwnUsers``: user id vectors and histories), with a copy
of every other weight. The id maps and listing counts are agreed in one pass over every
rank's ids; every rank reads the listings table and fits the same encoders from it.
``DistributedDataParallel`` sums the gradients of the shared weights after each step (sparse
embedding gradients included, which the gloo backend all-reduces as sparse tensors; NCCL does
too); the user rows, which no other rank reads, stay out of it. In-batch negatives come from
every rank's batch. The group is the model's ``row_split`` while it trains: the hybrid keeps the
feature tensors of the listing rows its rank owns only (``row % world``), a step's listing
vectors are computed by their owners and exchanged with their gradients (``exchange``), and
its cache of every listing's vector is built in shares.

Nothing here pickles: ids and messages cross between ranks as Arrow or UTF-8 bytes in
tensors.
"""

from __future__ import annotations

import datetime
import faulthandler
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch
import torch.distributed as dist

from embedrec.data.ids import IdMap
from embedrec.data.prepare import Interactions
from embedrec.models.base import padded_to_few_sizes

# how long a rank waits in a collective for the others (loading, a validation, rank 0 saving
# the model) before the run fails instead of hanging; EMBEDREC_DISTRIBUTED_TIMEOUT overrides
DEFAULT_TIMEOUT_S = 900
QUANTILE_POINTS = 10_001  # per rank, to agree on the validation time cut


def launched() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_cores(available: list[int], local_rank: int, local_ranks: int, threads: int) -> list[int]:
    """The cores a rank of this host keeps its threads on: its own ``threads`` of them when
    the host's ranks and their threads fill the ``available`` cores exactly, else none (an
    empty list: the scheduler places it). Kept to its own cores, a rank's threads never share
    one with another rank's or move between them, and the ranks, which wait for each other
    at every step, are slowed less by each other. A host not filled exactly may run other
    work, or other jobs pinned the same way, so it is left to the scheduler."""
    if local_ranks < 2 or local_ranks * threads != len(available):
        return []
    return sorted(available)[local_rank * threads : (local_rank + 1) * threads]


def keep_to_own_cores() -> list[int]:
    """Pin this rank, and the threads it starts from now on, to ``rank_cores``; returns them.
    EMBEDREC_PIN_RANKS=0 leaves every rank to the scheduler."""
    if os.environ.get("EMBEDREC_PIN_RANKS", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return []
    cores = rank_cores(
        list(os.sched_getaffinity(0)),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        torch.get_num_threads(),
    )
    if cores:
        os.sched_setaffinity(0, cores)
    return cores


def watch_launcher(interval_s: float = 1.0) -> bool:
    """Under torchrun, stop this rank within ``interval_s`` of its launcher's death, with one
    line on stderr; returns whether it is watched (once per process). A launcher killed
    with -9 stops no rank: they trained on to the end, or waited on a lost rank at the next
    collective until its timeout. The launcher is this process's parent when it starts
    (torchrun's agent, which stays the parent of the ranks it restarts); a rank whose
    parent changes was orphaned. Outside torchrun (no TORCHELASTIC_RUN_ID) nothing is
    watched: a plain ``python -m embedrec train``'s parent is a shell, whose end is no
    reason to stop; nor under a launcher of pid 1 (a container's first process), whose
    end ends every process of its container."""
    global _launcher
    launcher = os.getppid()
    if _launcher is not None or "TORCHELASTIC_RUN_ID" not in os.environ or launcher <= 1:
        return False
    _launcher = launcher
    threading.Thread(
        target=_stop_when_orphaned,
        args=(launcher, interval_s),
        name="embedrec-launcher-watch",
        daemon=True,
    ).start()
    return True


_launcher: int | None = None


def stop_if_orphaned() -> None:
    """Stop as the launcher's watch would, now, where the launcher is gone: an error a rank
    meets then (a peer that stopped first closed its connection) is that death's echo, and
    its traceback would bury the one line that says why."""
    if _launcher is not None and os.getppid() != _launcher:
        _stop_when_orphaned(_launcher, 0.0)


def _stop_when_orphaned(launcher: int, interval_s: float) -> None:
    while os.getppid() == launcher:
        time.sleep(interval_s)
    rank = os.environ.get("RANK", "?")
    sys.stderr.write(
        f"error: rank {rank}: its torchrun launcher (pid {launcher}) is gone; stopping\n"
    )
    sys.stderr.flush()
    os._exit(1)  # the main thread may wait in a collective on a rank that is gone too


def finish_distributed() -> None:
    """Wait for every rank (the first may still be writing the model), then leave the run."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _this_attempt(store: dist.Store) -> dist.Store:
    """``store`` with keys of this attempt only, where torchrun may restart the ranks.

    torchrun's agent keeps one store for all its restarts, so ranks that re-join after a
    lost one find the keys the old ranks left (their gloo addresses) and may wait on a dead
    peer: pytorch/pytorch#135712. One agent numbers its restarts the same for every rank;
    agents on several hosts need not, and there the launchers need
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (a fresh store at every restart), which we say."""
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not shared or int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) == 0:
        return store
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        if os.environ.get("RANK") == "0":
            print(
                "warning: torchrun --max-restarts across hosts needs "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in every launcher's environment, or "
                "restarted ranks may wait on the lost ones (pytorch/pytorch#135712)",
                file=sys.stderr,
            )
        return store
    return dist.PrefixStore(f"embedrec/attempt-{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


@dataclass
class Group:
    """This process's place in a distributed run and the collectives training needs."""

    rank: int
    world: int
    device: torch.device
    # in-batch negatives are gathered on a group of their own: its collectives run inside
    # the backward pass, beside DDP's gradient buckets on the default group
    negatives_group: object = None

    @classmethod
    def join(cls, device: torch.device) -> Group:
        """Join the run torchrun started (its environment names the rendezvous): gloo on
        the CPU, NCCL on CUDA, one GPU per rank (LOCAL_RANK)."""
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        timeout = datetime.timedelta(
            seconds=float(os.environ.get("EMBEDREC_DISTRIBUTED_TIMEOUT", DEFAULT_TIMEOUT_S))
        )
        watch_launcher()
        if not dist.is_initialized():
            # a rank that dies in native code (a segmentation fault) prints where it was:
            # torchrun reports only the signal
            if not faulthandler.is_enabled():
                faulthandler.enable()
            # before gloo's threads start, which take this thread's cores
            keep_to_own_cores()
            backend = "nccl" if device.type == "cuda" else "gloo"
            store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
            dist.init_process_group(
                backend,
                store=_this_attempt(store),
                rank=rank,
                world_size=world,
                timeout=timeout,
            )
        return cls(dist.get_rank(), dist.get_world_size(), device, dist.new_group())

    @property
    def leader(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- numbers
    def sum(self, values: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``values`` summed over every rank (a new array or tensor)."""
        if isinstance(values, np.ndarray):
            return self.sum(torch.from_numpy(values.copy())).numpy()
        out = values.detach().clone().to(self._wire)
        dist.all_reduce(out)
        return out.to(values.device)

    def max(self, value: int) -> int:
        out = torch.tensor([value], dtype=torch.int64, device=self._wire)
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return int(out.item())

    def total(self, local: int) -> int:
        return int(self.sum(torch.tensor([local], dtype=torch.int64)).item())

    def quantile(self, values: np.ndarray, q: float) -> int:
        """About the ``q`` quantile of every rank's ``values`` together, the same number on
        every rank: from each rank's quantiles at ``QUANTILE_POINTS`` points, weighted by
        its count."""
        points = np.linspace(0.0, 1.0, QUANTILE_POINTS)
        local = np.quantile(values, points) if len(values) else np.zeros(QUANTILE_POINTS)
        counts = self.gather(torch.tensor([len(values)], dtype=torch.float64))
        every = self.gather(torch.as_tensor(local, dtype=torch.float64)).numpy()
        weights = np.repeat(counts.numpy() / QUANTILE_POINTS, QUANTILE_POINTS)
        order = np.argsort(every, kind="stable")
        cumulative = np.cumsum(weights[order])
        at = np.searchsorted(cumulative, q * cumulative[-1])
        return int(every[order][min(at, len(order) - 1)])

    # ---------------------------------------------------------------- tensors
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape on every rank), concatenated in rank order."""
        # the parts are views of one tensor: no second copy to concatenate them
        out = torch.empty((self.world, *tensor.shape), dtype=tensor.dtype, device=self._wire)
        dist.all_gather(list(out.unbind(0)), tensor.contiguous().to(self._wire))
        return out.flatten(0, 1).to(tensor.device)

    def sum_in_place(self, tensor: torch.Tensor) -> None:
        """``tensor`` summed over every rank, written into it."""
        if tensor.device == self._wire:
            dist.all_reduce(tensor)
        else:
            tensor.copy_(self.sum(tensor))

    def gather_rows(self, values: np.ndarray) -> np.ndarray:
        """Every rank's 1-D ``values`` (any length each), concatenated in rank order."""
        return np.concatenate([p.numpy() for p in self._gather_parts(torch.from_numpy(values))])

    def gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Like ``gather``, and the gradient of each rank's part flows back to that rank
        (summed over the ranks that used it)."""
        return _GatherWithGrad.apply(tensor, self)

    def exchange(
        self, rows: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """The vectors of listing ``rows``, each computed by ``compute`` on the rank that
        owns the row (``row % world``) and sent to the ranks that asked for it; gradients
        flow back to the owner. A row asked for several times is computed once."""
        owner = rows % self.world
        order = torch.argsort(owner, stable=True)
        asked = torch.bincount(owner, minlength=self.world).to(self._wire)
        told = torch.empty_like(asked)
        dist.all_to_all_single(told, asked, group=self.negatives_group)
        asked_sizes, told_sizes = asked.tolist(), told.tolist()
        requests = torch.empty(sum(told_sizes), dtype=rows.dtype, device=self._wire)
        dist.all_to_all_single(
            requests,
            rows[order].to(self._wire),
            told_sizes,
            asked_sizes,
            group=self.negatives_group,
        )
        distinct, inverse = torch.unique(requests.to(rows.device), return_inverse=True)
        answers = compute(padded_to_few_sizes(distinct))[inverse]
        vectors = _AllToAllWithGrad.apply(answers, told_sizes, asked_sizes, self)
        return vectors[torch.argsort(order)]

    # ---------------------------------------------------------------- ids and messages
    def ids(self, local: pd.Index) -> pd.Index:
        """The union of every rank's ids, sorted: the same index on every rank."""
        parts = [_ids_from_bytes(b) for b in self._gather_bytes(_ids_to_bytes(local))]
        union = pd.Index(np.concatenate([np.asarray(p, dtype=object) for p in parts]))
        if all(pd.api.types.is_integer_dtype(p.dtype) for p in parts if len(p)):
            union = union.astype(np.int64)
        return union.unique().sort_values()

    def counts(self, local: pd.Series) -> pd.Series:
        everything = self.ids(pd.Index(local.index))
        values = local.reindex(everything, fill_value=0).to_numpy(np.int64)
        return pd.Series(self.sum(values), index=everything)

    def first_error(self, message: str | None) -> str | None:
        """The first rank's error message (prefixed with its rank) when any rank has one:
        every rank learns of it and stops with it, instead of waiting for the failed one."""
        messages = self._gather_bytes((message or "").encode())
        for rank, text in enumerate(messages):
            if text:
                return f"rank {rank}: {text.decode()}"
        return None

    def barrier(self) -> None:
        dist.barrier()

    def _gather_bytes(self, payload: bytes) -> list[bytes]:
        values = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else None
        parts = self._gather_parts(torch.zeros(0, dtype=torch.uint8) if values is None else values)
        return [bytes(part.numpy()) for part in parts]

    def _gather_parts(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-D ``values`` (any length each), in rank order."""
        sizes = self.gather(torch.tensor([len(values)], dtype=torch.int64)).tolist()
        padded = torch.zeros(max(max(sizes), 1), dtype=values.dtype)
        padded[: len(values)] = values
        every = self.gather(padded).view(self.world, -1)
        return [every[rank, :size] for rank, size in enumerate(sizes)]

    @property
    def _wire(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo moves CPU tensors
        return self.device if self.device.type == "cuda" else torch.device("cpu")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient and keeps this rank's rows (an
    all-reduce: gloo has no reduce-scatter), on the negatives' own process group."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Group) -> torch.Tensor:  # noqa: ANN001
        ctx.group, ctx.rows = group, len(tensor)
        wire = tensor.detach().contiguous().to(group._wire)
        parts = [torch.empty_like(wire) for _ in range(group.world)]
        dist.all_gather(parts, wire, group=group.negatives_group)
        return torch.cat(parts).to(tensor.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205 - autograd's signature
        group = ctx.group
        summed = grad.contiguous().to(group._wire)
        dist.all_reduce(summed, group=group.negatives_group)
        mine = summed[group.rank * ctx.rows : (group.rank + 1) * ctx.rows]
        return mine.to(grad.device), None


class _AllToAllWithGrad(torch.autograd.Function):
    """Rows of ``tensor`` sent to each rank (``sent`` rows to rank 0, then to rank 1, ...),
    ``received`` rows from each; backward sends the gradients the other way."""

    @staticmethod
    def forward(ctx, tensor, sent: list, received: list, group: Group):  # noqa: ANN001, ANN205
        ctx.sent, ctx.received, ctx.group = sent, received, group
        return _all_to_all(tensor, sent, received, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205 - autograd's signature
        return _all_to_all(grad, ctx.received, ctx.sent, ctx.group), None, None, None


def _all_to_all(tensor: torch.Tensor, sent: list, received: list, group: Group) -> torch.Tensor:
    wire = tensor.detach().contiguous().to(group._wire)
    out = torch.empty((sum(received), *wire.shape[1:]), dtype=wire.dtype, device=wire.device)
    dist.all_to_all_single(out, wire, received, sent, group=group.negatives_group)
    return out.to(tensor.device)


def _ids_to_bytes(ids: pd.Index) -> bytes:
    values = ids.to_numpy()
    array = pa.array(values.tolist() if values.dtype == object else values)
    sink = pa.BufferOutputStream()
    table = pa.table({"id": array})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _ids_from_bytes(payload: bytes) -> pd.Index:
    table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    column = table.column("id")
    if pa.types.is_integer(column.type):
        return pd.Index(column.to_numpy(), dtype=np.int64)
    return pd.Index(column.to_pylist(), dtype=object)


@dataclass
class OwnUsers:
    """The users a rank holds: the rows of the users whose events it read, and of those
    without events on any rank (a warm start's old users) the rows ``row % world``. Each
    user is held by one rank, which alone keeps the user's rows of the model (id vector,
    history): the rows of every user on every rank grew with the users, not the ranks."""

    rows: np.ndarray  # sorted rows of all users
    n_users: int

    @classmethod
    def of(cls, data: Interactions, group: Group) -> OwnUsers:
        """This rank's users, from its share ``data`` of a run's events."""
        n = len(data.users)
        has_events = np.bincount(data.user_idx, minlength=n) > 0
        claimed = group.sum(has_events.astype(np.int8)) > 0
        unclaimed_here = ~claimed & (np.arange(n) % group.world == group.rank)
        return cls(np.flatnonzero(has_events | unclaimed_here), n)

    def local(self, data: Interactions) -> Interactions:
        """``data`` (this rank's events) with its users numbered among this rank's."""
        return replace(
            data,
            users=data.users.subset(self.rows),
            user_idx=np.searchsorted(self.rows, data.user_idx),
        )

    def numbered_among_all(self, pairs: Interactions, users: IdMap) -> Interactions:
        """``local``'s ``pairs`` with their users numbered among all ``users`` again."""
        return replace(pairs, users=users, user_idx=self.rows[pairs.user_idx])


def seen_by_every_rank(
    data: Interactions, group: Group, extra: tuple[np.ndarray, np.ndarray] | None = None
) -> sp.csr_matrix:
    """The users x listings matrix of every rank's pairs (``data``: this rank's) and of
    their ``extra`` (user rows, listing rows) pairs, as :meth:`Interactions.matrix`."""
    small = max(len(data.users), len(data.listings)) < 2**31
    kind = np.int32 if small else np.int64
    mine_users, mine_listings = data.user_idx, data.listing_idx
    if extra is not None and len(extra[0]):
        mine_users = np.concatenate([mine_users, extra[0]])
        mine_listings = np.concatenate([mine_listings, extra[1]])
    users = group.gather_rows(np.asarray(mine_users, dtype=kind))
    listings = group.gather_rows(np.asarray(mine_listings, dtype=kind))
    ones = np.ones(len(users), dtype=np.float32)
    shape = (len(data.users), len(data.listings))
    matrix = sp.csr_matrix((ones, (users, listings)), shape=shape)
    matrix.data[:] = 1.0
    return matrix


def combine_standard_errors(counts: np.ndarray, means: np.ndarray, errors: np.ndarray) -> tuple:
    """The mean and its standard error over every user, from each rank's number of users,
    mean and standard error (sample standard deviation / sqrt(n))."""
    n = counts.sum()
    if n == 0:  # no user to score: no mean either
        return float("nan"), float("nan")
    means = np.where(counts > 0, means, 0.0)  # a rank without users has no mean (NaN)
    mean = float((counts * means).sum() / n)
    variance_terms = np.where(counts > 1, np.nan_to_num(errors) ** 2 * counts * (counts - 1), 0)
    squares = (variance_terms + counts * means**2).sum()
    if n < 2:
        return mean, float("nan")
    variance = max(0.0, (squares - n * mean**2) / (n - 1))
    return mean, math.sqrt(variance / n)
