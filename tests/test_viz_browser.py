"""The HTML figures open in headless Chromium, offline, and render every point without errors.

Needs Debian's Chromium (`apt-get install chromium`) and Playwright for Python
(`pip install playwright`; `playwright install` is not needed, the system browser is used).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser import SHOTS, launch, require
from test_viz import _neighbour_dicts, synthetic

from embedrec.viz import plot_neighbours_map, plot_projection, project

require()
pytest.importorskip("plotly")
pytestmark = pytest.mark.browser

# Points in the traces named in `names` (prefix match; null = all), read from the rendered
# graph div. Plotly ships arrays base64-encoded, so gd.data[i].x may be an {dtype, bdata}
# object; gd._fullData holds the decoded arrays actually drawn.
COUNT_JS = """names => {
    const gd = document.querySelector('.plotly-graph-div');
    if (!gd || !gd._fullData) return -1;
    return gd._fullData
        .filter(t => names === null || names.some(n => (t.name || '').startsWith(n)))
        .reduce((s, t) => s + (t.x && t.x.length !== undefined ? t.x.length : t._length), 0);
}"""


@pytest.fixture(scope="module")
def browser():
    yield from launch()


def _open(browser, html: Path, shot: str):
    """Load `html` with the network blocked; return (page, console errors)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Any request other than the file itself is a failure: the figure must be self-contained.
    requests: list[str] = []
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file://")
            else (requests.append(route.request.url), route.abort())
        ),
    )
    page.goto(html.as_uri(), wait_until="load")
    page.wait_for_function("document.querySelector('.plotly-graph-div')?._fullLayout")
    page.wait_for_timeout(300)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"))
    assert not requests, f"network requests: {requests}"
    return page, errors


@pytest.mark.parametrize(
    ("n", "color"), [(500, "make"), (500, "price"), (8000, "make"), (8000, "price")]
)
def test_projection_renders_all_points(browser, tmp_path, n, color):
    vectors, table = synthetic(n=n)
    rows, coords = project(vectors, "pca")
    out = plot_projection(coords, table.iloc[rows], color, tmp_path / "proj.html")
    page, errors = _open(browser, out, f"viz-projection-{n}-{color}")
    assert page.evaluate(COUNT_JS, None) == n
    if n > 5000:
        assert page.evaluate("document.querySelector('.plotly-graph-div canvas') !== null")
    assert not errors, errors
    page.close()


def test_neighbours_map_renders(browser, tmp_path):
    vectors, table = synthetic()
    query, neighbours = _neighbour_dicts(vectors, table, k=8)
    out = plot_neighbours_map(query, neighbours, tmp_path / "map.html")
    page, errors = _open(browser, out, "viz-neighbours-map")
    assert page.evaluate(COUNT_JS, ["neighbours"]) == 8
    assert page.evaluate(COUNT_JS, ["query"]) == 1
    assert page.evaluate(COUNT_JS, ["cities"]) > 1000
    assert not errors, errors
    page.close()


def test_count_js_sees_projection_only(browser, tmp_path):
    """Counting by trace name excludes the map's background traces."""
    vectors, table = synthetic(n=50)
    out = plot_projection(np.asarray(vectors[:, :2]), table, None, tmp_path / "p.html")
    page, errors = _open(browser, out, "viz-projection-plain")
    assert page.evaluate(COUNT_JS, ["listings"]) == 50
    assert not errors, errors
    page.close()


HOVER_JS = """() => {
    const gd = document.querySelector('.plotly-graph-div');
    Plotly.Fx.hover(gd, [{curveNumber: 0, pointNumber: 0}]);
    const layer = document.querySelector('.hoverlayer');
    return [layer.textContent, layer.querySelectorAll('a, [style*=bold]').length];
}"""


def test_hover_shows_field_values_as_they_are(browser, tmp_path):
    # markup in a field is the field's text, not formatting; a year has no thousands separator
    vectors, table = synthetic(n=20)
    table = table.assign(
        city='<b>bold</b> &amp; <a href="https://example.invalid">x</a>', year=2021, price=23221.0
    )
    out = plot_projection(np.asarray(vectors[:, :2]), table, None, tmp_path / "p.html")
    page, errors = _open(browser, out, "viz-projection-hover")
    text, elements = page.evaluate(HOVER_JS)
    assert 'city: <b>bold</b> &amp; <a href="https://example.invalid">x</a>' in text
    assert elements == 0
    assert "year: 2021" in text and "price: 23,221 €" in text
    assert not errors, errors
    page.close()


def test_legend_and_title_show_values_and_ids_as_they_are(browser, tmp_path):
    # Plotly reads a legend entry or a title as markup: '<b>' came out bold, '<br>' split it
    vectors, table = synthetic(n=20)
    table = table.assign(make=np.array(["<b>Bold</b> &amp; Co", "A<br>B"])[np.arange(20) % 2])
    coords = np.asarray(vectors[:, :2])
    out = plot_projection(coords, table, "make", tmp_path / "p.html", title="<i>q</i>&amp;")
    page, errors = _open(browser, out, "viz-projection-legend-markup")
    legend = page.evaluate("[...document.querySelectorAll('.legendtext')].map(e => e.textContent)")
    assert legend == ["<b>Bold</b> &amp; Co (10)", "A<br>B (10)"]
    assert page.evaluate("document.querySelector('.gtitle').textContent") == "<i>q</i>&amp;"
    assert not errors, errors
    page.close()
