"""Multi-valued categorical feature (``a|b|c`` cells): the mean of its tokens' embeddings.

Each listing becomes a fixed-width row of token indices, padded with 0, so that selecting a
mini-batch is a plain row gather. Row 1 is the learned "empty" token (NaN, blank or only
separators), row 2 the token never seen in training. Tokens are stripped and de-duplicated
within a cell; cells with more tokens than the width keep their first ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from embedrec.data.schema import MULTI_SEPARATOR, FeatureSpec
from embedrec.features.categorical import factorize_strings, init_embedding, lookup

PAD = 0
EMPTY = 1
UNKNOWN = 2
N_RESERVED = 3


def _tokens(text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split distinct cells into tokens: (cell, token id) per occurrence and the token strings.

    Occurrences are in cell order, then in order within the cell; blank tokens and repeats
    within a cell are dropped. Arrow does the splitting: pandas' explode is 20x slower.
    """
    lists = pc.split_pattern(pa.array(text, type=pa.large_string()), MULTI_SEPARATOR)
    cells = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(pc.list_flatten(lists))
    raw = pc.utf8_trim_whitespace(encoded.dictionary).to_numpy(zero_copy_only=False)
    # stripping can make two raw tokens equal (" a" and "a"): re-factorize the stripped ones
    raw_to_token, tokens = pd.factorize(pd.Series(raw, dtype=object))
    token = raw_to_token[encoded.indices.to_numpy().astype(np.int64)]
    blank = np.flatnonzero(tokens == "")
    keep = ~np.isin(token, blank)
    cells, token = cells[keep], token[keep]
    first = _first_occurrences(cells * max(len(tokens), 1) + token)
    return cells[first], token[first], np.asarray(tokens, dtype=object)


def _first_occurrences(key: np.ndarray) -> np.ndarray:
    """Mask of the first occurrence of each key value."""
    # keys come in runs sorted by cell, which the stable sort (timsort) handles in ~linear time;
    # hashing 20M keys is 10x slower
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    first = np.empty(len(key), dtype=bool)
    first[order] = np.r_[True, ordered[1:] != ordered[:-1]] if len(key) else []
    return first


def _positions(cells: np.ndarray) -> np.ndarray:
    """Rank of each occurrence within its cell, for non-decreasing ``cells``."""
    if len(cells) == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    lengths = np.diff(np.r_[starts, len(cells)])
    return np.arange(len(cells)) - np.repeat(starts, lengths)


class MultiValuedEncoder:
    """Maps ``|``-separated token lists to padded index rows; fitted on training listings."""

    kind = "multi"

    def __init__(self, spec: FeatureSpec, *, min_count: int = 1, max_tokens: int = 64) -> None:
        self.spec = spec
        self.min_count = min_count
        self.max_tokens = max_tokens
        self.vocabulary: list[str] = []
        self.width = 1
        # the vocabulary's hash table, built once: serving embeds listings one at a time
        self._index: pd.Index | None = None

    @property
    def key(self) -> str:
        return f"{self.spec.name}.idx"

    @property
    def n_rows(self) -> int:
        return N_RESERVED + len(self.vocabulary)

    def fit(self, listings: pd.DataFrame) -> MultiValuedEncoder:
        """Keep tokens found in at least ``min_count`` listings; width = longest list (capped)."""
        self.vocabulary, self.width = self._frequent(listings)
        self._index = None
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Append the tokens of ``listings`` found in at least ``min_count`` listings and not
        yet in the vocabulary, sorted among themselves, and widen the rows to their longest
        list (capped); returns how many tokens were added.

        Known tokens keep their rows, so a model continued from this one (warm start) keeps
        what it learned for them; wider rows only add padding, which pooling ignores.
        """
        frequent, width = self._frequent(listings)
        known = set(self.vocabulary)
        added = [token for token in frequent if token not in known]
        self.vocabulary = [*self.vocabulary, *added]
        self.width = max(self.width, width)
        self._index = None
        return len(added)

    def _frequent(self, listings: pd.DataFrame) -> tuple[list[str], int]:
        """The tokens kept from ``listings``, sorted, and the width their longest list needs."""
        codes, text = factorize_strings(listings[self.spec.columns[0]])
        cells, token, tokens = _tokens(text)
        listings_per_cell = np.bincount(codes[codes >= 0], minlength=len(text))
        counts = np.bincount(token, weights=listings_per_cell[cells], minlength=len(tokens))
        frequent = sorted(tokens[(counts >= self.min_count) & (tokens != "")].tolist())
        longest = int(np.bincount(cells).max()) if len(cells) else 1
        return frequent, max(1, min(self.max_tokens, longest))

    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]:
        """``{name}.idx``: int32 [n, width]; 0 padding, 1 empty, 2 unknown, 3+ vocabulary."""
        codes, text = factorize_strings(listings[self.spec.columns[0]])
        cells, token, tokens = _tokens(text)
        position = _positions(cells)
        keep = position < self.width
        if self._index is None:
            self._index = pd.Index(self.vocabulary, dtype=object)
        rows = lookup(self._index, tokens, N_RESERVED, UNKNOWN)[token[keep]]
        # one extra all-empty row at the end, picked by code -1 (NaN)
        matrix = np.full((len(text) + 1, self.width), PAD, dtype=np.int32)
        matrix[:, 0] = EMPTY
        matrix[cells[keep], position[keep]] = rows
        return {self.key: matrix[codes]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "max_tokens": self.max_tokens,
            "width": self.width,
            "vocabulary": list(self.vocabulary),
        }

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict[str, Any]) -> MultiValuedEncoder:
        encoder = cls(spec, min_count=int(data["min_count"]), max_tokens=int(data["max_tokens"]))
        encoder.width = int(data["width"])
        encoder.vocabulary = [str(v) for v in data["vocabulary"]]
        return encoder

    def module(self, dim: int) -> nn.Module:
        return MultiValuedEmbedding(self.key, self.n_rows, dim)


class MultiValuedEmbedding(nn.Module):
    """``batch[key]`` (int [n, width], 0 = padding) -> mean of the non-padding rows [n, dim]."""

    def __init__(self, key: str, n_rows: int, dim: int) -> None:
        super().__init__()
        self.key = key
        self.embedding = init_embedding(nn.Embedding(n_rows, dim, padding_idx=PAD))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        idx = batch[self.key]
        count = (idx != PAD).sum(dim=1, keepdim=True).clamp(min=1)
        return self.embedding(idx).sum(dim=1) / count
