"""Held-out interactions as a ranking task over a retriever's catalogue, and its scorer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedrec.index.catalogue import Catalogue
from embedrec.retrieval.retriever import Retriever


@dataclass
class EvaluationTask:
    """What an evaluation ranks: users (model rows), their training listings (``seen``) and
    held-out ones (``test``) as users x catalogue-row matrices, and which rows are cold."""

    catalogue: Catalogue
    users: np.ndarray
    seen: sp.csr_matrix
    test: sp.csr_matrix
    cold: np.ndarray
    counts: dict[str, int]


def evaluation_task(retriever: Retriever, events: pd.DataFrame) -> EvaluationTask:
    """Held-out ``events`` (validated interactions) as matrices over (known users) x
    (catalogue rows), so that any scorer, ours or a baseline's, is evaluated on exactly the
    same task. Events of unknown users or outside the catalogue are counted, not used."""
    catalogue = retriever.catalogue
    user_rows = retriever.users.indices(events["user_id"])
    rows = catalogue.rows_of(events["listing_id"].tolist())
    known = (user_rows >= 0) & (rows >= 0)
    users, local = np.unique(user_rows[known], return_inverse=True)
    test = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (local, rows[known])),
        shape=(len(users), catalogue.n_rows),
    )
    test.data[:] = 1.0
    trained = retriever.model.n_trained_listings
    cold = (catalogue.model_rows < 0) | (catalogue.model_rows >= trained)
    counts = {
        "events": len(events),
        "events_skipped_unknown_user": int((user_rows < 0).sum()),
        "events_skipped_not_in_catalogue": int((rows < 0).sum()),
        "users": len(users),
        "catalogue": len(catalogue),
        "cold_listings": int(cold.sum()),
    }
    return EvaluationTask(catalogue, users, retriever.seen_in(users), test, cold, counts)


def scorer(retriever: Retriever, task: EvaluationTask) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of the retriever's model for rows of ``task.users`` over the task's catalogue
    (minus infinity where a model that scores pairs cannot score a listing)."""
    catalogue = task.catalogue

    def score(batch: np.ndarray) -> np.ndarray:
        return retriever.model.score_listings(
            task.users[batch], catalogue.vectors, catalogue.model_rows, strict=False
        )

    return score
