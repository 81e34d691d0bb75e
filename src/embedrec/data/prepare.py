"""Turn validated interactions into index arrays for training, counting what is skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap, as_ids_like, holds_integers, id_index, positions

# pairs whose histories are placed at a time
HISTORY_CHUNK = 1 << 20


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
    # (user_id, listing_id) pairs of kept users on listings too rare to train on: not
    # trained, but seen, so never recommended to those users
    seen_apart: pd.DataFrame | None = None

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
            self.seen_apart,
        )

    def matrix(self, extra: tuple[np.ndarray, np.ndarray] | None = None) -> sp.csr_matrix:
        """Users x listings binary CSR matrix of these interactions, and of the ``extra``
        (user rows, listing rows) pairs."""
        users, listings = self.user_idx, self.listing_idx
        if extra is not None and len(extra[0]):
            users = np.concatenate([users, extra[0]])
            listings = np.concatenate([listings, extra[1]])
        data = np.ones(len(users), dtype=np.float32)
        shape = (len(self.users), len(self.listings))
        matrix = sp.csr_matrix((data, (users, listings)), shape=shape)
        matrix.data[:] = 1.0
        return matrix

    def seen_matrix(self) -> sp.csr_matrix:
        """:meth:`matrix` with the pairs seen apart from training, on listings that have
        rows (those of the listings table)."""
        return self.matrix(self.rows_seen_apart())

    def rows_seen_apart(self) -> tuple[np.ndarray, np.ndarray]:
        """User and listing rows of ``seen_apart``, where both have one."""
        if self.seen_apart is None or not len(self.seen_apart):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        users = self.users.indices(self.seen_apart["user_id"])
        listings = self.listings.indices(self.seen_apart["listing_id"])
        both = (users >= 0) & (listings >= 0)
        return users[both], listings[both]


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

    Events of weight 0, interactions on listings absent from ``listings``, then listings and
    users below the minimum counts, are skipped; every skip is counted in ``report``. Raises
    DataError when nothing is left to train on. With ``combine`` (a distributed run whose
    processes each hold whole users), listing counts and the id maps span every process, so
    that indices mean the same listing and user everywhere; ``report`` counts this
    process's events.
    """
    report = {"events_read": len(interactions)}
    # a time window or Parquet source says how much was read besides the events kept
    read = ("rows_read", "files_read")
    report |= {k: int(interactions.attrs[k]) for k in read if k in interactions.attrs}
    # an event of weight 0 teaches nothing: dropped before it counts towards the minimums
    zero_weight = (interactions["weight"] == 0).to_numpy()
    report["events_skipped_zero_weight"] = int(zero_weight.sum())
    frame = _without(interactions, zero_weight)
    hint = ""
    if listings is not None:
        known = id_index(listings["listing_id"])
        # the events' listing ids in the table's type: a CSV types its ids on its own
        given = frame["listing_id"]
        listing_ids = as_ids_like(known, given)
        if listing_ids is not given:
            frame = frame.assign(listing_id=listing_ids)
        unknown = positions(known, listing_ids) < 0
        report["events_skipped_unknown_listing"] = int(unknown.sum())
        if unknown.all():
            hint = _type_hint(known, listing_ids)
        frame = _without(frame, unknown)
        if holds_integers(known) and not pd.api.types.is_integer_dtype(frame["listing_id"]):
            # the strings that wrote no integer were unknown: integers are left
            frame = frame.assign(listing_id=frame["listing_id"].astype(np.int64))
    if combine is None:
        listing_counts = frame.groupby("listing_id", sort=False)["user_id"].transform("size")
    else:
        counts = combine.counts(frame["listing_id"].value_counts())
        listing_counts = frame["listing_id"].map(counts)
    rare_listing = (listing_counts < min_listing_interactions).to_numpy()
    report["events_skipped_rare_listing"] = int(rare_listing.sum())
    seen_apart = frame.loc[rare_listing, ["user_id", "listing_id"]].drop_duplicates()
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
            )
            + hint,
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
    # half the memory of a pandas groupby over the events. The keys are sorted again in
    # place rather than gathered by the order: one array of 8 bytes an event less at once
    order = np.argsort(pair, kind="stable")
    pair.sort()
    starts = np.empty(len(pair), dtype=bool)
    starts[:1] = True
    np.not_equal(pair[1:], pair[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    del starts
    pairs = pair[first]
    del pair
    timestamp = np.maximum.reduceat(frame["timestamp"].to_numpy(np.int64)[order], first)
    weight = np.add.reduceat(frame["weight"].to_numpy(np.float64)[order], first)
    report["events_used"] = len(frame)
    # the window trained on (epoch seconds), which a warm start from the model checks
    report["first_event"] = int(frame["timestamp"].min()) if len(frame) else 0
    report["last_event"] = int(frame["timestamp"].max()) if len(frame) else 0
    report["pairs"] = len(pairs)
    report["users"] = len(users)
    report["listings"] = len(listing_map)
    return Interactions(
        users=users,
        listings=listing_map,
        user_idx=pairs // len(listing_map),
        listing_idx=pairs % len(listing_map),
        timestamp=timestamp,
        # a pair's summed weights may pass float32's largest; training reads log1p of it
        weight=np.minimum(weight, np.finfo(np.float32).max).astype(np.float32),
        report=report,
        seen_apart=seen_apart if len(seen_apart) else None,
    )


def _type_hint(known: pd.Index, listing_ids: pd.Series) -> str:
    """Why no event's listing is in the listings table, where the two tables' ids differ in
    type (integer ids match only strings that write an integer plainly); else ""."""
    if holds_integers(known) == pd.api.types.is_integer_dtype(listing_ids.dtype):
        return ""
    kinds = ("strings", "integers")
    return (
        f" (the listings table's listing_id are {kinds[holds_integers(known)]}, the "
        f"interactions' are {kinds[not holds_integers(known)]} such as "
        f"{listing_ids.iloc[0]!r}: an integer id matches only the string that writes it "
        "plainly, 42 and '42', not '042')"
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


def time_order(data: Interactions) -> np.ndarray:
    """Pair indices ordered by user, then timestamp, then listing.

    ``np.lexsort`` holds little more than the order it returns (8 bytes a pair), where three
    stable torch sorts held 40-56 bytes a pair at once: the highest point of a training
    rank's memory. The pairs that ``prepare`` makes come in (user, listing) order, so a
    stable sort by user and time keeps the listings of a tie in order: two keys instead of
    three (8.9M pairs: 2.8 s against 4.2 s).
    """
    user, listing = data.user_idx, data.listing_idx
    if _in_pair_order(user, listing):
        return np.lexsort((data.timestamp, user))
    return np.lexsort((listing, data.timestamp, user))


def _in_pair_order(user: np.ndarray, listing: np.ndarray) -> bool:
    later_user = user[1:] > user[:-1]
    same_user = user[1:] == user[:-1]
    return bool(np.all(later_user | (same_user & (listing[1:] >= listing[:-1]))))


def recent_listings(data: Interactions, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``length`` most recent listing indices, newest first, padded with 0.

    Returns (histories (n_users, length), lengths (n_users,)).
    """
    # newest first: each user's pairs in training's order, from the last back, so ties are
    # broken as training breaks them and a user is served the history that training showed
    # for their next pair
    order = time_order(data)
    counts = np.bincount(data.user_idx, minlength=len(data.users))
    last = np.cumsum(counts) - 1  # each user's last place in ``order``
    histories = np.zeros((len(data.users), length), dtype=np.int64)
    # in chunks of pairs, so the gathered users and ages stay small beside the order
    for start in range(0, len(order), HISTORY_CHUNK):
        rows = order[start : start + HISTORY_CHUNK]
        users = data.user_idx[rows]
        age = last[users] - np.arange(start, start + len(rows))
        keep = age < length
        histories[users[keep], age[keep]] = data.listing_idx[rows[keep]]
    return histories, np.minimum(counts, length)
