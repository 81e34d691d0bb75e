"""The training loop's negatives: from the batch or from the whole catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from embedrec.data.ids import IdMap
from embedrec.data.prepare import Interactions, recent_listings, time_order
from embedrec.models.hybrid import HybridTwoTower
from embedrec.models.mf import MatrixFactorization
from embedrec.recommender import Recommender
from embedrec.training import trainer as trainer_module
from embedrec.training.losses import bpr, in_batch_softmax, sampled_softmax
from embedrec.training.trainer import (
    TrainConfig,
    TrainingDiverged,
    bf16_steps,
    check_finite,
    train,
    validation_recall,
    validation_sample,
)


def test_sampled_softmax_masks_the_positive_among_negatives():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    listings = torch.tensor([3, 4])
    negatives = torch.tensor([3, 7])  # row 0's own listing is among the negatives
    negative_vectors = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    loss = sampled_softmax(users, positives, listings, negative_vectors, negatives, torch.ones(2))
    # row 0: logits [1 (positive), 0.5]; row 1: [1, 0 (listing 3), 0.5]
    expected = (np.log(np.exp(1) + np.exp(0.5)) - 1 + np.log(np.exp(1) + 1 + np.exp(0.5)) - 1) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_in_batch_softmax_masks_every_repeat_of_a_rows_listing():
    """Listings repeat in a batch: each repeat among the negatives is masked, nothing else."""
    gen = torch.Generator().manual_seed(0)
    users, vectors = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen)
    listings = torch.randint(0, 10, (64,), generator=gen)  # many repeats
    log_q, weights = torch.randn(64, generator=gen), torch.rand(64, generator=gen)
    loss = in_batch_softmax(users, vectors, listings, log_q, weights, temperature=0.5, negatives=20)
    positive = (users * vectors).sum(dim=1) / 0.5 - log_q
    logits = users @ vectors[:20].T / 0.5 - log_q[:20]
    logits[listings.unsqueeze(1) == listings[:20].unsqueeze(0)] = float("-inf")
    rows = torch.logsumexp(torch.cat([positive.unsqueeze(1), logits], dim=1), dim=1) - positive
    assert float(loss) == pytest.approx(float((rows * weights).sum() / weights.sum()), rel=1e-5)


def test_softmax_loss_gradients_match_autograd_of_logsumexp():
    """The hand-written backward against autograd through ``logsumexp``, in float64; a row
    whose negatives are all masked keeps finite gradients (autograd's give NaN there)."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(40, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    vectors = torch.randn(40, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    listings = torch.randint(0, 12, (40,), generator=gen)
    log_q = torch.randn(40, dtype=torch.float64, generator=gen)
    weights = torch.rand(40, dtype=torch.float64, generator=gen)

    def reference(users, vectors):
        positive = (users * vectors).sum(dim=1) / 0.5 - log_q
        logits = users @ vectors[:16].T / 0.5 - log_q[:16]
        logits = logits.masked_fill(listings.unsqueeze(1) == listings[:16], float("-inf"))
        rows = torch.logaddexp(positive, torch.logsumexp(logits, dim=1)) - positive
        return (rows * weights).sum() / weights.sum()

    args = (listings, log_q, weights, 0.5, 16)
    fused = torch.autograd.grad(in_batch_softmax(users, vectors, *args), (users, vectors))
    expected = torch.autograd.grad(reference(users, vectors), (users, vectors))
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # one listing everywhere: every negative is the row's own listing
    same = torch.zeros(40, dtype=torch.long)
    loss = in_batch_softmax(users, vectors, same, log_q, weights, 0.5, 16)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, (users, vectors)))


