"""Queries over a catalogue of listing vectors: similar, recommend, session, embed."""

from embedrec.retrieval.results import (
    Hit,
    Results,
    UnknownIdError,
    UnknownListingError,
    UnknownUserError,
)
from embedrec.retrieval.retriever import Retriever, as_filters, embed_table

__all__ = [
    "Hit",
    "Results",
    "Retriever",
    "UnknownIdError",
    "UnknownListingError",
    "UnknownUserError",
    "as_filters",
    "embed_table",
]
