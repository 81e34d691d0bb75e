"""A new model is one class plus one registry line: no other file changes.

The model below is defined here alone, registered, and then trained, queried, saved and
loaded through the facade and the command line, as the built-in models are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import block_data
from torch import nn

from embedrec import Recommender, load
from embedrec.cli import main
from embedrec.models import MODELS, FeaturesUnsupportedError, ModelShape, RecModel, register

# trains models: seconds each
pytestmark = pytest.mark.slow


class PriceAwareMF(RecModel):
    """Matrix factorisation whose listing vector adds a learned vector per price band: a
    small feature model, so that it can embed listings it never saw from their price."""

    needs_features = True
    hyperparameters = ("feature_dim",)

    def __init__(self, n_users: int, n_listings: int, n_trained_listings: int, dim: int,
                 feature_dim: int, bands: int = 8) -> None:  # fmt: skip
        super().__init__()
        self.n_trained_listings = n_trained_listings
        self._config = {
            "n_users": n_users,
            "n_listings": n_listings,
            "n_trained_listings": n_trained_listings,
            "dim": dim,
            "feature_dim": feature_dim,
            "bands": bands,
        }
        self.users = nn.Embedding(n_users, dim)
        self.ids = nn.Embedding(n_listings, dim)
        self.bands = nn.Embedding(bands, dim)
        self.band_of = torch.zeros(n_listings, dtype=torch.long)

    @classmethod
    def from_shape(cls, shape: ModelShape, **params: Any) -> PriceAwareMF:
        return cls(shape.n_users, shape.n_listings, shape.n_trained_listings, **params)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def _bands(self, listings: pd.DataFrame) -> torch.Tensor:
        prices = np.nan_to_num(listings["price"].to_numpy(np.float64))
        band = np.clip(prices // 8000, 0, self._config["bands"] - 1)
        return torch.as_tensor(band, dtype=torch.long)

    def set_inputs(self, listings: pd.DataFrame, data: Any) -> None:
        self.band_of = self._bands(listings)

    def user_vectors(self, users: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        return self.users(users)

    def listing_vectors(self, listings: torch.Tensor) -> torch.Tensor:
        return self.ids(listings) + self.bands(self.band_of[listings])

    def embeddable(self, rows: np.ndarray) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    @torch.no_grad()
    def embed_listings(self, listings: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        trained = (rows >= 0) & (rows < self.n_trained_listings)
        ids = self.ids(torch.as_tensor(np.where(trained, rows, 0)))
        ids = ids * torch.as_tensor(trained, dtype=ids.dtype).unsqueeze(1)
        return (ids + self.bands(self._bands(listings))).numpy()


@pytest.fixture(scope="module")
def registered():
    register("price-mf", PriceAwareMF)
    yield "price-mf"
    MODELS.pop("price-mf")


def test_a_model_defined_in_a_test_file_runs_through_the_facade(registered, tmp_path):
    events, listings, _, _ = block_data()
    rec = Recommender(model=registered, epochs=3, batch_size=256, feature_dim=4, progress=False)
    rec.fit(events, listings)
    assert isinstance(rec.model_, PriceAwareMF)
    [similar] = rec.similar(["Wagen 0 ä"], k=5)
    assert len(similar.hits) == 5 and "Wagen 0 ä" not in similar.ids
    [recommended] = rec.recommend(["Nutzer 3 🚗"], k=5)
    assert len(recommended.hits) == 5
    session = rec.recommend_session(["Wagen 0 ä", "Wagen 4 ä"], k=3)
    assert len(session.hits) == 3
    new = listings.iloc[[0]].assign(listing_id="brand new")
    vectors = rec.embed(pd.concat([listings, new], ignore_index=True))
    assert len(vectors) == len(listings) + 1
    again = load(rec.save(tmp_path / "model"))
    assert isinstance(again.model_, PriceAwareMF)
    assert again.similar(["Wagen 0 ä"], k=5) == rec.similar(["Wagen 0 ä"], k=5)
    assert again.recommend(["Nutzer 3 🚗"], k=5) == rec.recommend(["Nutzer 3 🚗"], k=5)
    with pytest.raises(ValueError, match="hidden=64 needs model 'deep' or 'hybrid'"):
        Recommender(model=registered, hidden=64).check_params()


def test_a_registered_model_trains_and_answers_from_the_command_line(registered, tmp_path):
    events, listings, _, _ = block_data()
    events.to_parquet(tmp_path / "events.parquet")
    listings.to_parquet(tmp_path / "listings.parquet")
    runner = CliRunner()
    trained = runner.invoke(
        main,
        ["train", "--interactions", str(tmp_path / "events.parquet"),
         "--listings", str(tmp_path / "listings.parquet"), "--out", str(tmp_path / "model"),
         "--model", registered, "--epochs", "2"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    answer = runner.invoke(main, ["similar", str(tmp_path / "model"), "Wagen 0 ä", "-k", "3"])
    assert answer.exit_code == 0, answer.output
    assert answer.output.count("Wagen") >= 4  # the query line and three results


def test_a_model_without_features_names_what_it_cannot_embed(fitted_mf, blocks):
    _, listings, _, _ = blocks
    new = listings.iloc[[0]].assign(listing_id="never seen")
    with pytest.raises(FeaturesUnsupportedError, match="cannot embed listings"):
        fitted_mf.model_.embed_listings(new, np.array([-1]))
    assert fitted_mf.retriever(pd.concat([listings, new])).unknown == ["never seen"]


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'; choose from mf, deep, hybrid"):
        Recommender(model="nope").check_params()


@pytest.mark.parametrize(("n", "dim"), [(70, 3), (65, 2), (48, 1)])
def test_a_table_of_some_rows_holds_the_values_the_whole_table_draws(monkeypatch, n, dim):
    # blocks of 16 rows: several blocks, and a last one of under 16 values (65 x 2, 48 x 1
    # ends on a whole block) that torch would draw otherwise
    import embedrec.models.base as base

    monkeypatch.setattr(base, "DRAW_BLOCK", 16)
    whole = base.embedding(n, dim, 0.05)
    base.initialize(whole, torch.Generator().manual_seed(3))
    rows = torch.tensor([0, 5, 15, 16, 17, 40, n - 1])
    part = base.embedding(len(rows), dim, 0.05)
    generator = torch.Generator().manual_seed(3)
    base.initialize(part, generator, {part: (rows, n)})
    assert torch.equal(part.weight, whole.weight[rows])
    # and the generator goes on as after the whole table
    after_whole = torch.Generator().manual_seed(3)
    torch.empty(n, dim).normal_(generator=after_whole)
    assert torch.equal(generator.get_state(), after_whole.get_state())
