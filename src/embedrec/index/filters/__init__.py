"""Query-time filters over the listing catalogue, evaluated as vectorised boolean masks.

Filters come from CLI expressions (:func:`parse_filter`) or the HTTP API's JSON shape
(:func:`filters_from_mapping`); :func:`allowed_mask` turns a list of them into one boolean
mask over the rows of the catalogue table (all filters must hold). On large tables,
:func:`allowed_rows` answers a selective filter from a sorted index of its column instead, in
time that grows with the rows it keeps rather than with the catalogue. Converted columns and
indexes are kept in a :class:`FilterCache` that the table's owner holds and passes in.

One module per concept: the contract (``base``), the cache and the columns it holds, each
kind of filter (``range``, ``sets``, ``radius``), parsing, and the selection of rows.
"""

from embedrec.index.filters.base import ID_COLUMN, Candidates, Check, Filter, FilterError
from embedrec.index.filters.cache import FilterCache
from embedrec.index.filters.parse import filters_from_mapping, parse_filter
from embedrec.index.filters.radius import GRID, RadiusFilter, table_grid
from embedrec.index.filters.range import RangeFilter, merged_ranges
from embedrec.index.filters.selection import (
    allowed_mask,
    allowed_rows,
    allowed_selection,
    position_tests,
)
from embedrec.index.filters.sets import ExcludeFilter, SetFilter

__all__ = [
    "GRID",
    "ID_COLUMN",
    "Candidates",
    "Check",
    "ExcludeFilter",
    "Filter",
    "FilterCache",
    "FilterError",
    "RadiusFilter",
    "RangeFilter",
    "SetFilter",
    "allowed_mask",
    "allowed_rows",
    "allowed_selection",
    "filters_from_mapping",
    "merged_ranges",
    "parse_filter",
    "position_tests",
    "table_grid",
]
