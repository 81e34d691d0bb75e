"""Values made ready for JSON: the HTTP answers' (strict JSON) and the model files' text."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd


def plain(value: Any) -> Any:
    """A JSON-ready Python value: NumPy scalars and arrays as Python numbers and lists,
    timestamps as ISO 8601 text, NaN, infinities and missing values (None, NaN, NaT, pd.NA)
    as None; lists, tuples and dicts converted throughout (dict keys as str)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # the usual values, first
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, pd.Timestamp | np.datetime64):
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def json_text(value: Any) -> str:
    """``value`` as indented JSON for the files of a model directory.

    Unlike :func:`plain`, NaN and infinities are kept (Python's json reads them back, so a
    loaded model reports the figures it was trained with); NumPy numbers (a parameter taken
    from an array or a DataFrame) are written as JSON numbers, anything else unknown as its
    string.
    """
    return json.dumps(value, indent=2, default=_number_or_text)


def _number_or_text(item: Any) -> Any:
    return item.item() if hasattr(item, "item") and hasattr(item, "dtype") else str(item)
