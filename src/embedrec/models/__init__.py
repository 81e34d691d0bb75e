"""Torch modules that turn users and listings into vectors, all behind one contract."""

from embedrec.models.base import (
    ColdListingsUnsupportedError,
    FeaturesUnsupportedError,
    ModelShape,
    RecModel,
)
from embedrec.models.registry import MODELS, model_class, register

__all__ = [
    "MODELS",
    "ColdListingsUnsupportedError",
    "FeaturesUnsupportedError",
    "ModelShape",
    "RecModel",
    "model_class",
    "register",
]
