"""The filter query parameters the HTTP API documents, derived from the catalogue's columns.

Any listing column filters whatever is documented (the filters are read from the whole query
string); these parameters put the served catalogue's filters into the OpenAPI schema.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Annotated, Any

import pandas as pd
from fastapi import Query

from embedrec.geo import LAT_LON_COLUMNS
from embedrec.index.filters import ID_COLUMN

# not derived from a column, so no column may take these names
RADIUS = ("near", "within_km")
EXCLUDE = "exclude"


def filter_parameters(
    schema: pd.DataFrame, reserved: Collection[str] = ()
) -> list[inspect.Parameter]:
    """Keyword-only parameters for a dependency's signature, one per documented filter.

    Numeric columns give ``<column>_min`` and ``<column>_max`` (numbers), text, categorical
    and boolean columns a repeatable ``<column>``, a lat/lon column pair ``near`` and
    ``within_km``, and ``exclude`` is always there. Names in ``reserved`` (the routes' own
    parameters) are left out, as are date-time columns and the id column (see ``exclude``).
    """
    documented: dict[str, tuple[Any, str]] = {}
    taken = {*reserved, *RADIUS, EXCLUDE}
    for column, dtype in schema.dtypes.items():
        name = str(column)
        if name == ID_COLUMN or pd.api.types.is_datetime64_any_dtype(dtype):
            continue
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            documented[f"{name}_min"] = (float | None, f"lowest {name} (inclusive)")
            documented[f"{name}_max"] = (float | None, f"highest {name} (inclusive)")
        else:
            documented[name] = (list[str] | None, f"{name} is one of these (repeat or a,b)")
    documented = {alias: doc for alias, doc in documented.items() if alias not in taken}
    if any(lat in schema.columns and lon in schema.columns for lat, lon in LAT_LON_COLUMNS):
        documented["near"] = (str | None, "lat,lon")
        documented["within_km"] = (float | None, "radius around near, in km")
    documented[EXCLUDE] = (str | None, "id1,id2")
    return [
        inspect.Parameter(
            f"filter_{position}",  # a column's name need not be a Python name: the alias is
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[kind, Query(alias=alias, description=description)],
        )
        for position, (alias, (kind, description)) in enumerate(documented.items())
    ]
