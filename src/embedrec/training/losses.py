"""Losses for implicit feedback."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def in_batch_softmax(
    user_vectors: torch.Tensor,
    listing_vectors: torch.Tensor,
    listings: torch.Tensor,
    log_q: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
    negatives: int = 512,
) -> torch.Tensor:
    """Sampled softmax whose negatives are the first ``negatives`` listings of the batch.

    Batch listings are drawn in proportion to their frequency, so ``log_q`` (the log sampling
    frequency of each batch listing) is subtracted: popular listings, negatives more often, are
    not pushed down for being popular (Yi et al. 2019). Sharing a fixed number of negatives
    keeps the cost per pair constant as batches grow. A negative equal to the row's own
    listing is masked: it is not a negative.
    """
    scaled = user_vectors / temperature
    positive = (scaled * listing_vectors).sum(dim=1) - log_q
    n = min(negatives, len(listings))
    logits = scaled @ listing_vectors[:n].T - log_q[:n].unsqueeze(0)
    logits = logits.masked_fill(listings.unsqueeze(1) == listings[:n].unsqueeze(0), float("-inf"))
    return _softmax_loss(positive, logits, weights)


def sampled_softmax(
    user_vectors: torch.Tensor,
    listing_vectors: torch.Tensor,
    listings: torch.Tensor,
    negative_vectors: torch.Tensor,
    negatives: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Softmax over the positive and negatives drawn uniformly (or all listings).

    A uniform proposal needs no correction, so the scores keep popularity: a listing many
    users want is scored up for all of them. A negative equal to the row's listing is masked.
    """
    scaled = user_vectors / temperature
    positive = (scaled * listing_vectors).sum(dim=1)
    logits = scaled @ negative_vectors.T
    logits = logits.masked_fill(listings.unsqueeze(1) == negatives.unsqueeze(0), float("-inf"))
    return _softmax_loss(positive, logits, weights)


def _softmax_loss(
    positive: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted mean cross-entropy of each positive logit against it and its negatives."""
    all_logits = torch.cat([positive.unsqueeze(1), logits], dim=1)
    losses = torch.logsumexp(all_logits, dim=1) - positive
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
