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
    n = min(negatives, len(listings))
    return shared_negatives_softmax(
        user_vectors,
        listing_vectors,
        listings,
        log_q,
        listing_vectors[:n],
        listings[:n],
        log_q[:n],
        weights,
        temperature,
    )


def shared_negatives_softmax(
    user_vectors: torch.Tensor,
    listing_vectors: torch.Tensor,
    listings: torch.Tensor,
    log_q: torch.Tensor,
    negative_vectors: torch.Tensor,
    negatives: torch.Tensor,
    negative_log_q: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``in_batch_softmax`` with the shared negatives given: in a distributed run, the first
    listings of every rank's batch."""
    scaled = user_vectors / temperature
    positive = (scaled * listing_vectors).sum(dim=1) - log_q
    logits = torch.addmm(-negative_log_q.unsqueeze(0), scaled, negative_vectors.T)
    return _softmax_loss(positive, _mask_own(logits, listings, negatives), weights)


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
    logits = _mask_own(scaled @ negative_vectors.T, listings, negatives)
    return _softmax_loss(positive, logits, weights)


def _mask_own(
    logits: torch.Tensor, listings: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Set ``logits[i, j]`` to -inf where negative j is row i's own listing.

    The few such pairs are found by binary search in the sorted negatives and set in place,
    instead of comparing and rewriting the whole batch x negatives matrix.
    """
    ordered, order = torch.sort(negatives)
    first = torch.searchsorted(ordered, listings)
    count = torch.searchsorted(ordered, listings, right=True) - first
    rows = torch.repeat_interleave(torch.arange(len(listings), device=listings.device), count)
    # the j-th match of a row sits j places after its first match in sorted order
    starts = torch.cumsum(count, dim=0) - count
    offsets = torch.arange(len(rows), device=rows.device) - starts[rows]
    columns = order[first[rows] + offsets]
    return logits.index_put_((rows, columns), logits.new_tensor(float("-inf")))


def _softmax_loss(
    positive: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted mean cross-entropy of each positive logit against it and its negatives."""
    # at least float32: bf16 logits (autocast) would round the exponentials
    dtype = torch.promote_types(torch.promote_types(positive.dtype, logits.dtype), torch.float32)
    return _SoftmaxLoss.apply(positive.to(dtype), logits.to(dtype), weights.to(dtype))


class _SoftmaxLoss(torch.autograd.Function):
    """``log(exp(positive) + sum(exp(logits))) - positive``, weighted mean over rows.

    Written out because the batch x negatives block is most of a step's element-wise work:
    ``logsumexp`` and ``logaddexp`` with their backward pass over it about eight times and
    allocate a new block each time. Here the forward keeps one block of ``exp(logits - max)``
    and the backward scales it in place into the gradient: five passes, one allocation.
    """

    @staticmethod
    def forward(ctx, positive, logits, weights):  # noqa: ANN001, ANN205 - autograd's signature
        top = torch.maximum(logits.amax(dim=1), positive)
        exps = torch.sub(logits, top.unsqueeze(1)).exp_()
        positive_exp = (positive - top).exp()
        sums = exps.sum(dim=1).add_(positive_exp)
        total = nonzero(weights.sum())
        ctx.save_for_backward(exps, sums, positive_exp, weights, total)
        losses = sums.log() + top - positive
        return (losses * weights).sum() / total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        exps, sums, positive_exp, weights, total = ctx.saved_tensors
        scale = weights * (grad / total)
        # the saved block is used once: it becomes the gradient in place
        grad_logits = exps.mul_((scale / sums).unsqueeze(1))
        grad_positive = scale * (positive_exp / sums - 1)
        return grad_positive, grad_logits, None


def bpr(
    user_vectors: torch.Tensor,
    positive_vectors: torch.Tensor,
    negative_vectors: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Bayesian personalised ranking: a positive should outscore a sampled negative."""
    margin = ((user_vectors * (positive_vectors - negative_vectors)).sum(dim=1)) / temperature
    return weighted_mean(F.softplus(-margin), weights)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean of ``losses`` weighted by ``weights`` (>= 0); 0 where the weights sum to 0."""
    return (losses * weights).sum() / nonzero(weights.sum())


def nonzero(total: torch.Tensor) -> torch.Tensor:
    """A sum of weights (>= 0) to divide by: 1 where it is 0. A batch whose weights are all 0
    then contributes a loss and gradients of 0, not 0 / 0 = NaN."""
    return torch.where(total > 0, total, torch.ones_like(total))
