"""The filter query parameters the HTTP API documents, derived from the catalogue's columns.

Any listing column filters whatever is documented (the filters are read from the whole query
string); these parameters put the served catalogue's filters into the OpenAPI schema. They are
OpenAPI entries, not parameters of the route's signature: FastAPI would parse and validate
dozens of them on every request (a sixth of a similar-listing request's time at 1M listings)
only for the filter parser to read the query string again.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from embedrec.geo import LAT_LON_COLUMNS
from embedrec.index.filters import ID_COLUMN

# the routes' number of results, never a filter
RESULTS = "k"
# not derived from a column, so no column may take these names
RADIUS = ("near", "within_km")
EXCLUDE = "exclude"
# query parameters that are no column's filter: the service refuses a catalogue with a column
# of one of these names (serving/state.py), which could never be filtered
QUERY_PARAMETERS = (RESULTS, *RADIUS, EXCLUDE)


def filter_parameters(schema: pd.DataFrame, reserved: Collection[str] = ()) -> list[dict[str, Any]]:
    """OpenAPI query parameter objects, one per documented filter.

    Numeric columns give ``<column>_min`` and ``<column>_max`` (numbers), text, categorical
    and boolean columns a repeatable ``<column>``, a lat/lon column pair ``near`` and
    ``within_km``, and ``exclude`` is always there. Names in ``reserved`` (the routes' own
    parameters) are left out, as are date-time columns and the id column (see ``exclude``).
    """
    number, text = {"type": "number"}, {"type": "string"}
    texts = {"type": "array", "items": text}
    documented: dict[str, tuple[dict[str, Any], str]] = {}
    taken = {*reserved, *RADIUS, EXCLUDE}
    for column, dtype in schema.dtypes.items():
        name = str(column)
        if name == ID_COLUMN or pd.api.types.is_datetime64_any_dtype(dtype):
            continue
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            documented[f"{name}_min"] = (number, f"lowest {name} (inclusive)")
            documented[f"{name}_max"] = (number, f"highest {name} (inclusive)")
        else:
            documented[name] = (texts, f"{name} is one of these (repeat or a,b)")
    documented = {alias: doc for alias, doc in documented.items() if alias not in taken}
    if any(lat in schema.columns and lon in schema.columns for lat, lon in LAT_LON_COLUMNS):
        documented["near"] = (text, "lat,lon")
        documented["within_km"] = (number, "radius around near, in km")
    documented[EXCLUDE] = (text, "id1,id2")
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": kind,
        }  # fmt: skip
        for name, (kind, description) in documented.items()
    ]
