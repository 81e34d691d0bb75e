import numpy as np
import pytest
import scipy.sparse as sp

from embedrec.evaluation.baselines import EASE, ItemKNN, Popularity
from embedrec.evaluation.metrics import evaluate_scorer, topk_excluding


def block_matrix(seed: int = 0) -> sp.csr_matrix:
    """40 users x 12 items: users 0-19 use items 0-5, users 20-39 items 6-11 (70% density)."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((40, 12), dtype=np.float32)
    dense[:20, :6] = rng.random((20, 6)) < 0.7
    dense[20:, 6:] = rng.random((20, 6)) < 0.7
    return sp.csr_matrix(dense)


def leave_one_blocks() -> sp.csr_matrix:
    """Like ``block_matrix`` but user u has every item of its block except one, u % 6."""
    dense = np.zeros((40, 12), dtype=np.float32)
    dense[:20, :6] = 1.0
    dense[20:, 6:] = 1.0
    users = np.arange(40)
    dense[users, np.where(users < 20, 0, 6) + users % 6] = 0.0
    return sp.csr_matrix(dense)


def test_popularity_orders_by_count():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 1]], dtype=np.float32))
    model = Popularity().fit(train)
    scores = model.score(np.array([0, 2]))
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    assert scores[0].tolist() == [1.0, 3.0, 0.0, 2.0]
    assert topk_excluding(scores, train[[0, 2]], 2).tolist() == [[3, 2], [0, 2]]


def test_itemknn_cosine_matches_hand_computation():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=np.float32))
    model = ItemKNN(neighbours=5).fit(x)
    # columns 0 = (1,1,1), 1 = (1,0,1), 2 = (0,1,1)
    c01 = 2 / (np.sqrt(3) * np.sqrt(2))
    c12 = 1 / 2
    expected = np.array([[0, c01, c01], [c01, 0, c12], [c01, c12, 0]])
    np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(model.score(np.array([0])), x[[0]] @ expected, rtol=1e-6)


def test_itemknn_shrink_and_pruning():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=np.float32))
    model = ItemKNN(neighbours=1, shrink=1.0).fit(x)
    sim = model.similarity.toarray()
    assert (np.count_nonzero(sim, axis=0) == 1).all()  # one neighbour kept per item
    assert sim[0, 1] == pytest.approx(2 / (np.sqrt(6) + 1))
    assert sim[0, 2] == pytest.approx(2 / (np.sqrt(6) + 1))  # item 2's best neighbour is 0


@pytest.mark.parametrize("block_size", [1, 5, 512])
def test_itemknn_recommends_within_block(block_size):
    x = leave_one_blocks()
    model = ItemKNN(neighbours=3, block_size=block_size).fit(x)
    users = np.arange(40)
    top = topk_excluding(model.score(users), x, 1)[:, 0]
    assert (top == np.where(users < 20, 0, 6) + users % 6).all()


def test_itemknn_similar_excludes_self_and_pads():
    model = ItemKNN(neighbours=3).fit(block_matrix())
    sim = model.similar(np.array([0, 7]), k=5)
    assert sim.shape == (2, 5)
    assert (sim[:, 3:] == -1).all()  # only 3 neighbours stored
    assert set(sim[0, :3]) <= set(range(1, 6))
    assert set(sim[1, :3]) <= {6, 8, 9, 10, 11}
    scores = model.similarity.toarray()[:, 0]
    assert scores[sim[0, 0]] >= scores[sim[0, 1]] >= scores[sim[0, 2]] > 0


def test_ease_equals_direct_numpy():
    x = block_matrix(1)
    l2 = 3.0
    model = EASE(l2=l2).fit(x)
    dense = x.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + l2 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.score(np.arange(3)), dense[:3] @ b, rtol=1e-4, atol=1e-5)


def test_ease_recommends_within_block():
    x = leave_one_blocks()
    model = EASE(l2=1.0).fit(x)
    users = np.arange(40)
    top = topk_excluding(model.score(users), x, 1)[:, 0]
    assert (top == np.where(users < 20, 0, 6) + users % 6).all()


def test_ease_refuses_too_many_items():
    with pytest.raises(ValueError, match="max_items"):
        EASE(max_items=10).fit(sp.csr_matrix((2, 11), dtype=np.float32))


def test_unfitted_model_raises():
    with pytest.raises(RuntimeError, match="fit"):
        ItemKNN().score(np.array([0]))


def test_baselines_beat_popularity_on_blocks():
    x = block_matrix(2).tolil()
    test = sp.lil_matrix(x.shape, dtype=np.float32)
    for u in range(40):  # hold out one item per user, cycling so no item goes cold
        items = x.rows[u]
        if len(items) > 1:
            held = items[u % len(items)]
            test[u, held] = 1.0
            x[u, held] = 0.0
    train = x.tocsr()
    train.eliminate_zeros()
    test = test.tocsr()
    pop = evaluate_scorer(Popularity().fit(train).score, train, test, ks=(3,))
    for model in (ItemKNN(neighbours=5).fit(train), EASE(l2=1.0).fit(train)):
        m = evaluate_scorer(model.score, train, test, ks=(3,))
        assert m["users"] == pop["users"] > 30
        assert m["hitrate@3"] >= pop["hitrate@3"]
        assert m["hitrate@3"] > 0.9
