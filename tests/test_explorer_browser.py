"""The explorer page (``embedrec serve`` at ``/``) in headless Chromium, end to end.

A real server process on a loopback port serves a hybrid model trained on the tiny car data;
the page must search a listing, follow a neighbour, draw the map and the projection, show a
user's recommendations, log no console errors and request nothing outside the server.

Needs Debian's Chromium (`apt-get install chromium`) and Playwright for Python
(`pip install playwright`; `playwright install` is not needed, the system browser is used).
Screenshots go to test-output/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser import SHOTS, launch, require

from embedrec.recommender import Recommender

require()
pytestmark = [pytest.mark.browser, pytest.mark.server]
QUERY = "qashqai-dresden"
K = 10
TIMEOUT_MS = 15_000

# Pixels of a canvas that differ from its top-left (background) pixel.
DRAWN_PIXELS_JS = """selector => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) drawn++;
    }
    return drawn;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A hybrid model trained on the tiny car data (which has the listing qashqai-dresden)."""
    from embedrec.datasets.cars import generate_cars

    cars = tmp_path_factory.mktemp("explorer-cars")
    generate_cars(cars, size="tiny", seed=0, progress=False)
    out = tmp_path_factory.mktemp("explorer-model") / "hybrid"
    Recommender(model="hybrid", epochs=2, progress=False).fit(
        cars / "interactions.parquet", cars / "listings.parquet"
    ).save(out)
    return out


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """``embedrec serve MODEL_DIR`` on a free loopback port; yields its base URL."""
    yield from serve(model_dir, tmp_path_factory.mktemp("explorer-store") / "store.sqlite")


def serve(model_dir: Path, store: Path):
    """``embedrec serve MODEL_DIR`` on a free loopback port: yields its base URL, then stops."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "EMBEDREC_API_TOKEN"}
    command = [sys.executable, "-m", "embedrec.cli", "serve", str(model_dir), "--port", str(port)]
    command += ["--store", str(store), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"server died: {process.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not start in 60 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def a_user(model_dir: Path) -> str:
    """A user the model knows (the bundle lists them in users.parquet)."""
    import pandas as pd

    return str(pd.read_parquet(model_dir / "users.parquet").iloc[0, 0])


@pytest.fixture(scope="module")
def browser():
    yield from launch()


def rows(page) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr", "rs => rs.map(r => r.dataset.listingId)")


def wait_until(page, predicate: str, arg: object = None) -> None:
    """Poll a JavaScript function until it returns true. Not ``page.wait_for_function``: that
    compiles its predicate with eval in the page, which the page's Content-Security-Policy
    forbids, while ``page.evaluate`` goes through the DevTools protocol."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        page.wait_for_timeout(50)


def wait_for_query(page, query: str) -> None:
    wait_until(
        page,
        "q => document.body.dataset.state !== 'loading'"
        " && document.querySelector('#results').dataset.query === q",
        query,
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#status")


def test_explorer_page(server, model_dir, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Everything comes from the server itself: any other request fails the test.
    outside: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    SHOTS.mkdir(exist_ok=True)

    # under the strict Content-Security-Policy it is served with: a violation would be logged
    # to the console as an error and fail the test below
    policy = page.goto(server + "/").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "unsafe" not in policy
    assert page.title() == "embedrec explorer"

    # Search a listing: k neighbours, not the query itself.
    page.fill("#query-id", QUERY)
    page.fill("#k", str(K))
    page.click("button[type=submit]")
    wait_for_query(page, QUERY)
    first = rows(page)
    assert len(first) == K and QUERY not in first
    assert QUERY in page.inner_text("#query-card")
    assert "Nissan Qashqai" in page.inner_text("#query-card")

    # The map: the base map's cities and a marker for the query and each neighbour.
    wait_until(page, f"() => document.querySelector('#map').dataset.markers === '{K + 1}'")
    assert int(page.get_attribute("#map", "data-cities")) > 0
    assert page.evaluate(DRAWN_PIXELS_JS, "#map") > 500
    # The projection: every tiny listing, the query and its neighbours highlighted.
    wait_until(page, "() => +document.querySelector('#projection').dataset.points > 0")
    assert int(page.get_attribute("#projection", "data-points")) >= 100
    assert int(page.get_attribute("#projection", "data-highlighted")) == K + 1
    assert page.evaluate(DRAWN_PIXELS_JS, "#projection") > 1000
    page.screenshot(path=str(SHOTS / "explorer-listing.png"), full_page=True)

    # Click the third neighbour: it becomes the query, with its own neighbours.
    chosen = first[2]
    page.click("#results tbody tr:nth-child(3) td:nth-child(3)")
    wait_for_query(page, chosen)
    second = rows(page)
    assert len(second) == K and chosen not in second and second != first
    assert page.url.endswith(f"#listing={chosen}&k={K}")
    assert chosen in page.inner_text("#query-card")
    assert int(page.get_attribute("#map", "data-markers")) == K + 1
    assert int(page.get_attribute("#projection", "data-highlighted")) == K + 1
    page.screenshot(path=str(SHOTS / "explorer-neighbour.png"), full_page=True)

    # Back in history: the first query again.
    page.go_back()
    wait_for_query(page, QUERY)
    assert rows(page) == first

    # A user's recommendations.
    user = a_user(model_dir)
    page.check("input[name=mode][value=user]")
    page.fill("#query-id", user)
    page.click("button[type=submit]")
    wait_for_query(page, user)
    recommended = rows(page)
    assert len(recommended) == K
    assert user in page.inner_text("#query-card")
    assert int(page.get_attribute("#map", "data-markers")) == K
    assert int(page.get_attribute("#projection", "data-highlighted")) == K
    page.screenshot(path=str(SHOTS / "explorer-user.png"), full_page=True)

    # A random listing.
    page.click("#random")
    wait_until(
        page,
        "() => location.hash.startsWith('#listing=') && document.body.dataset.state === 'ready'"
        " && document.querySelector('#results').dataset.query"
        "   === new URLSearchParams(location.hash.slice(1)).get('listing')",
    )
    assert len(rows(page)) == K

    assert not errors, errors
    assert not outside, outside

    # An unknown listing: a message, an empty table, and the page still works.
    page.check("input[name=mode][value=listing]")
    page.fill("#query-id", "no-such-listing")
    page.click("button[type=submit]")
    wait_until(page, "() => document.body.dataset.state === 'error'")
    assert "no-such-listing" in page.inner_text("#status")
    assert rows(page) == []
    page.close()


def open_page(browser, url: str, route: str | None = None, handler=None):
    """A page at ``url`` that collects its console errors (``page.errors``) and the URLs it
    requests (``page.asked``); ``handler`` answers the requests matching ``route``."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.errors, page.asked = [], []
    page.on("request", lambda r: page.asked.append(r.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    if route is not None:
        page.route(route, handler)
    page.goto(url)
    return page


def with_latitude_longitude(route) -> None:
    """The server's answer with its records' lat/lon named latitude/longitude, the other pair
    of coordinate columns a catalogue may have."""
    answer = route.fetch()
    body = answer.json()
    for record in [body, *body.get("results", [])]:
        for old, new in (("lat", "latitude"), ("lon", "longitude")):
            if old in record:
                record[new] = record.pop(old)
    route.fulfill(response=answer, json=body)


def test_listings_located_by_latitude_and_longitude_are_on_the_map(server, browser):
    url = f"{server}/#listing={QUERY}&k={K}"
    page = open_page(browser, url, "**/v1/listings/**", with_latitude_longitude)
    wait_for_query(page, QUERY)
    assert page.get_attribute("#map", "data-markers") == str(K + 1)
    assert "no location" not in page.inner_text("#map-caption")
    # coordinates are drawn, not listed among the query's fields
    assert "latitude" not in page.inner_text("#query-card")
    assert not page.errors, page.errors
    page.close()


def in_the_corners(route) -> None:
    """The server's answer with the query moved to the north-east corner of a box and its
    results to the other three corners."""
    answer = route.fetch()
    body = answer.json()
    if "results" in body:
        corners = [(52.0, 8.0), (48.0, 14.0), (48.0, 8.0)]
        for record, (lat, lon) in zip(body["results"], corners, strict=False):
            record["lat"], record["lon"] = lat, lon
    else:  # the query's fields
        body["lat"], body["lon"] = 52.0, 14.0
    route.fulfill(response=answer, json=body)


def test_the_map_overview_hides_no_marker_the_query_above_all(server, browser):
    # with a marker in every corner, the overview went to the first corner and hid the query
    page = open_page(browser, f"{server}/#listing={QUERY}&k=3", "**/v1/listings/**", in_the_corners)
    wait_for_query(page, QUERY)
    wait_until(page, "() => document.querySelector('#map').dataset.markers === '4'")
    colours = page.evaluate(
        """() => {
            const canvas = document.querySelector('#map');
            const ratio = canvas.width / canvas.clientWidth;
            const ctx = canvas.getContext('2d');
            return JSON.parse(canvas.dataset.positions).map(([id, x, y]) => {
                // beside the centre: a result's rank is written there
                const [r, g, b] = ctx.getImageData((x + 4) * ratio, y * ratio, 1, 1).data;
                return [id, r, g, b];
            });
        }"""
    )
    assert len(colours) == 4
    for listing, *rgb in colours:
        expected = (214, 39, 40) if listing == QUERY else (29, 78, 216)
        assert rgb == list(expected), (listing, rgb)
    assert not page.errors, page.errors
    page.close()


def test_an_invalid_k_from_a_link_is_replaced_once_not_kept_for_later_searches(server, browser):
    page = open_page(browser, f"{server}/#listing={QUERY}&k=1.5")
    wait_for_query(page, QUERY)
    assert len(rows(page)) == 10 and page.input_value("#k") == "10"
    assert "k=1.5" in page.inner_text("#status")
    assert "k=10" in page.url
    # the next search (a random listing) uses a valid k and says nothing of the link's
    page.click("#random")
    wait_until(
        page,
        "() => document.body.dataset.state === 'ready'"
        f" && document.querySelector('#results').dataset.query !== '{QUERY}'",
    )
    assert len(rows(page)) == 10 and "k=1.5" not in page.inner_text("#status")
    assert not page.errors, page.errors
    page.close()


def test_an_answer_that_is_not_json_is_a_readable_error(server, browser):
    # a proxy's page, say, answered with 200
    def page_not_json(route) -> None:
        route.fulfill(status=200, body="<html>proxy page</html>", content_type="text/html")

    page = open_page(browser, f"{server}/#listing={QUERY}", "**/similar*", page_not_json)
    wait_until(page, "() => document.body.dataset.state === 'error'")
    status = page.inner_text("#status")
    assert "is not JSON (text/html)" in status and "Cannot read" not in status
    assert not page.errors, page.errors
    page.close()


def test_a_catalogue_too_small_for_a_map_asks_for_no_projection(server, browser):
    def two_listings(route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "listings": 2})

    page = open_page(browser, f"{server}/#listing={QUERY}", "**/v1/model", two_listings)
    wait_for_query(page, QUERY)
    wait_until(page, "() => document.querySelector('#projection-caption').textContent"
                     ".includes('too few')")  # fmt: skip
    assert "2 listings: too few for a map" in page.inner_text("#projection-caption")
    assert not [url for url in page.asked if "/v1/projection" in url]
    assert not page.errors, page.errors
    page.close()


# ------------------------------------------------------------------ another marketplace
CATEGORIES = ["engineering", "sales", "care", "logistics"]


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory):
    """A jobs board: a title, categories, a number of hours, no coordinates. Users of a
    category view its jobs (an mf model, trained in about a second)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 80
    category = np.arange(n) % len(CATEGORIES)
    jobs = pd.DataFrame(
        {
            "listing_id": [f"J{i:03d}" for i in range(n)],
            "title": [
                f"{CATEGORIES[c]} role number {i} in a friendly team"
                for i, c in enumerate(category)
            ],  # fmt: skip
            "category": np.array(CATEGORIES)[category],
            "contract": rng.choice(["permanent", "temporary", "freelance"], n),
            "hours": rng.choice([20, 30, 40], n),
        }
    )
    users = np.repeat(np.arange(100), 10)
    chosen = rng.integers(0, n // len(CATEGORIES), len(users)) * len(CATEGORIES) + users % 4
    events = pd.DataFrame(
        {
            "user_id": [f"U{u}" for u in users],
            "listing_id": jobs["listing_id"].to_numpy()[chosen],
            "timestamp": 1_700_000_000 + rng.integers(0, 1_000_000, len(users)),
        }
    )
    model = tmp_path_factory.mktemp("explorer-jobs") / "mf"
    Recommender(model="mf", epochs=2, progress=False).fit(events, jobs).save(model)
    yield from serve(model, model.parent / "store.sqlite")


def column_cells(page, header: str) -> list[str]:
    """The results' cells under the table header ``header``."""
    return page.evaluate(
        """header => {
            const names = [...document.querySelectorAll('#results thead th')]
                .map(th => th.textContent);
            const at = names.indexOf(header);
            if (at < 0) return null;
            return [...document.querySelectorAll('#results tbody tr')]
                .map(row => row.cells[at].textContent);
        }""",
        header,
    )


def test_another_marketplace_gets_filters_columns_and_colours_of_its_own(jobs_server, browser):
    page = open_page(browser, f"{jobs_server}/#listing=J000&k={K}")
    wait_for_query(page, "J000")
    # its own columns' filter boxes, none of a car catalogue's
    names = page.eval_on_selector_all("#search input[data-filter]", "bs => bs.map(b => b.name)")
    assert {"hours_min", "hours_max", "category", "contract"} <= set(names), names
    assert not {"price_max", "make"} & set(names), names
    suggested = page.eval_on_selector_all("datalist option", "os => os.map(o => o.value)")
    assert set(CATEGORIES) <= set(suggested)
    # its columns in the table, its title as the listing's label, no map without coordinates
    headers = page.eval_on_selector_all("#results thead th", "ths => ths.map(t => t.textContent)")
    assert {"Title", "Hours", "Category", "Contract"} <= set(headers), headers
    assert "engineering role number 0" in page.inner_text("#query-card h2")
    assert page.is_hidden("#map") and not [url for url in page.asked if "cities.json" in url]
    # the projection coloured by its categories
    wait_until(page, "() => +document.querySelector('#projection').dataset.points > 0")
    assert page.input_value("#colour-by") in ("category", "contract")
    assert "coloured by" in page.inner_text("#projection-caption")
    unfiltered = rows(page)
    assert set(column_cells(page, "Category")) == {"engineering"}  # its own category's jobs

    # filtering by one of its columns: the results change, and the filter is in the link
    page.fill("#search input[name=category]", "sales")
    page.click("button[type=submit]")
    wait_until(page, "() => location.hash.includes('category=sales')")
    wait_for_query(page, "J000")
    assert rows(page) and rows(page) != unfiltered
    assert set(column_cells(page, "Category")) == {"sales"}
    page.fill("#search input[name=hours_max]", "30")
    page.click("button[type=submit]")
    wait_until(page, "() => location.hash.includes('hours_max=30')")
    wait_for_query(page, "J000")
    assert {int(h) for h in column_cells(page, "Hours")} <= {20, 30}
    assert "unknown field" not in page.inner_text("#status")
    page.screenshot(path=str(SHOTS / "explorer-jobs.png"), full_page=True)
    assert not page.errors, page.errors
    page.close()


def test_an_old_link_with_a_cars_price_and_make_still_fills_their_boxes(server, browser):
    page = open_page(browser, f"{server}/#listing={QUERY}&k={K}&price_max=30000&make=BMW")
    wait_for_query(page, QUERY)
    assert page.input_value("#search input[name=price_max]") == "30000"
    assert page.input_value("#search input[name=make]") == "BMW"
    assert set(column_cells(page, "Make")) == {"BMW"}
    assert all(int(p.replace(",", "").rstrip(" €")) <= 30000 for p in column_cells(page, "Price"))
    assert not page.is_hidden("#map")
    assert not page.errors, page.errors
    page.close()


def without_some_segments(route) -> None:
    """The projection's answer with every third listing's segment missing."""
    answer = route.fetch()
    body = answer.json()
    for point in body["points"][::3]:
        point["segment"] = None
    route.fulfill(response=answer, json=body)


def test_listings_without_a_colour_are_a_grey_group_and_a_failed_query_leaves_no_card(
    server, model_dir, browser
):
    page = open_page(browser, f"{server}/", "**/v1/projection?**", without_some_segments)
    wait_until(page, "() => +document.querySelector('#projection').dataset.points > 0")
    points = int(page.get_attribute("#projection", "data-points"))
    assert page.input_value("#colour-by") == "segment"
    legend = page.evaluate("JSON.parse(document.querySelector('#projection').dataset.legend)")
    # counted in a grey of their own, not passed off as "other" values nor given a colour
    assert legend[-1] == [f"no value ({len(range(0, points, 3))})", "#e2e5ea"]
    assert not any(label.startswith("other") for label, _ in legend)
    # an unknown user after a known one: the error, and no card left as if it answered
    user = a_user(model_dir)
    page.evaluate("id => { location.hash = `#user=${encodeURIComponent(id)}&k=3`; }", user)
    wait_for_query(page, user)
    assert user in page.inner_text("#query-card")
    assert not page.errors, page.errors  # the 404 below is logged as one
    page.evaluate("() => { location.hash = '#user=no-such-user&k=3'; }")
    wait_until(page, "() => document.body.dataset.state === 'error'")
    assert "no-such-user" in page.inner_text("#status")
    assert page.inner_text("#query-card").strip() == "" and rows(page) == []
    page.close()
