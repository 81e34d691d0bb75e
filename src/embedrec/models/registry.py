"""Model names and their classes: a new model is one file plus one line here."""

from __future__ import annotations

from embedrec.models.base import RecModel
from embedrec.models.deep import DeepHybrid
from embedrec.models.hybrid import HybridTwoTower
from embedrec.models.mf import MatrixFactorization

MODELS: dict[str, type[RecModel]] = {
    "mf": MatrixFactorization,
    "deep": DeepHybrid,
    "hybrid": HybridTwoTower,
}


def register(name: str, model_class: type[RecModel]) -> None:
    """Make ``model_class`` available as ``Recommender(model=name)`` and ``--model name``."""
    if not (isinstance(model_class, type) and issubclass(model_class, RecModel)):
        raise TypeError(f"a model must subclass RecModel, got {model_class!r}")
    MODELS[name] = model_class


def model_class(name: str) -> type[RecModel]:
    """The class registered as ``name``; ValueError naming the choices otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None


def readers(parameter: str) -> list[str]:
    """Names of the models that read ``parameter`` (one of their ``hyperparameters``)."""
    return [name for name, cls in MODELS.items() if parameter in cls.hyperparameters]
