"""Property-based requests generated from the live server's OpenAPI schema, on a model with
string listing ids and one with integer ids: never a 500."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import schemathesis
import test_serving as serving
from hypothesis import HealthCheck, given, settings

from embedrec import Recommender

AUTH, Server = serving.AUTH, serving.Server
cars, model_dir = serving.cars, serving.model_dir  # the session fixtures, made once

pytestmark = pytest.mark.server
EXAMPLES = 25  # per operation: keeps the run to seconds


@pytest.fixture(scope="module")
def integer_id_model(cars, tmp_path_factory) -> Path:
    """The car data with listing ids renumbered as integers: ids parse differently there."""
    folder = tmp_path_factory.mktemp("integer-ids")
    listings = pd.read_parquet(cars / "listings.parquet")
    events = pd.read_parquet(cars / "interactions.parquet")
    number = {listing: 1000 + i for i, listing in enumerate(listings["listing_id"])}
    listings["listing_id"] = listings["listing_id"].map(number).astype("int64")
    events["listing_id"] = events["listing_id"].map(number).astype("int64")
    model = folder / "model"
    Recommender(model="hybrid", epochs=1, progress=False).fit(events, listings).save(model)
    return model


@pytest.fixture(scope="module", params=["string ids", "integer ids"])
def live(request, tmp_path_factory):
    if request.param == "string ids":
        model = request.getfixturevalue("model_dir")
    else:
        model = request.getfixturevalue("integer_id_model")
    running = Server(model, tmp_path_factory.mktemp("schema") / "store.sqlite")
    yield running
    running.stop()


def test_no_operation_answers_5xx(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        check_operation(live, operation, failures)
    assert not failures, "\n".join(failures[:5])
    assert live.process.poll() is None, "the server is still up"


def check_operation(live, operation, failures: list[str]) -> None:
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def check(case) -> None:
        # with the token, so the write endpoints are exercised past authentication
        response = case.call(base_url=live.url, headers=AUTH, timeout=30)
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {case.as_curl_command()} -> {response.text}")

    check()
