"""Collaborative filtering by dot product: the original system's first model."""

from __future__ import annotations

from typing import Any

import torch

from embedrec.models.base import ModelShape, RecModel, embedding


class MatrixFactorization(RecModel):
    """User and listing id embeddings; score = their dot product. No listing features: only
    listings seen in training have vectors, and an anonymous session is the mean of its
    listings' vectors, searched by cosine."""

    id_tables = {"user_embedding.weight": "users", "listing_embedding.weight": "listings"}

    def __init__(
        self,
        n_users: int,
        n_listings: int,
        dim: int,
        init_std: float = 0.1,
        n_trained_listings: int | None = None,
    ) -> None:
        super().__init__()
        self.n_trained_listings = n_listings if n_trained_listings is None else n_trained_listings
        self._config = {
            "n_users": n_users,
            "n_listings": n_listings,
            "dim": dim,
            "init_std": init_std,
            "n_trained_listings": self.n_trained_listings,
        }
        # sparse gradients: a step touches only the rows in the batch, not the whole table
        self.user_embedding = embedding(n_users, dim, init_std, sparse=True)
        self.listing_embedding = embedding(n_listings, dim, init_std, sparse=True)

    @classmethod
    def from_shape(cls, shape: ModelShape, **params: Any) -> MatrixFactorization:
        return cls(
            shape.n_users,
            shape.n_listings,
            n_trained_listings=shape.n_trained_listings,
            **params,
        )

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_embedding(users)

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        return self.listing_embedding(listings)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)
