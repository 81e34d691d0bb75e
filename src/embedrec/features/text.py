"""Free text (titles, descriptions): hashed words and character n-grams, pooled.

No vocabulary and no downloaded model: each lower-cased word and each character trigram of a
word (with ``<`` and ``>`` marking its ends, as fastText does) is hashed into one of
``n_buckets`` embedding rows, and a listing's vector is the mean of its rows. Words carry
meaning ("qashqai", "navi"); trigrams let a misspelt or inflected word ("navigation",
"navigationssystem") share rows with the spelling training saw, so text never seen in
training still lands near related listings. Row 1 is the learned "no text" row.

Everything runs on distinct texts with Arrow's string kernels and pandas' vectorised hash,
not in a Python loop per listing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from embedrec.data.schema import FeatureSpec
from embedrec.features.categorical import SMALL, factorize_strings, init_embedding

PAD = 0
EMPTY = 1
N_RESERVED = 2
WORD = r"[^\p{L}\p{N}]+"  # separators: anything but letters and digits, in any script
NGRAM = 3
# per text: the first characters and tokens kept, which bounds memory whatever a seller writes
MAX_CHARS = 2000
MAX_WORD_NGRAMS = 16
# distinct texts tokenised at a time: tokens are Python strings for the hash, so a whole
# catalogue's at once would take gigabytes
TEXTS_PER_CHUNK = 20_000


def _words(text: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """(text index, lower-cased word) of every non-empty word of each text."""
    arrow = pc.utf8_slice_codeunits(pa.array(text, type=pa.large_string()), 0, MAX_CHARS)
    words = pc.split_pattern_regex(pc.utf8_lower(arrow), WORD)
    owner = pc.list_parent_indices(words).to_numpy().astype(np.int64)
    flat = pc.list_flatten(words)
    keep = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    return owner[keep], flat.filter(pa.array(keep))


def _token_counts(text: np.ndarray) -> np.ndarray:
    """How many tokens ``_hashed_tokens`` gives each text, without making them."""
    owner, flat = _words(text)
    marked_lengths = pc.utf8_length(flat).to_numpy().astype(np.int64) + 2  # "<" word ">"
    grams = np.clip(marked_lengths - NGRAM + 1, 0, MAX_WORD_NGRAMS)
    return np.bincount(owner, weights=1 + grams, minlength=len(text)).astype(np.int64)


def _hashed_tokens(text: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(text index, hash bucket) per word and per character trigram of each word, in text
    order: words first, then the first trigram of every word, then the second, and so on.

    A catalogue repeats a few thousand words millions of times, so the tokens are made and
    hashed once per distinct word, and each occurrence only gathers its word's buckets:
    making every token a string took most of a catalogue's text transform."""
    owner, flat = _words(text)
    encoded = pc.dictionary_encode(flat)
    word = encoded.indices.to_numpy().astype(np.int64)
    distinct = encoded.dictionary
    lt, gt, w = (pa.scalar(t, pa.large_string()) for t in ("<", ">", "w:"))
    empty = pa.scalar("", pa.large_string())
    marked = pc.binary_join_element_wise(lt, distinct, gt, empty)
    n_grams = np.clip(pc.utf8_length(marked).to_numpy() - NGRAM + 1, 0, MAX_WORD_NGRAMS)
    owners = [owner]
    buckets = [_bucket(pc.binary_join_element_wise(w, distinct, empty), n_buckets)[word]]
    grams_per_occurrence = n_grams[word]
    # trigram k of every word long enough to have one: one vectorised slice per position
    for start in range(int(n_grams.max(initial=0))):
        has = n_grams > start
        rows = np.zeros(len(distinct), dtype=np.int64)
        grams = pc.utf8_slice_codeunits(marked.filter(pa.array(has)), start, start + NGRAM)
        rows[has] = _bucket(grams, n_buckets)
        occurs = grams_per_occurrence > start
        owners.append(owner[occurs])
        buckets.append(rows[word[occurs]])
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    return owner[order], np.concatenate(buckets)[order]


def _bucket(tokens: pa.Array, n_buckets: int) -> np.ndarray:
    """The bucket of each token: pandas' SipHash of its UTF-8 text modulo ``n_buckets``."""
    hashes = pd.util.hash_array(tokens.to_numpy(zero_copy_only=False).astype(object))
    return (hashes % np.uint64(n_buckets)).astype(np.int64)


