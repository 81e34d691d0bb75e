"""Categorical feature: one embedding row per training value, plus unknown and missing rows.

Values are compared as stripped strings, so ``2015``, ``2015.0`` and ``" 2015"`` are one value.
Row 0 is for missing values (NaN, None, blank), row 1 for values never seen in training.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from embedrec.data.schema import FeatureSpec

MISSING = 0
UNKNOWN = 1
N_RESERVED = 2
_INTEGRAL_FLOAT = r"^([+-]?\d+)\.0+$"
# the same rules for a few values in plain Python: a service embeds one listing per write, and
# pandas' and Arrow's fixed cost per call is then most of the time (Arrow's \d is an ASCII
# digit; its whitespace is Python's)
SMALL = 32
_INTEGRAL_FLOAT_PY = re.compile(r"([+-]?\d+)\.0+", re.ASCII)


def factorize_strings(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-row codes into the distinct values (-1 where missing) and those values as strings.

    The strings are stripped, and integral floats lose their ``.0`` (a NaN turns an int column
    into floats; 2015.0 must still match 2015). A blank string means missing. The work is done
    once per distinct value.
    """
    if len(series) <= SMALL and (
        pd.api.types.is_string_dtype(series.dtype)
        or pd.api.types.is_integer_dtype(series.dtype)
        or pd.api.types.is_float_dtype(series.dtype)
    ):
        return _factorize_few(series.tolist())
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    text = pa.array(pd.Index(uniques).astype(str).to_numpy(dtype=object), type=pa.large_string())
    # arrow's vectorised string kernels: pandas' .str methods loop in Python, 5x slower
    text = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), _INTEGRAL_FLOAT, r"\1")
    return np.asarray(codes, dtype=np.int64), text.to_numpy(zero_copy_only=False).astype(object)


def _factorize_few(values: list) -> tuple[np.ndarray, np.ndarray]:
    """``factorize_strings`` for a few values of a string or number column."""
    codes, positions = [], {}
    for value in values:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            codes.append(-1)
            continue
        text = str(value).strip()
        match = _INTEGRAL_FLOAT_PY.fullmatch(text)
        codes.append(positions.setdefault(match.group(1) if match else text, len(positions)))
    return np.asarray(codes, dtype=np.int64), np.asarray(list(positions), dtype=object)


def lookup(vocabulary: pd.Index, text: np.ndarray, offset: int, unknown: int) -> np.ndarray:
    """Row of each string in ``vocabulary`` (unique) shifted by ``offset``; ``unknown`` where
    absent."""
    if len(text) <= SMALL:  # one hash lookup each, without get_indexer's fixed cost
        rows = [_position(vocabulary, value) for value in text]
        return np.asarray([unknown if r < 0 else r + offset for r in rows], dtype=np.int32)
    position = vocabulary.get_indexer(text)
    return np.where(position < 0, unknown, position + offset).astype(np.int32)


def _position(vocabulary: pd.Index, value: str) -> int:
    try:
        return vocabulary.get_loc(value)
    except KeyError:
        return -1


def init_embedding(embedding: nn.Embedding) -> nn.Embedding:
    """Small initial rows so summed and concatenated features start on a similar scale."""
    embedding.init_std = 0.1  # what models.base.initialize draws from
    nn.init.normal_(embedding.weight, std=embedding.init_std)
    if embedding.padding_idx is not None:
        with torch.no_grad():
            embedding.weight[embedding.padding_idx].zero_()
    return embedding


class CategoricalEncoder:
    """Maps a string-like column to embedding rows; fitted on the training listings."""

    kind = "categorical"

    def __init__(self, spec: FeatureSpec, *, min_count: int = 1) -> None:
        self.spec = spec
        self.min_count = min_count
        self.vocabulary: list[str] = []
        # the vocabulary's hash table, built once: serving embeds listings one at a time
        self._index: pd.Index | None = None

    @property
    def key(self) -> str:
        return f"{self.spec.name}.idx"

    @property
    def n_rows(self) -> int:
        return N_RESERVED + len(self.vocabulary)

    def fit(self, listings: pd.DataFrame) -> CategoricalEncoder:
        """Keep the values seen at least ``min_count`` times, sorted."""
        self.vocabulary = self._frequent(listings)
        self._index = None
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Append the values of ``listings`` seen at least ``min_count`` times and not yet in
        the vocabulary, sorted among themselves; returns how many were added.

        Known values keep their rows, so a model continued from this one (warm start) keeps
        what it learned for them and only the appended rows are new.
        """
        known = set(self.vocabulary)
        added = [value for value in self._frequent(listings) if value not in known]
        self.vocabulary = [*self.vocabulary, *added]
        self._index = None
        return len(added)

    def _frequent(self, listings: pd.DataFrame) -> list[str]:
        codes, text = factorize_strings(listings[self.spec.columns[0]])
        counts = pd.Series(np.bincount(codes[codes >= 0], minlength=len(text)), index=text)
        counts = counts[counts.index != ""].groupby(level=0).sum()
        return sorted(counts.index[counts >= self.min_count].tolist())

    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]:
        """``{name}.idx``: int32 row per listing (0 missing, 1 unknown, 2+ vocabulary)."""
        codes, text = factorize_strings(listings[self.spec.columns[0]])
        if self._index is None:
            self._index = pd.Index(self.vocabulary, dtype=object)
        rows = lookup(self._index, text, N_RESERVED, UNKNOWN)
        rows[text == ""] = MISSING
        rows = np.append(rows, np.int32(MISSING))  # code -1 (NaN) picks this last entry
        return {self.key: rows[codes]}

    def to_dict(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict[str, Any]) -> CategoricalEncoder:
        encoder = cls(spec, min_count=int(data["min_count"]))
        encoder.vocabulary = [str(v) for v in data["vocabulary"]]
        return encoder

    def module(self, dim: int) -> nn.Module:
        return CategoricalEmbedding(self.key, self.n_rows, dim)


class CategoricalEmbedding(nn.Module):
    """``batch[key]`` (int [n]) -> embedding rows [n, dim]."""

    def __init__(self, key: str, n_rows: int, dim: int) -> None:
        super().__init__()
        self.key = key
        self.embedding = init_embedding(nn.Embedding(n_rows, dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embedding(batch[self.key])
