"""Losses for implicit feedback."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def in_batch_softmax(
    user_vectors: torch.Tensor,
    listing_vectors: torch.Tensor,
    listings: torch.Tensor,
    log_q: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sampled softmax where each row's negatives are the other listings in the batch.

    ``log_q`` (the log sampling frequency of each batch listing) is subtracted so that popular
    listings, which are negatives more often, are not pushed down for being popular (Yi et al.
    2019). Other rows holding the same listing are masked: they are not negatives.
    """
    logits = user_vectors @ listing_vectors.T / temperature - log_q.unsqueeze(0)
    same = listings.unsqueeze(0) == listings.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(listings), device=logits.device)
    losses = F.cross_entropy(logits, target, reduction="none")
    return (losses * weights).sum() / weights.sum()


def bpr(
    user_vectors: torch.Tensor,
    positive_vectors: torch.Tensor,
    negative_vectors: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Bayesian personalised ranking: a positive should outscore a sampled negative."""
    margin = ((user_vectors * (positive_vectors - negative_vectors)).sum(dim=1)) / temperature
    return (F.softplus(-margin) * weights).sum() / weights.sum()
