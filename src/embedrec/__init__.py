"""embedrec: neural-network embeddings of marketplace listings."""

from embedrec.bundle import BundleError
from embedrec.data.errors import DataError
from embedrec.recommender import NotFittedError, Recommender, load
from embedrec.retrieval import Hit, Results, Retriever, UnknownIdError
from embedrec.training.trainer import TrainingDiverged
from embedrec.version import __version__

__all__ = [
    "BundleError",
    "DataError",
    "Hit",
    "NotFittedError",
    "Recommender",
    "Results",
    "Retriever",
    "TrainingDiverged",
    "UnknownIdError",
    "__version__",
    "load",
]