def test_a_batch_whose_weights_are_all_zero_contributes_nothing():
    """0 / 0 would make the loss and every gradient NaN, and the model with them."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(8, 4, generator=gen, requires_grad=True)
    vectors = torch.randn(8, 4, generator=gen, requires_grad=True)
    listings, zero = torch.arange(8), torch.zeros(8)
    losses = [
        in_batch_softmax(users, vectors, listings, torch.zeros(8), zero, 0.5, 4),
        sampled_softmax(users, vectors, listings, vectors[:4], listings[:4], zero),
        bpr(users, vectors, vectors.flip(0), zero),
    ]
    for loss in losses:
        assert float(loss.detach()) == 0.0
        gradients = torch.autograd.grad(loss, (users, vectors), allow_unused=True)
        assert all(g is None or (g == 0).all() for g in gradients)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mf", "hybrid"])
def test_catalogue_negatives_learn_the_groups(blocks, model):
    events, listings, listing_group, _ = blocks
    rec = Recommender(
        model=model,
        epochs=12,
        batch_size=256,
        negatives_from="catalogue",
        temperature=0.3,
        seed=0,
        progress=False,
    ).fit(events, listings)
    results = rec.similar(["Wagen 0 ä", "Wagen 1 ä"], k=10)
    for query, group in zip(results, (0, 1), strict=True):
        found = [int(r.listing_id.split()[1]) for r in query.hits]
        assert np.mean(listing_group[found] == group) >= 0.8
    assert rec.get_params()["negatives_from"] == "catalogue"


@pytest.mark.parametrize("negatives", [16, 512])
def test_negatives_are_trained_listings_all_of_them_when_few(blocks, monkeypatch, negatives):
    """16 negatives for 120 trained listings are drawn; 512 means every trained listing."""
    events, listings, _, _ = blocks
    drawn: list[torch.Tensor] = []

    def spy(*args, **kwargs):
        drawn.append(args[4])
        return sampled_softmax(*args, **kwargs)

    monkeypatch.setattr("embedrec.training.trainer.sampled_softmax", spy)
    # a listing without interactions must never be a negative: its features would learn
    # that they are unwanted
    extra = listings.iloc[:1].assign(listing_id="Neu 1")
    rec = Recommender(
        model="hybrid",
        epochs=1,
        batch_size=256,
        negatives_from="catalogue",
        negatives=negatives,
        validation_fraction=0,
        progress=False,
    ).fit(events, pd.concat([listings, extra]))
    untrained = rec.listings_.indices(["Neu 1"])[0]
    assert drawn and all(len(d) == min(negatives, 120) for d in drawn)
    assert all((d != untrained).all() for d in drawn)
    if negatives == 512:
        assert sorted(drawn[0].tolist()) == [r for r in range(121) if r != untrained]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"negatives_from": "everything"}, "negatives_from must be one of batch, catalogue"),
        ({"temperature": 0.0}, "temperature must be a positive finite number"),
        ({"lr": -1.0}, "lr must be a positive finite number, got -1.0"),
        ({"logq_scale": float("nan")}, "logq_scale must be a finite number >= 0, got nan"),
        ({"batch_size": 0}, "batch_size must be positive, got 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be a number in \[0, 1\)"),
        (
            {"event_weights": {"view": -1.0}},
            r"event_weights\['view'\] must be a finite number >= 0",
        ),
        ({"event_weights": {"view": float("nan")}}, r"event_weights\['view'\] must be a finite"),
        ({"event_weights": {"contact": float("inf")}}, r"event_weights\['contact'\] must be"),
        ({"event_weights": {"view": "1"}}, r"event_weights\['view'\] must be a finite number"),
        ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16"),
        ({"validation_users": 0}, "validation_users must be positive"),
        ({"workers": 0}, "workers must be positive"),
        ({"workers": 1.5}, "workers must be a whole number, got 1.5"),
        ({"hidden": 0}, "hidden must be a positive integer, got 0"),
        ({"feature_dim": 2.5}, "feature_dim must be a positive integer, got 2.5"),
        ({"history": True}, "history must be a positive integer, got True"),
        ({"history": 10**9}, "history must be at most 1000, got 1000000000"),
        ({"id_dropout": 1.0}, r"id_dropout must be a number in \[0, 1\), got 1.0"),
        ({"id_dropout": "high"}, r"id_dropout must be a number in \[0, 1\), got 'high'"),
        ({"model": "mf", "hidden": 64}, "hidden=64 needs model 'deep' or 'hybrid'"),
        ({"model": "deep", "history": 5}, "history=5 needs model 'hybrid'"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ({"device": "cuda:64"}, "device 'cuda:64': this machine has [0-9]+ CUDA device"),
    ],
)
def test_bad_training_settings_are_named(blocks, params, message):
    events, listings, _, _ = blocks
    with pytest.raises(ValueError, match=message):
        Recommender(progress=False, **params).fit(events, listings)


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True), (False, False)])
def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch, avx512_bf16, amx):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert bf16_steps("auto", torch.device("cpu")) == (avx512_bf16 or amx)
    assert not bf16_steps("auto", torch.device("cuda"))
    assert bf16_steps("bf16", torch.device("cpu")) and bf16_steps("bf16", torch.device("cuda"))
    assert not bf16_steps("fp32", torch.device("cpu"))
    assert Recommender().get_params()["precision"] == "auto"


def test_auto_precision_trains_exactly_as_the_precision_it_picks(blocks, monkeypatch):
    """ "auto" reaches the training steps: its losses are bf16's on a CPU reported to have
    bf16 instructions and fp32's on one without, to the last bit (CPU training is
    deterministic)."""
    events, listings, _, _ = blocks

    def losses(precision: str) -> list[float]:
        rec = Recommender(
            model="hybrid",
            epochs=2,
            batch_size=256,
            validation_fraction=0,
            precision=precision,
            progress=False,
        ).fit(events, listings)
        return [entry["loss"] for entry in rec.report_["history"]]

    fp32, bf16 = losses("fp32"), losses("bf16")
    assert fp32 != bf16
    for supported, expected in ((True, bf16), (False, fp32)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda s=supported: s)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert losses("auto") == expected


@pytest.mark.slow
def test_bf16_training_learns_what_fp32_learns(blocks):
    events, listings, listing_group, _ = blocks
    for precision in ("fp32", "bf16"):
        rec = Recommender(
            model="hybrid", epochs=8, batch_size=256, precision=precision, progress=False
        ).fit(events, listings)
        query = rec.similar(["Wagen 0 ä"], k=10)[0].hits
        found = [int(r.listing_id.split()[1]) for r in query]
        assert np.mean(listing_group[found] == 0) >= 0.8
    assert rec.get_params()["precision"] == "bf16"
    # the per-epoch caches are computed in full precision even when a bf16 step asks first
    model = rec.model_.train()
    full = model.all_listing_vectors().clone()
    model.refresh()
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.allclose(model.all_listing_vectors(), full, atol=1e-6)


def test_hybrid_catalogue_vectors_are_its_listing_vectors(blocks):
    """Validation reads the hybrid's cached vectors: they must be the listing tower's own."""
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=2, batch_size=256, progress=False)
    model = rec.fit(events, listings).model_.eval()
    n = len(rec.listings_)
    with torch.no_grad():
        expected = model.listing_vectors(torch.arange(n))
    model.refresh()
    assert torch.allclose(model.catalogue_vectors(n), expected, atol=1e-6)


def test_a_refresh_in_training_embeds_the_trained_listings_only(blocks):
    """Training histories read trained listings only, so a refresh in training runs the
    listing tower over those; a validation then adds the rest, and the cache is the tower's."""
    events, listings, _, _ = blocks
    seen = events[events["listing_id"].isin(listings["listing_id"].iloc[:80])]
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    model = rec.fit(seen, listings).model_
    n, trained = len(rec.listings_), model.n_trained_listings
    assert trained < n == len(listings)
    embedded = []
    hook = model.listing_mlp.register_forward_hook(
        lambda _, args, __: embedded.append(len(args[0]))
    )
    model.train().refresh()
    with torch.no_grad():
        model.user_vectors(torch.tensor([0, 1]))
    assert sum(embedded) == trained
    model.eval()
    with torch.no_grad():
        expected = model.listing_vectors(torch.arange(n))
    embedded.clear()
    assert torch.allclose(model.catalogue_vectors(n), expected, atol=1e-6)
    assert sum(embedded) == n - trained
    hook.remove()


