"""The small interface every model shares."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RecModel(nn.Module):
    """A model scores a user and a listing by the dot product of their vectors.

    ``normalized`` says whether the vectors are L2-normalised (then training divides scores by
    a temperature). Subclasses name their constructor arguments in ``config`` so that a saved
    model can be rebuilt from JSON.
    """

    normalized: bool = False

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        raise NotImplementedError
