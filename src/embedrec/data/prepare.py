"""Turn validated interactions into index arrays for training, counting what is skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap


@dataclass
class Interactions:
    """Interactions as index arrays, one row per (user, listing) pair.

    Repeated events on the same pair are merged: weights add up, the timestamp is the last.
    """

    users: IdMap
    listings: IdMap
    user_idx: np.ndarray
    listing_idx: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    report: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user_idx)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(
            self.users,
            self.listings,
            self.user_idx[mask],
            self.listing_idx[mask],
            self.timestamp[mask],
            self.weight[mask],
            dict(self.report),
        )

    def matrix(self) -> sp.csr_matrix:
        """Users x listings binary CSR matrix of these interactions."""
        data = np.ones(len(self), dtype=np.float32)
        shape = (len(self.users), len(self.listings))
        matrix = sp.csr_matrix((data, (self.user_idx, self.listing_idx)), shape=shape)
        matrix.data[:] = 1.0
        return matrix


class Combine(Protocol):
    """How the processes of a distributed run, each holding the events of its own users,
    agree on what depends on all events."""

    def ids(self, local: pd.Index) -> pd.Index:
        """The union of every process's ids, in one order that every process gets."""

    def counts(self, local: pd.Series) -> pd.Series:
        """Counts per id (the index) summed over every process."""

    def total(self, local: int) -> int:
        """A number summed over every process."""


def prepare(
    interactions: pd.DataFrame,
    listings: pd.DataFrame | None = None,
    min_user_interactions: int = 1,
    min_listing_interactions: int = 1,
    combine: Combine | None = None,
) -> Interactions:
    """Map ids to indices and merge repeated pairs.

    Interactions on listings absent from ``listings``, then listings and users below the
    minimum counts, are skipped; every skip is counted in ``report``. Raises DataError when
    nothing is left to train on. With ``combine`` (a distributed run whose processes each
    hold whole users), listing counts and the id maps span every process, so that indices
    mean the same listing and user everywhere; ``report`` counts this process's events.
    """
    report = {"events_read": len(interactions)}
    # a time window or Parquet source says how much was read besides the events kept
    read = ("rows_read", "files_read")
    report |= {k: int(interactions.attrs[k]) for k in read if k in interactions.attrs}
    frame = interactions
    if listings is not None:
        known = pd.Index(listings["listing_id"])
        unknown = known.get_indexer(pd.Index(frame["listing_id"])) < 0
        report["events_skipped_unknown_listing"] = int(unknown.sum())
        frame = _without(frame, unknown)
    if combine is None:
        listing_counts = frame.groupby("listing_id", sort=False)["user_id"].transform("size")
    else:
        counts = combine.counts(frame["listing_id"].value_counts())
        listing_counts = frame["listing_id"].map(counts)
    rare_listing = (listing_counts < min_listing_interactions).to_numpy()
    report["events_skipped_rare_listing"] = int(rare_listing.sum())
    frame = _without(frame, rare_listing)
    user_counts = frame.groupby("user_id", sort=False)["listing_id"].transform("size")
    rare_user = (user_counts < min_user_interactions).to_numpy()
    report["events_skipped_rare_user"] = int(rare_user.sum())
    frame = _without(frame, rare_user)
    left = len(frame) if combine is None else combine.total(len(frame))
    if left == 0:
        raise DataError(
            "no interactions left to train on after skipping "
            + ", ".join(
                f"{k.removeprefix('events_skipped_')}: {v}"
                for k, v in report.items()
                if k.startswith("events_skipped")
            ),
            file=interactions.attrs.get("source"),
        )
    if combine is None:
        users = IdMap.from_values(frame["user_id"])
        listing_map = IdMap.from_values(frame["listing_id"])
    else:
        users = IdMap(combine.ids(pd.Index(pd.unique(frame["user_id"]))))
        listing_map = IdMap(combine.ids(pd.Index(pd.unique(frame["listing_id"]))))
    pair = users.indices(frame["user_id"]) * len(listing_map)
    pair += listing_map.indices(frame["listing_id"])
    # repeated pairs merged in NumPy, in pair order: a sort and two reductions take about
    # half the memory of a pandas groupby over the events
    order = np.argsort(pair, kind="stable")
    pair = pair[order]
    first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    timestamp = np.maximum.reduceat(frame["timestamp"].to_numpy(np.int64)[order], first)
    weight = np.add.reduceat(frame["weight"].to_numpy(np.float64)[order], first)
    pairs = pair[first]
    report["events_used"] = len(frame)
    report["pairs"] = len(pairs)
    report["users"] = len(users)
    report["listings"] = len(listing_map)
    return Interactions(
        users=users,
        listings=listing_map,
        user_idx=pairs // len(listing_map),
        listing_idx=pairs % len(listing_map),
        timestamp=timestamp,
        weight=weight.astype(np.float32),
        report=report,
    )


def _without(frame: pd.DataFrame, skipped: np.ndarray) -> pd.DataFrame:
    """``frame`` without the ``skipped`` rows; itself when none is (a copy of the events
    otherwise, hundreds of MB on a day's partition)."""
    return frame[~skipped] if skipped.any() else frame


def time_holdout(
    data: Interactions, fraction: float, cut: int | None = None
) -> tuple[Interactions, Interactions]:
    """Split by time: the last ``fraction`` of interactions (by timestamp) are held out, or
    those from ``cut`` on when given (a distributed run's cut, the same on every process)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    if cut is None:
        cut = np.quantile(data.timestamp, 1.0 - fraction, method="higher")
    later = data.timestamp >= cut
    if later.all():
        later = data.timestamp > cut
    return data.subset(~later), data.subset(later)


def recent_listings(data: Interactions, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``length`` most recent listing indices, newest first, padded with 0.

    Returns (histories (n_users, length), lengths (n_users,)).
    """
    # newest first, ties broken as training breaks them (the reverse of user, time, listing):
    # a user is served the history that training showed for their next pair
    order = np.lexsort((-data.listing_idx, -data.timestamp, data.user_idx))
    users, listings = data.user_idx[order], data.listing_idx[order]
    starts = np.searchsorted(users, users, side="left")
    position = np.arange(len(users)) - starts
    keep = position < length
    histories = np.zeros((len(data.users), length), dtype=np.int64)
    histories[users[keep], position[keep]] = listings[keep]
    lengths = np.minimum(np.bincount(users, minlength=len(data.users)), length)
    return histories, lengths
