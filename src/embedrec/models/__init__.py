"""Torch modules that turn users and listings into vectors."""

from embedrec.models.base import RecModel
from embedrec.models.mf import MatrixFactorization

__all__ = ["MatrixFactorization", "RecModel"]
