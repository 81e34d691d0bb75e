"""Held-out interactions as a ranking task over a retriever's catalogue, and its scorer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedrec.data.ids import id_index, positions
from embedrec.index.catalogue import Catalogue
from embedrec.retrieval.retriever import Retriever

# two views further apart than this belong to different visits
SESSION_GAP_SECONDS = 30 * 60
# the row of a catalogue listing that the model cannot embed, in a pair of next views
UNRANKABLE = -2


@dataclass
class EvaluationTask:
    """What an evaluation ranks: users (model rows), their training listings (``seen``) and
    held-out ones (``test``) as users x listings matrices, and which listings are cold.

    The first ``catalogue.n_rows`` columns are the catalogue's rows; the last
    ``n_unrankable`` are catalogue listings the model cannot embed (an id model's listings
    that training never saw): their held-out events count as relevant and are never
    ranked, so that every model is judged on the same listings. A scorer of catalogue rows
    is padded to that width by :meth:`padded`."""

    catalogue: Catalogue
    users: np.ndarray
    seen: sp.csr_matrix
    test: sp.csr_matrix
    cold: np.ndarray
    counts: dict[str, int]
    n_unrankable: int = 0

    def padded(
        self, score: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``score`` (users -> scores of the catalogue's rows) with minus infinity for the
        listings the model cannot rank."""
        if not self.n_unrankable:
            return score

        def padded(batch: np.ndarray) -> np.ndarray:
            scores = np.asarray(score(batch))
            missing = np.full((len(scores), self.n_unrankable), -np.inf, dtype=scores.dtype)
            return np.hstack([scores, missing])

        return padded


def evaluation_task(retriever: Retriever, events: pd.DataFrame) -> EvaluationTask:
    """Held-out ``events`` (validated interactions) as matrices over (known users) x
    (catalogue listings), so that any scorer, ours or a baseline's, is evaluated on exactly
    the same task. Events of weight 0 (an event type worth nothing), of unknown users or
    outside the catalogue are counted, not used; so are events on listings their user
    already saw in training (a ranking excludes those), and the users left with none. Each
    skipped event is counted once, under the first of those reasons."""
    positive, zero_weight = _positive(events)
    catalogue = retriever.catalogue
    unrankable = id_index(retriever.unknown)
    user_rows = retriever.users.indices(positive["user_id"])
    listing_ids = positive["listing_id"].tolist()
    rows = catalogue.rows_of(listing_ids)
    outside = positions(unrankable, listing_ids) if len(unrankable) else np.full(len(rows), -1)
    rows = np.where((rows < 0) & (outside >= 0), catalogue.n_rows + outside, rows)
    known = (user_rows >= 0) & (rows >= 0)
    users, local = np.unique(user_rows[known], return_inverse=True)
    width = catalogue.n_rows + len(unrankable)
    test = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (local, rows[known])),
        shape=(len(users), width),
    )
    test.data[:] = 1.0
    seen = retriever.seen_in(users)
    seen.resize((len(users), width))
    already_seen = _seen_at(seen, local, rows[known])
    unseen_per_user = np.bincount(local[~already_seen], minlength=len(users))
    trained = retriever.model.n_trained_listings
    model_rows = catalogue.model_rows
    cold = np.concatenate(
        [(model_rows < 0) | (model_rows >= trained), np.ones(len(unrankable), dtype=bool)]
    )
    counts = {
        "events": len(events),
        "events_skipped_zero_weight": zero_weight,
        "events_skipped_unknown_user": int((user_rows < 0).sum()),
        # a known user's: each skipped event is counted once, under its first reason
        "events_skipped_not_in_catalogue": int(((user_rows >= 0) & (rows < 0)).sum()),
        "events_skipped_seen_in_training": int(already_seen.sum()),
        "events_on_listings_the_model_cannot_rank": int((known & (rows >= catalogue.n_rows)).sum()),
        "users": len(users),
        "users_skipped_all_seen": int((unseen_per_user == 0).sum()),
        "catalogue": width,
        "cold_listings": int(cold.sum()),
        "listings_the_model_cannot_rank": len(unrankable),
    }
    return EvaluationTask(catalogue, users, seen, test, cold, counts, len(unrankable))


def scorer(retriever: Retriever, task: EvaluationTask) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of the retriever's model for rows of ``task.users`` over the task's listings
    (minus infinity where the model cannot score a listing)."""

    def score(batch: np.ndarray) -> np.ndarray:
        return retriever.score_catalogue(task.users[batch], strict=False)

    return task.padded(score)


def _positive(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The events of positive weight, and how many were not: an event type configured as
    worth nothing (an impression, say) is no sign of interest, in training or here."""
    if "weight" not in events.columns:
        return events, 0
    zero = events["weight"].to_numpy() <= 0
    return (events[~zero] if zero.any() else events), int(zero.sum())


