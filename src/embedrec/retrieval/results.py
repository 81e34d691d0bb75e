"""What a query returns: typed results, and the named error for an id nobody knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


class UnknownIdError(LookupError):
    """Ids that neither the model nor the catalogue knows.

    Attributes
    ----------
    ids : list
        The unknown ids, as given.
    kind : str
        ``"listing_id"`` or ``"user_id"``: the field a client got wrong.
    message : str
        ``"unknown listing_id 'x'"``, as the CLI prints it and the HTTP API answers it.
    """

    kind = "id"

    def __init__(self, ids: Sequence, message: str | None = None) -> None:
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:5]) + (" ..." if len(self.ids) > 5 else "")
        self.message = message or f"unknown {self.kind} {shown}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class UnknownListingError(UnknownIdError):
    kind = "listing_id"


class UnknownUserError(UnknownIdError):
    kind = "user_id"


@dataclass(frozen=True)
class Hit:
    """One result.

    Attributes
    ----------
    listing_id : str or int
        The listing's id, exactly as in the listings table.
    score : float
        Cosine similarity or the model's score, rounded to six decimals.
    fields : dict
        The listing's other columns as JSON-ready values (missing values are None), a
        column named ``score`` too.
    """

    listing_id: Any
    score: float
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """``{"listing_id", "score", fields...}``. The computed values win: a column named
        ``score`` (or a ``listing_id`` among the fields) never replaces them here; read it
        from ``fields``."""
        out = {"listing_id": self.listing_id, "score": self.score}
        out.update((name, value) for name, value in self.fields.items() if name not in out)
        return out


@dataclass(frozen=True)
class Results:
    """The answer to one query (a listing, a user or a session).

    Attributes
    ----------
    query : str, int or list
        The listing id, the user id, or a session's listing ids.
    hits : list of Hit
        Best first; fewer than asked for when filters leave fewer listings.
    unknown : list
        A session's listings that were not known and so not used.
    """

    query: Any
    hits: list[Hit]
    unknown: list = field(default_factory=list)

    @property
    def ids(self) -> list:
        return [hit.listing_id for hit in self.hits]

    @property
    def scores(self) -> list[float]:
        return [hit.score for hit in self.hits]

    def to_dict(self) -> dict[str, Any]:
        """``{"query", "results": [{"listing_id", "score", fields...}]}`` (each result as
        :meth:`Hit.to_dict`), plus ``"unknown"`` when a session had unknown listings: the
        CLI's ``--json`` line."""
        out: dict[str, Any] = {"query": self.query, "results": [h.to_dict() for h in self.hits]}
        if self.unknown:
            out["unknown"] = self.unknown
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per hit, best first: ``query``, ``rank`` (from 1), ``listing_id``,
        ``score`` and the listing's fields (as :meth:`Hit.to_dict`), for a notebook; several
        answers as one table: ``pd.concat([r.to_frame() for r in answers])``."""
        rows = [hit.to_dict() for hit in self.hits]
        frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["listing_id", "score"])
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        # a session's query, a list, is the same cell in every row
        frame.insert(0, "query", pd.Series([self.query] * len(rows), dtype=object))
        return frame
