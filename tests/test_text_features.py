"""Free-text listing features: hashed words and character trigrams, pooled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import block_data

from embedrec import Recommender, load
from embedrec.data.packed import PackedTable, row_pieces
from embedrec.data.schema import FeatureSpec, SchemaConfig, infer_schema
from embedrec.datasets.cars import generate_cars
from embedrec.features import text as text_module
from embedrec.features.pipeline import FeaturePipeline
from embedrec.features.text import EMPTY, N_RESERVED, PAD, TextEncoder

# trains models: seconds each
pytestmark = pytest.mark.slow

SPEC = FeatureSpec(name="title", kind="text", columns=("title",))


def encode(titles: list, fit_on: list | None = None, **options) -> np.ndarray:
    encoder = TextEncoder(SPEC, **options).fit(pd.DataFrame({"title": fit_on or titles}))
    return encoder.transform(pd.DataFrame({"title": titles}))["title.tokens"]


def test_words_and_trigrams_are_hashed_to_buckets_and_missing_text_is_its_own_row():
    rows = encode(["Nissan Qashqai navi", "", None, "   ", "nissan QASHQAI Navi"])
    # three words, then the trigrams of <nissan>, <qashqai>, <navi>: 6 + 7 + 4
    assert (rows[0] >= N_RESERVED).sum() == 3 + 6 + 7 + 4
    assert rows[0].tolist() == rows[4].tolist()  # case does not matter
    for empty in rows[1:4]:
        assert empty[0] == EMPTY and (empty[1:] == PAD).all()


def test_each_token_goes_to_its_siphash_bucket_so_saved_models_keep_their_rows():
    # the rows are part of every saved model: a token must land where pandas' SipHash of
    # its text puts it, however the tokens are produced and hashed inside
    tokens = np.array(["w:navi", "<na", "nav", "avi", "vi>"], dtype=object)
    expected = pd.util.hash_array(tokens) % np.uint64(1 << 17) + N_RESERVED
    assert encode(["Navi"])[0].tolist() == expected.astype(np.int64).tolist()


def test_unseen_and_misspelt_words_share_trigram_rows_with_seen_ones():
    fit = ["navigation leather seats", "diesel automatic"]
    seen, misspelt, unrelated = encode(
        ["navigation", "navigaton", "xylophone"], fit_on=fit, max_tokens=64
    )
    shared = set(seen[seen >= N_RESERVED]) & set(misspelt[misspelt >= N_RESERVED])
    assert len(shared) >= 4  # <na, nav, avi, vig, iga, gat ...
    assert not set(seen[seen >= N_RESERVED]) & set(unrelated[unrelated >= N_RESERVED])


def test_non_latin_and_very_long_text_are_bounded_and_deterministic():
    cyrillic = "Москва автомобиль 2018 года"
    long_text = "sehr gepflegt " * 5000
    rows = encode([cyrillic, long_text], max_tokens=64)
    assert rows.shape == (2, 64) and (rows[0, :4] >= N_RESERVED).all()
    again = encode([cyrillic, long_text], max_tokens=64)
    assert np.array_equal(rows, again)  # a stable hash: the same rows in every process
    assert rows.max() < N_RESERVED + (1 << 17)


def test_a_catalogue_is_tokenised_in_chunks_with_the_same_rows(monkeypatch):
    rng = np.random.default_rng(0)
    words = ["navi", "leder", "Qashqai", "Москва", "x", "sehr-gepflegt", "", "2018"]
    titles = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(300)]
    titles += [None, "navi " * 40, titles[0]]  # missing, long, a repeated text
    whole = encode(titles, max_tokens=256)
    monkeypatch.setattr(text_module, "TEXTS_PER_CHUNK", 7)
    assert np.array_equal(encode(titles, max_tokens=256), whole)
    # each row is its own text's, repeated and missing texts too: a catalogue's path (Arrow,
    # rows filled per chunk of distinct texts) agrees with a single write's (Python strings)
    for row in (0, 5, 299, 300, 301, 302):
        assert np.array_equal(whole[row], encode([titles[row]], fit_on=titles)[0])
    # the width is the most tokens a text has, counted without making the tokens
    longest = max(int((row != PAD).sum()) for row in whole)
    width = TextEncoder(SPEC).fit(pd.DataFrame({"title": titles})).width
    assert width == longest == 40 + 40 * 4  # "navi " * 40: 40 words, 4 trigrams each


def test_text_columns_are_inferred_and_can_be_set_in_the_config():
    rng = np.random.default_rng(0)
    words = np.array(["gepflegt", "scheckheft", "navi", "leder", "unfallfrei", "garage"])
    listings = pd.DataFrame(
        {
            "listing_id": [f"L{i}" for i in range(200)],
            "description": [" ".join(rng.choice(words, 5)) + f" {i}" for i in range(200)],
            "make": rng.choice(["VW", "BMW"], 200),
        }
    )
    kinds = {spec.name: spec.kind for spec in infer_schema(listings)}
    assert kinds == {"description": "text", "make": "categorical"}
    forced = infer_schema(listings, SchemaConfig(types={"make": "text"}))
    assert {spec.name: spec.kind for spec in forced}["make"] == "text"


def test_a_model_with_a_text_column_embeds_unseen_listings_from_their_text(tmp_path):
    events, listings, listing_group, _ = block_data()
    brands = ["Volkswagen Golf", "BMW Dreier", "Audi Avant", "Opel Astra"]
    listings = listings.drop(columns=["make", "lat", "lon", "price"]).assign(
        title=[f"{brands[g]} gepflegt Nr {i}" for i, g in enumerate(listing_group)]
    )
    rec = Recommender(model="hybrid", epochs=10, batch_size=256, progress=False)
    rec.fit(events, listings)
    assert [s.kind for s in rec.feature_specs_] == ["text"]
    new = pd.DataFrame({"listing_id": ["neu"], "title": ["BMW Dreier Touring, sehr gepflegt"]})
    catalogue = pd.concat([listings, new], ignore_index=True)
    [answer] = rec.similar(["neu"], k=10, listings=catalogue)
    groups = [listing_group[int(i.split()[1])] for i in answer.ids]
    assert np.mean(np.array(groups) == 1) >= 0.8  # the BMW group
    again = load(rec.save(tmp_path / "model"))
    assert again.similar(["neu"], k=10, listings=catalogue) == [answer]
    vectors = again.embed(catalogue)
    assert len(vectors) == len(catalogue)


def test_the_text_table_learns_through_sparse_gradients():
    pipeline = FeaturePipeline([SPEC]).fit(pd.DataFrame({"title": ["a b c", "d e"]}))
    module = pipeline.encoders[0].module(4)
    batch = {k: v.long() for k, v in pipeline.transform(pd.DataFrame({"title": ["a b"]})).items()}
    module(batch).sum().backward()
    assert module.embedding.weight.grad.is_sparse
    assert torch.all(module.embedding.weight.grad.coalesce().indices() >= N_RESERVED)


def test_pooling_is_the_mean_of_token_rows_and_its_gradient_has_a_row_per_distinct_token():
    torch.manual_seed(0)
    titles = ["navi navi navi leder", "", "leder xenon", None, "navi " * 300]
    pipeline = FeaturePipeline([SPEC]).fit(pd.DataFrame({"title": titles}))
    module = pipeline.encoders[0].module(4)
    tokens = torch.as_tensor(pipeline.transform(pd.DataFrame({"title": titles}))["title.tokens"])
    weights = torch.randn(len(titles), 4)
    (module({"title.tokens": tokens}) * weights).sum().backward()
    grad = module.embedding.weight.grad
    # one entry per distinct token, not per occurrence: nothing left for the optimizer to
    # coalesce
    real = tokens[tokens != PAD]
    assert grad._nnz() == len(torch.unique(real)) < len(real)
    # the reference: the padded rows gathered, summed and divided by the real tokens' count
    table = module.embedding.weight.detach().clone().requires_grad_()
    count = (tokens != PAD).sum(dim=1, keepdim=True)
    expected = torch.nn.functional.embedding(tokens, table, padding_idx=PAD).sum(1) / count
    (expected * weights).sum().backward()
    torch.testing.assert_close(module({"title.tokens": tokens}), expected)
    torch.testing.assert_close(grad.to_dense(), table.grad)
    with torch.no_grad():  # inference pools without the distinct rows: the same vectors
        torch.testing.assert_close(module({"title.tokens": tokens}), expected)


@pytest.fixture(scope="module")
def cars(tmp_path_factory) -> dict[str, pd.DataFrame]:
    paths = generate_cars(tmp_path_factory.mktemp("cars"), size="tiny", seed=0, progress=False)
    return {name: pd.read_parquet(path) for name, path in paths.items()}


@pytest.mark.parametrize(("start", "step"), [(0, 1), (1, 3)])
def test_a_catalogue_transformed_in_pieces_equals_it_transformed_whole(
    cars, start, step, monkeypatch
):
    """Every kind of feature, text included, transforms a piece of rows as it transforms
    them among all: a short last piece (under 32 rows) takes the small tables' path."""
    monkeypatch.setattr("embedrec.data.packed.BATCH_ROWS", 97)
    listings = cars["listings"]
    assert 0 < len(listings.iloc[start::step]) % 97 < 32
    pipeline = FeaturePipeline(infer_schema(listings)).fit(listings)
    assert {"text", "categorical", "numeric", "geo"} <= {e.kind for e in pipeline.encoders}
    whole = pipeline.transform(listings.iloc[start::step])
    n_rows = len(listings.iloc[start::step])
    for table in (listings, PackedTable(listings)):
        pieces = pipeline.transform_pieces(row_pieces(table, start, step), n_rows)
        assert pieces.keys() == whole.keys()
        for key, tensor in whole.items():
            torch.testing.assert_close(pieces[key], tensor, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not 7"):
        pipeline.transform_pieces(row_pieces(listings.iloc[:5]), 7)


@pytest.mark.parametrize("model", ["hybrid", "deep"])
def test_car_titles_and_descriptions_are_read_and_embed_unseen_listings(cars, model, tmp_path):
    listings = cars["listings"]
    rec = Recommender(model=model, epochs=2, seed=0, refit=False, progress=False)
    rec.fit(cars["interactions"], listings)
    kinds = {spec.name: spec.kind for spec in rec.feature_specs_}
    assert kinds["title"] == kinds["description"] == "text"
    # the Qashqai published again under new ids: as it is, and with another description
    same = listings.iloc[[0]].assign(listing_id="neu")
    worse = same.assign(listing_id="neu-schaden", description="Motor läuft unrund. Export only.")
    catalogue = pd.concat([listings, same, worse], ignore_index=True)
    again = load(rec.save(tmp_path / "model"))
    vectors = again.embed(catalogue).set_index("listing_id")["embedding"]
    assert len(vectors) == len(catalogue)
    before = rec.embed(catalogue).set_index("listing_id")["embedding"]
    np.testing.assert_allclose(np.stack(vectors.to_numpy()), np.stack(before.to_numpy()))
    assert not np.allclose(vectors["neu"], vectors["neu-schaden"])  # the text is read
    [answer] = again.similar(["neu"], k=5, listings=catalogue)
    assert len(answer.ids) == 5 and "neu" not in answer.ids