def test_hybrid_trains_each_pair_on_what_its_user_viewed_before_it(blocks):
    """A training pair's recent half pools the listings its user viewed just before it (none
    for a user's first pair); its lasting half those, or, for about half of the pairs, the
    user's latest listings less the pair's own (always so outside training). Asked for a
    user, both halves read the user's most recent listings."""
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    model = rec.fit(events, listings).model_.eval()
    length = model.histories.shape[1]
    users = torch.tensor([0, 0, 0, 1, 1] + [2] * (length + 3) + [4] * 12)
    sequence = (torch.arange(len(users)) * 7) % len(rec.listings_)
    sequence[1] = model.histories[0, 0]  # a pair whose listing the lasting half leaves out
    model.set_training_pairs(users, sequence)
    vectors = model.all_listing_vectors()

    def mean(rows: torch.Tensor) -> torch.Tensor:
        return vectors[rows].mean(dim=0, keepdim=True) if len(rows) else torch.zeros(1, 32)

    def expected(pair: int, latest_history: bool) -> torch.Tensor:
        user = int(users[pair])
        start = int((users < user).sum())
        previous = sequence[max(start, pair - length) : pair]
        latest = model.histories[user, : model.history_lengths[user]]
        lasting = mean(latest[latest != sequence[pair]] if latest_history else previous)
        recent = torch.zeros(1, 32)
        if len(previous):
            # the newest (last) weighs 1, each one before it half as much per 2 views
            back = torch.arange(len(previous) - 1, -1, -1, dtype=torch.float32)
            weights = (0.5 ** (back / 2)).unsqueeze(1)
            recent = (weights * vectors[previous]).sum(0, keepdim=True) / weights.sum()
        ids = users[pair : pair + 1]
        return model.halves(model.user_from(recent, ids), model.user_from(lasting, ids))[0]

    with torch.no_grad():
        got = model.user_vectors(users, torch.arange(len(users)))
        for pair in range(len(users)):
            assert torch.allclose(got[pair], expected(pair, latest_history=True), atol=1e-5)
        # in training, each pair's lasting half reads one of the two, drawn per pair
        model.train()
        model.id_dropout, model.generator = 0.0, torch.Generator().manual_seed(0)
        got = model.user_vectors(users, torch.arange(len(users)))
        model.eval()
        latest = [torch.allclose(got[p], expected(p, True), atol=1e-5) for p in range(len(users))]
        before = [torch.allclose(got[p], expected(p, False), atol=1e-5) for p in range(len(users))]
        assert all(a or b for a, b in zip(latest, before, strict=True))
        assert 0.2 < np.mean([a and not b for a, b in zip(latest, before, strict=True)]) < 0.8
        assert 0.2 < np.mean([b and not a for a, b in zip(latest, before, strict=True)]) < 0.8
        known = torch.arange(len(model.history_lengths))
        rows = model.histories[3, : model.history_lengths[3]]  # newest first
        weights = (0.5 ** (torch.arange(len(rows), dtype=torch.float32) / 2)).unsqueeze(1)
        recent = (weights * vectors[rows]).sum(0, keepdim=True) / weights.sum()
        lasting = model.user_from(mean(rows), known[3:4])
        expected_user = model.halves(model.user_from(recent, known[3:4]), lasting)[0]
        assert torch.allclose(model.user_vectors(known)[3], expected_user, atol=1e-5)
    assert model.history_lengths[3] > 1


