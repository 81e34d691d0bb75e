"""The original system's hybrid: ids and listing features through dense layers to a score.

Kept for comparison. Its score needs the (user, listing) pair, so recommending means scoring
every candidate; similar listings use the listing side of the network (id + features). A new
listing's side is its features beside a zero id (``cold_inputs``), as a listing whose id no
training pair reached has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from embedrec.models.base import ColdListingsUnsupportedError, embedding
from embedrec.models.feature_model import EMBED_BATCH, FeatureModel

USER_BLOCK = 64  # users scored at once: bounds the (users, listings, hidden) block


class DeepHybrid(FeatureModel):
    """score(user, listing) = MLP([user id emb, listing id emb, listing features])."""

    factorized = False
    id_tables = {**FeatureModel.id_tables, "user_id.weight": "users"}

    def __init__(
        self,
        n_users: int,
        n_listings: int,
        n_trained_listings: int,
        pipeline: dict[str, Any],
        dim: int,
        feature_dim: int,
        hidden: int,
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
            }
        )
        self.user_id = embedding(n_users, dim, 0.05, sparse=True)
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim + self.features.output_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def listing_side(self, listings: torch.Tensor) -> torch.Tensor:
        id_vectors = self.listing_ids(listings)
        flat = listings.reshape(-1)
        features = self.features(self.features_of(flat))
        features = features.reshape(*listings.shape, -1)
        return torch.cat([id_vectors, features], dim=-1)

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.listing_side(listings), dim=-1)

    def vectors_from_features(
        self, features: dict[str, torch.Tensor], id_rows: torch.Tensor
    ) -> torch.Tensor:
        both = torch.cat([self.listing_ids(id_rows), self.features(features)], dim=1)
        return F.normalize(both, dim=1)

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_id(users)

    def pair_scores(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        listing_side = self.listing_side(listings)
        user_side = self.user_id(users).expand(*listing_side.shape[:-1], -1)
        return self.mlp(torch.cat([user_side, listing_side], dim=-1)).squeeze(-1)

    def score_matrix(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        """Scores of every user against every listing row."""
        return self.side_scores(users, self.listing_side(listings))

    def side_scores(self, users: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        """Scores of every user against every listing given by its listing side, without
        materialising pair inputs: the first layer splits into a user part and a listing
        part that are added."""
        first, rest = self.mlp[0], self.mlp[1:]
        dim = self.user_id.embedding_dim
        user_part = self.user_id(users) @ first.weight[:, :dim].T
        listing_part = sides @ first.weight[:, dim:].T + first.bias
        rows = []
        for start in range(0, len(users), USER_BLOCK):
            hidden = user_part[start : start + USER_BLOCK, None, :] + listing_part[None, :, :]
            rows.append(rest(hidden).squeeze(-1))
        return torch.cat(rows)

    def query_vectors(self, users: np.ndarray) -> None:
        return None  # a score needs the pair: score_listings ranks

    @torch.no_grad()
    def cold_inputs(self, listings: pd.DataFrame) -> np.ndarray:
        # a new listing's side of the pair is its encoded features beside a zero id, as in
        # its vector; the vector cannot stand in for it: normalising lost the length that
        # the score's first layer reads
        out = [
            self.features(self.pipeline.transform(listings.iloc[start : start + EMBED_BATCH]))
            .float()
            .numpy()
            for start in range(0, len(listings), EMBED_BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.features.output_dim), np.float32)

    @torch.no_grad()
    def score_listings(
        self,
        users: np.ndarray,
        vectors: np.ndarray,
        rows: np.ndarray,
        strict: bool = True,
        cold: np.ndarray | None = None,
    ) -> np.ndarray:
        scorable = rows >= 0
        if strict and cold is None and not scorable.all():
            raise ColdListingsUnsupportedError(
                "model 'deep' scores a listing it has no row for from its cold_inputs, "
                "and none were given"
            )
        users = torch.as_tensor(users)
        scores = np.full((len(users), len(rows)), -np.inf, dtype=np.float32)
        scores[:, scorable] = self.score_matrix(users, torch.as_tensor(rows[scorable])).numpy()
        if cold is not None and not scorable.all():
            features = torch.as_tensor(cold)
            no_id = torch.zeros((len(features), self.listing_id.embedding_dim))
            sides = torch.cat([no_id, features], dim=1)
            scores[:, ~scorable] = self.side_scores(users, sides).numpy()
        return scores
