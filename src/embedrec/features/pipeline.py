"""Listing features end to end: fit encoders on training listings, turn any listings table into
a flat dict of named tensors, and embed those tensors with one ``nn.Module``.

Tensor keys are ``"{feature name}.{part}"``; every tensor's first dimension is the listing, so a
mini-batch is ``index_batch(catalogue_tensors, listing_rows)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.data.errors import DataError
from embedrec.data.schema import FeatureSpec
from embedrec.features.categorical import CategoricalEncoder
from embedrec.features.geo import DEFAULT_CELL_KM, GeoEncoder
from embedrec.features.multi_valued import MultiValuedEncoder
from embedrec.features.numeric import NumericEncoder
from embedrec.features.text import TextEncoder

FORMAT_VERSION = 1


class Encoder(Protocol):
    spec: FeatureSpec

    def fit(self, listings: pd.DataFrame) -> Encoder: ...
    def extend(self, listings: pd.DataFrame) -> int: ...
    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def module(self, dim: int) -> nn.Module: ...


ENCODERS: dict[str, Any] = {
    "categorical": CategoricalEncoder,
    "multi": MultiValuedEncoder,
    "numeric": NumericEncoder,
    "geo": GeoEncoder,
    "text": TextEncoder,
}


class FeaturePipeline:
    """Fits one encoder per feature spec and transforms listings into tensors."""

    def __init__(
        self,
        specs: list[FeatureSpec],
        *,
        min_count: int = 1,
        n_buckets: int = 16,
        max_tokens: int = 64,
        cell_km: tuple[float, ...] = DEFAULT_CELL_KM,
    ) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise DataError(f"duplicate feature names: {names}")
        options = {
            "categorical": {"min_count": min_count},
            "multi": {"min_count": min_count, "max_tokens": max_tokens},
            "numeric": {"n_buckets": n_buckets},
            "geo": {"cell_km": cell_km},
            "text": {},
        }
        self.encoders: list[Encoder] = []
        for spec in specs:
            if spec.kind not in ENCODERS:
                raise DataError(f"unknown feature kind '{spec.kind}'", column=spec.name)
            self.encoders.append(ENCODERS[spec.kind](spec, **options[spec.kind]))
        self.fitted = False

    @property
    def specs(self) -> list[FeatureSpec]:
        return [encoder.spec for encoder in self.encoders]

    def check_columns(
        self, listings: pd.DataFrame, file: str | None = None, reader: str = ""
    ) -> None:
        """Raise DataError naming the first column a feature reads that ``listings`` lacks
        (``reader``: who reads the feature, for the message)."""
        for spec in self.specs:
            for column in spec.columns:
                if column not in listings.columns:
                    raise DataError(
                        f"listings table has no column '{column}' (feature '{spec.name}'{reader})",
                        file=file,
                        column=column,
                    )

    def fit(self, listings: pd.DataFrame) -> FeaturePipeline:
        """Learn vocabularies, quantiles and scales from the training listings."""
        self.check_columns(listings)
        for encoder in self.encoders:
            encoder.fit(listings)
        self.fitted = True
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Grow the fitted encoders for ``listings`` without refitting them, for a model that
        continues a trained one (warm start): categorical and multi-valued values not seen
        before are appended (known values keep their rows), while numeric scaling, geo cells
        and text hashing stay as fitted, so the old weights keep their meaning. Returns the
        number of values added."""
        if not self.fitted:
            raise RuntimeError("FeaturePipeline.extend called before fit")
        self.check_columns(listings)
        return sum(encoder.extend(listings) for encoder in self.encoders)

    def transform(self, listings: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Tensors for every listing row, in row order: int32 indices, float32 values.

        Never contains NaN or inf; unseen values map to unknown rows, not errors.
        """
        if not self.fitted:
            raise RuntimeError("FeaturePipeline.transform called before fit")
        self.check_columns(listings)
        out: dict[str, torch.Tensor] = {}
        for encoder in self.encoders:
            for key, array in encoder.transform(listings).items():
                out[key] = torch.from_numpy(np.ascontiguousarray(array))
        return out

    def transform_pieces(
        self, pieces: Iterable[pd.DataFrame], n_rows: int
    ) -> dict[str, torch.Tensor]:
        """``transform`` of the rows of ``pieces`` (``n_rows`` in all, at least one piece),
        one piece at a time into tensors made once: the whole table is never held beside
        its tensors (a million listings' text as Python strings beside their tokens)."""
        out: dict[str, torch.Tensor] | None = None
        done = 0
        for piece in pieces:
            part = self.transform(piece)
            if out is None:
                out = {k: v.new_empty((n_rows, *v.shape[1:])) for k, v in part.items()}
            for key, tensor in part.items():
                out[key][done : done + len(piece)] = tensor
            done += len(piece)
        if out is None or done != n_rows:
            raise ValueError(f"pieces held {done} rows, not {n_rows}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: specs and every encoder's fitted parameters."""
        return {
            "version": FORMAT_VERSION,
            "fitted": self.fitted,
            "features": [{"spec": e.spec.to_dict(), "state": e.to_dict()} for e in self.encoders],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        """Rebuild a pipeline saved by ``to_dict``; it transforms exactly like the original."""
        if data.get("version") != FORMAT_VERSION:
            raise DataError(f"unsupported feature pipeline version {data.get('version')!r}")
        specs = [FeatureSpec.from_dict(f["spec"]) for f in data["features"]]
        pipeline = cls(specs)
        pipeline.encoders = [
            ENCODERS[spec.kind].from_dict(spec, f["state"])
            for spec, f in zip(specs, data["features"], strict=True)
        ]
        pipeline.fitted = bool(data["fitted"])
        return pipeline


class FeatureEncoder(nn.Module):
    """Embeds a batch from ``FeaturePipeline.transform``: each feature's ``dim_per_feature``
    vector, concatenated in spec order into ``[n, output_dim]``."""

    def __init__(self, pipeline: FeaturePipeline, dim_per_feature: int = 16) -> None:
        super().__init__()
        if not pipeline.encoders:
            raise ValueError("FeatureEncoder needs at least one feature")
        if not pipeline.fitted:
            raise RuntimeError("FeatureEncoder needs a fitted FeaturePipeline")
        self.features = nn.ModuleList(e.module(dim_per_feature) for e in pipeline.encoders)
        self.output_dim = dim_per_feature * len(pipeline.encoders)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([feature(batch) for feature in self.features], dim=1)


def index_batch(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows ``idx`` (LongTensor, on the tensors' device) of every tensor in ``batch``."""
    return {key: tensor.index_select(0, idx) for key, tensor in batch.items()}
