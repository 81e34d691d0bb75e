"""embedrec: neural-network embeddings of marketplace listings."""

__version__ = "0.1.0"

from embedrec.bundle import BundleError  # noqa: E402
from embedrec.data.errors import DataError  # noqa: E402
from embedrec.recommender import Recommender, load  # noqa: E402

__all__ = ["BundleError", "DataError", "Recommender", "__version__", "load"]
