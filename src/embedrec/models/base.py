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
    factorized: bool = True  # False: scores need the pair (see pair_scores), not two vectors
    # True: a training pair's user vector reads what the user viewed before it, so training
    # hands over the pairs in time order (set_training_pairs)
    sequential: bool = False

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of user rows; ``pairs`` (training only): the positions of the batch's pairs
        in the order given to ``set_training_pairs``."""
        raise NotImplementedError

    def set_training_pairs(self, users: torch.Tensor | None, listings: torch.Tensor | None) -> None:
        """The training pairs (None when training ends); a ``sequential`` model gets each
        user's pairs together, ordered by time, then listing."""

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def catalogue_vectors(self, n_listings: int) -> torch.Tensor:
        """Vectors of listing rows 0 .. n_listings - 1; a model may serve them from a cache."""
        device = next(self.parameters()).device
        return self.listing_vectors(torch.arange(n_listings, device=device))

    def pair_scores(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        """Score of each (user, listing) pair; shapes broadcast."""
        return (self.user_vectors(users) * self.listing_vectors(listings)).sum(-1)

    def score_matrix(self, users: torch.Tensor, listings: torch.Tensor) -> torch.Tensor:
        """Scores of every user in ``users`` against every listing in ``listings``."""
        return self.user_vectors(users) @ self.listing_vectors(listings).T

    def refresh(self) -> None:
        """Called when weights changed outside a step (new epoch, before validation)."""

    def fill_cache(self) -> None:
        """Compute what training steps read from a cache now, not in the first step: worker
        processes forked afterwards share it instead of each computing its own."""

    @property
    def config(self) -> dict[str, Any]:
        raise NotImplementedError
