"""The service against what a hostile or careless client tries, in process (FastAPI's
TestClient over the real app): bounded projection cache, store locations that are not
files, and the health endpoints a load balancer probes."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner
from conftest import block_data
from fastapi.testclient import TestClient

from embedrec import Recommender
from embedrec.cli import main
from embedrec.serving.app import create_app
from embedrec.serving.state import PROJECTIONS_KEPT, Settings
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
    settings = Settings(model_dir=str(model), store=str(store_path), follow_store=True)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/healthz/ready").json()
        assert ready["model_dir"] == str(model)
        assert "deleted-since" in ready["reload_error"]
        assert client.get("/v1/listings/Wagen 0 ä/similar").status_code == 200
