"""The contract every model implements, so that nothing above ``models/`` asks which it holds.

A model answers five questions: the vectors of its trained listings, the vectors of listings
given by their fields (a model without features raises :class:`FeaturesUnsupportedError` for
listings it has no trained id for), a user's vector from the user's id and from a session of
listings, and the extra state it saves beside its weights. A new model is one file with a
subclass plus one line in ``models/registry.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.data.errors import DataError, shown
from embedrec.data.prepare import Interactions


class FeaturesUnsupportedError(DataError):
    """A model that reads no listing features was asked for a listing it was not trained on."""


class ColdListingsUnsupportedError(DataError):
    """A model that scores (user, listing) pairs was asked to rank listings it has no row
    for, without their ``cold_inputs``."""


@dataclass(frozen=True)
class ModelShape:
    """What the data fixes about a model: its table sizes and the fitted feature encoders."""

    n_users: int
    n_listings: int  # listing rows: trained listings first, then listings known by features
    n_trained_listings: int
    pipeline: dict[str, Any] | None  # FeaturePipeline.to_dict(); None without features
    # the users whose rows the model holds, as sorted rows of all n_users (a distributed
    # rank's own users); None: every user
    user_rows: np.ndarray | None = None


def padded_to_few_sizes(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` padded (repeating the last) to the next multiple of an eighth of its power
    of two, for a tower run on a varying number of rows each step: CPU kernels cache a plan
    per input shape (oneDNN's bf16 matrix products), and a new row count at every step grew
    a rank by 0.9 GB in one epoch; padding costs at most 1/8 more rows."""
    n = len(rows)
    step = 1 << max(0, n.bit_length() - 4)
    size = -(-n // step) * step
    return rows if size == n else torch.cat([rows, rows[-1:].expand(size - n)])


class RowSplit(Protocol):
    """Listing rows shared out among the ranks of a distributed run: rank ``rank`` of
    ``world`` owns the rows ``r`` with ``r % world == rank``. ``gather`` concatenates every
    rank's tensor (same shape on every rank) in rank order; ``exchange`` returns the vectors
    of any rows, each computed by ``compute`` on the rank that owns it and sent with its
    gradient. Every rank calls either at the same point."""

    rank: int
    world: int

    def gather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def exchange(
        self, rows: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor: ...


class RecModel(nn.Module):
    """A model scores a user and a listing by the dot product of their vectors.

    Subclasses name their constructor arguments in ``config`` so that a saved model can be
    rebuilt from JSON. Random draws during training (dropout masks) come from
    ``self.generator``, which the trainer sets; nothing reads torch's global generator.

    Attributes
    ----------
    needs_features : bool
        The model reads listing features: fit refuses a listings table without any.
    hyperparameters : tuple of str
        The ``Recommender`` parameters the model reads besides ``dim``; set for another
        model, they are an error, not ignored.
    normalized : bool
        Vectors are L2-normalised (training divides scores by a temperature).
    factorized : bool
        False when a score needs the pair (``pair_scores``), not two vectors.
    sequential : bool
        A training pair's user vector reads what the user viewed before it, so training
        hands over the pairs in time order (``set_training_pairs``).
    packed_inputs : bool
        ``set_inputs`` also takes the listings as a ``PackedTable``, as a fit holds them,
        and unpacks only what it keeps; other models get a DataFrame.
    n_trained_listings : int
        Listing rows 0 .. n - 1 have trained ids; later rows are known by features only.
    id_tables : dict of str to str
        State-dict entries with one row per user (``"users"``) or per trained listing
        (``"listings"``), in row order, possibly followed by placeholder rows: a warm start
        copies the old ids' rows into them.
    user_inputs : tuple of str
        ``extra_state`` entries with one row per user, in row order.
    generator : torch.Generator or None
        Where training-time random draws come from.
    held_rows : dict of str to (tensor, int)
        Tables of which this model holds some rows only, as a rank of a distributed fit
        does (its own users', its own listings' ids): by state-dict name, the rows of the
        whole table that its rows are, and the number of real rows (rows from there on are
        placeholders, held by every rank). Empty for a whole model.
    held_users : (tensor, int) or None
        For a model of some users only: their rows among all users, and how many users
        there are. ``make_whole`` makes such a model whole.
    row_split : RowSplit or None
        Set by distributed training: a model that computes every listing's vector (a
        cache) computes only its rank's rows and gathers the rest, and a model that
        ``shards_catalogue`` holds the features of its rank's rows only.
    """

    needs_features: ClassVar[bool] = False
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    normalized: ClassVar[bool] = False
    factorized: ClassVar[bool] = True
    sequential: ClassVar[bool] = False
    packed_inputs: ClassVar[bool] = False
    id_tables: ClassVar[dict[str, str]] = {}
    user_inputs: ClassVar[tuple[str, ...]] = ()
    generator: torch.Generator | None = None
    row_split: RowSplit | None = None
    n_trained_listings: int

    def __init__(self) -> None:
        super().__init__()
        self.held_rows: dict[str, tuple[torch.Tensor, int]] = {}
        self.held_users: tuple[torch.Tensor, int] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls, shape: ModelShape, params: dict[str, Any], generator: torch.Generator
    ) -> RecModel:
        """A fresh model for ``shape`` with the estimator's ``params`` (``dim`` and
        ``hyperparameters``), its weights drawn from ``generator``.

        A model of some users only (``shape.user_rows``) holds their rows of the user
        tables, with the values a model of every user draws for them."""
        held = shape.user_rows
        built = shape if held is None else replace(shape, n_users=len(held))
        # layers draw default weights from torch's global generator while they are built;
        # those draws are replaced below, and the global state is restored as it was
        with torch.random.fork_rng(devices=[]):
            model = cls.from_shape(built, **{k: params[k] for k in ("dim", *cls.hyperparameters)})
        kept = {}
        if held is not None:
            rows = torch.as_tensor(held)
            model.held_users = (rows, shape.n_users)
            for name, table in model.user_tables().items():
                # placeholder rows after the users' (an anonymous user's) are held too
                n = shape.n_users + table.num_embeddings - len(held)
                table_rows = torch.cat([rows, torch.arange(shape.n_users, n)])
                kept[table] = (table_rows, n)
                model.held_rows[name] = (table_rows, shape.n_users)
        initialize(model, generator, kept)
        return model

    @classmethod
    def from_shape(cls, shape: ModelShape, **params: Any) -> RecModel:
        raise NotImplementedError

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first bad value among ``dim`` and the
        ``hyperparameters`` in ``params``."""
        positive_int("dim", params["dim"])

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``type(model)(**model.config)`` rebuilds the model."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inputs and state
    def set_inputs(self, listings: pd.DataFrame, data: Interactions | None) -> None:
        """Inputs that are not weights: the fields of the model's listing rows (in row order)
        and, at training time, the interactions (``None`` when restored by ``load_state``)."""

    def listing_inputs(self) -> object | None:
        """What ``set_inputs`` derived from the listings alone (feature tensors), for another
        model of the same listings: a fit's candidates and its refit share them. A model
        that returns them takes them back as ``set_inputs(listings, data, reuse)`` (given
        the same listings under the same ``row_split``) instead of deriving them again.
        None (the default) when a model derives nothing worth sharing."""
        return None

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors saved beside the weights (inputs that training derived from data)."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` returned; called after ``set_inputs``."""

    def input_tensors(self) -> dict[str, torch.Tensor]:
        """What ``set_inputs`` derived from the listings' fields (feature tensors), for a
        cache that spares another process the work; empty when a model derives none."""
        return {}

    def load_input_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``input_tensors`` returned, in place of ``set_inputs(listings, None)``."""

    def continue_inputs(self, previous: RecModel, old_users: torch.Tensor | None = None) -> None:
        """Warm start, after ``set_inputs`` on the new data: keep the inputs that
        ``previous`` (a trained model of this class, whose trained listing rows are the
        first rows of this one) derived from earlier data, where the new data alone would
        forget them. The first user rows here are ``previous``'s rows ``old_users`` (None:
        its rows in order)."""

    def forget_untrained_ids(self, trained: torch.Tensor) -> None:
        """Before training on pairs whose listings are the rows ``trained``: a model that
        can embed a listing by its features drops the ids that these pairs never train
        (listings seen in a hold-out only), so that it embeds them as it embeds new ones."""

    # ------------------------------------------------------------------ rows held in part
    def user_tables(self) -> dict[str, nn.Embedding]:
        """The embedding tables with a row per user (``id_tables``), by state-dict name."""
        return {
            name: self.get_submodule(name.removesuffix(".weight"))
            for name, kind in self.id_tables.items()
            if kind == "users" and getattr(self, name.split(".")[0], None) is not None
        }

    def make_whole(self, total: Callable[[torch.Tensor], None]) -> None:
        """After a distributed fit, make what this rank holds in part (``held_rows``,
        ``held_users``) whole: each table's rows and each per-user input (``user_inputs``)
        placed at their rows, zero elsewhere, and summed over the ranks in place by
        ``total``, each row held by one rank. Placeholder rows, which every rank holds and
        no score reads, become zero, the same on every rank."""

        def spread(held: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
            real = rows < n
            # the placeholders after the n real rows are part of the one tensor made
            whole = torch.zeros((n + int((~real).sum()), *held.shape[1:]), dtype=held.dtype)
            whole[rows[real]] = held[real]
            total(whole[:n])
            return whole

        with torch.no_grad():
            for name, (rows, n) in self.held_rows.items():
                table = self.get_submodule(name.removesuffix(".weight"))
                whole = spread(table.weight.detach(), rows, n)
                table.weight = nn.Parameter(whole, table.weight.requires_grad)
                table.num_embeddings = len(whole)
        if self.held_users is not None:
            rows, n_users = self.held_users
            inputs = self.extra_state()
            spread_inputs = {k: spread(inputs[k], rows, n_users) for k in self.user_inputs}
            if spread_inputs:
                self.load_extra_state(inputs | spread_inputs)
            self._config["n_users"] = n_users
        self.held_rows, self.held_users = {}, None

    # ------------------------------------------------------------------ training
    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of user rows; ``pairs`` (training only): the positions of the batch's pairs
        in the order given to ``set_training_pairs``."""
        raise NotImplementedError

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        """Vectors of listing rows."""
        raise NotImplementedError

    def set_training_pairs(self, users: torch.Tensor | None, listings: torch.Tensor | None) -> None:
        """The training pairs (None when training ends); a ``sequential`` model gets each
        user's pairs together, ordered by time, then listing."""

    def catalogue_vectors(self, n_listings: int) -> torch.Tensor:
        """Vectors of listing rows 0 .. n_listings - 1; a model may serve them from a cache."""
        device = next(self.parameters()).device
        return self.listing_vectors(torch.arange(n_listings, device=device))

    def pair_scores(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        """Score of each (user, listing) pair; shapes broadcast."""
        return (self.user_vectors(users) * self.listing_vectors(listings)).sum(-1)

    def score_matrix(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        """Scores of every user in ``users`` against every listing row in ``listings``."""
        return self.user_vectors(users) @ self.listing_vectors(listings).T

    def refresh(self) -> None:
        """Called when weights changed outside a step (new epoch, before validation)."""

    def fill_cache(self) -> None:
        """Compute now what later calls read from a cache (training steps, the first query):
        worker processes forked afterwards share it, and a server pays before it answers."""

    def cache_state(self) -> dict[str, torch.Tensor]:
        """What training steps read from a cache that the weights do not give back (vectors
        computed at the last refresh): a checkpoint within an epoch keeps it, so that the
        resumed epoch reads what the stopped one read."""
        return {}

    def restore_cache(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take up a checkpoint's ``cache_state``."""

    # ------------------------------------------------------------------ serving
    def embeddable(self, rows: np.ndarray) -> np.ndarray:
        """Which listings (by model row, -1: not in the model) this model can embed: without
        features, only the listings it was trained on."""
        return (rows >= 0) & (rows < self.n_trained_listings)

    @torch.no_grad()
    def embed_listings(self, listings: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Vectors of listings given by their fields and model rows (-1: not in the model).

        Raises FeaturesUnsupportedError for a listing the model cannot embed (see
        ``embeddable``)."""
        if not self.embeddable(rows).all():
            raise FeaturesUnsupportedError(
                f"model {type(self).__name__} reads no listing features and cannot embed "
                "listings it was not trained on; use a feature model (hybrid or deep)"
            )
        return self.listing_vectors(torch.as_tensor(rows)).numpy()

    @torch.no_grad()
    def query_vectors(self, users: np.ndarray) -> np.ndarray | None:
        """Vectors whose dot products with listing vectors rank the listings for these user
        rows, or None when a score needs the pair (then ``score_listings`` ranks)."""
        return self.user_vectors(torch.as_tensor(users)).numpy()

    @torch.no_grad()
    def session_vector(self, listing_vectors: np.ndarray) -> tuple[np.ndarray, bool]:
        """The query for an anonymous visitor who viewed these listings, and whether it is
        searched by cosine (True) or by dot product."""
        return listing_vectors.mean(axis=0, keepdims=True), True

    def similar_queries(self, unit_vectors: np.ndarray) -> np.ndarray:
        """Queries, searched by cosine, for the listings most like these ones (their unit
        vectors, a row each): the vectors themselves where a model learns no order of views."""
        return unit_vectors

    def cold_inputs(self, listings: pd.DataFrame) -> np.ndarray | None:
        """What ``score_listings`` reads, besides their vectors, of listings that have no model
        row (new ones, given by their fields): an array with a row per listing, or None (the
        default) where the vectors are all a score needs."""
        return None

    @torch.no_grad()
    def score_listings(
        self,
        users: np.ndarray,
        vectors: np.ndarray,
        rows: np.ndarray,
        strict: bool = True,
        cold: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores of user rows against listings given by their vectors and model rows.

        A model that scores pairs needs the listing's model row or, for a listing without
        one, its ``cold_inputs`` (``cold``: a row per listing whose row is -1, in order).
        Given neither, with ``strict`` it raises ColdListingsUnsupportedError, else the
        listing scores minus infinity."""
        query = self.query_vectors(users)
        return query @ vectors.T


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int (a NumPy integer too: faiss takes no other); ValueError
    unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {shown(value)}")
    return int(value)


DRAW_BLOCK = 65536  # rows of an embedding table drawn at once


def initialize(
    module: nn.Module,
    generator: torch.Generator,
    kept: dict[nn.Embedding, tuple[torch.Tensor, int]] | None = None,
) -> None:
    """Draw every weight of ``module`` from ``generator``, with PyTorch's default
    distributions, except embeddings: N(0, ``init_std``) where a layer sets it.

    A table in ``kept`` holds some rows of a larger one, ``(rows, n)``: the table of ``n``
    rows is drawn in blocks and ``rows`` kept, so it holds the values it would hold whole
    (draws in blocks of a multiple of 16 values are those of one draw)."""
    kept = kept or {}
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features) if layer.in_features else 0.0
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(layer, nn.Embedding):
                std = getattr(layer, "init_std", 1.0)
                if layer in kept:
                    _draw_rows(layer.weight, *kept[layer], std, generator)
                else:
                    layer.weight.normal_(0.0, std, generator=generator)
                if layer.padding_idx is not None:
                    layer.weight[layer.padding_idx].zero_()


def _draw_rows(
    weight: torch.Tensor, rows: torch.Tensor, n: int, std: float, generator: torch.Generator
) -> None:
    """Rows ``rows`` (sorted) of a table of ``n`` rows drawn from N(0, ``std``), into
    ``weight``."""
    width = max(1, math.prod(weight.shape[1:]))
    starts = list(range(0, n, DRAW_BLOCK))
    if len(starts) > 1 and (n - starts[-1]) * width < 16:
        starts.pop()  # under 16 values torch draws otherwise: the last block takes them
    ends = [*starts[1:], n]
    longest = max(e - s for s, e in zip(starts, ends, strict=True))
    buffer = torch.empty((longest, *weight.shape[1:]), dtype=weight.dtype)
    bounds = torch.searchsorted(rows, torch.tensor([*starts, n]))
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        drawn = buffer[: end - start].normal_(0.0, std, generator=generator)
        mine = slice(int(bounds[i]), int(bounds[i + 1]))
        weight[mine] = drawn[rows[mine] - start]


def embedding(rows: int, dim: int, std: float, **options: Any) -> nn.Embedding:
    """An embedding table whose rows ``initialize`` draws from N(0, ``std``)."""
    table = nn.Embedding(rows, dim, **options)
    table.init_std = std
    nn.init.normal_(table.weight, std=std)
    if table.padding_idx is not None:
        with torch.no_grad():
            table.weight[table.padding_idx].zero_()
    return table


def dropout_keep(shape: tuple[int, ...], rate: float, generator: torch.Generator | None):
    """A mask keeping each entry with probability 1 - ``rate``, drawn on the CPU (so a CUDA
    run drops the same entries as a CPU run)."""
    return torch.rand(shape, generator=generator) >= rate
