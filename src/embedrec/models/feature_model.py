"""What the models that read listing features share: the encoder and the catalogue inputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from embedrec.features.pipeline import FeatureEncoder, FeaturePipeline
from embedrec.models.base import RecModel


class FeatureModel(RecModel):
    """A model with listing features and listing id embeddings for trained listings only.

    Listing rows at or above ``n_trained_listings`` have no trained id (the extra last row of
    ``listing_id`` is a zero placeholder). ``catalogue`` holds the feature tensors of the
    model's listing rows; it is an input, not a weight, so it is not in the state dict.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = config
        self.pipeline = FeaturePipeline.from_dict(config["pipeline"])
        self.features = FeatureEncoder(self.pipeline, config["feature_dim"])
        self.n_trained_listings = config["n_trained_listings"]
        self.listing_id = nn.Embedding(self.n_trained_listings + 1, config["dim"], sparse=True)
        nn.init.normal_(self.listing_id.weight, std=0.05)
        self.catalogue: dict[str, torch.Tensor] = {}

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def set_catalogue(self, features: dict[str, torch.Tensor]) -> None:
        """Feature tensors of the model's listing rows (from ``pipeline.transform``)."""
        self.catalogue = features

    def listing_ids(self, rows: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Id embeddings of listing rows; zero where a row has no trained id or not ``keep``."""
        has_id = (rows >= 0) & (rows < self.n_trained_listings)
        if keep is not None:
            has_id &= keep
        safe = torch.where(has_id, rows, torch.full_like(rows, self.n_trained_listings))
        return self.listing_id(safe) * has_id.unsqueeze(-1)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - keep inputs on the device
        super()._apply(fn, *args, **kwargs)
        self.catalogue = {k: fn(v) for k, v in self.catalogue.items()}
        return self
