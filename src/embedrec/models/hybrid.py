"""Two towers: listings from id + features, users from id + their recent listings.

The listing tower sees the listing id only part of the time during training (id dropout), so
a listing with few or no interactions still gets a good vector from its features alone.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from embedrec.data.packed import PackedTable
from embedrec.data.prepare import Interactions, recent_listings
from embedrec.models.base import (
    RecModel,
    dropout_keep,
    embedding,
    padded_to_few_sizes,
    positive_int,
)
from embedrec.models.feature_model import FeatureModel


def continued_histories(
    rows: np.ndarray, lengths: np.ndarray, old_rows: np.ndarray, old_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Histories (newest first, padded with 0) of new data followed by those of old data for
    the old users, the first rows; a listing in both counts once, where it is newest.

    Vectorised over users: the two histories side by side, the real entries moved to the
    front in their order by a stable sort, then cut to the width.
    """
    n_old, width = old_rows.shape
    position = np.arange(width)
    new_real = position < lengths[:n_old, None]
    old_real = position < old_lengths[:, None]
    # (user, listing) keys: an old entry the new history holds too is dropped
    n_keys = int(max(rows.max(initial=0), old_rows.max(initial=0))) + 1
    user = np.arange(n_old, dtype=np.int64)[:, None]
    old_real &= ~np.isin(user * n_keys + old_rows, (user * n_keys + rows[:n_old])[new_real])
    both = np.concatenate([rows[:n_old], old_rows], axis=1)
    real = np.concatenate([new_real, old_real], axis=1)
    order = np.argsort(~real, axis=1, kind="stable")[:, :width]
    merged_lengths = np.minimum(real.sum(axis=1), width)
    merged = np.where(position < merged_lengths[:, None], np.take_along_axis(both, order, 1), 0)
    out_rows, out_lengths = rows.copy(), lengths.copy()
    out_rows[:n_old], out_lengths[:n_old] = merged, merged_lengths
    return out_rows, out_lengths


# the share of training pairs whose lasting half reads the user's latest listings
LATEST_SHARE = 0.5
# users whose history vectors ``query_vectors`` gathers at once
_POOLED_BLOCK = 4096
# the histories hold ``history`` rows for every user, however few they viewed: at this
# bound, 8 GB for a million users; a larger one is a typo, not a setting
MAX_HISTORY = 1000


