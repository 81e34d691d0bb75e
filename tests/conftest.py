"""Shared fixtures: small generated data, trained once per session."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from embedrec.recommender import Recommender

# the tests choose each cache through XDG_CACHE_HOME; a user's own cache would take precedence
os.environ.pop("EMBEDREC_CACHE", None)


def block_data(n_users: int = 150, n_listings: int = 120, groups: int = 4, seed: int = 0):
    """Users of group g view listings of group g: a structure any recommender must find.

    Ids are strings with spaces and unicode, to check they come back exactly as given.
    """
    rng = np.random.default_rng(seed)
    listing_group = np.arange(n_listings) % groups
    user_group = rng.integers(0, groups, n_users)
    users = np.repeat(np.arange(n_users), 12)
    choices = rng.integers(0, n_listings // groups, len(users)) * groups + user_group[users]
    listings = pd.DataFrame(
        {
            "listing_id": [f"Wagen {i} ä" for i in range(n_listings)],
            "make": np.array(["VW", "BMW", "Audi", "Opel"])[listing_group],
            "price": rng.integers(2_000, 60_000, n_listings),
            "lat": 50 + listing_group + rng.normal(0, 0.1, n_listings),
            "lon": 10 + rng.normal(0, 0.1, n_listings),
        }
    )
    events = pd.DataFrame(
        {
            "user_id": [f"Nutzer {u} 🚗" for u in users],
            "listing_id": listings["listing_id"].to_numpy()[choices],
            "timestamp": 1_700_000_000 + rng.integers(0, 1_000_000, len(users)),
            "event": rng.choice(["view", "favorite", "contact"], len(users), p=[0.85, 0.1, 0.05]),
        }
    )
    return events, listings, listing_group, user_group


@pytest.fixture(scope="session")
def blocks():
    return block_data()


@pytest.fixture(scope="session")
def fitted_mf(blocks):
    events, listings, _, _ = blocks
    return Recommender(model="mf", epochs=15, batch_size=256, seed=0, progress=False).fit(
        events, listings
    )


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL server on a free loopback port for the session (tests/postgres.py:
    initdb in a temporary folder, as the postgres user when run as root). Tests that need it
    skip, saying why, only where PostgreSQL cannot be had."""
    import postgres

    reason = postgres.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = postgres.Cluster()
    yield cluster
    cluster.close()


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist two workers share the cores: each keeps torch to one thread, so they
    # do not fight over them. (OMP_NUM_THREADS stays as it is: tests of the server's thread
    # settings need the machine's default.)
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The longest files first (tests/file_seconds.json), so that `make test`'s two workers,
    # given whole files in this order (--dist loadfile --no-loadscope-reorder), do not end
    # with one long file running while the other worker idles. A file not measured yet
    # counts as a median one.
    import statistics

    from file_seconds import load

    seconds = load()
    typical = statistics.median(seconds.values()) if seconds else 0.0
    items.sort(key=lambda item: -seconds.get(item.path.name, typical))