def _seen_at(seen: sp.spmatrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Whether ``seen`` holds each (row, column) pair."""
    picked = seen[rows, columns]  # a sparse matrix when no pair is asked for, else dense
    return (picked.toarray() if sp.issparse(picked) else np.asarray(picked)).ravel() > 0


def next_view_pairs(
    events: pd.DataFrame, session_gap: float = SESSION_GAP_SECONDS
) -> tuple[np.ndarray, np.ndarray]:
    """(first listing, next listing) ids of consecutive views in one visitor's session: the
    same user, at most ``session_gap`` seconds apart, two different listings."""
    return _session_pairs(events, session_gap)[1:]


def _session_pairs(
    events: pd.DataFrame, session_gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`next_view_pairs` with the user of each pair first."""
    stamps = pd.Series(events["timestamp"])
    if isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.dtype.kind == "M":
        # datetimes (time-zone aware or not, any resolution) as float seconds
        stamps = pd.to_datetime(stamps, utc=True)
        stamps = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    # views at the same second in the listings' order, not the file's: the pairs do not
    # depend on how the rows were written
    listings = events["listing_id"].to_numpy()
    order = np.lexsort((listings, stamps.to_numpy(), events["user_id"].to_numpy()))
    users = events["user_id"].to_numpy()[order]
    times = stamps.to_numpy()[order]
    listings = listings[order]
    seconds = times[1:] - times[:-1]
    same = (users[1:] == users[:-1]) & (seconds <= session_gap) & (listings[1:] != listings[:-1])
    return users[:-1][same], listings[:-1][same], listings[1:][same]


def similar_by_behaviour(
    retriever: Retriever,
    events: pd.DataFrame,
    ks: Sequence[int] = (10,),
    session_gap: float = SESSION_GAP_SECONDS,
) -> dict[str, Any]:
    """How often the next listing a visitor viewed in a session is among the first one's
    ``k`` similar listings: ``hit@k`` for each k in ``ks`` with its standard error over
    pairs, over all pairs and for warm and for cold first listings (never seen in training),
    with both listings in the catalogue.

    This judges similar listings by behaviour ("people who looked at this also looked at"),
    not by proxies such as distance or segment. A pair whose user viewed both listings in
    training is counted, not judged: the model learned it (events that overlap the
    training window)."""
    catalogue = retriever.catalogue
    users, first, then = _session_pairs(_positive(events)[0], session_gap)
    rows, next_rows = catalogue.rows_of(first.tolist()), catalogue.rows_of(then.tolist())
    # a listing of the catalogue that the model cannot embed: never found, never a query
    unrankable = id_index(retriever.unknown)
    if len(unrankable):
        next_rows[(next_rows < 0) & (positions(unrankable, then.tolist()) >= 0)] = UNRANKABLE
        rows[(rows < 0) & (positions(unrankable, first.tolist()) >= 0)] = UNRANKABLE
    inside = (rows != -1) & (next_rows != -1)
    user_rows = retriever.users.indices(users)
    learned = inside & (user_rows >= 0) & (rows >= 0) & (next_rows >= 0)
    candidates = np.flatnonzero(learned)
    model_rows = [catalogue.model_rows[r[candidates]] for r in (rows, next_rows)]
    width = retriever.seen.shape[1]
    trained_both = np.all([(m >= 0) & (m < width) for m in model_rows], axis=0)
    candidates, model_rows = candidates[trained_both], [m[trained_both] for m in model_rows]
    learned[:] = False
    learned[candidates] = _seen_at(retriever.seen, user_rows[candidates], model_rows[0]) & (
        _seen_at(retriever.seen, user_rows[candidates], model_rows[1])
    )
    judged = inside & ~learned
    rows, next_rows = rows[judged], next_rows[judged]
    answerable = rows >= 0
    queries, query_of_pair = np.unique(rows[answerable], return_inverse=True)
    itself = [queries[i : i + 1] for i in range(len(queries))]
    depth = min(max(ks), max(catalogue.n_rows, 1))  # a longer list finds nothing more
    searched, _ = retriever.search_similar(catalogue.unit_vectors[queries], depth, exclude=itself)
    found = np.full((len(rows), depth), -1, dtype=np.int64)
    found[answerable] = searched[query_of_pair]
    trained = retriever.model.n_trained_listings
    model_rows = catalogue.model_rows[np.maximum(rows, 0)]
    cold = ~answerable | (model_rows < 0) | (model_rows >= trained)
    report = {
        "pairs_read": len(first),
        "pairs_outside_catalogue": int((~inside).sum()),
        "pairs_seen_in_training": int(learned.sum()),
        "pairs_on_listings_the_model_cannot_rank": int((~answerable | (next_rows < -1)).sum()),
    }
    out: dict[str, Any] = {"counts": report}
    for name, part in (("overall", np.ones_like(cold)), ("warm", ~cold), ("cold", cold)):
        n = int(part.sum())
        out[name] = {"pairs": n}
        for k in ks:
            hit = (found[part, :k] == next_rows[part, None]).any(axis=1)
            rate = float(hit.mean()) if n else float("nan")
            # the sample standard deviation over pairs (ddof=1) / sqrt(n), as every other
            # metric's standard error is over its units
            error = float(np.sqrt(rate * (1 - rate) / (n - 1))) if n > 1 else float("nan")
            out[name] |= {f"hit@{k}": rate, f"hit@{k}_se": error}
    return out
