"""Filters from CLI expressions (:func:`parse_filter`) and from the HTTP API's JSON shape
(:func:`filters_from_mapping`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from embedrec.data.errors import shown
from embedrec.index.filters.base import Filter, FilterError
from embedrec.index.filters.radius import RadiusFilter
from embedrec.index.filters.range import RangeFilter
from embedrec.index.filters.sets import ExcludeFilter, SetFilter
from embedrec.index.filters.values import as_strings, parse_point, split_values, to_float

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|<|>|=)\s*(.*?)\s*$")


def parse_filter(expression: str) -> Filter:
    """Parse a CLI filter such as ``price<=25000``, ``make=Nissan,Toyota``, ``body!=van``,
    ``within=51.05,13.74,100km`` or ``exclude=id1,id2``. TypeError for anything but a str
    (a number is no expression: ``[20000]`` says neither field nor comparison)."""
    if not isinstance(expression, str):
        raise TypeError(
            f"a filter expression must be a str such as 'price<=25000', got the "
            f"{type(expression).__name__} {shown(expression)}"
        )
    match = _EXPRESSION.match(expression)
    if match is None:
        raise FilterError(
            expression.strip() or "?",
            "expected FIELD OP VALUE with OP one of <=, >=, <, >, =, != (e.g. price<=25000)",
        )
    field, op, raw = match.groups()
    if not raw:
        raise FilterError(field, f"missing value in {expression!r}")
    if field == "within":
        if op != "=":
            raise FilterError(field, "use within=LAT,LON,RADIUS (e.g. within=51.05,13.74,100km)")
        return _parse_within(raw)
    if field == "exclude":
        if op != "=":
            raise FilterError(field, "use exclude=ID1,ID2")
        return ExcludeFilter(split_values(field, raw))
    if op in ("=", "!="):
        return SetFilter(field, split_values(field, raw), negate=op == "!=")
    value = to_float(field, raw)
    if op in ("<=", "<"):
        return RangeFilter(field, high=value, high_inclusive=op == "<=")
    return RangeFilter(field, low=value, low_inclusive=op == ">=")


def filters_from_mapping(d: Mapping[str, Any]) -> list[Filter]:
    """Filters from the HTTP API shape.

    ``<column>_min`` / ``<column>_max`` are inclusive numeric bounds; ``near`` ([lat, lon] or
    "lat,lon") with ``within_km`` is a radius; ``exclude`` is a list of listing ids; any other key
    is a categorical equality (str) or set (list) on that column. Keys whose value is None are
    ignored, so optional form fields can be sent empty.
    """
    items = {key: value for key, value in d.items() if value is not None}
    filters: list[Filter] = []
    bounds: dict[str, dict[str, float]] = {}
    near = items.pop("near", None)
    within = items.pop("within_km", None)
    if (near is None) != (within is None):
        field = "near" if near is None else "within_km"
        raise FilterError(field, "'near' and 'within_km' must be given together")
    if near is not None:
        lat, lon = parse_point("near", near)
        filters.append(RadiusFilter(lat, lon, to_float("within_km", within), field="within_km"))
    if "exclude" in items:
        filters.append(ExcludeFilter(as_strings("exclude", items.pop("exclude"))))
    for key, value in items.items():
        base, _, side = key.rpartition("_")
        if base and side in ("min", "max"):
            bounds.setdefault(base, {})[side] = to_float(key, value)
        else:
            filters.append(SetFilter(key, as_strings(key, value)))
    for column, sides in bounds.items():
        low, high = sides.get("min"), sides.get("max")
        if low is not None and high is not None and low > high:
            raise FilterError(column, f"{column}_min ({low:g}) is above {column}_max ({high:g})")
        filters.append(RangeFilter(column, low=low, high=high))
    return filters


def _parse_within(raw: str) -> RadiusFilter:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise FilterError("within", f"expected LAT,LON,RADIUS (e.g. 1.5,2.5,100km), got {raw!r}")
    lat, lon = parse_point("within", parts[:2])
    radius = parts[2].lower().removesuffix("km").strip()
    return RadiusFilter(lat, lon, to_float("within", radius))