@pytest.mark.parametrize("history_gradient", [False, True])
def test_hybrid_history_gradient_reaches_the_history_listings(blocks, history_gradient):
    """With ``history_gradient`` the listings in a pair's history learn from it; without, the
    history is read from the per-epoch cache and only the user side learns."""
    events, listings, _, _ = blocks
    rec = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    model = rec.fit(events, listings).model_.train()
    model.history_gradient = history_gradient
    model.zero_grad(set_to_none=True)
    users = torch.tensor([0, 0])
    model.set_training_pairs(users, torch.tensor([5, 9]))
    model.user_vectors(users[1:], torch.tensor([1])).sum().backward()
    gradient = model.listing_mlp[0].weight.grad  # only the listing tower's path reaches it
    assert (gradient is not None and bool(gradient.abs().sum() > 0)) == history_gradient


@pytest.mark.parametrize("in_pair_order", [False, True])
def test_time_order_is_lexsorts_order_by_user_time_listing(in_pair_order):
    """Pairs as ``prepare`` makes them (in user, listing order) take a shorter path that
    must give the same order."""
    rng = np.random.default_rng(0)
    n = 5000
    user, listing = rng.integers(0, 50, n), rng.integers(0, 400, n)
    if in_pair_order:
        by_pair = np.lexsort((listing, user))
        user, listing = user[by_pair], listing[by_pair]
    data = Interactions(
        users=None,
        listings=None,
        user_idx=user,
        listing_idx=listing,
        timestamp=rng.integers(0, 30, n),  # many ties within a user
        weight=np.ones(n, dtype=np.float32),
    )
    expected = np.lexsort((data.listing_idx, data.timestamp, data.user_idx))
    assert np.array_equal(time_order(data), expected)


def test_training_that_diverges_stops_with_one_clear_error(blocks, tmp_path):
    """Every setting is valid, but lr is absurd: the vectors overflow and the loss is NaN.
    A model of NaNs would answer no query, so fit raises instead of returning it."""
    events, listings, _, _ = blocks
    rec = Recommender(model="mf", lr=1e30, epochs=3, batch_size=256, validation_fraction=0)
    with pytest.raises(TrainingDiverged) as caught:
        rec.set_params(progress=False).fit(events, listings, checkpoint_dir=tmp_path / "c")
    assert str(caught.value) == (
        "training diverged at epoch 1: loss nan; lower lr or check the weights"
    )
    assert not hasattr(rec, "model_")
    assert not list(tmp_path.glob("c/fit-*"))  # the epoch that diverged left no checkpoint


