"""Offline evaluation: top-k ranking, ranking metrics and classic baselines."""

from embedrec.evaluation.baselines import EASE, ItemKNN, Popularity
from embedrec.evaluation.metrics import evaluate_scorer, ranking_metrics, topk_excluding

__all__ = [
    "EASE",
    "ItemKNN",
    "Popularity",
    "evaluate_scorer",
    "ranking_metrics",
    "topk_excluding",
]
