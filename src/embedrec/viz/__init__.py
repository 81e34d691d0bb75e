"""Show what listing embeddings learned: 2-D projections, neighbour maps, and numbers.

Works on plain inputs: a float32 (n, d) matrix of listing vectors and a DataFrame of the
listings' fields in the same row order. Plotly, matplotlib, openTSNE and umap-learn are
imported only when the figure or method that needs them is used.
"""

from embedrec.viz.inspect import format_inspection, inspect_embeddings
from embedrec.viz.plots import (
    colour_problem,
    haversine_km,
    plot_neighbours_map,
    plot_projection,
)
from embedrec.viz.projection import project

__all__ = [
    "colour_problem",
    "format_inspection",
    "haversine_km",
    "inspect_embeddings",
    "plot_neighbours_map",
    "plot_projection",
    "project",
]