def _distinct_texts(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-row codes (-1: missing) and the distinct texts.

    A column of strings keeps its own string objects: converting a catalogue's million
    descriptions to cleaned copies (``factorize_strings``) held several copies of them at
    once, and the stripping it applies changes no word. Numbers (a numeric column, or a few
    rows) take that path, whose rule makes 2015.0 read 2015."""
    if len(column) <= SMALL or not (
        pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)
    ):
        return factorize_strings(column)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), pd.Index(uniques).astype(str).to_numpy(dtype=object)


def _chunks(text: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(offset, texts) of at most ``TEXTS_PER_CHUNK`` texts at a time."""
    return [(i, text[i : i + TEXTS_PER_CHUNK]) for i in range(0, len(text), TEXTS_PER_CHUNK)]


def _positions(owner: np.ndarray) -> np.ndarray:
    """Rank of each token within its text, for non-decreasing ``owner``."""
    if len(owner) == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.arange(len(owner)) - np.repeat(starts, np.diff(np.r_[starts, len(owner)]))


class TextEncoder:
    """Maps free text to padded rows of hashed token buckets (nothing to learn at fit time
    but the width: the most tokens a training text has, capped at ``max_tokens``)."""

    kind = "text"

    def __init__(
        self, spec: FeatureSpec, *, n_buckets: int = 1 << 17, max_tokens: int = 256
    ) -> None:
        self.spec = spec
        self.n_buckets = n_buckets
        self.max_tokens = max_tokens
        self.width = 1

    @property
    def key(self) -> str:
        return f"{self.spec.name}.tokens"

    def _buckets(self, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text index, embedding row) of every token of ``text``."""
        owner, buckets = _hashed_tokens(text, self.n_buckets)
        return owner, buckets + N_RESERVED

    def fit(self, listings: pd.DataFrame) -> TextEncoder:
        self.width = self._width(listings)
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Widen the rows to the longest text of ``listings`` (capped); the hashing is fixed,
        so every token keeps its row. Returns 0: text has no vocabulary to grow."""
        if self.width < self.max_tokens:
            self.width = max(self.width, self._width(listings))
        return 0

    def _width(self, listings: pd.DataFrame) -> int:
        _, text = _distinct_texts(listings[self.spec.columns[0]])
        longest = 0
        for _, part in _chunks(text):
            longest = max(longest, int(_token_counts(part).max()))
            if longest >= self.max_tokens:  # the cap: the other texts cannot widen it
                break
        return max(1, min(self.max_tokens, longest))

    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]:
        """``{name}.tokens``: int32 [n, width]; 0 padding, 1 no text, 2+ hashed buckets."""
        codes, text = _distinct_texts(listings[self.spec.columns[0]])
        matrix = self._no_text(len(codes))  # a missing text keeps its row
        # each chunk of distinct texts fills the rows that hold them: rows made per distinct
        # text and then picked by code held a catalogue's tokens twice (2 GB for 1M listings)
        by_text = np.argsort(codes, kind="stable")
        sorted_codes = codes[by_text]
        for offset, part in _chunks(text):
            owner, rows = self._buckets(part)
            position = _positions(owner)
            keep = position < self.width
            block = self._no_text(len(part))
            block[owner[keep], position[keep]] = rows[keep]
            first, last = np.searchsorted(sorted_codes, [offset, offset + len(part)])
            targets = by_text[first:last]
            matrix[targets] = block[codes[targets] - offset]
        return {self.key: matrix}

    def _no_text(self, n: int) -> np.ndarray:
        """``n`` rows that say "no text": the empty row, then padding."""
        rows = np.full((n, self.width), PAD, dtype=np.int32)
        rows[:, 0] = EMPTY
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"n_buckets": self.n_buckets, "max_tokens": self.max_tokens, "width": self.width}

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict[str, Any]) -> TextEncoder:
        encoder = cls(spec, n_buckets=int(data["n_buckets"]), max_tokens=int(data["max_tokens"]))
        encoder.width = int(data["width"])
        return encoder

    def module(self, dim: int) -> nn.Module:
        return TextEmbedding(self.key, N_RESERVED + self.n_buckets, dim)


class TextEmbedding(nn.Module):
    """``batch[key]`` (int [n, width], 0 = padding) -> mean of the token rows [n, dim].

    The tokens are pooled by one fused gather-and-sum over the real ones: gathering the padded
    ``[n, width, dim]`` block first read and wrote 67 MB for a batch of 4,096 descriptions.
    In training, each distinct token's row is looked up once: the sparse gradient then has a
    row per distinct token (4,100 in such a batch) instead of one per occurrence (450,000),
    which the optimizer coalesced at about 100 ms a step.
    """

    def __init__(self, key: str, n_rows: int, dim: int) -> None:
        super().__init__()
        self.key = key
        # sparse: a step touches the rows of its batch's tokens, not the 131k-row table
        self.embedding = init_embedding(nn.Embedding(n_rows, dim, padding_idx=PAD, sparse=True))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        idx = batch[self.key]
        real = idx != PAD
        counts = real.sum(dim=1)
        tokens = idx[real]  # row by row, so each text's tokens are one run
        offsets = torch.cumsum(counts, 0) - counts
        table = self.embedding.weight
        if torch.is_grad_enabled() and table.requires_grad:
            # a mask over the table, not torch.unique: no sort of the batch's tokens
            present = torch.zeros(len(table), dtype=torch.bool, device=idx.device)
            present[tokens] = True
            distinct = present.nonzero().squeeze(1)
            tokens = (torch.cumsum(present, 0) - 1)[tokens]  # each token's place in distinct
            table = self.embedding(distinct)
        pooled = F.embedding_bag(tokens, table, offsets, mode="sum")
        return pooled / counts.clamp(min=1).unsqueeze(1).to(pooled.dtype)
