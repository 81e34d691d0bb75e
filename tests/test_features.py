"""Listing feature encoders: fit on training listings, transform any listings, embed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from embedrec.data.errors import DataError
from embedrec.data.schema import FeatureSpec
from embedrec.features import FeatureEncoder, FeaturePipeline, index_batch

SPECS = [
    FeatureSpec("make", "categorical", ("make",)),
    FeatureSpec("equipment", "multi", ("equipment",)),
    FeatureSpec("price", "numeric", ("price",)),
    FeatureSpec("year", "numeric", ("year",)),
    FeatureSpec("geo", "geo", ("lat", "lon")),
]


def make_listings(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    equipment = np.array(["abs", "navi|abs", "ac|navi|leather", "", "tow|ac"], dtype=object)
    return pd.DataFrame(
        {
            "listing_id": np.arange(n),
            "make": rng.choice(["bmw", "audi", "vw", "opel"], n),
            "equipment": equipment[rng.integers(0, len(equipment), n)],
            "price": rng.lognormal(9.5, 0.6, n),
            "year": rng.integers(2000, 2024, n),
            "lat": rng.uniform(48.0, 54.0, n),
            "lon": rng.uniform(7.0, 14.0, n),
        }
    )


@pytest.fixture
def pipeline() -> FeaturePipeline:
    return FeaturePipeline(SPECS).fit(make_listings())


def one(pipeline: FeaturePipeline, **columns: object) -> dict[str, torch.Tensor]:
    """Transform a one-row listings frame built from ``columns`` (others filled with NaN)."""
    row = {c: np.nan for c in ["make", "equipment", "price", "year", "lat", "lon"]}
    row.update(columns)
    return pipeline.transform(pd.DataFrame([row]))


def assert_finite(batch: dict[str, torch.Tensor]) -> None:
    for key, tensor in batch.items():
        assert torch.isfinite(tensor.float()).all(), key


# categorical


def test_unseen_category_maps_to_unknown_row_distinct_from_missing(pipeline):
    listings = pd.DataFrame({"make": ["bmw", "tesla", None, "", np.nan, "  bmw "]})
    idx = FeaturePipeline(SPECS[:1]).fit(make_listings()).transform(listings)["make.idx"]
    bmw, tesla, none, blank, nan, padded = idx.tolist()
    assert tesla == 1  # unknown
    assert none == blank == nan == 0  # missing
    assert bmw >= 2 and padded == bmw


def test_categorical_compares_values_as_strings():
    train = pd.DataFrame({"year": [2015, 2016, 2016]})
    spec = FeatureSpec("year", "categorical", ("year",))
    pipeline = FeaturePipeline([spec]).fit(train)
    idx = pipeline.transform(pd.DataFrame({"year": [2015.0, np.nan, "2016", 1999]}))["year.idx"]
    assert idx[0] == pipeline.transform(train)["year.idx"][0]
    assert idx[1] == 0 and idx[2] >= 2 and idx[3] == 1


def test_min_count_sends_rare_values_to_unknown():
    train = pd.DataFrame({"make": ["a", "a", "b"]})
    pipeline = FeaturePipeline([SPECS[0]], min_count=2).fit(train)
    assert pipeline.transform(train)["make.idx"].tolist() == [2, 2, 1]


# numeric


def test_missing_and_extreme_numbers_are_finite_and_flagged(pipeline):
    prices = [np.nan, np.inf, -np.inf, 1e12, -1e12, 15000.0, None]
    batch = pipeline.transform(pd.DataFrame({**one_row_columns(len(prices)), "price": prices}))
    assert_finite(batch)
    assert batch["price.missing"].tolist() == [1, 1, 1, 0, 0, 0, 1]
    assert batch["price.bucket"][[0, 1, 2, 6]].tolist() == [0, 0, 0, 0]
    value = batch["price.value"]
    assert value[3] > value[5] > value[4]
    assert value.abs().max() < 10  # clipped to training percentiles
    out = FeatureEncoder(pipeline)(batch)
    assert torch.isfinite(out).all()


def one_row_columns(n: int) -> dict[str, list]:
    return {c: [np.nan] * n for c in ["make", "equipment", "year", "lat", "lon"]}


def test_quantile_bucket_assignment():
    train = pd.DataFrame({"x": np.arange(100, dtype=float)})
    spec = FeatureSpec("x", "numeric", ("x",))
    pipeline = FeaturePipeline([spec], n_buckets=4).fit(train)
    edges = pipeline.to_dict()["features"][0]["state"]["edges"]
    assert edges == pytest.approx([24.75, 49.5, 74.25])
    x = pd.DataFrame({"x": [-5.0, 10.0, 30.0, 60.0, 99.0, 1e9, np.nan]})
    assert pipeline.transform(x)["x.bucket"].tolist() == [1, 1, 2, 3, 4, 4, 0]


def test_bucket_edges_are_deduplicated():
    train = pd.DataFrame({"x": [1.0] * 90 + [2.0] * 10})
    spec = FeatureSpec("x", "numeric", ("x",))
    state = FeaturePipeline([spec]).fit(train).to_dict()["features"][0]["state"]
    assert state["edges"] == sorted(set(state["edges"]))


def test_log_chosen_for_heavy_tailed_non_negative_columns(pipeline):
    states = {f["spec"]["name"]: f["state"] for f in pipeline.to_dict()["features"]}
    assert states["price"]["log"] is True
    assert states["year"]["log"] is False


def test_numeric_text_column_parses_and_rejects_bad_rows():
    spec = FeatureSpec("price", "numeric", ("price",))
    train = pd.DataFrame({"price": [" 100", "200", "", "nan", None, "300"]})
    batch = FeaturePipeline([spec]).fit(train).transform(train)
    assert batch["price.missing"].tolist() == [0, 0, 1, 1, 1, 0]
    bad = pd.DataFrame({"price": ["100", "200", "cheap", "oops"]})
    with pytest.raises(DataError) as err:
        FeaturePipeline([spec]).fit(bad)
    assert err.value.row == 3 and err.value.column == "price"
    assert "price" in str(err.value) and "row 3" in str(err.value)


def test_missing_column_raises_data_error_naming_it(pipeline):
    listings = make_listings().drop(columns=["year"])
    with pytest.raises(DataError, match="'year'") as err:
        pipeline.transform(listings)
    assert err.value.column == "year"
    with pytest.raises(DataError, match="'lon'"):
        FeaturePipeline(SPECS).fit(make_listings().drop(columns=["lon"]))


# multi-valued


def test_empty_multi_cells_get_the_empty_row(pipeline):
    cells = ["", None, np.nan, " | ", "abs"]
    idx = pipeline.transform(pd.DataFrame({**multi_frame(len(cells)), "equipment": cells}))[
        "equipment.idx"
    ]
    for row in range(4):
        assert idx[row, 0] == 1 and (idx[row, 1:] == 0).all()
    assert idx[4, 0] >= 3 and (idx[4, 1:] == 0).all()


def multi_frame(n: int) -> dict[str, list]:
    return {c: [np.nan] * n for c in ["make", "price", "year", "lat", "lon"]}


def test_unseen_multi_tokens_map_to_unknown_and_duplicates_count_once(pipeline):
    cells = ["navi|sauna", "sauna", "abs|abs| abs"]
    idx = pipeline.transform(pd.DataFrame({**multi_frame(3), "equipment": cells}))["equipment.idx"]
    assert idx[0, 0] >= 3 and idx[0, 1] == 2
    assert idx[1, 0] == 2
    assert (idx[2] != 0).sum() == 1


def test_multi_width_is_fixed_at_fit_and_long_lists_are_truncated():
    spec = FeatureSpec("tags", "multi", ("tags",))
    train = pd.DataFrame({"tags": ["a|b|c|d|e", "a"]})
    pipeline = FeaturePipeline([spec], max_tokens=3).fit(train)
    idx = pipeline.transform(pd.DataFrame({"tags": ["a|b|c|d|e|f", "b"]}))["tags.idx"]
    assert idx.shape == (2, 3)
    assert idx[0].tolist() == [3, 4, 5]  # a, b, c in vocabulary order after 3 reserved rows


def test_multi_mean_pools_token_embeddings(pipeline):
    encoder = FeatureEncoder(pipeline, dim_per_feature=4)
    multi = encoder.features[1]
    batch = {"equipment.idx": torch.tensor([[3, 4, 0]], dtype=torch.int32)}
    expected = multi.embedding.weight[[3, 4]].mean(dim=0)
    assert torch.allclose(multi(batch)[0], expected)


# geo


def test_geo_nearby_points_share_coarse_cells_far_points_do_not():
    spec = FeatureSpec("geo", "geo", ("lat", "lon"))
    points = pd.DataFrame({"lat": [10.0, 10.5, 40.0], "lon": [20.0, 20.0, -70.0]})
    pipeline = FeaturePipeline([spec]).fit(points)
    cells = pipeline.transform(points)["geo.cells"]
    assert cells.shape == (3, 5)
    assert cells[0, 0] == cells[1, 0]  # same ~200 km cell
    assert cells[0, -1] != cells[1, -1]  # different ~12 km cells
    assert (cells[0] != cells[2]).all()
    assert (cells >= 2).all()  # all seen in training


def test_geo_unseen_cells_are_unknown_and_missing_is_distinct():
    spec = FeatureSpec("geo", "geo", ("lat", "lon"))
    pipeline = FeaturePipeline([spec]).fit(pd.DataFrame({"lat": [10.0], "lon": [20.0]}))
    new = pd.DataFrame(
        {"lat": [10.3, -30.0, np.nan, 95.0, np.inf], "lon": [20.0, 100.0, 20.0, 20.0, 1.0]}
    )
    batch = pipeline.transform(new)
    assert_finite(batch)
    cells = batch["geo.cells"]
    assert cells[0, 0] >= 2 and cells[0, -1] == 1  # coarse known, fine unknown
    assert (cells[1] == 1).all()
    assert (cells[2:] == 0).all()
    assert batch["geo.missing"].tolist() == [0, 0, 1, 1, 1]


# persistence, module, batching


def test_round_trip_through_json_gives_identical_transforms(pipeline):
    restored = FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    listings = make_listings(50, seed=1)
    listings.loc[0, "make"] = "tesla"
    listings.loc[1, "price"] = np.nan
    listings.loc[2, "equipment"] = "sauna|abs"
    expected, actual = pipeline.transform(listings), restored.transform(listings)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert expected[key].dtype == actual[key].dtype
        assert torch.equal(expected[key], actual[key]), key
    assert restored.to_dict() == pipeline.to_dict()


def test_feature_encoder_shape_finite_and_gradients_flow(pipeline):
    torch.manual_seed(0)
    encoder = FeatureEncoder(pipeline, dim_per_feature=8)
    assert encoder.output_dim == 8 * len(SPECS)
    batch = pipeline.transform(make_listings(30, seed=2))
    out = encoder(batch)
    assert out.shape == (30, encoder.output_dim)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_index_batch_selects_rows(pipeline):
    batch = pipeline.transform(make_listings(20, seed=3))
    idx = torch.tensor([5, 0, 5, 19])
    picked = index_batch(batch, idx)
    assert picked.keys() == batch.keys()
    for key, tensor in batch.items():
        assert torch.equal(picked[key], tensor[idx]), key
    encoder = FeatureEncoder(pipeline)
    assert torch.allclose(encoder(picked), encoder(batch)[idx])


def test_transform_ignores_the_frame_index(pipeline):
    listings = make_listings(10, seed=4)
    shuffled = listings.set_axis(np.arange(10)[::-1] * 7)
    a, b = pipeline.transform(listings), pipeline.transform(shuffled)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_degenerate_training_data_still_transforms_to_finite_tensors():
    specs = [
        FeatureSpec("make", "categorical", ("make",)),
        FeatureSpec("tags", "multi", ("tags",)),
        FeatureSpec("price", "numeric", ("price",)),
        FeatureSpec("geo", "geo", ("lat", "lon")),
    ]
    empty = pd.DataFrame({"make": [None], "tags": [""], "price": [np.nan], "lat": [np.nan]})
    pipeline = FeaturePipeline(specs).fit(empty.assign(lon=np.nan))
    new = pd.DataFrame({"make": ["bmw"], "tags": ["a"], "price": [5.0], "lat": [1.0], "lon": [2.0]})
    batch = pipeline.transform(new)
    assert_finite(batch)
    assert batch["make.idx"].tolist() == [1] and batch["tags.idx"].tolist() == [[2]]
    assert torch.isfinite(FeatureEncoder(pipeline)(batch)).all()


TRICKY = [
    "bmw", " bmw ", "bmw\u3000", "\u00a0bmw", "\x1cbmw", "2015", "2015.0", "+7.00", "-3.0",
    "\u0663.0", "1.5", "", "   ", "Škoda", "a\nb", "x.0\n", None, float("nan"),
]  # fmt: skip


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(TRICKY, dtype=object),
        pd.Series(TRICKY, dtype="string"),
        pd.Series([2015.0, 7.5, np.nan, -0.0, 1e20, 3.0]),
        pd.Series([2015, -7, 0], dtype=np.int64),
    ],
    ids=["object", "string", "float", "int"],
)
def test_a_few_values_factorize_as_a_whole_column_does(values):
    from embedrec.features import categorical

    # the same rows twice over the threshold: the vectorised path
    many = pd.concat([values] * (categorical.SMALL // len(values) + 1), ignore_index=True)
    codes, text = categorical.factorize_strings(values)
    codes_many, text_many = categorical.factorize_strings(many)
    assert len(values) <= categorical.SMALL < len(many)
    as_text = [None if c < 0 else text[c] for c in codes]
    assert as_text == [None if c < 0 else text_many[c] for c in codes_many[: len(values)]]


def test_one_listing_transforms_as_it_does_among_many(pipeline):
    listings = make_listings(100, seed=5)
    listings.loc[3, "make"] = "tesla"  # unseen
    listings.loc[4, "make"] = None
    listings.loc[5, "equipment"] = "navi|sunroof"
    whole = pipeline.transform(listings)
    for row in range(8):
        one = pipeline.transform(listings.iloc[row : row + 1])
        for key, tensor in one.items():
            torch.testing.assert_close(tensor, whole[key][row : row + 1])


def test_training_logs_the_inferred_feature_kinds_in_one_line(caplog):
    from conftest import block_data

    from embedrec.training.preparation import prepare_training_data

    events, listings, _, _ = block_data(n_users=20, n_listings=12)
    with caplog.at_level("INFO", logger="embedrec"):
        prepare_training_data(events, listings, features_for="hybrid", progress=False)
    lines = [r.getMessage() for r in caplog.records if "listing features" in r.getMessage()]
    assert lines == ["listing features: geo (lat, lon) geo, make categorical, price numeric"]