def test_weights_that_are_not_finite_stop_training_though_the_loss_was():
    """The last step's update shows in no loss: the weights are checked too."""
    model = MatrixFactorization(n_users=3, n_listings=4, dim=2)
    check_finite(model, 0.5, 1, None)
    with torch.no_grad():
        model.user_embedding.weight[1, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="^training diverged at epoch 4: weights not"):
        check_finite(model, 0.5, 4, None)
    with pytest.raises(TrainingDiverged, match="^training diverged at epoch 2: loss inf;"):
        check_finite(model, float("inf"), 2, None)


@pytest.mark.slow
def test_training_that_raises_releases_the_time_ordered_pairs(blocks):
    events, listings, _, _ = blocks
    model = Recommender(model="hybrid", epochs=1, batch_size=256, progress=False)
    model = model.fit(events, listings).model_
    rng = np.random.default_rng(0)
    n_users, n_listings = len(model.histories), model.n_trained_listings
    data = Interactions(
        users=range(n_users),
        listings=range(n_listings),
        user_idx=rng.integers(0, n_users, 500),
        listing_idx=rng.integers(0, n_listings, 500),
        timestamp=rng.integers(0, 100, 500),
        weight=np.ones(500, dtype=np.float32),
    )

    class Stop(Exception):
        pass

    def stop_after_first_epoch(epoch: int, metrics: dict, elapsed: float) -> None:
        raise Stop(f"epoch {epoch}")

    config = Recommender(epochs=3, batch_size=64).train_config(len(data))
    with pytest.raises(Stop, match="epoch 1"):
        train(model, data, config, callbacks=[stop_after_first_epoch])
    assert model.sequence is None and model.sequence_starts is None


def test_validation_users_do_not_depend_on_the_training_seed(fitted_mf):
    """Runs with different seeds are compared on the same validation users."""
    model = fitted_mf.model_
    rng = np.random.default_rng(0)
    n_users, n_listings = (
        m.num_embeddings for m in (model.user_embedding, model.listing_embedding)
    )

    def pairs(n: int) -> Interactions:
        return Interactions(
            users=IdMap.from_values(range(n_users)),
            listings=IdMap.from_values(range(n_listings)),
            user_idx=rng.integers(0, n_users, n),
            listing_idx=rng.integers(0, n_listings, n),
            timestamp=np.zeros(n, dtype=np.int64),
            weight=np.ones(n, dtype=np.float32),
        )

    seen, held_out = pairs(2000), pairs(400)

    def config(**params: int) -> TrainConfig:
        return Recommender(**params).train_config(len(seen))

    scores = {
        seed: validation_recall(model, seen, held_out, config(seed=seed, validation_users=30))
        for seed in (0, 1, 7)
    }
    other_sample = validation_recall(model, seen, held_out, config(validation_users=60))
    model.eval()  # validation leaves the shared fixture's model in training mode
    assert scores[0] == scores[1] == scores[7]
    # another sample scores differently, so equal scores above mean the same 30 users
    assert scores[0] != other_sample


@pytest.mark.parametrize(
    ("model", "validation_users", "sampled"),
    # an unfactorised model scores a sixth as many users, and never none
    [("mf", 40, 40), ("deep", 60, 10), ("deep", 5, 1)],
)
def test_recommender_validates_on_as_many_users_as_asked(
    blocks, monkeypatch, model, validation_users, sampled
):
    events, listings, _, _ = blocks
    asked = []

    def recording(seen, held_out, n, *by_id):
        asked.append(n)
        return validation_sample(seen, held_out, n, *by_id)

    monkeypatch.setattr(trainer_module, "validation_sample", recording)
    rec = Recommender(
        model=model,
        epochs=2,
        batch_size=256,
        validation_users=validation_users,
        refit=False,
        progress=False,
    ).fit(events, listings)
    assert asked == [sampled, sampled]
    assert rec.get_params()["validation_users"] == validation_users
    recalls = [entry["val_recall@10"] for entry in rec.report_["history"]]
    errors = [entry["val_recall@10_se"] for entry in rec.report_["history"]]
    assert all(0 <= r <= 1 for r in recalls)
    # a standard error over the sampled users: none for a single one (zero where every
    # sampled user scores alike)
    assert all(np.isnan(e) for e in errors) if sampled == 1 else all(e >= 0 for e in errors)
    if model == "mf":
        # the blocks are learnt: chance finds about 10 in 110 unseen listings (0.09)
        assert recalls[-1] > 0.2