def _pooled(rows: torch.Tensor, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted means of ``table``'s rows (zero where a row's weights are all zero)."""
    # one fused gather-and-sum: materialising the (users, history, dim) block of vectors
    # first made pooling 12x slower on a million-listing catalogue
    pooled = F.embedding_bag(rows, table, mode="sum", per_sample_weights=weights)
    return pooled / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


def _pooled_np(rows: np.ndarray, table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`_pooled` in numpy, in blocks of users: the gathered (users, history, dim)
    vectors stay about 10 MB."""
    pooled = np.empty((len(rows), table.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _POOLED_BLOCK):
        block = slice(start, start + _POOLED_BLOCK)
        pooled[block] = np.einsum("uhd,uh->ud", table[rows[block]], weights[block])
    pooled /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return pooled


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


class HybridTwoTower(FeatureModel):
    """Listing vector = MLP(features, id embedding); user vector = MLP(user id, history), or
    MLP(history) alone with ``user_ids=False``.

    Both are L2-normalised, so similar listings and recommendations are dot products that a
    vector index can serve. Listing rows at or above ``n_trained_listings`` have no trained id
    and are embedded from features only; so is any listing passed by features.

    With ``recent_half_life`` (above 0) the vectors have two halves. A listing's first half
    is its id embedding (zero without one) and its second the MLP over its features alone;
    a user's first half reads the history weighted by recency (a listing ``n`` views back weighs
    ``0.5 ** (n / recent_half_life)``), its second the plain mean. What a user viewed last
    then ranks known listings, while a new listing, all features, meets the user's lasting
    taste: on MovieLens-100k the warm split gained 8% and the cold one kept its level, where
    one space had to trade them (docs/benchmarks-movielens.md). In training, each pair is
    predicted from the views before it, except that for half of the pairs the lasting half
    reads the user's latest listings, as it does when asked (``_lasting``).
    """

    normalized = True
    sequential = True
    shards_catalogue = True
    hyperparameters = (
        "feature_dim",
        "hidden",
        "id_dropout",
        "history",
        "user_ids",
        "history_gradient",
        "recent_half_life",
    )
    # no user_id table without user ids: a warm start copies only the tables a model has
    id_tables = {**FeatureModel.id_tables, "user_id.weight": "users"}
    user_inputs = ("histories.rows", "histories.lengths")

    def __init__(
        self,
        n_users: int,
        n_listings: int,
        n_trained_listings: int,
        pipeline: dict[str, Any],
        dim: int,
        feature_dim: int,
        hidden: int,
        id_dropout: float,
        history: int,
        user_ids: bool,
        history_gradient: bool,
        recent_half_life: float | None = None,  # None or 0: one space (models saved before)
    ) -> None:
        super().__init__(
            {
                "n_users": n_users,
                "n_listings": n_listings,
                "n_trained_listings": n_trained_listings,
                "pipeline": pipeline,
                "dim": dim,
                "feature_dim": feature_dim,
                "hidden": hidden,
                "id_dropout": id_dropout,
                "history": history,
                "user_ids": user_ids,
                "history_gradient": history_gradient,
                "recent_half_life": recent_half_life,
            }
        )
        self.id_dropout = id_dropout
        self.history_gradient = history_gradient
        self.latest_share = LATEST_SHARE  # 1 in a test that must draw nothing
        # without user ids a user is the listings they viewed: nothing per user to overfit,
        # and a new user or an anonymous session is embedded exactly like a known user
        self.user_id = embedding(n_users + 1, dim, 0.05, sparse=True) if user_ids else None
        self.split = bool(recent_half_life)
        # two halves: the listing MLP reads the features alone and writes the second half
        self.id_half = dim // 2 if self.split else dim
        self.listing_mlp = (
            _mlp(self.features.output_dim, hidden, dim - self.id_half)
            if self.split
            else _mlp(self.features.output_dim + dim, hidden, dim)
        )
        self.user_mlp = _mlp((2 if user_ids else 1) * dim, hidden, dim)
        # inputs set by set_histories; not weights, so not in the state dict
        self.histories = torch.zeros((n_users, history), dtype=torch.long)
        self.history_lengths = torch.zeros(n_users, dtype=torch.long)
        self.cached_listings: torch.Tensor | None = None
        self._numpy_tower: tuple | None = None  # anonymous_users' numpy views of the tower
        self.sequence: torch.Tensor | None = None
        self.sequence_starts: torch.Tensor | None = None

    @classmethod
    def listing_id_dim(cls, config: dict[str, Any]) -> int:
        return config["dim"] // 2 if config.get("recent_half_life") else config["dim"]

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        half_life = params["recent_half_life"]
        if half_life is not None:
            number = isinstance(half_life, Real) and not isinstance(half_life, bool)
            if not number or not 0 <= half_life < float("inf"):
                raise ValueError(
                    "recent_half_life must be a number of listings above 0, or 0 or None for "
                    f"one space, got {half_life!r}"
                )
            if half_life and params["dim"] < 2:
                raise ValueError("recent_half_life needs dim of at least 2 (two halves)")
        history = params["history"]
        positive_int("history", history)
        if history > MAX_HISTORY:
            raise ValueError(f"history must be at most {MAX_HISTORY}, got {history}")
        rate = params["id_dropout"]
        if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 <= rate < 1:
            raise ValueError(f"id_dropout must be a number in [0, 1), got {rate!r}")

    def set_catalogue(self, features: dict[str, torch.Tensor]) -> None:
        super().set_catalogue(features)
        self.refresh()

    def set_inputs(
        self,
        listings: pd.DataFrame | PackedTable,
        data: Interactions | None,
        reuse: object | None = None,
    ) -> None:
        super().set_inputs(listings, data, reuse)
        if data is not None:
            rows, lengths = recent_listings(data, self._config["history"])
            self.set_histories(torch.as_tensor(rows), torch.as_tensor(lengths))

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"histories.rows": self.histories, "histories.lengths": self.history_lengths}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.set_histories(tensors["histories.rows"], tensors["histories.lengths"])

    def continue_inputs(self, previous: RecModel, old_users: torch.Tensor | None = None) -> None:
        super().continue_inputs(previous, old_users)
        # a user absent from the new data keeps the history the old model read, and one
        # present reads the new listings first, then the old ones
        old_rows, old_lengths = previous.histories, previous.history_lengths
        if old_users is not None:
            old_rows, old_lengths = old_rows[old_users], old_lengths[old_users]
        rows, lengths = continued_histories(
            self.histories.numpy(),
            self.history_lengths.numpy(),
            old_rows.numpy(),
            old_lengths.numpy(),
        )
        self.set_histories(torch.as_tensor(rows), torch.as_tensor(lengths))

    def set_histories(self, histories: torch.Tensor, lengths: torch.Tensor) -> None:
        """Each user's most recent listing rows (padded) and how many are real."""
        self.histories, self.history_lengths = histories, lengths
        self.refresh()

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - keep inputs on the device
        super()._apply(fn, *args, **kwargs)
        self.histories, self.history_lengths = fn(self.histories), fn(self.history_lengths)
        if self.sequence is not None:
            self.sequence, self.sequence_starts = fn(self.sequence), fn(self.sequence_starts)
        self.refresh()
        return self

    # ------------------------------------------------------------------ towers
    def vectors_from_features(
        self, features: dict[str, torch.Tensor], id_rows: torch.Tensor
    ) -> torch.Tensor:
        keep = None
        if self.training and self.id_dropout > 0:
            keep = dropout_keep(id_rows.shape, self.id_dropout, self.generator)
            keep = keep.to(id_rows.device)
        id_vectors = self.listing_ids(id_rows, keep)
        if self.split:
            tower = self.listing_mlp(self.features(features))
            return F.normalize(torch.cat([id_vectors, tower], dim=1), dim=1)
        hidden = torch.cat([self.features(features), id_vectors], dim=1)
        # the id embedding also enters directly, as in plain matrix factorisation, so warm
        # listings keep MF's precision while the MLP carries what features say
        return F.normalize(self.listing_mlp(hidden) + id_vectors, dim=1)

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        if self.catalogue_share is not None and self.row_split is not None:
            return self.row_split.exchange(listings, self._vectors_of_rows)
        return self._vectors_of_rows(listings)

    def _vectors_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.vectors_from_features(self.features_of(rows), rows)

    def set_training_pairs(self, users: torch.Tensor | None, listings: torch.Tensor | None) -> None:
        # a training pair's history is what its user viewed just before it: the model learns
        # to predict the next listing from the previous ones, which is what it is asked later
        self.sequence = listings
        self.sequence_starts = None
        if users is not None:
            every_user = torch.arange(len(self.histories), device=users.device)
            self.sequence_starts = torch.searchsorted(users, every_user)

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        rows, real = self._history(users) if pairs is None else self._previous(users, pairs)
        if self.split and pairs is not None:
            # the lasting half also reads the history it reads when asked, the user's latest
            # listings (less the pair's own): see _lasting
            latest, latest_real = self._history(users)
            latest_real &= latest != self.sequence[pairs].unsqueeze(1)
            rows, real = torch.cat([rows, latest], dim=1), torch.cat([real, latest_real], dim=1)
        if self.training and self.history_gradient:
            # the history's listings learn from the pairs they predict: the tower runs once
            # per distinct listing in the batch's histories
            distinct, rows = torch.unique(rows, return_inverse=True)
            table = self.listing_vectors(padded_to_few_sizes(distinct))
        else:
            # a training pair's history holds trained listings only: a refresh in training
            # skips the listings known by their features alone (most of a catalogue whose
            # listings are days old)
            table = self.all_listing_vectors(self.n_trained_listings if self.training else None)
        weights = real.to(table.dtype)
        if not self.split:
            return self.user_from(_pooled(rows, table, weights), users)
        width = self.histories.shape[1]  # the first columns: the views before, or the latest
        rows_before, weights_before = rows[:, :width], weights[:, :width]
        recent = _pooled(rows_before, table, weights_before * self.recency_weights(width, table))
        lasting_rows, lasting_weights = rows_before, weights_before
        if pairs is not None:
            lasting_rows, lasting_weights = self._lasting(
                (rows_before, weights_before), (rows[:, width:], weights[:, width:])
            )
        lasting = _pooled(lasting_rows, table, lasting_weights)
        return self.halves(self.user_from(recent, users), self.user_from(lasting, users))

    def _lasting(
        self, before: tuple[torch.Tensor, torch.Tensor], latest: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The history rows and weights a training pair's lasting half pools: in training,
        for half of the pairs (drawn anew each step) the views before the pair, as a session
        or a new user gives them, and for the others the user's latest listings, which the
        half reads when asked; outside training, the latest. On MovieLens-100k, over twelve
        seeds, against the views before the pair alone: cold Recall@10 +5.4% and warm level,
        where the latest for every pair gave cold +3.5% and warm +2.6%
        (docs/benchmarks-movielens.md)."""
        if not self.training or self.latest_share >= 1:
            return latest
        keep_before = dropout_keep((len(before[0]),), self.latest_share, self.generator)
        keep_before = keep_before.to(before[0].device).unsqueeze(1)
        return (
            torch.where(keep_before, before[0], latest[0]),
            torch.where(keep_before, before[1], latest[1]),
        )

    def recency_weights(self, width: int, like: torch.Tensor) -> torch.Tensor:
        """Weights of a history's positions, newest first: 0.5 ** (position / half-life)."""
        positions = torch.arange(width, dtype=like.dtype, device=like.device)
        return 0.5 ** (positions / self._config["recent_half_life"])

    def halves(
        self, recent: torch.Tensor | np.ndarray, lasting: torch.Tensor | np.ndarray
    ) -> torch.Tensor | np.ndarray:
        """A split model's user vectors: the first half of those from the recency-weighted
        history, the second of those from the plain mean, together unit length."""
        h = self.id_half
        if isinstance(recent, torch.Tensor):
            return F.normalize(torch.cat([recent[:, :h], lasting[:, h:]], dim=1), dim=1)
        out = np.concatenate([recent[:, :h], lasting[:, h:]], axis=1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _history(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Users' most recent listing rows and which of them are real (not padding)."""
        rows = self.histories[users]
        positions = torch.arange(rows.shape[1], device=rows.device)
        return rows, positions < self.history_lengths[users].unsqueeze(1)

    def _previous(
        self, users: torch.Tensor, pairs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The listing rows each training pair's user viewed before it, newest first."""
        back = torch.arange(1, self.histories.shape[1] + 1, device=pairs.device)
        positions = pairs.unsqueeze(1) - back
        real = positions >= self.sequence_starts[users].unsqueeze(1)
        return self.sequence[positions.clamp(min=0)], real

    def user_from(self, pooled: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors from pooled listing vectors and user ids (None: anonymous)."""
        if self.user_id is None:
            return F.normalize(self.user_mlp(pooled) + pooled, dim=1)
        n = len(pooled)
        if users is None:
            users = torch.full((n,), self.user_id.num_embeddings - 1, device=pooled.device)
        keep = users < self.user_id.num_embeddings - 1
        if self.training and self.id_dropout > 0:
            keep &= dropout_keep((n,), self.id_dropout / 2, self.generator).to(pooled.device)
        id_vectors = self.user_id(users) * keep.unsqueeze(1)
        hidden = torch.cat([id_vectors, pooled], dim=1)
        return F.normalize(self.user_mlp(hidden) + id_vectors + pooled, dim=1)

    @torch.no_grad()
    def all_listing_vectors(self, rows: int | None = None, batch_size: int = 4096) -> torch.Tensor:
        """Vectors of listing rows 0 .. ``rows`` - 1 (None: every row), computed once and
        reused until ``refresh``; a later call for more rows computes only the rest.

        Batches of 4,096 listings: for the 1M of the ``large`` car data, 3.4 s and 62 MB
        beside the vectors, where batches of 65,536 took 7.6 s and 410 MB (their text
        tokens), a spike that every rank of a distributed run had at each refresh."""
        n = self._config["n_listings"] if rows is None else rows
        done = 0 if self.cached_listings is None else len(self.cached_listings)
        if done < n:
            more = self._listing_vectors_between(done, n, batch_size)
            cached = self.cached_listings
            self.cached_listings = more if cached is None else torch.cat([cached, more])
        return self.cached_listings[:n]

    def _listing_vectors_between(self, begin: int, end: int, batch_size: int) -> torch.Tensor:
        """Listing vectors of rows ``begin`` .. ``end`` - 1, in eval mode and full precision.

        With a ``row_split`` each rank computes the rows it owns and gathers the others',
        a batch at a time (a rank holds one batch of every rank's vectors besides the
        result): the cache is the same on every rank, and a refresh, which runs the listing
        tower over the catalogue, would otherwise cost each rank the whole of it."""
        was_training = self.training
        self.eval()
        split = self.row_split
        rank, world = (0, 1) if split is None else (split.rank, split.world)
        weight = self.listing_mlp[0].weight
        device, dim = weight.device, self._config["dim"]
        out = torch.empty((end - begin, dim), dtype=weight.dtype, device=device)

        def owned(owner: int) -> torch.Tensor:
            return torch.arange(begin + (owner - begin) % world, end, world, device=device)

        every = [owned(owner) for owner in range(world)]
        # full precision even when first asked for inside a bf16 training step: the cache is
        # the same whichever call builds it (a validation or a step)
        with torch.autocast(device.type, enabled=False):
            # every rank takes as many batches (its own rows padded), as a gather needs
            longest = max(len(rows) for rows in every)
            for s in range(0, longest, batch_size):
                rows = every[rank][s : s + batch_size]
                if split is None:  # the rows from begin on, in order
                    out[s : s + len(rows)] = self._vectors_of_rows(rows)
                    continue
                size = min(batch_size, longest - s)
                vectors = torch.zeros((size, dim), dtype=out.dtype, device=device)
                if len(rows):
                    vectors[: len(rows)] = self._vectors_of_rows(rows)
                parts = split.gather(vectors).view(world, size, dim)
                for owner, theirs in enumerate(every):
                    theirs = theirs[s : s + batch_size]
                    out[theirs - begin] = parts[owner, : len(theirs)]
        self.train(was_training)
        return out

    def session_vector(self, listing_vectors: np.ndarray) -> tuple[np.ndarray, bool]:
        # the user tower of an anonymous user: no id, the session's listings (in the order
        # viewed) as history
        lasting = self.anonymous_users(listing_vectors.mean(axis=0, keepdims=True))
        if not self.split:
            return lasting, False
        weights = self._recency_np(len(listing_vectors))[::-1]  # the last viewed is newest
        recent = (weights @ listing_vectors / weights.sum())[None, :].astype(np.float32)
        return self.halves(self.anonymous_users(recent), lasting), False

    def similar_queries(self, unit_vectors: np.ndarray) -> np.ndarray:
        # "viewed this, then viewed": a visitor whose session is this one listing, whose
        # next view the user tower was trained to predict. Judged by the next listing viewed
        # in real sessions, this beat the listing's own vector by 4% on warm listings and 16%
        # on cold ones (docs/evaluation.md)
        return self.anonymous_users(unit_vectors)

    def query_vectors(self, users: np.ndarray) -> np.ndarray:
        """``user_vectors(users)`` in numpy on the CPU (from the cached listing vectors and
        views of the tower's weights): through torch's operators the user tower cost about
        0.3 ms a request, as much as the search it asks for."""
        if self.histories.device.type != "cpu":
            return super().query_vectors(users)
        users = np.asarray(users, dtype=np.int64)
        table = self.all_listing_vectors().numpy()
        rows = self.histories.numpy()[users]
        real = (np.arange(rows.shape[1]) < self.history_lengths.numpy()[users][:, None]).astype(
            np.float32
        )
        ids = None if self.user_id is None else self.user_id.weight.detach().numpy()[users]
        lasting = self._user_tower(_pooled_np(rows, table, real), ids)
        if not self.split:
            return lasting
        recent = real * self._recency_np(rows.shape[1])
        return self.halves(self._user_tower(_pooled_np(rows, table, recent), ids), lasting)

    def _recency_np(self, width: int) -> np.ndarray:
        """:meth:`recency_weights` in numpy."""
        half_life = np.float32(self._config["recent_half_life"])
        return np.float32(0.5) ** (np.arange(width, dtype=np.float32) / half_life)

    def anonymous_users(self, pooled: np.ndarray) -> np.ndarray:
        """``user_from(pooled)`` without a user id, in numpy: one query through torch's
        operators took 0.3 ms, more than the search it asks for."""
        return self._user_tower(pooled)

    def _user_tower(self, pooled: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """``user_from`` in numpy, for pooled history vectors and user id vectors (None: an
        anonymous user, whose id vector is zero)."""
        from scipy.special import erf  # 0.14 s to import: only where a query needs it

        first, second = self.user_mlp[0], self.user_mlp[2]
        held = self._numpy_tower
        if held is None or held[0] is not first.weight or held[1] != first.weight.data_ptr():
            # On the CPU these are views of the weights, which steps update in place; kept
            # while the first layer's weight is the same tensor in the same place. The first
            # layer reads [id vector, pooled history]: its columns split accordingly
            weight = first.weight.detach().cpu().numpy()
            dim = self._config["dim"]
            arrays = (
                weight[:, -dim:].T,
                weight[:, :-dim].T if self.user_id is not None else None,
                first.bias.detach().cpu().numpy(),
                second.weight.detach().cpu().numpy().T,
                second.bias.detach().cpu().numpy(),
            )
            on_cpu = first.weight.device.type == "cpu"
            held = (first.weight, first.weight.data_ptr(), arrays)
            self._numpy_tower = held if on_cpu else None
        pooled_weight, id_weight, first_bias, second_weight, second_bias = held[2]
        hidden = pooled @ pooled_weight + first_bias
        if ids is not None:
            hidden += ids @ id_weight
        hidden *= 0.5 * (1.0 + erf(hidden / np.float32(np.sqrt(2.0))))  # exact GELU
        out = hidden @ second_weight
        out += second_bias + pooled
        if ids is not None:
            out += ids
        norms = np.sqrt((out * out).sum(axis=1, keepdims=True))
        return (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    def catalogue_vectors(self, n_listings: int) -> torch.Tensor:
        return self.all_listing_vectors()[:n_listings]

    def fill_cache(self) -> None:
        self.all_listing_vectors()

    def refresh(self) -> None:
        """Forget the cached listing vectors (the listing tower changed) and the numpy
        views of the user tower (the weights may have moved to another device)."""
        self.cached_listings = None
        self._numpy_tower = None

    def cache_state(self) -> dict[str, torch.Tensor]:
        return {} if self.cached_listings is None else {"listings": self.cached_listings}

    def restore_cache(self, tensors: dict[str, torch.Tensor]) -> None:
        self.refresh()
        if "listings" in tensors:
            self.cached_listings = tensors["listings"].to(next(self.parameters()).device)
