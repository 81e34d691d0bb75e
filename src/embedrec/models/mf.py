"""Collaborative filtering by dot product: the original system's first model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from embedrec.models.base import RecModel


class MatrixFactorization(RecModel):
    """User and listing id embeddings; score = their dot product."""

    def __init__(self, n_users: int, n_listings: int, dim: int = 32, init_std: float = 0.1):
        super().__init__()
        self._config = {
            "n_users": n_users,
            "n_listings": n_listings,
            "dim": dim,
            "init_std": init_std,
        }
        # sparse gradients: a step touches only the rows in the batch, not the whole table
        self.user_embedding = nn.Embedding(n_users, dim, sparse=True)
        self.listing_embedding = nn.Embedding(n_listings, dim, sparse=True)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.listing_embedding.weight, std=init_std)

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_embedding(users)

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        return self.listing_embedding(listings)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)
