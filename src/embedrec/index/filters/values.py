"""Filter values as requests give them (CLI text, JSON numbers, strings and lists) checked and
converted, each error naming its field.
"""

from __future__ import annotations

import csv
import math
import re
from typing import Any

import numpy as np

from embedrec.data.errors import shown
from embedrec.index.filters.base import FilterError


def split_values(field: str, raw: str) -> frozenset[str]:
    """The values of ``raw`` between commas, spaces around them trimmed; a value in double
    quotes may hold commas, as in CSV (``"Rolls, Royce",Toyota``; ``""`` is a quote)."""
    try:
        parts = next(csv.reader([raw], skipinitialspace=True, strict=True))
    except csv.Error as exc:
        message = f"{exc} in {raw!r} (a value in double quotes may hold commas)"
        raise FilterError(field, message) from None
    values = frozenset(v.strip() for v in parts if v.strip())
    if not values:
        raise FilterError(field, f"no values in {raw!r}")
    return values


def as_strings(field: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return split_values(field, value) if field == "exclude" else frozenset([value])
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value:
            raise FilterError(field, "empty list of values")
        for v in value:
            # JSON's null, true or an object would match the text 'None', 'True', "{...}"
            if not (isinstance(v, str) or is_number(v)):
                raise FilterError(field, f"expected strings or numbers in the list, got {v!r}")
        return frozenset(str(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return frozenset([str(value)])
    raise FilterError(field, f"expected a string or a list of strings, got {value!r}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


_DATE_LIKE = re.compile(r"\s*\d{4}-\d{2}")


def to_float(field: str, value: Any) -> float:
    if is_number(value):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer beyond any float
            raise FilterError(field, f"expected a finite number, got {shown(value)}") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise FilterError(
                field,
                f"expected a number, got {value!r} (a column of dates and times cannot be filtered)"
                if _DATE_LIKE.match(value)
                else f"expected a number, got {value!r}",
            ) from None
    else:
        raise FilterError(field, f"expected a number, got {value!r}")
    if not math.isfinite(number):
        raise FilterError(field, f"expected a finite number, got {value!r}")
    return number


def check_point(field: str, lat: Any, lon: Any) -> None:
    if not (is_number(lat) and is_number(lon)) or not (math.isfinite(lat) and math.isfinite(lon)):
        raise FilterError(field, f"coordinates must be numbers, got ({lat!r}, {lon!r})")
    if not -90 <= lat <= 90:
        raise FilterError(field, f"latitude {lat} outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise FilterError(field, f"longitude {lon} outside [-180, 180]")


def parse_point(field: str, value: Any) -> tuple[float, float]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 2:
        raise FilterError(field, f"expected [lat, lon] or 'lat,lon', got {value!r}")
    lat, lon = (to_float(field, p) for p in parts)
    check_point(field, lat, lon)
    return lat, lon
