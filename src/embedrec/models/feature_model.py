"""What the models that read listing features share: the encoder and the catalogue inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.data.packed import PackedTable, as_packed, row_pieces
from embedrec.data.prepare import Interactions
from embedrec.features.pipeline import FeatureEncoder, FeaturePipeline, index_batch
from embedrec.models.base import RecModel, embedding, positive_int

EMBED_BATCH = 65536  # listings embedded per forward pass: bounds memory on large tables


class FeatureModel(RecModel):
    """A model with listing features and listing id embeddings for trained listings only.

    Listing rows at or above ``n_trained_listings`` have no trained id (the extra last row of
    ``listing_id`` is a zero placeholder). ``catalogue`` holds the feature tensors of the
    model's listing rows; it is an input, not a weight, so it is not in the state dict.

    A model that ``shards_catalogue``, given its inputs while a ``row_split`` is set, holds
    the features and the id rows of its rank's listings only (``catalogue_share``,
    ``held_rows``): the catalogue's features are most of what every rank would otherwise
    hold whole. Its listing vectors then come from the owning ranks
    (``RowSplit.exchange``); once the split is gone and the model made whole, the first
    call that needs a row's features transforms the whole catalogue again.
    """

    needs_features = True
    hyperparameters: tuple[str, ...] = ("feature_dim", "hidden")
    id_tables = {"listing_id.weight": "listings"}
    shards_catalogue = False
    packed_inputs = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = config
        self.pipeline = FeaturePipeline.from_dict(config["pipeline"])
        self.features = FeatureEncoder(self.pipeline, config["feature_dim"])
        self.n_trained_listings = config["n_trained_listings"]
        id_dim = self.listing_id_dim(config)
        self.listing_id = embedding(self.n_trained_listings + 1, id_dim, 0.05, sparse=True)
        self.catalogue: dict[str, torch.Tensor] = {}
        self.catalogue_share: tuple[int, int] | None = None  # (rank, world) of a shard
        self._listing_table: PackedTable | None = None  # to rebuild a shard's catalogue
        self._id_world = 1  # ranks among which the listing id rows are held
        self._carried_ids = 0  # listing rows whose ids a warm start carried over

    @classmethod
    def listing_id_dim(cls, config: dict[str, Any]) -> int:
        """Width of the listing id embedding."""
        return config["dim"]

    @classmethod
    def from_shape(cls, shape: Any, **params: Any) -> FeatureModel:
        return cls(
            shape.n_users, shape.n_listings, shape.n_trained_listings, shape.pipeline, **params
        )

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        for name in ("feature_dim", "hidden"):
            positive_int(name, params[name])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def set_inputs(
        self,
        listings: pd.DataFrame | PackedTable,
        data: Interactions | None,
        reuse: object | None = None,
    ) -> None:
        split = self.row_split if self.shards_catalogue else None
        if reuse is not None:
            catalogue, share, table = reuse
            expected = None if split is None or split.world == 1 else (split.rank, split.world)
            if share != expected:
                raise ValueError(f"inputs of the catalogue share {share} reused for {expected}")
            self.set_catalogue(catalogue)
            if share is not None:
                self.catalogue_share, self._listing_table = share, table
                self._hold_own_listing_ids(*share)
            return
        if split is None or split.world == 1:
            self.set_catalogue(self.pipeline.transform_pieces(row_pieces(listings), len(listings)))
            return
        # only this rank's rows are transformed: the text columns' tokens alone are 1 GB for
        # a million listings, and every rank would hold them all
        rank, world = split.rank, split.world
        n_rows = len(range(rank, len(listings), world))
        self.set_catalogue(
            self.pipeline.transform_pieces(row_pieces(listings, rank, world), n_rows)
        )
        self.catalogue_share, self._listing_table = (rank, world), as_packed(listings)
        self._hold_own_listing_ids(rank, world)

    def _hold_own_listing_ids(self, rank: int, world: int) -> None:
        """Keep the id rows of this rank's listings only (and the placeholder): only the
        owner of a row computes its vector, so no other rank reads them."""
        n = self.n_trained_listings
        rows = torch.cat([torch.arange(rank, n, world), torch.tensor([n])])
        table = self.listing_id
        table.weight = nn.Parameter(table.weight.detach()[rows])
        table.num_embeddings = len(rows)
        self.held_rows["listing_id.weight"] = (rows, n)
        self._id_world = world

    def listing_inputs(self) -> tuple:
        # the tensors are shared, not copied: nothing changes them in place
        return self.catalogue, self.catalogue_share, self._listing_table

    def continue_inputs(self, previous: RecModel, old_users: torch.Tensor | None = None) -> None:
        super().continue_inputs(previous, old_users)
        # the old model's listings keep the ids they learned, in the new data or not
        self._carried_ids = previous.n_trained_listings

    def forget_untrained_ids(self, trained: torch.Tensor) -> None:
        # a listing first seen in a time hold-out has a trained listing's row, but no pair
        # trains its id: that random id would blur its features' vector in validation,
        # where a new listing has its features alone. A zero id is a dropped id
        n = self.n_trained_listings
        unused = torch.ones(n + 1, dtype=torch.bool)
        unused[trained[trained < n].cpu()] = False
        unused[: self._carried_ids] = False
        unused[n] = False  # the placeholder row
        held = self.held_rows.get("listing_id.weight")
        rows = torch.arange(n + 1) if held is None else held[0]
        drop = unused[rows.clamp(max=n)]
        if bool(drop.any()):
            weight = self.listing_id.weight
            with torch.no_grad():
                weight[drop.to(weight.device)] = 0.0
            self.refresh()

    def set_catalogue(self, features: dict[str, torch.Tensor]) -> None:
        """Feature tensors of the model's listing rows (from ``pipeline.transform``)."""
        self.catalogue = features
        self.catalogue_share = self._listing_table = None

    def features_of(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature tensors of listing ``rows``; with a shard of the catalogue, rows this rank
        owns only, while the split lasts."""
        share = self.catalogue_share
        if share is None:
            return index_batch(self.catalogue, rows)
        if self.row_split is None:
            self._whole_catalogue()
            return index_batch(self.catalogue, rows)
        rank, world = share
        if bool((rows % world != rank).any()):
            raise RuntimeError(f"rank {rank} asked for the features of rows it does not hold")
        return index_batch(self.catalogue, rows // world)

    def make_whole(self, total: Callable[[torch.Tensor], None]) -> None:
        super().make_whole(total)
        if self.catalogue_share is not None:
            # a whole model transforms the whole catalogue when it first needs a listing's
            # features: until then the share's (670 MB a rank on the large car data) would
            # be held beside what saving the model unpacks
            self.catalogue = {}

    def _whole_catalogue(self) -> None:
        table = self._listing_table
        assert table is not None
        device = self.listing_id.weight.device
        features = self.pipeline.transform_pieces(row_pieces(table), len(table))
        self.set_catalogue({k: v.to(device) for k, v in features.items()})

    def input_tensors(self) -> dict[str, torch.Tensor]:
        if self.catalogue_share is not None:
            self._whole_catalogue()
        return dict(self.catalogue)

    def load_input_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.set_catalogue(dict(tensors))

    def listing_ids(self, rows: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Id embeddings of listing rows; zero where a row has no trained id or not ``keep``."""
        has_id = (rows >= 0) & (rows < self.n_trained_listings)
        if keep is not None:
            has_id &= keep
        # a rank that holds its own rows' ids (every world-th row) is asked for those only
        index = rows // self._id_world if "listing_id.weight" in self.held_rows else rows
        placeholder = torch.full_like(rows, self.listing_id.num_embeddings - 1)
        return self.listing_id(torch.where(has_id, index, placeholder)) * has_id.unsqueeze(-1)

    def embeddable(self, rows: np.ndarray) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)  # every listing has features

    def vectors_from_features(
        self, features: dict[str, torch.Tensor], id_rows: torch.Tensor
    ) -> torch.Tensor:
        """Listing vectors from feature tensors and trained id rows (-1: no id)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_listings(self, listings: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        if len(listings) > EMBED_BATCH:  # fail before the first batch on missing columns
            self.pipeline.transform(listings.iloc[:1])
        id_rows = torch.as_tensor(np.where(rows < self.n_trained_listings, rows, -1))
        out = [
            self.vectors_from_features(
                self.pipeline.transform(listings.iloc[start : start + EMBED_BATCH]),
                id_rows[start : start + EMBED_BATCH],
            ).numpy()
            for start in range(0, max(len(listings), 1), EMBED_BATCH)
        ]
        return np.concatenate(out)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - keep inputs on the device
        super()._apply(fn, *args, **kwargs)
        self.catalogue = {k: fn(v) for k, v in self.catalogue.items()}
        return self
