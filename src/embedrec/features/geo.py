"""Geo feature: multi-resolution grid-cell embeddings of a lat/lon pair, plus the coordinates.

Each level cuts the map into cells of about ``km`` kilometres (longitude widths scaled by the
cosine of the training data's mean latitude, so cells are roughly square there). A level's
vocabulary is the cells seen in training: a new listing in an unseen fine cell gets the
level's unknown row while its coarse cells still carry what was learned about the area.
Missing or out-of-range coordinates get every level's missing row. Embeddings of the levels
are summed, plus a linear map of (normalised lat, normalised lon, missing flag).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from embedrec.data.schema import FeatureSpec
from embedrec.features.categorical import init_embedding
from embedrec.features.numeric import to_float

MISSING = 0
UNKNOWN = 1
N_RESERVED = 2
KM_PER_DEGREE = 111.32
DEFAULT_CELL_KM = (200.0, 100.0, 50.0, 25.0, 12.0)
COORD_CLIP = 5.0  # standard deviations


class GeoEncoder:
    """Maps (lat, lon) in degrees to one cell row per level; fitted on training listings."""

    kind = "geo"

    def __init__(self, spec: FeatureSpec, *, cell_km: tuple[float, ...] = DEFAULT_CELL_KM) -> None:
        self.spec = spec
        self.cell_km = tuple(float(k) for k in cell_km)
        self.ref_lat = 0.0
        self.lat_mean, self.lat_std = 0.0, 1.0
        self.lon_mean, self.lon_std = 0.0, 1.0
        self.cells = [np.empty(0, dtype=np.int64) for _ in self.cell_km]  # sorted keys

    def _coordinates(self, listings: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lat_col, lon_col = self.spec.columns
        lat = to_float(listings[lat_col], lat_col)
        lon = to_float(listings[lon_col], lon_col)
        with np.errstate(invalid="ignore"):
            valid = (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)  # False for NaN and inf
        return np.where(valid, lat, 0.0), np.where(valid, lon, 0.0), ~valid

    def _cell_keys(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """int64 [n, levels]: row and column of each level's cell packed into one integer."""
        lat_size = np.asarray(self.cell_km) / KM_PER_DEGREE
        lon_size = lat_size / np.cos(np.radians(self.ref_lat))
        row = np.floor((lat[:, None] + 90.0) / lat_size).astype(np.int64)
        col = np.floor((lon[:, None] + 180.0) / lon_size).astype(np.int64)
        return (row << 32) | col

    def fit(self, listings: pd.DataFrame) -> GeoEncoder:
        lat, lon, missing = self._coordinates(listings)
        lat, lon = lat[~missing], lon[~missing]
        if len(lat):
            # beyond +-70 degrees the cosine scaling would make absurdly wide cells
            self.ref_lat = float(np.clip(lat.mean(), -70.0, 70.0))
            self.lat_mean, self.lat_std = float(lat.mean()), float(lat.std()) or 1.0
            self.lon_mean, self.lon_std = float(lon.mean()), float(lon.std()) or 1.0
        keys = self._cell_keys(lat, lon)
        self.cells = [np.unique(keys[:, level]) for level in range(len(self.cell_km))]
        return self

    def extend(self, listings: pd.DataFrame) -> int:
        """Nothing changes: the cells are sorted keys whose positions are embedding rows, and
        the scaling is what the weights learned; a listing in a new fine cell still reads its
        coarse cells. Returns 0 (no cells added)."""
        return 0

    def transform(self, listings: pd.DataFrame) -> dict[str, np.ndarray]:
        """``.cells`` int32 [n, levels] (0 missing, 1 unknown, 2+ cell), coarse level first;
        ``.coords`` float32 [n, 2] normalised (lat, lon) within +-5, 0 if missing;
        ``.missing`` float32 0/1."""
        lat, lon, missing = self._coordinates(listings)
        keys = self._cell_keys(lat, lon)
        cells = np.empty(keys.shape, dtype=np.int32)
        for level, known in enumerate(self.cells):  # a handful of levels, not rows
            position = np.searchsorted(known, keys[:, level])
            found = position < len(known)
            found[found] = known[position[found]] == keys[found, level]
            cells[:, level] = np.where(found, position + N_RESERVED, UNKNOWN)
        cells[missing] = MISSING
        coords = np.stack(
            [(lat - self.lat_mean) / self.lat_std, (lon - self.lon_mean) / self.lon_std], axis=1
        )
        # far outside the training area (another continent) the cells say it all
        coords = np.clip(coords, -COORD_CLIP, COORD_CLIP)
        coords[missing] = 0.0
        name = self.spec.name
        return {
            f"{name}.cells": cells,
            f"{name}.coords": coords.astype(np.float32),
            f"{name}.missing": missing.astype(np.float32),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_km": list(self.cell_km),
            "ref_lat": self.ref_lat,
            "lat_mean": self.lat_mean,
            "lat_std": self.lat_std,
            "lon_mean": self.lon_mean,
            "lon_std": self.lon_std,
            "cells": [level.tolist() for level in self.cells],
        }

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict[str, Any]) -> GeoEncoder:
        encoder = cls(spec, cell_km=tuple(data["cell_km"]))
        for field in ("ref_lat", "lat_mean", "lat_std", "lon_mean", "lon_std"):
            setattr(encoder, field, float(data[field]))
        encoder.cells = [np.asarray(level, dtype=np.int64) for level in data["cells"]]
        return encoder

    def module(self, dim: int) -> nn.Module:
        return GeoEmbedding(self.spec.name, [N_RESERVED + len(c) for c in self.cells], dim)


class GeoEmbedding(nn.Module):
    """Sum of the levels' cell embeddings plus a linear map of (coords, missing) -> [n, dim]."""

    def __init__(self, name: str, level_rows: list[int], dim: int) -> None:
        super().__init__()
        self.keys = (f"{name}.cells", f"{name}.coords", f"{name}.missing")
        self.levels = nn.ModuleList(init_embedding(nn.Embedding(n, dim)) for n in level_rows)
        self.linear = nn.Linear(3, dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cells, coords, missing = (batch[k] for k in self.keys)
        out = self.linear(torch.cat([coords, missing[:, None]], dim=1))
        for level, embedding in enumerate(self.levels):
            out = out + embedding(cells[:, level])
        return out
