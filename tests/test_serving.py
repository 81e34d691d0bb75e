"""``embedrec serve`` end to end: a real server process, spoken to over HTTP."""

from __future__ import annotations

import atexit
import functools
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from embedrec.recommender import Recommender
from embedrec.serving.schemas import RecommendationsResponse, SessionResponse, SimilarResponse

pytestmark = pytest.mark.server
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = "U0000001"
NEW_CAR = {"make": "Nissan", "model": "Qashqai", "year": 2018, "price": 23221, "lat": 51.05,
           "lon": 13.74}  # fmt: skip


BERLIN = {"lat": 52.52, "lon": 13.40}
START_WITHIN_S = 180


def great_circle_km(a: dict, b: dict) -> float:
    """Haversine distance between two records with lat and lon, on a 6371.0088 km sphere."""
    (p1, l1), (p2, l2) = ((math.radians(x["lat"]), math.radians(x["lon"])) for x in (a, b))
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin((l2 - l1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def cache_home_for_tests() -> str:
    path = tempfile.mkdtemp(prefix="embedrec-test-cache-")
    atexit.register(shutil.rmtree, path, True)
    return path


class Server:
    """``python -m embedrec.serving.command MODEL ...`` on a free loopback port."""

    def __init__(self, model: Path, store: Path, *args: str, token: str | None = TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "EMBEDREC_API_TOKEN"}
        # the workers' shared files (serving/shared.py) go to a test folder, not the home's
        env.setdefault("XDG_CACHE_HOME", cache_home_for_tests())
        if token:
            env["EMBEDREC_API_TOKEN"] = token
        command = [sys.executable, "-m", "embedrec.serving.command", str(model)]
        command += ["--port", str(self.port), "--store", str(store), "--log-level", "warning"]
        self.process = subprocess.Popen(
            [*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        # a bound for a loaded CI host, where a start takes seconds (a replica's too)
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server died: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {START_WITHIN_S} s")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait for the server to end; its exit status (negative: the signal
        that ended it)."""
        self.client.close()
        if self.process.poll() is None:
            # the process group: with --workers the workers must go too
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


# test_serving_schema imports these fixtures too: made once per process all the same
_MADE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def cars(tmp_path_factory) -> Path:
    from embedrec.datasets.cars import generate_cars

    if "cars" not in _MADE:
        _MADE["cars"] = tmp_path_factory.mktemp("cars")
        generate_cars(_MADE["cars"], size="tiny", seed=0, progress=False)
    return _MADE["cars"]


@pytest.fixture(scope="session")
def model_dir(cars, tmp_path_factory) -> Path:
    """A hybrid model (embeds new listings from features), trained once."""
    if "model" not in _MADE:
        _MADE["model"] = tmp_path_factory.mktemp("models") / "hybrid"
        Recommender(model="hybrid", epochs=2, progress=False).fit(
            cars / "interactions.parquet", cars / "listings.parquet"
        ).save(_MADE["model"])
    return _MADE["model"]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    running = Server(model_dir, tmp_path_factory.mktemp("store") / "store.sqlite")
    yield running
    running.stop()


def some_ids(server: Server, n: int = 3) -> list[str]:
    return [server.get("/v1/random-listing").json()["listing_id"] for _ in range(n)]


# ---------------------------------------------------------------------- reads
def test_similar_with_filters_and_distance(server):
    listing = some_ids(server, 1)[0]
    plain = server.get(f"/v1/listings/{listing}/similar", params={"k": 5}).json()
    assert plain["query"] == listing and len(plain["results"]) == 5
    assert all(r["listing_id"] != listing for r in plain["results"])
    assert all("score" in r and "make" in r for r in plain["results"])
    # distances: great-circle kilometres from the query listing, rounded to metres
    origin = server.get(f"/v1/listings/{listing}").json()
    for r in plain["results"]:
        assert r["distance_km"] == pytest.approx(great_circle_km(origin, r), abs=1e-3)
    params = [("k", 20), ("price_max", 30000), ("fuel", "diesel"), ("fuel", "petrol"),
              ("body", "suv,sedan"), ("exclude", plain["results"][0]["listing_id"])]  # fmt: skip
    filtered = server.get(f"/v1/listings/{listing}/similar", params=params).json()["results"]
    assert filtered, "some diesel/petrol suv/sedan below 30k exists in the tiny data"
    for result in filtered:
        assert result["price"] <= 30000 and result["fuel"] in ("diesel", "petrol")
        assert result["body"] in ("suv", "sedan")
        assert result["listing_id"] != plain["results"][0]["listing_id"]
    near = server.get(
        f"/v1/listings/{listing}/similar",
        params={"near": "52.52,13.40", "within_km": 300, "k": 50},
    ).json()["results"]
    assert near and all(r["distance_km"] <= 300 for r in near)
    # the answers are written without the response model: each is what the model would give
    for answer in (plain, {"query": listing, "results": near}):
        assert SimilarResponse.model_validate(answer).model_dump(mode="json") == answer
    for r in near:  # from the point asked about, not from the query listing
        assert r["distance_km"] == pytest.approx(great_circle_km(BERLIN, r), abs=1e-3)


def test_user_recommendations_exclude_seen(server, cars):
    import pandas as pd

    events = pd.read_parquet(cars / "interactions.parquet")
    user = events["user_id"].iloc[0]
    seen = set(events.loc[events["user_id"] == user, "listing_id"])
    answer = server.get(f"/v1/users/{user}/recommendations", params={"k": 30})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert len(results) == 30 and not seen & {r["listing_id"] for r in results}
    cheap = server.get(f"/v1/users/{user}/recommendations", params={"price_max": 15000}).json()
    assert all(r["price"] <= 15000 for r in cheap["results"])
    assert RecommendationsResponse.model_validate(cheap).model_dump(mode="json") == cheap


def test_session_recommendations(server):
    session = some_ids(server, 3)
    body = {"session": [*session, "no-such-listing"], "k": 7, "filters": {"price_max": 40000}}
    answer = server.client.post("/v1/recommendations", json=body).json()
    assert answer["unknown"] == ["no-such-listing"] and len(answer["results"]) == 7
    assert not set(session) & {r["listing_id"] for r in answer["results"]}
    assert all(r["price"] <= 40000 for r in answer["results"])
    assert SessionResponse.model_validate(answer).model_dump(mode="json") == answer
    none_known = server.client.post("/v1/recommendations", json={"session": ["nope"]})
    assert none_known.status_code == 404 and none_known.json()["field"] == "session"
    empty = server.client.post("/v1/recommendations", json={"session": []})
    assert empty.status_code == 422 and empty.json()["field"] == "session", empty.text
    for k in (True, False, "7", 7.0):  # lax pydantic took true for k = 1
        answer = server.client.post("/v1/recommendations", json={"session": session, "k": k})
        assert answer.status_code == 422 and answer.json()["field"] == "k", (k, answer.text)


def test_listing_random_projection_model_health_metrics(server):
    listing = some_ids(server, 1)[0]
    assert server.get(f"/v1/listings/{listing}").json()["listing_id"] == listing
    assert "listing_id" in server.get("/v1/listings:random").json()
    points = server.get("/v1/projection", params={"sample": 50}).json()["points"]
    assert len(points) == 50 and {"listing_id", "x", "y", "make", "price", "city"} <= set(points[0])
    info = server.get("/v1/model").json()
    assert (
        info["model"] == "hybrid" and info["trained_at"] and "best_val_recall@10" in info["report"]
    )
    assert server.get("/healthz").json()["listings"] == info["listings"] > 0
    # the model's path on the server only for a caller with the API token (before: anyone)
    for path in ("/v1/model", "/healthz/ready"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            shown = server.get(path, headers=headers).json()
            assert shown["model_dir"] is None and shown["model_id"], (path, headers)
        admin = server.get(path, headers=AUTH).json()
        assert os.path.isabs(admin["model_dir"]) and os.path.isdir(admin["model_dir"])
        assert Path(admin["model_dir"]).name == shown["model_name"]
        assert admin["model_id"] == shown["model_id"]
    assert server.get(f"/v1/listings/{listing}/similar").status_code == 200
    metrics = server.get("/metrics").text
    assert 'embedrec_requests_total{endpoint="/v1/listings/{listing_id}/similar"' in metrics
    assert "embedrec_request_seconds_bucket" in metrics and "embedrec_index_listings" in metrics
    schema = server.get("/openapi.json").json()
    assert "/v1/listings/{listing_id}/similar" in schema["paths"]
    # the served catalogue's filters are documented beside the route's own parameters
    for path in ("/v1/listings/{listing_id}/similar", "/v1/users/{user_id}/recommendations"):
        documented = {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}
        assert {"k", "make", "price_min", "price_max", "near", "within_km", "exclude"} <= set(
            documented
        )
        assert documented["make"]["schema"]["type"] == "array"
        assert documented["price_min"]["schema"]["type"] == "number"
    assert server.get("/").status_code == 200


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/listings/no-such/similar", {}, 404, "listing_id"),
        ("/v1/users/no-such/recommendations", {}, 404, "user_id"),
        ("/v1/listings/no-such", {}, 404, "listing_id"),
        ("/v1/listings/{id}/similar", {"k": 0}, 422, "k"),
        ("/v1/listings/{id}/similar", {"k": 1001}, 422, "k"),
        ("/v1/listings/{id}/similar", {"k": "ten"}, 422, "k"),
        # digits only, as a JSON body's integer (lax pydantic took 2.0 and 1e1)
        ("/v1/listings/{id}/similar", {"k": "2.0"}, 422, "k"),
        ("/v1/users/no-such/recommendations", {"k": "1e1"}, 422, "k"),
        ("/v1/projection", {"sample": "5e3"}, 422, "sample"),
        ("/v1/listings/{id}/similar", {"colour": "red"}, 422, "colour"),
        ("/v1/listings/{id}/similar", {"price_min": "cheap"}, 422, "price_min"),
        ("/v1/listings/{id}/similar", {"price": "abc"}, 422, "price"),  # was 200 []
        ("/v1/listings/{id}/similar", {"year": "2018,abc"}, 422, "year"),
        # the parameters given, not their column (price= and make= are filters too)
        ("/v1/listings/{id}/similar", {"price_min": 9, "price_max": 1}, 422, "price_min"),
        ("/v1/listings/{id}/similar", {"make_min": 3}, 422, "make_min"),
        ("/v1/listings/{id}/similar", {"near": "91,0", "within_km": 5}, 422, "near"),
        ("/v1/listings/{id}/similar", {"near": "fifty,13", "within_km": 5}, 422, "near"),
        ("/v1/listings/{id}/similar", {"near": "50,13"}, 422, "within_km"),
        ("/v1/listings/{id}/similar", {"make": ""}, 422, "make"),
        ("/v1/projection", {"method": "tsne"}, 422, "method"),
        ("/v1/projection", {"sample": 0}, 422, "sample"),
    ],
)
def test_bad_reads(server, path, params, status, field):
    path = path.replace("{id}", some_ids(server, 1)[0])
    answer = server.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field and answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Starlette named the first route of the path only: "GET" where PUT and DELETE exist
        ("POST", "/v1/listings/{id}", "DELETE, GET, HEAD, PUT"),
        ("PATCH", "/v1/listings/{id}", "DELETE, GET, HEAD, PUT"),
        ("OPTIONS", "/v1/listings/{id}", "DELETE, GET, HEAD, PUT"),
        ("DELETE", "/v1/listings/{id}/similar", "GET, HEAD"),
        ("GET", "/v1/listings:batch", "POST"),
        ("HEAD", "/v1/listings:batch", "POST"),
        ("PUT", "/healthz", "GET, HEAD"),
    ],
)
def test_a_method_not_allowed_lists_every_method_of_the_path(server, method, path, allow):
    path = path.format(id=some_ids(server, 1)[0])
    answer = server.client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    if method != "HEAD":
        assert answer.json() == {"error": "Method Not Allowed", "field": None}


def test_head_answers_as_get_without_a_body(server):
    listing = some_ids(server, 1)[0]
    paths = [
        f"/v1/listings/{listing}/similar?k=5",
        f"/v1/listings/{listing}",
        "/v1/listings/no-such-listing",  # 404
        f"/v1/listings/{listing}/similar?k=0",  # 422
        "/v1/model",
        "/healthz",
        "/",
        "/static/explorer.css",
        "/openapi.json",
    ]
    for path in paths:
        get, head = server.get(path), server.client.head(path)
        assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
        assert head.content == b"" and get.content, path
        for name in ("content-length", "content-type"):
            assert head.headers[name] == get.headers[name], (path, name)
    assert int(head.headers["content-length"]) == len(get.content)
    # counted as HEAD under its route, not as unmatched
    metrics = server.get("/metrics").text
    assert 'endpoint="/v1/model",method="HEAD",status="200"' in metrics
    # the routes' HEAD is served, not declared: the schema's operations are as before
    paths = server.get("/openapi.json").json()["paths"]
    operations = {path: sorted(methods) for path, methods in paths.items()}
    assert operations["/v1/model"] == ["get"]
    assert operations["/v1/listings/{listing_id}"] == ["delete", "get", "put"]
    assert operations["/healthz"] == ["get"]
    # a client generator refuses two operations of one id (a HEAD declared beside its GET)
    ids = [op["operationId"] for methods in paths.values() for op in methods.values()]
    assert len(ids) == len(set(ids))


def test_a_trailing_slash_is_no_route_and_never_redirects(server):
    # Starlette's redirect built its Location from the request's Host header
    listing = some_ids(server, 1)[0]
    for path in (f"/v1/listings/{listing}/similar/", "/v1/model/", "/healthz/"):
        answer = server.client.get(path, headers={"Host": "evil.example"})
        assert answer.status_code == 404 and "location" not in answer.headers, path


def test_bad_writes(server, model_dir):
    put = server.client.put
    assert put("/v1/listings/x", json=NEW_CAR).status_code == 401
    wrong = put("/v1/listings/x", json=NEW_CAR, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["field"] == "Authorization"
    assert server.client.delete("/v1/listings/x").status_code == 401
    assert server.client.post("/v1/admin/reload").status_code == 401
    for body, field in [
        ({"colour": "red"}, "colour"),
        ({"make": 5}, "make"),
        ({"price": "cheap"}, "price"),
        ({"lat": 95.0, "lon": 0.0}, "lat"),
        ({"lat": 95, "lon": 13}, "lat"),
        ({**NEW_CAR, "lon": None}, "lon"),  # half a pair: no location, past radius filters
        ({"lon": 13.7}, "lat"),
        ({"listed_at": "yesterday"}, "listed_at"),
        ({"listing_id": "other"}, "listing_id"),
    ]:
        answer = put("/v1/listings/x", json=body, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
        assert "np." not in answer.text  # numbers as JSON shows them, not NumPy's repr
    assert put("/v1/listings/x", json=[1, 2], headers=AUTH).status_code == 422
    huge = put("/v1/listings/x", json={"model": "x" * 70_000}, headers=AUTH)
    assert huge.status_code == 413 and huge.json()["field"] == "body"
    chunked = put(
        "/v1/listings/x", content=iter([b'{"model": "', b"x" * 70_000, b'"}']), headers=AUTH
    )
    assert chunked.status_code == 413
    assert server.client.delete("/v1/listings/never-there", headers=AUTH).status_code == 404
    assert server.get("/no/such/route").json()["error"]
    reload = server.client.post("/v1/admin/reload", json={"model_dir": "/nope"}, headers=AUTH)
    assert reload.status_code == 403 and reload.json()["field"] == "model_dir"  # not --model-root
    not_a_model = server.client.post(
        "/v1/admin/reload", json={"model_dir": str(model_dir.parent / "nope")}, headers=AUTH
    )
    assert not_a_model.status_code == 422 and not_a_model.json()["field"] == "model_dir"


# ---------------------------------------------------------------------- writes
def test_put_is_searchable_at_once_and_delete_hides_it(server):
    assert server.get("/v1/listings/some-new-car/similar").status_code == 404
    car = {**NEW_CAR, "city": "Testhausen"}  # a city no other listing has
    created = server.client.put("/v1/listings/some-new-car", json=car, headers=AUTH)
    assert created.status_code == 201 and created.json()["created"]
    assert server.get("/v1/listings/some-new-car").json()["model"] == "Qashqai"
    similar = server.get("/v1/listings/some-new-car/similar", params={"k": 3}).json()["results"]
    assert len(similar) == 3
    for r in similar:
        assert r["distance_km"] == pytest.approx(great_circle_km(car, r), abs=1e-3)
    # it is returned at once: for another listing, a user and a session
    only_new = {"city": "Testhausen"}
    other = similar[0]["listing_id"]
    back = server.get(f"/v1/listings/{other}/similar", params=only_new).json()["results"]
    assert [r["listing_id"] for r in back] == ["some-new-car"]
    user = server.get(f"/v1/users/{USER}/recommendations", params=only_new).json()["results"]
    assert [r["listing_id"] for r in user] == ["some-new-car"]
    session = {"session": [other], "filters": only_new}
    answer = server.client.post("/v1/recommendations", json=session).json()["results"]
    assert [r["listing_id"] for r in answer] == ["some-new-car"]
    replaced = server.client.put(
        "/v1/listings/some-new-car", json={**car, "price": 1}, headers=AUTH
    )
    assert replaced.status_code == 200 and not replaced.json()["created"]
    assert server.get("/v1/listings/some-new-car").json()["price"] == 1
    assert server.client.delete("/v1/listings/some-new-car", headers=AUTH).status_code == 200
    assert server.get("/v1/listings/some-new-car").status_code == 404
    back = server.get(f"/v1/listings/{other}/similar", params=only_new).json()["results"]
    assert back == []


def test_of_concurrent_puts_of_one_new_id_exactly_one_answers_created(server):
    """Whether a PUT created its listing is what the store's transaction saw, not what the
    catalogue held before the write: of six PUTs of one new id at once, one is a 201."""
    start = threading.Barrier(6)

    def put(round_: int) -> tuple[int, bool]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            start.wait()
            answer = client.put(f"/v1/listings/race-{round_}", json=NEW_CAR, headers=AUTH)
            return answer.status_code, answer.json()["created"]

    for round_ in range(4):
        with ThreadPoolExecutor(6) as pool:
            answers = sorted(pool.map(put, [round_] * 6))
        assert answers == [(200, False)] * 5 + [(201, True)], answers
    # the batch endpoint counts what its transaction created: two batches of the same new ids
    batch = {"listings": [{"listing_id": f"race-batch-{i}", **NEW_CAR} for i in range(20)]}

    def post(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            start.wait()
            return client.post("/v1/listings:batch", json=batch, headers=AUTH).json()["created"]

    start = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(post, range(2))) == 20
    # a training listing never written is replaced, not created
    trained = some_ids(server, 1)[0]
    answer = server.client.put(f"/v1/listings/{trained}", json=NEW_CAR, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["created"] is False


def test_writes_survive_restart_and_sigkill(model_dir, tmp_path):
    store = tmp_path / "store.sqlite"
    first = Server(model_dir, store)
    victim = some_ids(first, 1)[0]
    assert first.client.put("/v1/listings/kept", json=NEW_CAR, headers=AUTH).status_code == 201
    assert first.client.delete(f"/v1/listings/{victim}", headers=AUTH).status_code == 200
    acknowledged: list[str] = []

    def burst(worker: int) -> None:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            for i in range(10_000):
                try:
                    answer = client.put(f"/v1/listings/b{worker}-{i}", json=NEW_CAR, headers=AUTH)
                except httpx.TransportError:
                    return
                if answer.status_code == 201:
                    acknowledged.append(f"b{worker}-{i}")

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 40:
            assert time.monotonic() < deadline, f"only {len(acknowledged)} PUTs in 60 s"
            time.sleep(0.01)
    finally:
        first.stop(signal.SIGKILL)  # in the middle of the burst
        for thread in threads:
            thread.join()
    # restarted without a token: read-only, and every acknowledged write is back
    second = Server(model_dir, store, token=None)
    try:
        assert second.get("/v1/listings/kept").json()["make"] == "Nissan"
        assert second.get(f"/v1/listings/{victim}").status_code == 404
        missing = [i for i in acknowledged if second.get(f"/v1/listings/{i}").status_code != 200]
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"
        refused = second.client.put("/v1/listings/x", json=NEW_CAR, headers=AUTH)
        assert refused.status_code == 403
    finally:
        second.stop()


def test_reads_during_reload_all_succeed(server, model_dir):
    ids = some_ids(server, 5)
    stop = threading.Event()

    def read(worker: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                listing = ids[len(statuses) % len(ids)]
                statuses.append(client.get(f"/v1/listings/{listing}/similar").status_code)
        return statuses

    generation = server.get("/v1/model").json()["generation"]
    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read, w) for w in range(4)]
        for _ in range(2):
            answer = server.client.post("/v1/admin/reload", json={}, headers=AUTH)
            assert answer.status_code == 200
        stop.set()
        statuses = [s for r in readers for s in r.result()]
    assert statuses and set(statuses) == {200}
    assert server.get("/v1/model").json()["generation"] == generation + 2


def worker_of(client: httpx.Client) -> str:
    """The pid of the worker serving this (kept-alive) connection."""
    line = next(x for x in client.get("/metrics").text.splitlines() if 'worker="' in x)
    return line.split('worker="')[1].split('"')[0]


SHOP = "https://shop.example"  # the web origin the two-worker server lets call it


@pytest.fixture(scope="module")
def two_workers_server(model_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("workers") / "store.sqlite"
    server = Server(model_dir, store, "--workers", "2", "--cors-origin", SHOP)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_workers(two_workers_server):
    """A server of two workers and a client connected to each, by worker pid."""
    server = two_workers_server
    clients: dict[str, httpx.Client] = {}
    try:
        # connections are spread over the workers by the kernel: open some until both answer
        for _ in range(64):
            client = httpx.Client(base_url=server.url, timeout=30)
            if clients.setdefault(worker_of(client), client) is not client:
                client.close()
            if len(clients) == 2:
                break
        assert len(clients) == 2, "both workers answer"
        yield clients
    finally:
        for client in clients.values():
            client.close()


def test_workers_see_each_others_writes(two_workers):
    one, other = two_workers.values()
    for i, (writer, reader) in enumerate([(one, other), (other, one)] * 5):
        assert writer.put(f"/v1/listings/w{i}", json=NEW_CAR, headers=AUTH).status_code == 201
        assert reader.get(f"/v1/listings/w{i}").status_code == 200, "write not visible"
        assert writer.delete(f"/v1/listings/w{i}", headers=AUTH).status_code == 200
        assert reader.get(f"/v1/listings/w{i}").status_code == 404, "delete not visible"
    generation = one.get("/v1/model").json()["generation"]
    assert one.post("/v1/admin/reload", json={}, headers=AUTH).status_code == 200
    deadline = time.monotonic() + 30  # the other worker reloads in the background
    while other.get("/v1/model").json()["generation"] == generation:
        assert time.monotonic() < deadline, "the other worker did not reload"
        time.sleep(0.2)


def preflight(client: httpx.Client, origin: str, method: str, path: str) -> httpx.Response:
    """A browser's preflight before a cross-origin request of ``method`` with the token."""
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    return client.options(path, headers=headers)


def test_every_worker_lets_the_origin_named_by_cors_origin_call_it(two_workers):
    for worker, client in two_workers.items():
        listing = client.get("/v1/random-listing").json()["listing_id"]
        # the methods of the path asked about, writes with the token included
        allowed = preflight(client, SHOP, "PUT", f"/v1/listings/{listing}")
        assert allowed.status_code == 200, (worker, allowed.text)
        assert allowed.headers["access-control-allow-origin"] == SHOP
        assert allowed.headers["access-control-allow-methods"] == "DELETE, GET, HEAD, PUT"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # no cookies
        similar = preflight(client, SHOP, "GET", f"/v1/listings/{listing}/similar")
        assert similar.headers["access-control-allow-methods"] == "GET, HEAD"
        read = client.get(f"/v1/listings/{listing}", headers={"Origin": SHOP})
        assert read.status_code == 200 and read.headers["access-control-allow-origin"] == SHOP
        assert "Origin" in read.headers["vary"]  # a cache keeps the answers apart
        # another origin: no header lets its page read an answer
        other = "https://elsewhere.example"
        refused = preflight(client, other, "GET", f"/v1/listings/{listing}/similar")
        assert refused.status_code == 400 and refused.json()["field"] == "Origin", worker
        read = client.get(f"/v1/listings/{listing}", headers={"Origin": other})
        for answer in (refused, read):
            assert not any(name.startswith("access-control-") for name in answer.headers)


def test_every_server_refuses_a_head_over_the_limit_and_names_no_software(server, two_workers):
    # serving/protocol.py on the command's uvicorn, one worker or several (the kernel hands
    # each connection to one of them)
    from embedrec.serving.protocol import MAX_HEAD_BYTES

    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 4 * MAX_HEAD_BYTES
    workers = next(iter(two_workers.values())).base_url
    for url in [httpx.URL(server.url)] * 2 + [workers] * 4:
        with socket.create_connection((url.host, url.port), timeout=30) as sock:
            sock.sendall(huge)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"\r\nserver:" not in answer.lower()  # no name of the server software
    assert server.get("/healthz").status_code == 200
    for client in (server.client, *two_workers.values()):
        assert "server" not in client.get("/healthz").headers


def test_without_cors_origins_no_cors_header_is_sent(server):
    # off by default: a preflight is an OPTIONS the path does not take, as before
    listing = some_ids(server, 1)[0]
    asked = preflight(server.client, SHOP, "GET", f"/v1/listings/{listing}/similar")
    assert asked.status_code == 405 and asked.headers["allow"] == "GET, HEAD"
    read = server.get(f"/v1/listings/{listing}", headers={"Origin": SHOP})
    for answer in (asked, read):
        assert not any(name.startswith("access-control-") for name in answer.headers)
        assert "vary" not in answer.headers


def test_sighup_is_ignored_and_sigterm_stops_one_worker_or_several_with_status_0(
    server, two_workers, two_workers_server
):
    # the last test of this module's servers: it stops them
    for running in (server, two_workers_server):
        running.process.send_signal(signal.SIGHUP)
    # before: SIGHUP ended one worker's server at once, and restarted every worker of two
    for running in (server, two_workers_server):
        assert running.get("/healthz").status_code == 200
    for worker, client in two_workers.items():
        assert worker_of(client) == worker  # the same processes
    for running in (server, two_workers_server):
        # a graceful stop that was asked for: 0 (before: one worker's ended by the signal)
        assert running.stop() == 0
        log = running.process.stderr.read().decode()
        assert log.count("SIGHUP ignored") == 1, log[-2000:]


def test_mf_model_refuses_new_listings(cars, tmp_path):
    model = tmp_path / "mf"
    Recommender(model="mf", epochs=1, progress=False).fit(
        cars / "interactions.parquet", cars / "listings.parquet"
    ).save(model)
    server = Server(model, tmp_path / "store.sqlite")
    try:
        answer = server.client.put("/v1/listings/new", json=NEW_CAR, headers=AUTH)
        assert answer.status_code == 422 and "cannot embed" in answer.json()["error"]
        assert server.get(f"/v1/listings/{some_ids(server, 1)[0]}/similar").status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_benchmark_smoke(cars, model_dir, tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "serving.md"
    script = root / "benchmarks" / "serving.py"
    command = [sys.executable, str(script), "--smoke", "--out", str(out), "--work", str(tmp_path)]
    command += ["--data", str(cars), "--model", str(model_dir)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "similar" in text and "p99" in text
    # the server's memory, measured from the running workers: a row with a positive PSS
    memory = text.split("| catalogue | workers | server PSS MB |")[1].split("\n")[2]
    assert int(memory.split("|")[3]) > 0
