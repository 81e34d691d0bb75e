"""The service against what a hostile or careless client tries, in process (FastAPI's
TestClient over the real app): bounded projection cache, store locations that are not
files, the health endpoints a load balancer probes; reloads confined to the model root, the
token checked before the body is parsed, ids the store cannot hold, the explorer page's
Content-Security-Policy, deleted listings, and the token kept out of workers' environment."""

from __future__ import annotations

import contextlib
import hashlib
import html.parser
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import block_data
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from embedrec import Recommender
from embedrec.bundle import MANIFEST
from embedrec.cli import main
from embedrec.data.errors import DataError
from embedrec.recommender import CONFIG_MAX_BYTES
from embedrec.serving.app import OUTSIDE_MODEL_ROOT, STATIC, create_app, read_token_file
from embedrec.serving.filter_params import QUERY_PARAMETERS
from embedrec.serving.protocol import BoundedHttpToolsProtocol
from embedrec.serving.state import PROJECTIONS_KEPT, ServingState, Settings, computed_fields
from embedrec.serving.store import ListingStore, open_store

# trains models: seconds each
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    events, listings, _, _ = block_data()
    path = tmp_path_factory.mktemp("hardening") / "model"
    Recommender(model="hybrid", epochs=1, batch_size=256, progress=False).fit(
        events, listings
    ).save(path)
    return path


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "store.sqlite"
    app = create_app(Settings(model_dir=str(model), store=str(store), token="t"))
    with TestClient(app) as test_client:
        yield test_client


def test_projections_kept_are_bounded_whatever_samples_a_client_asks_for(client):
    holder = client.app.state.holder
    for sample in range(3, 3 + 3 * PROJECTIONS_KEPT):
        answer = client.get("/v1/projection", params={"sample": sample})
        assert answer.status_code == 200 and len(answer.json()["points"]) == sample
    kept = holder.current._projections
    assert len(kept) == PROJECTIONS_KEPT
    # the most recently asked for are kept, and asking again answers from the cache
    newest = 3 + 3 * PROJECTIONS_KEPT - 1
    assert ("pca", newest) in kept
    first = kept[("pca", newest)]
    assert client.get("/v1/projection", params={"sample": newest}).json() == first


def test_health_probes(client):
    assert client.get("/healthz/live").json() == {"status": "alive"}
    for path in ("/healthz/live", "/healthz/ready", "/healthz"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    ready = client.get("/healthz/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["listings"] == 120 and body["reload_error"] is None
    car = {"make": "VW", "price": 9000, "lat": 50.0, "lon": 10.0}
    put = client.put("/v1/listings/neu", json=car, headers={"Authorization": "Bearer t"})
    assert put.status_code == 201
    after = client.get("/healthz/ready").json()
    assert after["seq"] == put.json()["seq"] and after["listings"] == 121


@pytest.mark.parametrize("location", ["mysql://user@127.0.0.1:3306/db", "s3://bucket/x"])
def test_a_store_url_is_refused_not_taken_for_a_file(model, tmp_path, monkeypatch, location):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["serve", str(model), "--store", location])
    assert result.exit_code == 2
    assert "stores are not supported; give the path of a SQLite file or a postgresql://" in (
        result.output
    )
    assert not any(tmp_path.iterdir())  # no folder named after the scheme
    with pytest.raises(ValueError, match="stores are not supported"):
        ListingStore(location)
    with pytest.raises(ValueError, match="stores are not supported"):
        open_store(location)


def test_a_store_under_a_file_is_named_in_one_line(model, tmp_path):
    (tmp_path / "notes").write_text("a file")
    store = tmp_path / "notes" / "store.sqlite"
    result = CliRunner().invoke(main, ["serve", str(model), "--store", str(store)])
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'notes'}: a file is where a folder is needed" in result.output