@pytest.mark.parametrize("chunk", [1 << 20, 7])
def test_serving_history_is_what_training_shows_a_users_next_pair(chunk, monkeypatch):
    """Same-time views at the edge of the history window are kept and ordered alike, when
    the histories are placed in chunks of pairs too; a user without pairs has none."""
    monkeypatch.setattr("embedrec.data.prepare.HISTORY_CHUNK", chunk)
    rng = np.random.default_rng(1)
    n = 2000
    data = Interactions(
        users=range(41),
        listings=None,
        user_idx=rng.integers(0, 40, n),
        listing_idx=rng.integers(0, 300, n),
        timestamp=rng.integers(0, 10, n),  # many ties within a user
        weight=np.ones(n, dtype=np.float32),
    )
    histories, lengths = recent_listings(data, 6)
    order = time_order(data)
    users, listings = data.user_idx[order], data.listing_idx[order]
    for user in range(40):
        newest_first = listings[users == user][::-1][:6]
        assert lengths[user] == len(newest_first)
        assert np.array_equal(histories[user, : len(newest_first)], newest_first)
    assert lengths[40] == 0 and not histories[40].any()


@pytest.mark.slow
def test_hybrid_learns_what_comes_next_not_what_came_before():
    """Every user views A, then B, then C of one trio. Trained on what users viewed before
    each listing, a session [B] leads to C; a model that saw whole histories (or pairs out of
    time order) could not tell C from A."""
    rng = np.random.default_rng(0)
    trios, per_trio = 30, 40
    rows = []
    for user in range(trios * per_trio):
        trio = user % trios
        start = int(rng.integers(0, 10_000))
        for step, name in enumerate("ABC"):
            rows.append((f"u{user}", f"{trio:02d}{'CBA'.index(name)}", start + step))
    # rows shuffled: neither the file's order nor the ids' order is the order in time
    events = pd.DataFrame(rows, columns=["user_id", "listing_id", "timestamp"])
    events = events.sample(frac=1.0, random_state=0)
    listings = pd.DataFrame({"listing_id": sorted(events["listing_id"].unique())})
    listings["trio"] = listings["listing_id"].str[:2]
    rec = Recommender(
        model="hybrid",
        user_ids=False,
        negatives_from="catalogue",
        epochs=15,
        batch_size=256,
        validation_fraction=0.0,
        progress=False,
    ).fit(events, listings)
    next_first = 0
    for trio in range(trios):
        results = rec.recommend_session([f"{trio:02d}1"], k=len(listings)).hits
        ranked = [r.listing_id for r in results]
        next_first += ranked.index(f"{trio:02d}0") < ranked.index(f"{trio:02d}2")
    assert next_first >= 0.9 * trios


@pytest.mark.slow
def test_hybrid_history_cache_is_refreshed_at_epochs_and_as_steps_double(blocks, monkeypatch):
    """Histories read cached listing vectors: besides at every epoch, the cache is rebuilt
    whenever the steps taken double from 64, so early steps do not pool an untrained tower."""
    events, listings, _, _ = blocks
    steps, refreshed = [0], []

    def counting_loss(*args, **kwargs):
        steps[0] += 1
        return in_batch_softmax(*args, **kwargs)

    original = HybridTwoTower.refresh

    def recording_refresh(self):
        refreshed.append(steps[0])
        original(self)

    monkeypatch.setattr("embedrec.training.trainer.in_batch_softmax", counting_loss)
    monkeypatch.setattr(HybridTwoTower, "refresh", recording_refresh)
    Recommender(model="hybrid", epochs=3, batch_size=16, validation_fraction=0, progress=False).fit(
        events, listings
    )
    per_epoch = steps[0] // 3
    assert steps[0] == 3 * per_epoch and per_epoch > 64
    epochs = {0, per_epoch, 2 * per_epoch, 3 * per_epoch}
    doublings = [64 << i for i in range(8) if 64 << i <= steps[0]]
    assert sorted(set(refreshed) - epochs) == [s for s in doublings if s not in epochs]
    assert epochs <= set(refreshed) and len(doublings) >= 2
