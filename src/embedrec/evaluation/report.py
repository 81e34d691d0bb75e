"""One evaluation, reported overall and separately for warm and cold listings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from embedrec.evaluation.metrics import evaluate_scorer


def warm_cold_report(
    score_fn: Callable[[np.ndarray], np.ndarray],
    seen: sp.csr_matrix,
    test: sp.csr_matrix,
    cold: np.ndarray,
    ks: Sequence[int] = (10, 20),
    standard_errors: bool = True,
) -> dict[str, dict[str, float]]:
    """Metrics of ``score_fn`` three ways.

    ``overall`` ranks the whole catalogue; ``warm`` ranks only listings seen in training and
    counts only those as relevant; ``cold`` does the same for listings training never saw
    (``cold`` is a bool per catalogue row), which is the cold-start task: the new listings a
    user will interact with, among all new listings. Per-user means come with their standard
    errors (``"recall@10_se"``) unless ``standard_errors`` is False.
    """
    options = {"ks": ks, "standard_errors": standard_errors}
    report = {"overall": evaluate_scorer(score_fn, seen, test, **options)}
    for name, rows in (("warm", np.flatnonzero(~cold)), ("cold", np.flatnonzero(cold))):
        if len(rows):
            report[name] = evaluate_scorer(score_fn, seen, test, candidates=rows, **options)
    return report