def test_a_postgresql_url_is_no_sqlite_file_and_an_unreachable_one_fails_clearly(
    model, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    location = f"postgresql://nobody:secret@127.0.0.1:{unused_port()}/db"
    with pytest.raises(ValueError, match="open_store opens postgresql:// stores"):
        ListingStore(location)
    result = CliRunner().invoke(main, ["serve", str(model), "--store", location])
    assert result.exit_code == 2
    assert "PostgreSQL store postgresql://nobody:***@127.0.0.1" in result.output
    assert "is unavailable" in result.output and "secret" not in result.output
    assert not any(tmp_path.iterdir())


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


def test_a_worker_falls_back_to_its_own_model_when_the_reloaded_one_is_gone(model, tmp_path):
    store_path = tmp_path / "store.sqlite"
    ListingStore(store_path).record_reload(str(tmp_path / "deleted-since"))
    settings = Settings(model_dir=str(model), store=str(store_path), follow_store=True, token="t")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/healthz/ready").json()
        assert ready["model_name"] == model.name and ready["model_dir"] is None  # no token
        # the directory by its name alone, the path on the server with the token only
        assert "(deleted-since): deleted-since" in ready["reload_error"]
        assert str(tmp_path) not in ready["reload_error"]
        full = client.get("/healthz/ready", headers=AUTH).json()["reload_error"]
        assert str(tmp_path / "deleted-since") in full
        assert client.get("/v1/listings/Wagen 0 ä/similar").status_code == 200


# ---------------------------------------------------------------------- issue: a hostile client
AUTH = {"Authorization": "Bearer t"}
WRITES = {("PUT", "/v1/listings/x"), ("DELETE", "/v1/listings/x"),
          ("POST", "/v1/admin/reload"), ("POST", "/v1/admin/rollback")}  # fmt: skip
CAR = {"make": "VW", "price": 9000, "lat": 50.0, "lon": 10.0}


@pytest.fixture
def fresh(model, tmp_path):
    """An app of its own (its own store) for a test that writes or reloads."""
    settings = Settings(model_dir=str(model), store=str(tmp_path / "store.sqlite"), token="t")
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


def test_reloads_outside_the_model_root_are_refused_alike_whether_or_not_the_path_exists(
    fresh, model, tmp_path
):
    outside = tmp_path / "elsewhere"
    shutil.copytree(model, outside)  # a valid model, but not under the model root
    (model.parent / "escape").symlink_to(outside)
    answers = [
        fresh.post("/v1/admin/reload", json={"model_dir": path}, headers=AUTH)
        for path in [
            str(outside),
            str(tmp_path / "no-such-directory"),
            "/etc",
            "/no/such/path",
            f"{model}/../../{tmp_path.name}/elsewhere",
            str(model.parent / "escape"),  # a link inside the root to a directory outside
            "relative/../../x",
            "nul\x00byte",
        ]
    ]
    for answer in answers:
        assert answer.status_code == 403
        assert answer.json() == {"error": OUTSIDE_MODEL_ROOT, "field": "model_dir"}
    assert fresh.get("/v1/model", headers=AUTH).json()["model_dir"] == str(model)
    (model.parent / "escape").unlink()


def test_a_model_directory_named_by_a_link_is_served_as_the_directory_it_points_to(model, tmp_path):
    # a deploy that repoints a link (current -> v2) and reloads it by name
    v2 = shutil.copytree(model, model.parent / "v2")
    current = model.parent / "current"
    current.symlink_to(model)
    settings = Settings(model_dir=str(current), store=str(tmp_path / "store.sqlite"), token="t")
    try:
        with TestClient(create_app(settings)) as app:
            # recorded and reported as its target: a worker replaced after the link moved
            # loads what the others serve, not the link's new target
            assert app.get("/v1/model", headers=AUTH).json()["model_dir"] == str(model)
            current.unlink()
            current.symlink_to(v2)
            answer = app.post("/v1/admin/reload", json={"model_dir": str(current)}, headers=AUTH)
            assert answer.status_code == 200 and answer.json()["model_dir"] == str(v2)
            # before, every reload was recorded as "current": nothing to roll back to (409)
            back = app.post("/v1/admin/rollback", headers=AUTH)
            assert back.status_code == 200 and back.json()["model_dir"] == str(model)
    finally:
        current.unlink()
        shutil.rmtree(v2)


def test_a_reload_of_a_model_whose_manifest_names_other_files_is_refused(fresh, model):
    # inside the model root: the manifest names a file outside the directory, with its checksum
    tampered = shutil.copytree(model, model.parent / "tampered")
    secret = model.parent / "secret.txt"
    secret.write_text("not a model file")
    manifest = json.loads((tampered / MANIFEST).read_text())
    manifest["files"]["../secret.txt"] = hashlib.sha256(secret.read_bytes()).hexdigest()
    (tampered / MANIFEST).write_text(json.dumps(manifest))
    answer = fresh.post("/v1/admin/reload", json={"model_dir": str(tampered)}, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["field"] == "model_dir"
    assert "not a file of the model" in answer.json()["error"]
    # a file of the model replaced by a link to a copy of itself elsewhere: not followed
    manifest["files"].pop("../secret.txt")
    (tampered / MANIFEST).write_text(json.dumps(manifest))
    (tampered / "users.parquet").rename(secret)
    (tampered / "users.parquet").symlink_to(secret)
    answer = fresh.post("/v1/admin/reload", json={"model_dir": str(tampered)}, headers=AUTH)
    assert answer.status_code == 422 and "users.parquet is not a regular file" in answer.text
    # a clean copy under the root is reloaded
    good = shutil.copytree(model, model.parent / "good")
    answer = fresh.post("/v1/admin/reload", json={"model_dir": str(good)}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["model_dir"] == str(good)
    for path in (tampered, good):
        shutil.rmtree(path)
    secret.unlink()


def with_file(model: Path, target: Path, name: str, write) -> Path:
    """A copy of ``model`` whose file ``name`` is written by ``write(path)``, the manifest's
    checksum rewritten to match: only reading the file can tell."""
    copy = shutil.copytree(model, target)
    write(copy / name)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256((copy / name).read_bytes()).hexdigest()
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def with_bad_weights(model: Path, target: Path) -> Path:
    """A copy of ``model`` whose weights are no safetensors file."""
    return with_file(
        model, target, "weights.safetensors", lambda p: p.write_bytes(os.urandom(5000))
    )


def test_weights_that_are_no_safetensors_file_are_refused_as_no_model(
    fresh, model, tmp_path, monkeypatch
):
    bad = with_bad_weights(model, model.parent / "bad-weights")
    try:
        answer = fresh.post("/v1/admin/reload", json={"model_dir": str(bad)}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "model_dir"
        assert "weights.safetensors is not a safetensors file" in answer.json()["error"]
        served = fresh.get("/v1/model", headers=AUTH).json()["model_dir"]
        assert served == str(model)  # still served
        # a worker started on a store that recorded it serves its command line's model
        store = tmp_path / "recorded.sqlite"
        ListingStore(store).record_reload(str(bad))
        settings = Settings(model_dir=str(model), store=str(store), follow_store=True)
        with TestClient(create_app(settings)) as client:
            ready = client.get("/healthz/ready").json()
            assert ready["model_name"] == model.name  # (read-only: no path)
            assert "weights.safetensors is not a safetensors file" in ready["reload_error"]
        # embedrec serve on it: one error line, no traceback
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("EMBEDREC_API_TOKEN", "t")  # no read-only warning before it
        store = str(tmp_path / "serve.sqlite")
        result = CliRunner().invoke(main, ["serve", str(bad), "--store", store])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {bad}: cannot load the model (")
        assert "weights.safetensors is not a safetensors file" in result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1
    finally:
        shutil.rmtree(bad)


def test_a_config_of_the_wrong_shape_is_refused_as_no_model_and_the_old_one_kept(fresh, model):
    # valid JSON with the checksum rewritten: the load reads it, and must name it, not 500
    for key, value in (("pipeline", [1]), ("report", [1]), ("feature_specs", [1])):

        def edit(path: Path, key=key, value=value) -> None:
            path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))

        bad = with_file(model, model.parent / "bad-config", "config.json", edit)
        try:
            answer = fresh.post("/v1/admin/reload", json={"model_dir": str(bad)}, headers=AUTH)
            assert answer.status_code == 422, (key, answer.text)
            assert answer.json()["field"] == "model_dir"
            assert answer.json()["error"].startswith(f"{bad}: cannot load the model (")
            assert fresh.get("/v1/model", headers=AUTH).json()["model_dir"] == str(model)
        finally:
            shutil.rmtree(bad)


def test_a_huge_config_is_refused_before_it_is_parsed(fresh, model):
    # parsed whole, a config.json of hundreds of megabytes grew the worker by gigabytes
    def pad(path: Path) -> None:
        path.write_text(path.read_text() + " " * CONFIG_MAX_BYTES)

    bad = with_file(model, model.parent / "huge-config", "config.json", pad)
    try:
        answer = fresh.post("/v1/admin/reload", json={"model_dir": str(bad)}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == (
            f"{bad}: cannot load the model (config.json is 64 MiB, more than a model's "
            "metadata takes: at most 64)"
        )
        assert fresh.get("/v1/model", headers=AUTH).json()["model_dir"] == str(model)
    finally:
        shutil.rmtree(bad)


@pytest.mark.parametrize("name", [*computed_fields(), *QUERY_PARAMETERS])
def test_a_catalogue_column_named_like_the_apis_own_names_is_refused(model, tmp_path, name):
    # a column "score" replaced every result's score, "x" the projection's coordinate, and
    # one named like a query parameter ("k", "near") could never be filtered
    _, listings, _, _ = block_data()
    today = tmp_path / "today.parquet"
    listings.assign(**{name: 4.5}).to_parquet(today)
    settings = Settings(str(model), listings=str(today), store=str(tmp_path / "s.sqlite"))
    with pytest.raises(DataError) as caught:
        create_app(settings)
    assert caught.value.file == str(today) and caught.value.column == name
    assert f"column '{name}': " in str(caught.value) and "; rename the column" in str(caught.value)


def test_a_reloaded_model_whose_listings_have_a_column_named_score_is_refused(
    fresh, model, tmp_path, monkeypatch
):
    def listings_with_score(path: Path) -> None:
        pd.read_parquet(path).assign(score=4.5).to_parquet(path)

    scored = with_file(model, model.parent / "scored", "listings.parquet", listings_with_score)
    try:
        answer = fresh.post("/v1/admin/reload", json={"model_dir": str(scored)}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json() == {
            "error": "model listings.parquet, column 'score': the API computes a 'score' "
            "for its answers, which this column would replace; rename the column (the API's "
            "own names: score, distance_km, x, y, k, near, within_km, exclude)",
            "field": "model_dir",
        }
        served = fresh.get("/v1/model", headers=AUTH).json()["model_dir"]
        assert served == str(model)  # still served
        # embedrec serve on it: the same, as one error line
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("EMBEDREC_API_TOKEN", "t")
        result = CliRunner().invoke(
            main, ["serve", str(scored), "--store", str(tmp_path / "serve.sqlite")]
        )
        assert result.exit_code == 2 and "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {answer.json()['error']}"]
    finally:
        shutil.rmtree(scored)


def write_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route that needs the token, path parameters filled in."""
    routes = []
    for route in app.routes:
        if isinstance(route, APIRoute) and any(
            d.call.__name__ == "writer" for d in route.dependant.dependencies
        ):
            path = route.path_format.format(**{p: "x" for p in route.param_convertors})
            routes += [(method, path) for method in sorted(route.methods)]
    return routes


def test_the_token_is_checked_before_the_body_is_parsed(client):
    routes = write_routes(client.app)
    assert set(routes) >= WRITES
    broken = {"content": b'{"make": ', "headers": {"Content-Type": "application/json"}}
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic t"}):
            answer = client.request(
                method, path, content=broken["content"], headers={**broken["headers"], **headers}
            )
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.json() == {"error": "missing or wrong bearer token",
                                     "field": "Authorization"}  # fmt: skip
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    # with the token the body is parsed as before
    answer = client.put("/v1/listings/x", content=broken["content"],
                        headers={**broken["headers"], **AUTH})  # fmt: skip
    assert answer.status_code == 422


def test_a_read_only_server_refuses_a_broken_write_as_read_only(model, tmp_path):
    app = create_app(Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite")))
    with TestClient(app) as client:
        for method, path in write_routes(app):
            answer = client.request(method, path, content=b"[", headers=AUTH)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["field"] == "Authorization"
            assert "writes are disabled" in answer.json()["error"]


@pytest.mark.parametrize("bad", ["a%00b", "line%0Abreak", "del%7F", "c1%C2%85"])
def test_a_listing_id_with_a_control_character_cannot_be_written(client, bad):
    answer = client.put(f"/v1/listings/{bad}", json=CAR, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "listing_id"
    assert "contains the control character" in answer.json()["error"]
    assert client.get(f"/v1/listings/{bad}").status_code == 404
    assert client.delete(f"/v1/listings/{bad}", headers=AUTH).status_code == 404


@pytest.mark.parametrize("dots", [".", ".."])
def test_a_listing_id_that_is_a_dot_segment_cannot_be_written(client, dots):
    # a client drops "." and ".." from a path, so no one could read such a listing back
    escaped = dots.replace(".", "%2E")
    answer = client.put(f"/v1/listings/{escaped}", json=CAR, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "listing_id"
    assert "is a dot segment" in answer.json()["error"]
    batch = {"listings": [{"listing_id": dots, **CAR}]}
    answer = client.post("/v1/listings:batch", json=batch, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert "is a dot segment" in answer.text and "listing_id" in answer.text


def test_a_listing_id_over_256_characters_is_refused(client):
    answer = client.put(f"/v1/listings/{'x' * 257}", json=CAR, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["field"] == "listing_id"
    assert client.put(f"/v1/listings/{'x' * 256}", json=CAR, headers=AUTH).status_code == 201
    assert client.delete(f"/v1/listings/{'x' * 256}", headers=AUTH).status_code == 200


def test_a_deleted_listing_leaves_the_projection_and_has_no_similar_listings(fresh):
    victim = "Wagen 5 ä"
    before = fresh.get("/v1/projection").json()["points"]
    assert victim in {p["listing_id"] for p in before} and len(before) == 120
    assert fresh.get(f"/v1/listings/{victim}/similar").status_code == 200
    assert fresh.delete(f"/v1/listings/{victim}", headers=AUTH).status_code == 200
    after = fresh.get("/v1/projection").json()["points"]
    assert victim not in {p["listing_id"] for p in after} and len(after) == 119
    similar = fresh.get(f"/v1/listings/{victim}/similar")
    assert similar.status_code == 404
    assert similar.json() == {"error": f"unknown listing_id {victim!r}", "field": "listing_id"}
    # put back, it is shown and answered again
    assert fresh.put(f"/v1/listings/{victim}", json=CAR, headers=AUTH).status_code == 201
    assert victim in {p["listing_id"] for p in fresh.get("/v1/projection").json()["points"]}
    assert fresh.get(f"/v1/listings/{victim}/similar").status_code == 200


class _Page(html.parser.HTMLParser):
    """What a Content-Security-Policy without 'unsafe-inline' would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style" or (tag == "script" and "src" not in names):
            self.inline.append(tag)
        self.inline += [name for name in names if name == "style" or name.startswith("on")]


def test_the_explorer_page_is_served_with_a_strict_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "embedrec explorer" in page.text
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"
    # the page works under it: no inline script, style or event handler
    parser = _Page()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.inline == []


def test_a_world_readable_token_file_is_warned_about(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    for mode, warned in ((0o644, True), (0o640, True), (0o600, False)):
        token_file.chmod(mode)
        # no model there: the command stops after reading the token
        result = CliRunner().invoke(
            main, ["serve", str(tmp_path / "absent"), "--token-file", str(token_file)]
        )
        assert result.exit_code == 2
        warning = f"warning: token file {token_file} is accessible to group or others"
        assert (warning in result.output) is warned, result.output
        assert (f"chmod 600 {token_file}" in result.output) is warned
        assert "s3cret" not in result.output


@pytest.mark.parametrize("token", ["pässwört-123", "two words", "tab\there", "\u20ac"])
def test_a_token_no_client_can_send_is_refused_at_start(model, tmp_path, monkeypatch, token):
    # headers arrive decoded as Latin-1: a non-ASCII token never matched, every write was 401
    monkeypatch.chdir(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n", encoding="utf-8")
    token_file.chmod(0o600)
    absent = str(tmp_path / "absent")  # no model there: without the check, no server starts
    from_file = ["serve", absent, "--token-file", str(token_file)]
    for args, env, source in (
        (["serve", absent], token, "EMBEDREC_API_TOKEN"),
        (from_file, None, f"token file {token_file}"),
    ):
        monkeypatch.delenv("EMBEDREC_API_TOKEN", raising=False)
        if env is not None:
            monkeypatch.setenv("EMBEDREC_API_TOKEN", env)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2
        assert result.output == (
            f"error: the API token in {source} holds a character other than printable ASCII "
            "(letters, digits and punctuation, no spaces), which no Authorization header can "
            "carry; make a new one, e.g. openssl rand -hex 24\n"
        )
    with pytest.raises(ValueError, match="printable ASCII"):
        create_app(Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite"), token=token))
    # a printable ASCII token with punctuation is one
    token_file.write_text("Ab-9._~+/=!\n")
    assert read_token_file(str(token_file)) == "Ab-9._~+/=!"


@pytest.mark.parametrize("text", ["", "\n", "  \n", "\ns3cret\n"])
def test_a_token_file_without_a_token_stops_the_server(tmp_path, monkeypatch, text):
    # it served read-only, warning that no token was given: every write answered 403
    monkeypatch.delenv("EMBEDREC_API_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(text)
    token_file.chmod(0o600)
    result = CliRunner().invoke(
        main, ["serve", str(tmp_path / "absent"), "--token-file", str(token_file)]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"error: token file {token_file} holds no API token on its first line; write one into "
        "it (e.g. openssl rand -hex 24), or leave --token-file out to serve read-only\n"
    )


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, and theirs (Linux: from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@pytest.mark.server
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_workers_check_the_token_read_at_start_and_never_hold_it_in_their_environment(
    model, tmp_path
):
    import test_serving as serving

    token = "token-from-a-file-" + os.urandom(8).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = serving.Server(
        model, tmp_path / "store.sqlite", "--workers", "2", "--token-file", str(token_file),
        token=None,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(workers := descendants(server.process.pid)) < 2:
            assert time.monotonic() < deadline, "two workers"
            time.sleep(0.2)
        for pid in [server.process.pid, *workers]:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert token.encode() not in environ, f"the token is in the environment of {pid}"
        # every worker has the token: each connection (a worker of its own, or not) writes
        for i in range(8):
            with serving.httpx.Client(base_url=server.url, timeout=30) as one:
                auth = {"Authorization": f"Bearer {token}"}
                assert one.put(f"/v1/listings/w{i}", json=CAR, headers=auth).status_code == 201
                assert one.delete(f"/v1/listings/w{i}").status_code == 401
    finally:
        server.stop()


HUGE = "9" * 400  # a JSON integer: valid JSON, and beyond any float


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/v1/listings/big", f'{{"make": "VW", "price": {HUGE}}}', "price"),
        ("PUT", "/v1/listings/big", f'{{"lat": {HUGE}, "lon": 10}}', "lat"),
        ("POST", "/v1/listings:batch", f'{{"listings": [{{"listing_id": "b", "price": {HUGE}}}]}}',
         "listings.0.price"),
        ("POST", "/v1/recommendations",
         f'{{"session": ["Wagen 1 ä"], "filters": {{"price_max": {HUGE}}}}}', "filters.price_max"),
        ("POST", "/v1/recommendations",
         f'{{"session": ["Wagen 1 ä"], "filters": {{"near": [{HUGE}, 10], "within_km": 5}}}}',
         "filters.near"),
        ("POST", "/v1/recommendations",
         f'{{"session": ["Wagen 1 ä"], "filters": {{"near": [50, 10], "within_km": {HUGE}}}}}',
         "filters.within_km"),
    ],
)  # fmt: skip
def test_an_integer_beyond_any_float_is_refused_naming_its_field(client, method, path, body, field):
    headers = {**AUTH, "Content-Type": "application/json"}
    answer = client.request(method, path, content=body.encode(), headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    # the message quotes the number's start and length, not its 400 digits
    assert "999999999999... (400 digits)" in answer.text and HUGE not in answer.text


def test_a_body_that_is_not_json_is_refused_saying_why_not_where_a_field_goes(client):
    broken = client.put("/v1/listings/x", content=b'{"make": "VW",}',
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert broken.status_code == 422
    assert broken.json() == {
        "error": "body: invalid JSON at character 14: Expecting property name enclosed in "
        "double quotes",
        "field": "body",
    }
    # curl -d without -H sends a form: its JSON text is left unparsed, so say what to send
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        for method, path, body in [
            ("PUT", "/v1/listings/x", b'{"make": "VW"}'),
            ("POST", "/v1/recommendations", b'{"session": ["Wagen 1 \xc3\xa4"]}'),
        ]:
            answer = client.request(
                method, path, content=body, headers={**AUTH, "Content-Type": content_type}
            )
            assert answer.status_code == 422, answer.text
            assert answer.json() == {
                "error": "body: expected JSON (Content-Type: application/json), got "
                f"{content_type!r}",
                "field": "body",
            }
    # or with no Content-Type at all (requests.post(url, data=text))
    answer = client.post("/v1/recommendations", content=b'{"session": ["Wagen 1 \xc3\xa4"]}')
    assert answer.status_code == 422 and answer.json() == {
        "error": "body: expected JSON (Content-Type: application/json), got none",
        "field": "body",
    }
    assert client.post("/v1/recommendations").json() == {
        "error": "body: Field required",
        "field": "body",
    }
    # a JSON type with parameters or a +json suffix is parsed as before
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        answer = client.put("/v1/listings/y", content=b'{"make": "VW"}',
                            headers={**AUTH, "Content-Type": content_type})  # fmt: skip
        assert answer.status_code in (200, 201), answer.text


@pytest.mark.parametrize(
    ("method", "path", "body", "lone"),
    [
        ("POST", "/v1/recommendations", rb'{"session": ["Wagen 1 \u00e4", "\ud800"]}', rb"\ud800"),
        ("POST", "/v1/recommendations",
         rb'{"session": ["Wagen 1 \u00e4"], "filters": {"\udc00": 1}}', rb"\udc00"),
        ("PUT", "/v1/listings/x", rb'{"make": "\ud83d"}', rb"\ud83d"),
        ("PUT", "/v1/listings/x", rb'{"make": "\ud83d\ud83d\ude97"}', rb"\ud83d"),
        ("POST", "/v1/listings:batch", rb'{"listings": [{"listing_id": "a\udfff"}]}', rb"\udfff"),
    ],
)  # fmt: skip
def test_half_a_surrogate_pair_in_a_json_string_is_invalid_json_not_a_500(
    client, method, path, body, lone
):
    headers = {**AUTH, "Content-Type": "application/json"}
    where = body.index(lone)
    answer = client.request(method, path, content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "body"
    escape = lone.decode()
    assert answer.json()["error"] == (
        f"body: invalid JSON at character {where}: {escape} is half of a UTF-16 surrogate "
        "pair, no character"
    )
    # the same bytes written as UTF-8, not as an escape, are no UTF-8 text
    raw = body[:where] + escape.encode().decode("unicode_escape").encode("utf-8", "surrogatepass")
    answer = client.request(method, path, content=raw + body[where + 6 :], headers=headers)
    assert answer.status_code == 422 and answer.json() == {
        "error": f"body: invalid JSON at character {where}: not UTF-8 text",
        "field": "body",
    }


def test_a_whole_surrogate_pair_is_a_character(client):
    car = rb'{"make": "\ud83d\ude97 \\ud800", "price": 9000}'  # a car, and the text \ud800
    answer = client.put("/v1/listings/pair", content=car,
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert client.get("/v1/listings/pair").json()["make"] == "\U0001f697 \\ud800"


def test_a_number_of_more_digits_than_python_reads_is_invalid_json_naming_where(client):
    body = b'{"make": "VW", "price": ' + b"9" * 5000 + b"}"
    answer = client.put("/v1/listings/x", content=body,
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "body: invalid JSON at character 24: a number of too many digits",
        "field": "body",
    }


def test_a_catalogue_without_coordinates_answers_similar_listings(tmp_path):
    events, listings, _, _ = block_data()
    model = tmp_path / "model"
    Recommender(model="hybrid", epochs=1, batch_size=256, progress=False).fit(
        events, listings.drop(columns=["lat", "lon"])
    ).save(model)
    app = create_app(Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite")))
    with TestClient(app) as client:
        answer = client.get("/v1/listings/Wagen 1 ä/similar", params={"k": 3})
        assert answer.status_code == 200, answer.text
        assert [hit["distance_km"] for hit in answer.json()["results"]] == [None] * 3


def test_listings_an_mf_model_cannot_serve_are_counted_naming_where_they_are(tmp_path, caplog):
    events, listings, _, _ = block_data()
    model = tmp_path / "mf"
    unseen = pd.DataFrame({"listing_id": ["new 1", "new 2"], "make": "VW", "price": 1,
                           "lat": 50.0, "lon": 10.0})  # fmt: skip
    Recommender(model="mf", epochs=1, progress=False).fit(
        events, pd.concat([listings, unseen])
    ).save(model)
    with caplog.at_level("WARNING", logger="embedrec"):
        create_app(Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite")))
    assert (
        f"2 listings of the model's listings table ({model}/listings.parquet) cannot be embedded "
        "by model 'mf' and are not served (e.g. 'new 1')"
    ) in caplog.text


@pytest.mark.parametrize(
    ("filters", "field", "value"),
    [
        ({"make": [None]}, "make", "None"),
        ({"make": ["VW", True]}, "make", "True"),
        ({"exclude": ["Wagen 2 ä", {"id": 1}]}, "exclude", "{'id': 1}"),
        ({"make": [["VW"]]}, "make", "['VW']"),
    ],
)
def test_a_filter_list_of_what_is_no_value_is_refused_naming_the_filter(
    client, filters, field, value
):
    body = {"session": ["Wagen 1 ä"], "filters": filters}
    answer = client.post("/v1/recommendations", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "error": f"filter {field!r}: expected strings or numbers in the list, got {value}",
        "field": f"filters.{field}",
    }
    # numbers are values: a year, an integer id
    body = {"session": ["Wagen 1 ä"], "filters": {"price": [9000, 9000.0, "9000"]}}
    assert client.post("/v1/recommendations", json=body).status_code == 200


def test_a_bad_catalogue_to_serve_is_named_with_its_row_and_line(model, tmp_path):
    events, listings, _, _ = block_data()
    bad = tmp_path / "today.csv"
    listings.head(3).assign(price=["9000", "cheap", "7000"]).to_csv(bad, index=False)
    # the catalogue the workers share (the cache) is embedded as the one a lone server loads
    for cache_dir in (None, str(tmp_path / "cache")):
        settings = Settings(model_dir=str(model), listings=str(bad), cache_dir=cache_dir,
                            store=str(tmp_path / "s.sqlite"))  # fmt: skip
        with pytest.raises(DataError) as caught:
            create_app(settings)
        assert str(caught.value) == f"{bad}, row 2 (line 3), column 'price': not a number: 'cheap'"


def test_the_explorer_page_under_static_has_the_page_headers_too(client):
    for path in ("/static/index.html", "/static/explorer.js"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("escapes", ["%FF", "%FE", "%ED%A0%80", "a%C3"])
def test_a_path_whose_escapes_are_no_utf8_names_no_listing(fresh, escapes):
    # the server would decode them to U+FFFD, one id for many paths
    for method, path in (
        ("PUT", f"/v1/listings/{escapes}"),
        ("GET", f"/v1/listings/{escapes}"),
        ("GET", f"/v1/listings/{escapes}/similar"),
        ("GET", f"/v1/users/{escapes}/recommendations"),
    ):
        answer = fresh.request(method, path, json=CAR, headers=AUTH)
        assert answer.status_code == 422, (method, path, answer.text)
        assert answer.json() == {
            "error": "path: its percent-escapes are no UTF-8 text",
            "field": "path",
        }
    assert fresh.get("/healthz/ready").json()["listings"] == 120
    assert fresh.put("/v1/listings/%C3%A4", json=CAR, headers=AUTH).status_code == 201


def test_a_session_of_what_is_no_listing_id_is_refused_naming_its_place(fresh):
    assert fresh.put("/v1/listings/1", json=CAR, headers=AUTH).status_code == 201
    for bad in (True, False, None, 1.5, [1], {"id": 1}):
        answer = fresh.post("/v1/recommendations", json={"session": ["1", bad]})
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["field"] == "session.1"
        assert "a listing id is a string or an integer" in answer.json()["error"]
    answer = fresh.post("/v1/recommendations", json={"session": [1], "k": 3})
    assert answer.status_code == 200 and answer.json()["query"] == ["1"]


def test_json_nested_past_the_recursion_limit_is_invalid_json(fresh):
    deep = '{"session": ["1"], "filters": {"make": ' + "[" * 5000 + "]" * 5000 + "}}"
    answer = fresh.post(
        "/v1/recommendations", content=deep, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "body"
    assert "nested too deeply" in answer.json()["error"]


def test_integer_columns_stay_integers_after_writes_without_them_compaction_and_restart(
    model, tmp_path
):
    def integral(client: TestClient, listing_id: str) -> bool:
        return type(client.get(f"/v1/listings/{listing_id}").json()["price"]) is int

    settings = Settings(model_dir=str(model), store=str(tmp_path / "store.sqlite"), token="t")
    with TestClient(create_app(settings)) as client:
        # the batch leaves price out: pandas makes such a column float64
        batch = [{"listing_id": f"ohne {i}", "make": "VW"} for i in range(3)]
        batch.append({"listing_id": "mit", "make": "VW", "price": 12_000.0})  # a whole float
        answer = client.post("/v1/listings:batch", json={"listings": batch}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert integral(client, "Wagen 0 ä") and integral(client, "mit")
        assert client.get("/v1/listings/mit").json()["price"] == 12_000
        assert client.get("/v1/listings/ohne 0").json()["price"] is None
        client.app.state.holder.current._compact()  # one table again: price is float64 there
        assert integral(client, "Wagen 0 ä") and integral(client, "mit")
        similar = client.get("/v1/listings/mit/similar", params={"k": 50}).json()["results"]
        assert all(type(r["price"]) is int or r["price"] is None for r in similar)
    with TestClient(create_app(settings)) as client:  # the store's writes replayed
        assert integral(client, "Wagen 0 ä") and integral(client, "mit")
        assert client.get("/v1/listings/ohne 1").json()["price"] is None


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("price", 12_000.5, "expected an integer"),
        ("price", 1e300, "expected an integer"),
        ("price", "12000", "expected a number"),
    ],
)
def test_a_value_an_integer_column_cannot_hold_is_refused(fresh, field, value, why):
    answer = fresh.put("/v1/listings/neu", json={**CAR, field: value}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and why in answer.json()["error"]


def test_a_batch_names_every_listing_with_a_bad_coordinate(fresh):
    batch = [
        {"listing_id": "g1", "lat": 95.0, "lon": 10.0},
        {"listing_id": "ok", "lat": 50.0, "lon": 10.0},
        {"listing_id": "g2", "lat": 96.0, "lon": 10.0},
    ]
    answer = fresh.post("/v1/listings:batch", json={"listings": batch}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [e["index"] for e in errors] == [0, 2]
    assert all(e["field"] == "lat" for e in errors)


def test_a_batch_names_every_bad_listing_whatever_is_wrong_with_each(fresh):
    batch = [
        {"listing_id": None, **CAR},
        {"listing_id": " ", **CAR},
        {"listing_id": "ok", **CAR},
        {"listing_id": "a/b", **CAR},
        {"listing_id": "cheap", **CAR, "price": "cheap"},
        {"listing_id": "ok", **CAR},
    ]
    answer = fresh.post("/v1/listings:batch", json={"listings": batch}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [
        (0, "listing_id"), (1, "listing_id"), (3, "listing_id"), (4, "price"), (5, "listing_id")
    ]  # fmt: skip
    assert errors[1]["error"].startswith("listing_id ' ' is empty; ids have 1 to 256")
    assert "contains '/'" in errors[2]["error"]
    assert errors[4]["error"] == "listing_id 'ok' is also item 2"
    assert "such rows" not in answer.text  # a file's words, not a request's
    answer = fresh.put("/v1/listings/%20", json=CAR, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["field"] == "listing_id"
    assert answer.json()["error"].startswith("listing_id ' ' is empty")


def test_an_unknown_filter_is_named_with_the_filters_the_api_takes(client):
    # the library's message offered "within (radius)", the CLI's filter, which the API refuses
    listing = client.get("/v1/random-listing").json()["listing_id"]
    filters = "make, price_min, price_max, lat_min, lat_max, lon_min, lon_max, near, within_km"
    for key in ("within", "colour_min", "Make"):
        answer = client.get(f"/v1/listings/{listing}/similar", params={key: "1"})
        assert answer.status_code == 422, answer.text
        assert answer.json() == {
            "error": f"unknown filter {key!r}; the filters are: {filters}, exclude",
            "field": key,
        }
        body = {"session": [listing], "filters": {key: "1"}}
        answer = client.post("/v1/recommendations", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == f"filters.{key}"  # its path in the body


def test_the_openapi_document_lists_what_a_put_answers(client):
    put = client.get("/openapi.json").json()["paths"]["/v1/listings/{listing_id}"]["put"]
    assert {"200", "201", "401", "422"} <= set(put["responses"])


def test_the_openapi_document_lists_only_errors_an_operation_can_answer(client):
    # reads are open: a client generated from the schema expected 401 and 403 from them
    paths = client.get("/openapi.json").json()["paths"]
    for path, operation in (
        ("/v1/listings/{listing_id}/similar", "get"),
        ("/v1/users/{user_id}/recommendations", "get"),
        ("/v1/listings/{listing_id}", "get"),
        ("/v1/projection", "get"),
    ):
        assert set(paths[path][operation]["responses"]) == {"200", "404", "422"}, path
    assert set(paths["/v1/recommendations"]["post"]["responses"]) == {"200", "404", "413", "422"}
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [client.get("/metrics").headers["content-type"]]


def test_every_error_names_its_field_as_the_client_sends_it(client):
    # FastAPI's validation errors named body fields "body.session" beside our own "session"
    listing = client.get("/v1/random-listing").json()["listing_id"]
    auth = {"Authorization": "Bearer t"}
    similar, batch = f"/v1/listings/{listing}/similar", "/v1/listings:batch"
    bad_item = {"listings": [{"listing_id": "n", "price": "x"}]}
    cases = [
        ("post", "/v1/recommendations", {"json": {"session": []}}, "session"),
        ("post", "/v1/recommendations", {"json": {"session": [listing], "k": 0}}, "k"),
        ("post", "/v1/recommendations", {"json": {"session": [listing], "kk": 3}}, "kk"),
        ("post", "/v1/recommendations", {"json": [listing]}, "body"),  # no object at all
        ("post", batch, {"json": {"listings": [1]}, "headers": auth}, "listings.0"),
        ("post", batch, {"json": bad_item, "headers": auth}, "listings.0.price"),
        ("post", "/v1/admin/reload", {"json": {"model_dir": 3}, "headers": auth}, "model_dir"),
        ("put", f"/v1/listings/{'x' * 300}", {"json": {}, "headers": auth}, "listing_id"),
        ("get", similar, {"params": {"k": "ten"}}, "k"),
        # a range by the parameter given, not by its column (price= is a filter too)
        ("get", similar, {"params": {"price_min": 9, "price_max": 1}}, "price_min"),
        ("get", similar, {"params": {"make_max": 3}}, "make_max"),
    ]
    # the session's filters by their path in the body, as the query's by their name
    for filters, field in [
        ({"colour": "red"}, "colour"),
        ({"price_max": "cheap"}, "price_max"),
        ({"make_min": 3}, "make_min"),
        ({"within_km": 5}, "near"),  # the half of the pair missing
    ]:
        body = {"session": [listing], "filters": filters}
        cases.append(("post", "/v1/recommendations", {"json": body}, f"filters.{field}"))
    for method, path, request, field in cases:
        answer = getattr(client, method)(path, **request)
        assert answer.status_code == 422, (path, request, answer.text)
        assert answer.json()["field"] == field, (path, request, answer.text)
        assert not answer.json()["error"].startswith("body."), answer.text


ADMIN = "https://admin.example"
SHOP = "https://Bücher.example"  # named as a person writes it; browsers send its punycode


@pytest.fixture(scope="module")
def cors_client(model, tmp_path_factory):
    """The service letting pages of any origin read and those of ADMIN write too."""
    store = tmp_path_factory.mktemp("cors") / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t",
                        cors_origins=("*", ADMIN, SHOP))  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_an_origin_with_non_ascii_letters_matches_its_punycode(cors_client):
    one = "/v1/listings/x"
    answer = cors_preflight(cors_client, "https://xn--bcher-kva.example", "PUT", one)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == "https://xn--bcher-kva.example"
    assert "PUT" in answer.headers["access-control-allow-methods"]


def cors_preflight(client, origin: str, method: str, path: str, headers: str = ""):
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=asked)


def test_any_origin_may_read_and_only_the_origins_named_may_write(cors_client, client):
    anyone, listing = "https://anywhere.example", "Wagen 0 ä"
    similar, one = f"/v1/listings/{listing}/similar", f"/v1/listings/{listing}"
    # '*': the reads of each path, the anonymous session's POST among them, never reflected
    for method, path, methods in (
        ("GET", similar, "GET, HEAD"),
        ("HEAD", one, "GET, HEAD"),  # PUT and DELETE need the token
        ("POST", "/v1/recommendations", "POST"),
    ):
        answer = cors_preflight(cors_client, anyone, method, path, "content-type")
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-allow-methods"] == methods, path
    for method, path, headers, field in (
        ("PUT", one, "content-type", "Access-Control-Request-Method"),
        ("POST", "/v1/listings:batch", "", "Access-Control-Request-Method"),
        ("GET", similar, "authorization", "Access-Control-Request-Headers"),  # the token
    ):
        answer = cors_preflight(cors_client, anyone, method, path, headers)
        assert answer.status_code == 400 and answer.json()["field"] == field, answer.text
        assert "--cors-origin" in answer.json()["error"]
    # an origin named: every method of the path, with the token
    answer = cors_preflight(cors_client, ADMIN, "DELETE", one, "Authorization")
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ADMIN
    assert answer.headers["access-control-allow-methods"] == "DELETE, GET, HEAD, PUT"
    assert "access-control-allow-credentials" not in answer.headers
    assert cors_preflight(cors_client, ADMIN, "PUT", similar).status_code == 400
    # answers carry the header, HEAD's (the GET's headers) and the limits' 413 too
    for origin, allowed in ((anyone, "*"), (ADMIN, ADMIN)):
        read = cors_client.get(one, headers={"Origin": origin})
        head = cors_client.head(one, headers={"Origin": origin})
        big = cors_client.put(one, content=b"x" * 70_000,
                              headers={"Origin": origin, "Authorization": "Bearer t"})  # fmt: skip
        assert (read.status_code, head.status_code, big.status_code) == (200, 200, 413)
        for answer in (read, head, big):
            assert answer.headers["access-control-allow-origin"] == allowed
            assert answer.headers["vary"] == "Origin"
        assert head.headers["content-length"] == read.headers["content-length"]
    # an OPTIONS that is no preflight answers 405 as without CORS
    answer = cors_client.options(one, headers={"Origin": ADMIN})
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET, HEAD, PUT"
    # preflights are counted under their route; the schema is the one without CORS
    metrics = cors_client.get("/metrics").text
    assert 'endpoint="/v1/listings/{listing_id}",method="OPTIONS",status="200"' in metrics
    assert cors_client.get("/openapi.json").json() == client.get("/openapi.json").json()


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("https://shop.example/", "without a path or a trailing slash"),
        ("shop.example", "scheme://host[:port]"),
        ("null", "sandboxed pages"),
        ("https://shop.example:443", "name https://shop.example"),
        ("https://bücher.example:443", "name https://xn--bcher-kva.example"),
        ("https://a..ü", "no domain name"),
    ],
)
def test_an_origin_no_browser_sends_is_refused_at_start(model, tmp_path, origin, why):
    # it would never match an Origin header: the page would fail with no word why
    result = CliRunner().invoke(main, ["serve", str(model), "--cors-origin", origin])
    assert result.exit_code == 2 and why in result.output, result.output
    with pytest.raises(ValueError, match=re.escape(why)):
        settings = Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite"),
                            cors_origins=(origin,))  # fmt: skip
        create_app(settings)


def test_a_radius_of_the_near_form_is_named_by_its_parameter(client):
    answer = client.get(
        "/v1/listings/Wagen 0 ä/similar", params={"near": "51,13", "within_km": "-5"}
    )
    assert answer.status_code == 422 and answer.json()["field"] == "within_km"


def test_a_store_removed_under_the_server_turns_writes_away_and_reads_go_on(model, tmp_path):
    store = tmp_path / "state" / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t")
    with TestClient(create_app(settings)) as client:
        assert client.put("/v1/listings/neu", json=CAR, headers=AUTH).status_code == 201
        shutil.rmtree(store.parent)
        answer = client.put("/v1/listings/neu2", json=CAR, headers=AUTH)
        assert answer.status_code == 503 and "was removed or replaced" in answer.text
        assert answer.headers["Retry-After"]
        assert client.get("/v1/listings/neu").status_code == 200  # from memory
        ready = client.get("/healthz/ready").json()
        assert "was removed or replaced" in ready["store_error"]
        # the file by its name alone, the path on the server with the token only
        assert "store.sqlite" in ready["store_error"] and str(tmp_path) not in ready["store_error"]
        full = client.get("/healthz/ready", headers=AUTH).json()["store_error"]
        assert str(store) in full and "was removed or replaced" in full
        assert metric(client, "embedrec_store_error") == 1
        assert metric(client, "embedrec_store_write_failures_total", reason="removed") == 1


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one series of /metrics (this process's worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    raise AssertionError(f"no series {name} {labels} in /metrics")


def test_a_write_the_sqlite_store_cannot_take_is_logged_and_in_readiness_and_metrics(
    model, tmp_path, caplog
):
    import sqlite3

    store = tmp_path / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t")
    with TestClient(create_app(settings)) as client:
        assert client.put("/v1/listings/neu", json=CAR, headers=AUTH).status_code == 201
        assert metric(client, "embedrec_store_error") == 0
        assert metric(client, "embedrec_store_write_failures_total", reason="locked") == 0
        opened = client.app.state.holder.store
        writer = opened._db  # the store's own connection, as opened
        opened.busy_timeout_s = 0.05  # (30 s as the server opens it)

        def refused(listing: str, body: dict, why: str) -> None:
            caplog.clear()
            answer = client.put(f"/v1/listings/{listing}", json=body, headers=AUTH)
            assert answer.status_code == 503 and why in answer.json()["error"], answer.text
            assert answer.headers["Retry-After"]
            lines = [r for r in caplog.records if "refused" in r.getMessage()]
            assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback
            assert str(store) in lines[0].getMessage() and why in lines[0].getMessage()
            ready = client.get("/healthz/ready")
            assert ready.status_code == 200 and why in ready.json()["store_error"]
            assert metric(client, "embedrec_store_error") == 1
            assert client.get("/v1/listings/neu").status_code == 200  # reads go on

        # another process holds the write lock past the busy timeout (was a 500, a traceback)
        other = sqlite3.connect(store, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        refused("locked", CAR, "database is locked")
        # a deadline shorter than the busy timeout stops the wait as PostgreSQL's does: 503,
        # the same body, counted as a timeout (before, it waited for the busy timeout alone)
        opened.busy_timeout_s, opened.deadline_s = 30.0, 0.3
        refused("timeout", CAR, "did not answer within 0.3 s")
        assert metric(client, "embedrec_store_write_failures_total", reason="timeout") == 1
        opened.busy_timeout_s = 0.05
        other.execute("ROLLBACK")
        other.close()
        assert metric(client, "embedrec_store_write_failures_total", reason="locked") == 1
        # a full disk, as SQLite reports it: the file may not grow any more
        (pages,) = writer.execute("PRAGMA page_count").fetchone()
        writer.execute(f"PRAGMA max_page_count={pages}")
        refused("full", {**CAR, "make": "x" * 20_000}, "database or disk is full")
        assert metric(client, "embedrec_store_write_failures_total", reason="disk_full") == 1
        writer.execute("PRAGMA max_page_count=1073741823")
        # the next write that is stored clears it
        assert client.put("/v1/listings/neu2", json=CAR, headers=AUTH).status_code == 201
        assert client.get("/healthz/ready").json()["store_error"] is None
        assert metric(client, "embedrec_store_error") == 0


def test_a_store_that_takes_writes_again_is_reported_healthy_without_a_write(
    model, tmp_path, monkeypatch
):
    import sqlite3

    from embedrec.serving import state

    monkeypatch.setattr(state, "STORE_RECHECK_S", 0.05)
    store = tmp_path / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t")
    with TestClient(create_app(settings)) as client:
        client.app.state.holder.store.busy_timeout_s = 0.05  # (30 s)
        other = sqlite3.connect(store, isolation_level=None)  # holds the write lock
        other.execute("BEGIN IMMEDIATE")
        answer = client.put("/v1/listings/neu", json=CAR, headers=AUTH)
        assert answer.status_code == 503 and "database is locked" in answer.text
        time.sleep(0.5)  # checked several times meanwhile: still refused, still said
        assert "database is locked" in client.get("/healthz/ready").json()["store_error"]
        assert metric(client, "embedrec_store_error") == 1
        seq = client.get("/healthz/ready").json()["seq"]
        other.execute("ROLLBACK")
        other.close()
        deadline = time.monotonic() + 30  # fails the test instead of hanging it
        while client.get("/healthz/ready").json()["store_error"] is not None:
            assert time.monotonic() < deadline, "the error stays without a write"
            time.sleep(0.02)
        assert metric(client, "embedrec_store_error") == 0
        assert client.get("/healthz/ready").json()["seq"] == seq  # the check stored nothing
        assert metric(client, "embedrec_store_write_failures_total", reason="locked") == 1


def test_an_outage_under_load_is_logged_in_a_few_lines_and_counted_exactly(
    model, tmp_path, monkeypatch, caplog
):
    import sqlite3

    from embedrec.serving import state

    monkeypatch.setattr(state, "REFUSAL_LOG_S", 3600.0)  # no interval passes in the test
    monkeypatch.setattr(state, "STORE_RECHECK_S", 0.05)
    store = tmp_path / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t")
    with TestClient(create_app(settings)) as client:
        client.app.state.holder.store.busy_timeout_s = 0.001  # (30 s)
        listing = client.get("/v1/listings:random").json()["listing_id"]
        other = sqlite3.connect(store, isolation_level=None)  # holds the write lock
        other.execute("BEGIN IMMEDIATE")
        caplog.clear()
        for _ in range(100):
            assert client.delete(f"/v1/listings/{listing}", headers=AUTH).status_code == 503
        assert metric(client, "embedrec_store_write_failures_total", reason="locked") == 100

        def refused() -> list[str]:
            return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

        # the first at once (before: a line for each of the 100)
        assert len(refused()) == 1 and "database is locked" in refused()[0]
        other.execute("ROLLBACK")
        other.close()
        deadline = time.monotonic() + 30  # fails the test instead of hanging it
        while client.get("/healthz/ready").json()["store_error"] is not None:
            assert time.monotonic() < deadline, "the store stays refused"
            time.sleep(0.02)
        # the store is back: the others are counted in one line
        assert len(refused()) == 2 and refused()[1].startswith("99 more writes refused (locked)")
        assert metric(client, "embedrec_store_write_failures_total", reason="locked") == 100


def test_a_stored_row_that_cannot_be_read_is_skipped_and_the_rest_served(model, tmp_path):
    store = tmp_path / "store.sqlite"
    settings = Settings(model_dir=str(model), store=str(store), token="t")
    with TestClient(create_app(settings)) as client:
        for name in ("one", "two"):
            assert client.put(f"/v1/listings/{name}", json=CAR, headers=AUTH).status_code == 201
    opened = ListingStore(store)
    with opened._lock:
        opened._db.execute("UPDATE listings SET fields = '{not json' WHERE seq = 1")
    opened.close()
    with TestClient(create_app(settings)) as client:  # a restart replays the store
        assert client.get("/healthz/ready").status_code == 200
        assert client.get("/v1/listings/two").status_code == 200
        assert client.get("/v1/listings/one").status_code == 404
        skipped = client.app.state.holder.current.skipped
        assert skipped["one"].startswith("stored row 1 cannot be read")
        assert client.get("/healthz/ready").json()["skipped"] == 1


def test_stored_writes_a_reloaded_model_cannot_serve_are_not_served_and_may_be_sold(
    model, tmp_path
):
    events, listings, _, _ = block_data()
    other = model.parent / "without-make"
    Recommender(model="hybrid", epochs=1, batch_size=256, progress=False).fit(
        events, listings.drop(columns="make")
    ).save(other)
    settings = Settings(model_dir=str(model), store=str(tmp_path / "s.sqlite"), token="t")
    with TestClient(create_app(settings)) as client:
        updated = {**CAR, "price": 1}
        assert client.put("/v1/listings/Wagen 0 ä", json=updated, headers=AUTH).status_code == 200
        answer = client.post("/v1/admin/reload", json={"model_dir": str(other)}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        # the write has a column the model lacks: not served, rather than the old price
        assert client.get("/v1/listings/Wagen 0 ä").status_code == 404
        assert client.get("/healthz/ready").json()["skipped"] == 1
        assert metric(client, "embedrec_store_skipped_listings") == 1
        assert metric(client, "embedrec_model_generation") == answer.json()["generation"]
        assert metric(client, "embedrec_model_loaded_timestamp_seconds") == pytest.approx(
            client.app.state.holder.current.loaded_at
        )
        assert client.delete("/v1/listings/Wagen 0 ä", headers=AUTH).status_code == 200
        assert client.get("/healthz/ready").json()["skipped"] == 0
        assert metric(client, "embedrec_store_skipped_listings") == 0


def test_a_request_never_waits_for_a_reload_this_worker_is_building(fresh):
    holder = fresh.app.state.holder
    newer = holder.current.generation + 1
    with holder._reload_lock:  # as while this worker builds a reload of its own
        asked = threading.Thread(target=holder._reload_in_background, args=(newer, "elsewhere"))
        asked.start()
        asked.join(timeout=5)
        assert not asked.is_alive()  # it returned: the next request asks again
    assert holder._background is None  # nothing started while the lock was held


def test_a_projection_parameter_given_twice_or_misspelt_is_refused(client):
    for query, field in (("sample=3&sample=4", "sample"), ("samples=3", "samples")):
        answer = client.get(f"/v1/projection?{query}")
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert client.get("/v1/projection?method=pca&sample=3").status_code == 200


def test_a_number_of_results_given_twice_is_refused(client):
    for path in ("/v1/listings/Wagen 0 ä/similar", "/v1/users/Nutzer 3 🚗/recommendations"):
        answer = client.get(path, params=[("k", "2"), ("k", "3")])
        assert answer.status_code == 422 and answer.json()["field"] == "k", path
    assert client.get("/v1/listings/Wagen 0 ä/similar", params={"k": 2}).status_code == 200


def test_a_repeated_query_parameter_takes_each_value_whole(fresh):
    for listing, make in (("Flat 3, Köln", "Tesla"), ("L2", "Tesla, Inc.")):
        answer = fresh.put(f"/v1/listings/{listing}", json={**CAR, "make": make}, headers=AUTH)
        assert answer.status_code == 201, answer.text

    def found(*params: tuple[str, str]) -> list[str]:
        query = [("k", "5"), *params]
        answer = fresh.get("/v1/listings/Wagen 0 ä/similar", params=query)
        assert answer.status_code == 200, answer.text
        return sorted(r["listing_id"] for r in answer.json()["results"])

    teslas = [("make", "Tesla"), ("make", "Tesla, Inc.")]  # given twice: each whole
    assert found(*teslas) == ["Flat 3, Köln", "L2"]
    assert found(("make", "Tesla, Inc.")) == ["Flat 3, Köln"]  # once: Tesla or Inc.
    assert found(*teslas, ("exclude", "Flat 3, Köln"), ("exclude", "L2")) == []
    assert found(*teslas, ("exclude", "Flat 3, Köln"), ("exclude", "Flat 3")) == ["L2"]
    assert found(*teslas, ("exclude", " L2 , Flat 3")) == ["Flat 3, Köln"]  # once: split


def test_a_list_is_a_multi_valued_value_as_a_list_column_of_a_file_is(fresh):
    # a Parquet list column is read as a|b|c: a JSON list in a write is the same value
    listing = {**CAR, "make": ["Opel", None, "Tesla"]}
    answer = fresh.put("/v1/listings/liste", json=listing, headers=AUTH)
    assert answer.status_code == 201, answer.text
    assert fresh.get("/v1/listings/liste").json()["make"] == "Opel|Tesla"
    found = fresh.get("/v1/listings/liste/similar", params={"k": 1, "exclude": "liste"})
    assert found.status_code == 200
    tesla = fresh.get("/v1/listings/Wagen 0 ä/similar", params={"k": 5, "make": "Tesla"})
    assert [r["listing_id"] for r in tesla.json()["results"]] == ["liste"]
    empty = fresh.put("/v1/listings/leer", json={**CAR, "make": []}, headers=AUTH)
    assert empty.status_code == 201 and fresh.get("/v1/listings/leer").json()["make"] is None
    answer = fresh.put("/v1/listings/zahl", json={**CAR, "make": [1, 2]}, headers=AUTH)
    assert answer.status_code == 422 and answer.json()["field"] == "make"
    assert "expected a string or a list of strings" in answer.json()["error"]


def test_the_catalogue_describes_each_column_and_every_filter_it_names_is_taken(fresh):
    client = fresh  # a store of its own: no other test's listings
    answer = client.get("/v1/catalogue")
    assert answer.status_code == 200
    info = answer.json()
    assert info["location"] == ["lat", "lon"] and info["id_column"] == "listing_id"
    assert info["listings"] == info["sample"] == 120
    columns = {c["name"]: c for c in info["columns"]}
    assert set(columns) == {"make", "price", "lat", "lon"}
    assert columns["make"]["kind"] == "categorical" and columns["make"]["distinct"] == 4
    assert set(columns["make"]["values"]) == {"VW", "BMW", "Audi", "Opel"}
    assert columns["make"]["filters"] == ["make"]
    assert columns["price"] == {
        "name": "price",
        "kind": "numeric",
        "filters": ["price_min", "price_max"],
        "distinct": None,
        "values": None,
    }
    listing = client.get("/v1/random-listing").json()["listing_id"]
    for column in info["columns"]:
        for name in column["filters"]:
            value = column["values"][0] if column["values"] else "1"
            similar = client.get(f"/v1/listings/{listing}/similar", params={name: value})
            assert similar.status_code == 200, (name, similar.text)


def test_the_catalogue_description_reads_kinds_as_the_filters_do():
    from embedrec.serving.filter_params import describe_columns

    n = 40
    table = pd.DataFrame(
        {
            "listing_id": [f"R{i}" for i in range(n)],
            "title": [f"bright flat number {i} near the park" for i in range(n)],
            "district": ["Mitte", "Pankow"] * (n // 2),
            "amenities": ["balcony|lift", "garden", "lift|", None] * (n // 4),
            "furnished": pd.array([True, False, None, True] * (n // 4), dtype="object"),
            "rooms": [1, 2, 3, 4] * (n // 4),
            "listed_at": pd.date_range("2026-01-01", periods=n, tz="UTC"),
        }
    )
    described = {c["name"]: c for c in describe_columns(table, table.iloc[:0], reserved={"k"})}
    assert "listing_id" not in described
    kinds = {name: c["kind"] for name, c in described.items()}
    assert kinds == {
        "title": "text",
        "district": "categorical",
        "amenities": "multi",
        "furnished": "boolean",
        "rooms": "numeric",
        "listed_at": "datetime",
    }
    assert described["title"]["values"] is None and described["title"]["distinct"] == n
    assert described["amenities"]["values"] == ["lift", "balcony", "garden"]  # by frequency
    assert described["furnished"]["values"] == ["true", "false"]
    assert described["rooms"]["filters"] == ["rooms_min", "rooms_max"]
    assert described["listed_at"]["filters"] == []
    # a feature's kind, where the model has one, decides between category and text
    title = describe_columns(table, table.iloc[:0], {"title": "categorical"})[0]
    assert title["kind"] == "categorical" and len(title["values"]) == n


def test_writes_waiting_for_a_slow_store_leave_reads_probes_and_metrics_answered(
    fresh, monkeypatch
):
    # a database slow to commit (a row lock held elsewhere: up to its statement timeout):
    # more writes wait for it than the thread pool that answers the reads has threads
    store = fresh.app.state.holder.store
    put_many, release, waiting = store.put_many, threading.Event(), []

    def slow(writes):
        waiting.append(writes)
        release.wait(30)
        return put_many(writes)

    monkeypatch.setattr(store, "put_many", slow)
    answers: list[int] = []
    writers = [
        threading.Thread(
            target=lambda i=i: answers.append(
                fresh.put(f"/v1/listings/langsam-{i}", json=CAR, headers=AUTH).status_code
            )
        )
        for i in range(45)  # anyio's thread pool, which answers sync routes: 40 threads
    ]
    read: dict[str, int] = {}

    def reads() -> None:
        for path in ("/v1/listings/Wagen 0 ä", "/healthz/ready", "/healthz", "/metrics"):
            read[path] = fresh.get(path).status_code

    try:
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 30
        while len(waiting) < 16 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the writes beyond the first waiting ones queue up meanwhile
        reader = threading.Thread(target=reads)
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), f"reads waited for the store: {read}"
        assert set(read.values()) == {200}
    finally:
        release.set()
        for writer in writers:
            writer.join(30)
    assert answers == [201] * 45


@pytest.mark.parametrize(
    ("first", "unreachable", "status"),
    [(True, False, 3), (False, False, 1), (True, True, 1)],
    ids=["first-worker", "replacement", "store-away"],
)
def test_a_worker_that_cannot_start_says_why_in_one_line_and_only_a_first_one_stops_all(
    model, tmp_path, monkeypatch, caplog, first, unreachable, status
):
    from embedrec.serving.app import app_from_env
    from embedrec.serving.workers import FIRST_START_VARIABLE

    listings = pd.read_parquet(model / "listings.parquet").assign(score=1.0)
    listings.to_parquet(tmp_path / "today.parquet")
    store = f"postgresql://x@127.0.0.1:{unused_port()}/x" if unreachable else tmp_path / "s"
    monkeypatch.setenv("EMBEDREC_MODEL_DIR", str(model))
    monkeypatch.setenv("EMBEDREC_LISTINGS", str(tmp_path / "today.parquet"))
    monkeypatch.setenv("EMBEDREC_STORE", str(store))
    if first:
        monkeypatch.setenv(FIRST_START_VARIABLE, "1")
    else:
        monkeypatch.delenv(FIRST_START_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exited:
        app_from_env()
    # uvicorn's STARTUP_FAILURE (3) stops the server: every start would fail alike; a
    # replacement (1) is started again while the other workers serve, as after a store outage
    assert exited.value.code == status
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert ("is unavailable" if unreachable else "column 'score'") in errors[0].getMessage()


def test_a_worker_failing_its_first_start_stops_the_server_and_only_first_ones_are_told(
    monkeypatch,
):
    import uvicorn.supervisors.multiprocess as multiprocess
    from uvicorn import Config

    from embedrec.serving import workers

    seen, exits = [], iter([1, 1, 3, 3])  # the first two die, one replacement fails its start

    class Worker:  # uvicorn's Process, as the supervisor drives it
        def __init__(self, config, sockets) -> None:
            self.exitcode, self.pid = None, len(seen)

        def start(self) -> None:
            seen.append(os.environ.get(workers.FIRST_START_VARIABLE))
            self.exitcode = next(exits)

        def is_alive(self, timeout: float = 5) -> bool:
            return False

        def kill(self) -> None: ...

        def terminate(self) -> None: ...

        def join(self) -> None: ...

    monkeypatch.setattr(multiprocess, "Process", Worker)
    monkeypatch.setattr(multiprocess.signal, "signal", lambda *args: None)  # pytest's stay
    config = Config("embedrec.serving.app:app_from_env", port=0, workers=2, factory=True)
    assert workers.run_workers(config) is False
    assert seen[:2] == ["1", "1"] and set(seen[2:]) == {None}
    assert workers.FIRST_START_VARIABLE not in os.environ


def test_a_reload_another_worker_recorded_that_fails_here_is_one_line_and_reported(
    fresh, model, caplog
):
    # another worker loaded it; here its weights are damaged (or the directory is gone)
    damaged = shutil.copytree(model, model.parent / "damaged-here")
    with open(damaged / "weights.safetensors", "r+b") as weights:
        weights.truncate(100)
    holder = fresh.app.state.holder
    assert metric(fresh, "embedrec_reload_error") == 0
    generation = holder.store.record_reload(str(damaged))
    assert fresh.get("/healthz/ready").status_code == 200  # notices it, builds it aside
    holder._background.join(30)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None  # no traceback
    assert "weights.safetensors is corrupt" in errors[0].getMessage()
    ready = fresh.get("/healthz/ready", headers=AUTH).json()
    assert ready["model_dir"] == str(model) and ready["generation"] < generation
    assert "weights.safetensors is corrupt" in ready["reload_error"]
    assert metric(fresh, "embedrec_reload_error") == 1  # an alert needs no JSON parsing


def test_a_request_the_shutdown_cancels_is_answered_503_without_a_traceback(caplog):
    import asyncio

    from embedrec.serving.metrics import Metrics, MetricsAndLimits

    async def never_answers(scope, receive, send) -> None:  # a write the database holds
        await asyncio.Event().wait()

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def request() -> None:
        app = MetricsAndLimits(never_answers, Metrics(), max_body=1024)
        scope = {"type": "http", "method": "PUT", "path": "/v1/listings/1", "headers": []}
        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()  # as uvicorn does once --shutdown-timeout has passed
        await task

    asyncio.run(request())
    assert sent[0]["status"] == 503 and (b"retry-after", b"2") in sent[0]["headers"]
    assert b"shutting down" in sent[1]["body"] and b"repeat it" in sent[1]["body"]
    assert [r.exc_info for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == [None]


def test_serve_bounds_how_long_sigterm_waits_for_requests_in_flight(model, monkeypatch):
    import embedrec.serving.app as app_module
    from embedrec.serving.workers import StopServer

    ran: list = []

    def run(server: StopServer, sockets: object = None) -> None:
        ran.append(server.config)
        server.started = True

    monkeypatch.setattr(app_module, "create_app", lambda settings: "app")
    monkeypatch.setattr(app_module, "limit_threads", lambda: None)
    monkeypatch.setattr(StopServer, "run", run)
    monkeypatch.delenv("EMBEDREC_API_TOKEN", raising=False)
    for flags, seconds in (([], 20), (["--shutdown-timeout", "5"], 5)):
        result = CliRunner().invoke(main, ["serve", str(model), *flags])
        assert result.exit_code == 0, result.output
        config = ran.pop()
        assert config.timeout_graceful_shutdown == seconds
        assert config.http is BoundedHttpToolsProtocol  # a request's head bounded


def test_a_request_head_too_large_or_too_slow_or_a_stalled_body_is_refused_and_closed(
    client, monkeypatch, caplog
):
    import uvicorn

    import embedrec.serving.protocol as protocol

    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)  # 10 s in service
    monkeypatch.setattr(protocol, "BODY_IDLE_TIMEOUT_S", 0.5)  # 30 s
    config = uvicorn.Config(client.app, port=0, lifespan="off", log_level="error",
                            http=BoundedHttpToolsProtocol)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        address = server.servers[0].sockets[0].getsockname()[:2]
        refused_before = dict(protocol.REFUSED)

        def connect() -> socket.socket:
            return socket.create_connection(address, timeout=10)

        def answer(sock: socket.socket) -> bytes:
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

        # uvicorn read a header of any size into memory
        with connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(ConnectionError):  # closed while the rest is sent
                for _ in range(16):
                    sock.sendall(b"y" * 65536)
            head, _, body = answer(sock).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 431 "), head
            assert json.loads(body)["error"] == (
                f"request line and headers larger than {protocol.MAX_HEAD_BYTES} bytes"
            )
        # and held a connection open without end that sent nothing, or a head byte by byte
        with connect() as idle, connect() as slow, connect() as good:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            good.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer(good).startswith(b"HTTP/1.1 200 ")
            assert answer(idle) == b""  # closed without an answer, as a keep-alive one is
            head, _, body = answer(slow).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head
            assert json.loads(body)["field"] is None
        # a body that stops coming was waited for until the shutdown
        with connect() as sock:
            head = b"PUT /v1/listings/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
            sock.sendall(head + b"Content-Type: application/json\r\nContent-Length: 99\r\n\r\n{")
            head, _, body = answer(sock).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), head
            assert json.loads(body)["error"] == "request body paused for over 0.5 s"
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
        # each refusal is counted, though the app never saw the request
        metrics = client.get("/metrics").text
        for reason, status in (("head_too_large", 431), ("head_timeout", 408),
                               ("body_paused", 408)):  # fmt: skip
            line = f'embedrec_requests_refused_total{{reason="{reason}",status="{status}"'
            count = next(x for x in metrics.splitlines() if x.startswith(line))
            assert float(count.rsplit(" ", 1)[1]) == refused_before.get(reason, 0) + 1, count
        # a request after a keep-alive pause has its own deadline
        with connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.3)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_refused_reload_is_one_line_in_the_log(fresh, model, caplog):
    damaged = shutil.copytree(model, model.parent / "half-copied")
    (damaged / "listings.parquet").unlink()  # a copy still under way
    answer = fresh.post("/v1/admin/reload", json={"model_dir": str(damaged)}, headers=AUTH)
    assert answer.status_code == 422
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert f"reload of {damaged} refused, still serving {model}" in errors[0].getMessage()
    assert "listings.parquet is missing" in errors[0].getMessage()


def test_a_column_of_booleans_with_missing_values_takes_json_true_and_false(model, tmp_path):
    _, listings, _, _ = block_data()
    today = tmp_path / "today.parquet"
    checked = pd.array([True, False, None] * (len(listings) // 3), dtype="object")
    listings.assign(checked=checked).to_parquet(today)
    settings = Settings(
        model_dir=str(model), listings=str(today), store=str(tmp_path / "s.sqlite"), token="t"
    )
    with TestClient(create_app(settings)) as client:
        answer = client.put("/v1/listings/new", json={**CAR, "checked": True}, headers=AUTH)
        assert answer.status_code == 201, answer.text
        assert client.get("/v1/listings/new").json()["checked"] is True
        # text is no boolean: it made the column one of strings, whose filters match nothing
        answer = client.put("/v1/listings/other", json={**CAR, "checked": "yes"}, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["field"] == "checked", answer.text
        for value, wanted in ((True, True), ([False], False), ("true", True)):
            body = {"session": ["new"], "k": 20, "filters": {"checked": value}}
            answer = client.post("/v1/recommendations", json=body)
            assert answer.status_code == 200, (value, answer.text)
            found = {hit["checked"] for hit in answer.json()["results"]}
            assert found == {wanted}, value
        # JSON's true is still no make
        body = {"session": ["new"], "filters": {"make": True}}
        answer = client.post("/v1/recommendations", json=body)
        assert answer.status_code == 422 and answer.json()["field"] == "filters.make"


def test_a_uvicorn_without_the_hooks_the_bounds_extend_serves_with_its_own_protocol(
    monkeypatch,
):
    # the bounded protocol extends uvicorn's internals: another uvicorn must not stop serving
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from embedrec.serving import protocol

    assert protocol.http_protocol() is protocol.BoundedHttpToolsProtocol
    monkeypatch.delattr(HttpToolsProtocol, "on_body")
    warnings = []
    # (uvicorn's logging configuration, once a server ran here, stops its records short of
    # the root logger and caplog)
    monkeypatch.setattr(protocol.log, "warning", lambda *args: warnings.append(args[0] % args[1:]))
    assert protocol.http_protocol() == "auto"
    assert len(warnings) == 1 and "lacks on_body" in warnings[0]


def test_an_unexpected_error_is_one_500_that_a_page_of_another_origin_can_read(
    cors_client, monkeypatch, caplog
):
    # Starlette's outermost handler answered it without CORS headers (the page saw a CORS
    # failure) and raised it on, for uvicorn to log its traceback again (TestClient raises it)
    def broken(*_args, **_kwargs):
        raise RuntimeError("a fault no request causes")

    monkeypatch.setattr(ServingState, "projection", broken)
    answer = cors_client.get("/v1/projection", headers={"Origin": "https://anywhere.example"})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (RuntimeError)", "field": None}
    assert answer.headers["access-control-allow-origin"] == "*"
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "unexpected error in GET /v1/projection" in logged[0].getMessage()
    metrics = cors_client.get("/metrics").text
    assert 'endpoint="/v1/projection",method="GET",status="500"' in metrics


def test_paths_in_an_error_shown_without_the_token_become_their_names():
    from embedrec.serving.app import names_only

    text = (
        "generation 2 (/srv/my models/v 2): cannot load ([Errno 2] No such file or directory: "
        "'/srv/my models/v 2/manifest.json'); SQLite store /var/lib/store.sqlite: locked; "
        "PostgreSQL store postgresql://embedrec:***@db:5432/embedrec is unavailable"
    )
    assert names_only(text, ["/srv/my models/v 2"]) == (
        "generation 2 (v 2): cannot load ([Errno 2] No such file or directory: "
        "'manifest.json'); SQLite store store.sqlite: locked; "
        "PostgreSQL store postgresql://embedrec:***@db:5432/embedrec is unavailable"
    )
