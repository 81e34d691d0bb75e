"""Writes over HTTP match ids as the library does (``as_ids_like``): "12" names the listing
12 of a model with integer ids, 12 the listing "12" of a model with string ids, in a
request's body and in the stored writes a reload replays into a model of the other type."""

from __future__ import annotations

import pytest
from conftest import block_data
from fastapi.testclient import TestClient

from embedrec.recommender import Recommender
from embedrec.serving.app import create_app
from embedrec.serving.state import Settings

AUTH = {"Authorization": "Bearer t"}
CAR = {"make": "VW", "price": 1234, "lat": 50.0, "lon": 10.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Hybrid models (they embed new listings) of the same listings 10..49, one with
    integer ids, one with their decimal text."""
    events, listings, _, _ = block_data(n_users=60, n_listings=40)
    number = {text: 10 + i for i, text in enumerate(listings["listing_id"])}
    root = tmp_path_factory.mktemp("models")
    for kind in (int, str):
        ids = {text: kind(n) for text, n in number.items()}
        Recommender(model="hybrid", epochs=1, seed=0, progress=False).fit(
            events.assign(listing_id=events["listing_id"].map(ids)),
            listings.assign(listing_id=listings["listing_id"].map(ids)),
        ).save(root / kind.__name__)
    return root


def client(models, kind: str, store) -> TestClient:
    return TestClient(create_app(Settings(str(models / kind), store=str(store), token="t")))


def other_type(kind: str, listing_id: int) -> int | str:
    return str(listing_id) if kind == "int" else listing_id


@pytest.mark.parametrize("kind", ["int", "str"])
def test_a_body_id_of_the_other_type_names_the_listing_of_the_path(models, kind, tmp_path):
    with client(models, kind, tmp_path / "store.sqlite") as http:
        body = {**CAR, "listing_id": other_type(kind, 12)}
        response = http.put("/v1/listings/12", json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["created"] is False
        listing = http.get("/v1/listings/12").json()
        assert listing == {**CAR, "listing_id": {"int": 12, "str": "12"}[kind]}
        response = http.put("/v1/listings/12", json={**CAR, "listing_id": "012"}, headers=AUTH)
        assert response.status_code == 422 and response.json()["field"] == "listing_id"


@pytest.mark.parametrize("kind", ["int", "str"])
def test_a_body_id_of_true_is_no_id_not_listing_1(models, kind, tmp_path):
    # True == 1 in Python: an integer catalogue took it for the path's listing 1
    with client(models, kind, tmp_path / "store.sqlite") as http:
        for path in ("1", "True", "true"):
            body = {**CAR, "listing_id": True}
            response = http.put(f"/v1/listings/{path}", json=body, headers=AUTH)
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "listing_id"
            assert http.get(f"/v1/listings/{path}").status_code == 404
        assert (
            http.put("/v1/listings/1", json={**CAR, "listing_id": 1}, headers=AUTH).status_code
            == 201
        )


@pytest.mark.parametrize(("first", "second"), [("str", "int"), ("int", "str")])
def test_stored_writes_meet_a_reloaded_model_with_the_other_type_of_id(
    models, first, second, tmp_path
):
    store = tmp_path / "store.sqlite"
    with client(models, first, store) as http:
        assert http.put("/v1/listings/500", json=CAR, headers=AUTH).status_code == 201
        assert http.put("/v1/listings/12", json=CAR, headers=AUTH).status_code == 200
        reload = http.post("/v1/admin/reload", json={"model_dir": str(models / second)},
                           headers=AUTH)  # fmt: skip
        assert reload.status_code == 200, reload.text
        # the writes stored under the first model's ids are served under the second's
        assert http.get("/v1/listings/500").json()["listing_id"] == other_type(first, 500)
        assert http.get("/v1/listings/12").json()["price"] == 1234
        assert http.delete("/v1/listings/500", headers=AUTH).status_code == 200
        assert http.put("/v1/listings/12", json={**CAR, "price": 777}, headers=AUTH).is_success
    # replayed at a start, the newer write of each listing wins, whichever key holds it
    with client(models, second, store) as http:
        assert http.get("/v1/listings/500").status_code == 404
        assert http.get("/v1/listings/12").json()["price"] == 777
