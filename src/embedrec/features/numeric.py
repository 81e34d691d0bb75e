"""Numeric feature: a robust normalised value, a missing flag and a quantile-bucket embedding.

The value is optionally ``log1p``-ed (chosen on the training data when it is non-negative and
the log makes it less skewed, as for prices and mileages), clipped to the training 1st/99th
percentiles and standardised, so no input can push it outside a few units. NaN, None, blanks,
the missing markers (``schema.MISSING_MARKERS``: NA, null, "-", ...) and +-inf count as
missing: value 0, missing flag 1, bucket row 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.data.errors import DataError, shown
from embedrec.data.schema import FeatureSpec, missing_text
from embedrec.features.categorical import init_embedding

CLIP_QUANTILES = (0.01, 0.99)


def to_float(series: pd.Series, column: str) -> np.ndarray:
    """The column as float64, NaN where missing; text that is no number raises DataError."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    suspect = np.isnan(numbers) & series.notna().to_numpy()
    if suspect.any():
        bad = ~missing_text(series[suspect])
        if bad.any():
            first = int(np.flatnonzero(suspect)[np.argmax(bad)])
            raise DataError(
                f"not a number: {shown(series.iloc[first])}", row=first + 1, column=str(column)
            )
    return numbers


def _skew(x: np.ndarray) -> float:
    std = x.std()
    return float(np.mean(((x - x.mean()) / std) ** 3)) if std > 0 else 0.0


class NumericEncoder:
    """Normalises one numeric column and assigns quantile buckets; fitted on training listings."""

    kind = "numeric"

    def __init__(self, spec: FeatureSpec, *, n_buckets: int = 16, log: bool | None = None) -> None:
        self.spec = spec
        self.n_buckets = n_buckets
        self.log = log  # None: decide in fit
        self.low = 0.0
        self.high = 0.0
        self.mean = 0.0
        self.std = 1.0
        self.edges: list[float] = []

    @property
    def n_bucket_rows(self) -> int:
        """Missing row + one row per bucket (len(edges) + 1 buckets)."""
        return len(self.edges) + 2

    def fit(self, listings: pd.DataFrame) -> NumericEncoder:
        column = self.spec.columns[0]
        x = to_float(listings[column], column)
        x = x[np.isfinite(x)]
        if len(x) == 0:
            self.log = bool(self.log)
            return self
        if self.log is None:
            raw = np.clip(x, *np.quantile(x, CLIP_QUANTILES))
            self.log = bool(x.min() >= 0 and abs(_skew(np.log1p(raw))) < abs(_skew(raw)))
        t = self._scale(x)
        self.low, self.high = (float(q) for q in np.quantile(t, CLIP_QUANTILES))
        t = np.clip(t, self.low, self.high)
        self.mean = float(t.mean())
        self.std = float(t.std()) or 1.0
        inner = np.arange(1, self.n_buckets) / self.n_buckets
        self.edges = [float(e) for e in np.unique(np.quantile(x, inner))]
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Nothing changes: a model continued from this one (warm start) must read values
        on the scale its weights learned. Returns 0 (no values added)."""
        return 0

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(x, 0.0)) if self.log else x

    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]:
        """``.value`` float32 (normalised, 0 if missing), ``.missing`` float32 0/1,
        ``.bucket`` int32 (0 missing, 1.. quantile buckets in increasing order)."""
        column = self.spec.columns[0]
        x = to_float(listings[column], column)
        missing = ~np.isfinite(x)
        x = np.where(missing, 0.0, x)
        value = (np.clip(self._scale(x), self.low, self.high) - self.mean) / self.std
        value[missing] = 0.0
        bucket = np.searchsorted(np.asarray(self.edges, dtype=np.float64), x, side="right") + 1
        bucket[missing] = 0
        name = self.spec.name
        return {
            f"{name}.value": value.astype(np.float32),
            f"{name}.missing": missing.astype(np.float32),
            f"{name}.bucket": bucket.astype(np.int32),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_buckets": self.n_buckets,
            "log": self.log,
            "low": self.low,
            "high": self.high,
            "mean": self.mean,
            "std": self.std,
            "edges": list(self.edges),
        }

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict[str, Any]) -> NumericEncoder:
        encoder = cls(spec, n_buckets=int(data["n_buckets"]), log=data["log"])
        for field in ("low", "high", "mean", "std"):
            setattr(encoder, field, float(data[field]))
        encoder.edges = [float(e) for e in data["edges"]]
        return encoder

    def module(self, dim: int) -> nn.Module:
        return NumericEmbedding(self.spec.name, self.n_bucket_rows, dim)


class NumericEmbedding(nn.Module):
    """Linear map of (value, missing flag) plus the bucket's embedding -> [n, dim]."""

    def __init__(self, name: str, n_bucket_rows: int, dim: int) -> None:
        super().__init__()
        self.keys = (f"{name}.value", f"{name}.missing", f"{name}.bucket")
        self.linear = nn.Linear(2, dim)
        self.buckets = init_embedding(nn.Embedding(n_bucket_rows, dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        value, missing, bucket = (batch[k] for k in self.keys)
        return self.linear(torch.stack([value, missing], dim=1)) + self.buckets(bucket)
