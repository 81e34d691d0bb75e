import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedrec.evaluation.metrics import evaluate_scorer, ranking_metrics, topk_excluding
from embedrec.ranking import top_k


def csr(rows: list[list[int]], n_items: int = 6) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for u, items in enumerate(rows):
        dense[u, items] = 1.0
    return sp.csr_matrix(dense)


def test_topk_sorted_by_score_with_index_tiebreak():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.0, 0.3]])
    assert topk_excluding(scores, None, 3).tolist() == [[1, 3, 2]]
    assert topk_excluding(scores, None, 2).tolist() == [[1, 3]]


def test_topk_ties_at_the_cut_take_lowest_indices():
    scores = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 6])
    assert topk_excluding(scores, None, 3).tolist() == [[1, 0, 2], [0, 1, 2]]


def test_topk_never_returns_excluded_items():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30))
    exclude = sp.random(50, 30, density=0.3, format="csr", random_state=1)
    exclude.data[:] = 1.0
    top = topk_excluding(scores, exclude, 10)
    excluded = exclude.toarray() > 0
    assert not excluded[np.arange(50)[:, None], top].any()
    # the rest are exactly the best non-excluded items in order
    masked = np.where(excluded, -np.inf, scores)
    assert (top == np.argsort(-masked, axis=1, kind="stable")[:, :10]).all()


def test_topk_equals_a_full_stable_sort_when_most_scores_tie():
    # few distinct scores (as popularity gives) put ties at the cut in most rows
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(40, 200)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.1] = np.nan
    exclude = sp.random(40, 200, density=0.2, format="csr", random_state=2)
    exclude.data[:] = 1.0
    masked = np.where((exclude.toarray() > 0) | np.isnan(scores), -np.inf, scores)
    expected = np.argsort(-masked, axis=1, kind="stable")[:, :15]
    assert (topk_excluding(scores, exclude, 15) == expected).all()


def test_exact_search_ranks_ties_like_the_evaluation():
    # recommend() ranks with top_k; a tie must not be ordered differently there
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    vectors = np.array([[1, 1], [1, 0], [0, 1], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 2], [1, 5])), shape=(3, 6))
    rows, scores = top_k(queries, vectors, 3, exclude)
    assert rows.tolist() == [[0, 3, 5], [0, 2, 4], [0, 1, 2]]
    assert (rows == topk_excluding(queries @ vectors.T, exclude, 3)).all()
    assert scores[2].tolist() == [2.0, 1.0, 1.0]


def test_dot_scores_fill_every_chunk(monkeypatch):
    import embedrec.ranking as ranking

    monkeypatch.setattr(ranking, "DOT_CHUNK", 7)  # 30 vectors: four full chunks and a short one
    rng = np.random.default_rng(8)
    queries = torch.from_numpy(rng.normal(size=(4, 5)).astype(np.float32))
    vectors = torch.from_numpy(rng.normal(size=(30, 5)).astype(np.float32))
    out = torch.full((4, 30), float("nan"))
    assert ranking.dot_scores(queries, vectors, out) is out
    torch.testing.assert_close(out, queries @ vectors.T)


def test_dot_scorer_reuses_one_block_and_adds_the_bias():
    from embedrec.ranking import dot_scorer

    rng = np.random.default_rng(9)
    vectors = torch.from_numpy(rng.normal(size=(12, 3)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(size=12).astype(np.float32))
    queries = torch.from_numpy(rng.normal(size=(5, 3)).astype(np.float32))
    score = dot_scorer(vectors, bias)
    first = score(queries)
    torch.testing.assert_close(first, queries @ vectors.T + bias)
    shorter = score(queries[:2])  # a short last batch: a view of the same block
    assert shorter.data_ptr() == first.data_ptr()
    torch.testing.assert_close(shorter, queries[:2] @ vectors.T + bias)
    torch.testing.assert_close(dot_scorer(vectors)(queries), queries @ vectors.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_topk_of_a_tensor_equals_topk_of_the_array(dtype):
    # a tensor is ranked where it lies (on a GPU during training); the answer must not change
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 6, size=(30, 120)).astype(np.float32)
    if dtype.is_floating_point:
        scores[rng.random(scores.shape) < 0.05] = np.nan
    exclude = sp.random(30, 120, density=0.1, format="csr", random_state=5)
    exclude.data[:] = 1.0
    tensor = torch.from_numpy(scores).to(dtype)
    array = tensor.to(torch.float32).numpy() if dtype == torch.bfloat16 else tensor.numpy()
    before = tensor.clone()
    for candidates in (None, np.arange(0, 120, 3)):
        expected = topk_excluding(array, exclude, 12, candidates)
        assert (topk_excluding(tensor, exclude, 12, candidates) == expected).all()
    torch.testing.assert_close(tensor, before, rtol=0, atol=0, equal_nan=True)  # untouched


def test_topk_pads_with_minus_one():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, np.nan, -np.inf]])
    exclude = csr([[0, 2], []], n_items=3)
    assert topk_excluding(scores, exclude, 5).tolist() == [[1, -1, -1, -1, -1], [0, -1, -1, -1, -1]]


def test_topk_candidates_restrict_ranking():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    exclude = csr([[3]])
    top = topk_excluding(scores, exclude, 3, candidates=np.array([5, 3, 1]))
    assert top.tolist() == [[1, 5, -1]]


def test_topk_rejects_bad_k():
    with pytest.raises(ValueError):
        topk_excluding(np.zeros((1, 3)), None, 0)


# 3 users, 6 items. User 0: relevant {0, 2}, user 1: relevant {5}, user 2: nothing.
TEST = csr([[0, 2], [5], []])
TOPK = np.array(
    [
        [0, 1, 2],  # hits at ranks 1 and 3
        [1, 2, 3],  # no hit
        [4, 5, -1],  # not evaluated: no test items
    ]
)


def test_ranking_metrics_by_hand():
    m = ranking_metrics(TOPK, TEST, ks=(1, 3))
    # k=1: user 0 hits 1 of min(1, 2) = 1; user 1 misses
    assert m["recall@1"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["ndcg@1"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["hitrate@1"] == pytest.approx(0.5)
    assert m["mrr@1"] == pytest.approx(0.5)
    assert m["coverage@1"] == pytest.approx(2 / 6)  # items 0, 1 (user 2 not evaluated)
    # k=3: user 0 hits 2 of 2
    ndcg_u0 = (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert m["recall@3"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["ndcg@3"] == pytest.approx((ndcg_u0 + 0.0) / 2)
    assert m["hitrate@3"] == pytest.approx(0.5)
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["coverage@3"] == pytest.approx(4 / 6)  # items 0, 1, 2, 3


def test_ranking_metrics_standard_errors_by_hand():
    m = ranking_metrics(TOPK, TEST, ks=(1, 3), standard_errors=True)
    plain = ranking_metrics(TOPK, TEST, ks=(1, 3))
    assert {k: v for k, v in m.items() if not k.endswith("_se")} == plain
    # two users scoring 1 and 0: sample standard deviation sqrt(0.5), over sqrt(2) users
    assert m["recall@1_se"] == pytest.approx(0.5)
    assert m["hitrate@3_se"] == pytest.approx(0.5)
    ndcg_u0 = (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert m["ndcg@3_se"] == pytest.approx(np.std([ndcg_u0, 0.0], ddof=1) / math.sqrt(2))
    assert "coverage@3_se" not in m
    one_user = ranking_metrics(np.array([[4, 0]]), csr([[4]]), ks=(2,), standard_errors=True)
    assert one_user["recall@2"] == 1.0 and math.isnan(one_user["recall@2_se"])
    nobody = ranking_metrics(np.zeros((1, 2), int), csr([[]]), ks=(2,), standard_errors=True)
    assert math.isnan(nobody["mrr@2_se"]) and math.isnan(nobody["coverage@2"])


def test_ranking_metrics_single_test_item_late_hit():
    test = csr([[4]])
    m = ranking_metrics(np.array([[0, 1, 4]]), test, ks=(2, 3), n_items=10)
    assert m["recall@2"] == 0.0 and m["mrr@2"] == 0.0 and m["ndcg@2"] == 0.0
    assert m["recall@3"] == 1.0
    assert m["hitrate@3"] == 1.0
    assert m["mrr@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(4)) / 1.0)
    assert m["coverage@3"] == pytest.approx(3 / 10)


def test_ranking_metrics_recall_denominator_is_min_k_and_test_size():
    test = csr([[0, 1, 2, 3, 4]])
    m = ranking_metrics(np.array([[0, 5]]), test, ks=(2,))
    assert m["recall@2"] == pytest.approx(1 / 2)
    assert m["ndcg@2"] == pytest.approx(1.0 / (1.0 + 1 / math.log2(3)))


def test_ranking_metrics_padding_is_never_a_hit():
    m = ranking_metrics(np.array([[-1, -1]]), csr([[5]]), ks=(2,))
    assert m["recall@2"] == 0.0 and m["coverage@2"] == 0.0


def test_ranking_metrics_no_users_is_nan_and_short_topk_raises():
    assert math.isnan(ranking_metrics(np.zeros((1, 2), int), csr([[]]), ks=(2,))["recall@2"])
    with pytest.raises(ValueError):
        ranking_metrics(TOPK, TEST, ks=(10,))


def test_evaluate_scorer_excludes_train_and_batches():
    train = csr([[1], [0, 1], [2]])
    test = csr([[0, 2], [5], []])
    item_scores = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    seen = []

    def score_fn(users: np.ndarray) -> np.ndarray:
        seen.append(users.tolist())
        return np.tile(item_scores, (len(users), 1))

    m = evaluate_scorer(score_fn, train, test, ks=(2,), batch_size=1)
    assert seen == [[0], [1]]  # user 2 has no test items
    assert m["users"] == 2
    # user 0 gets [0, 2] (1 excluded): 2 hits; user 1 gets [2, 3]: none
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(3 / 6)
    with_se = evaluate_scorer(score_fn, train, test, ks=(2,), standard_errors=True)
    assert with_se["recall@2"] == m["recall@2"] and with_se["recall@2_se"] == pytest.approx(0.5)


def test_evaluate_scorer_batches_users_to_bound_memory(monkeypatch):
    import embedrec.evaluation.metrics as metrics

    n_users, n_items = 100, 50
    test = sp.csr_matrix(np.ones((n_users, n_items), dtype=np.float32))
    sizes = []

    def score_fn(users: np.ndarray) -> np.ndarray:
        sizes.append(len(users))
        return np.zeros((len(users), n_items), dtype=np.float32)

    monkeypatch.setattr(metrics, "SCORES_PER_BATCH", 20 * n_items)
    evaluate_scorer(score_fn, sp.csr_matrix((n_users, n_items)), test, ks=(1,))
    assert sizes == [20] * 5  # 20 users' scores fit the budget
    monkeypatch.setattr(metrics, "SCORES_PER_BATCH", n_items)
    sizes.clear()
    evaluate_scorer(score_fn, sp.csr_matrix((n_users, n_items)), test, ks=(1,))
    assert sizes == [16] * 6 + [4]  # never fewer than 16 users a batch
    sizes.clear()  # a caller's own budget, as the training's validation gives
    evaluate_scorer(
        score_fn, sp.csr_matrix((n_users, n_items)), test, ks=(1,), scores_per_batch=50 * n_items
    )
    assert sizes == [50, 50]
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_scorer(score_fn, sp.csr_matrix((n_users, n_items)), test, batch_size=0)


def test_evaluate_scorer_candidates_restrict_ranking_and_relevance():
    train = csr([[], []])
    test = csr([[0, 4], [1]])
    m = evaluate_scorer(
        lambda u: np.tile(np.arange(6.0), (len(u), 1)), train, test, ks=(1,), candidates=[3, 4]
    )
    # user 1's only test item is outside the candidates; user 0 ranks [4, 3]
    assert m["users"] == 1
    assert m["recall@1"] == 1.0
    assert m["coverage@1"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([3, 6], r"in \[0, 6\), got 6"),
        ([-1, 2], r"in \[0, 6\), got -1"),
        (np.arange(6) < 3, r"np.flatnonzero\(mask\)"),
        ([0.5, 2.0], "dtype float64"),
    ],
)
def test_evaluate_scorer_refuses_candidates_that_are_no_item_indices(candidates, message):
    # before: 6 was an IndexError from inside, -1 the last item, a mask items 0 and 1, and
    # 0.5 item 0, each evaluated silently
    test = csr([[0, 4], [5]])
    with pytest.raises(ValueError, match=message):
        evaluate_scorer(
            lambda u: np.zeros((len(u), 6)), csr([[], []]), test, ks=(1,), candidates=candidates
        )


def test_evaluate_scorer_drops_test_items_already_in_train():
    train = csr([[0]])
    test = csr([[0, 1]])
    m = evaluate_scorer(lambda u: np.tile(-np.arange(6.0), (len(u), 1)), train, test, ks=(1,))
    assert m["recall@1"] == 1.0  # item 0 cannot be recommended, so only item 1 is relevant


def test_evaluate_scorer_ranks_and_judges_the_same_training_items():
    # a weighted training matrix: item 1 stored as 0 (no interaction), item 2 disliked (-1)
    train = sp.csr_matrix(([0.0, -1.0], ([0, 0], [1, 2])), shape=(1, 6))
    test = csr([[1, 2, 3]])
    scores = np.array([[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    m = evaluate_scorer(lambda u: scores[u], train, test, ks=(1, 2))
    # item 2 is a training item: neither ranked nor relevant; item 1 is ranked and relevant.
    # Before, both left the ranking but stayed relevant: recall@2 was 1/2
    assert m["recall@1"] == 1.0 and m["recall@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1.0)


def test_evaluate_scorer_takes_tensors():
    train = csr([[1], [0, 1], [2]])
    test = csr([[0, 2], [5], []])
    scores = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    as_array = evaluate_scorer(lambda u: np.tile(scores, (len(u), 1)), train, test, ks=(2,))
    as_tensor = evaluate_scorer(
        lambda u: torch.from_numpy(np.tile(scores, (len(u), 1))), train, test, ks=(2,)
    )
    assert as_tensor == as_array


@pytest.mark.parametrize("as_tensor", [False, True])
def test_evaluate_scorer_with_a_scorer_that_reuses_its_block(as_tensor):
    # the trainer's validation writes every batch into one block; the ranking works on its
    # own reused copy, so the scorer's block is never changed and a short last batch is right
    rng = np.random.default_rng(5)
    n_users, n_items = 23, 40
    item_scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train = sp.random(n_users, n_items, density=0.2, format="csr", random_state=6)
    test = sp.random(n_users, n_items, density=0.2, format="csr", random_state=7)
    block = np.empty((5, n_items), dtype=np.float32)
    written = []

    def reusing(users: np.ndarray) -> np.ndarray | torch.Tensor:
        out = block[: len(users)]
        out[...] = item_scores[users]
        written.append(out.copy())
        return torch.from_numpy(out) if as_tensor else out

    fresh = evaluate_scorer(lambda u: item_scores[u].copy(), train, test, batch_size=5)
    assert evaluate_scorer(reusing, train, test, batch_size=5) == fresh
    assert (block[: len(written[-1])] == written[-1]).all()  # ranked a copy, not the block


def test_evaluate_scorer_may_rank_the_scorers_own_block():
    # the trainer's validation lets the ranking overwrite its scorer's block: the same
    # metrics without a second block of scores in memory
    rng = np.random.default_rng(8)
    n_users, n_items = 23, 40
    item_scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train = sp.random(n_users, n_items, density=0.2, format="csr", random_state=9)
    test = sp.random(n_users, n_items, density=0.2, format="csr", random_state=10)
    block = torch.empty((5, n_items))

    def reusing(users: np.ndarray) -> torch.Tensor:
        block[: len(users)] = torch.from_numpy(item_scores[users])
        return block[: len(users)]

    fresh = evaluate_scorer(lambda u: item_scores[u].copy(), train, test, batch_size=5)
    assert evaluate_scorer(reusing, train, test, batch_size=5, overwrite_scores=True) == fresh
    assert torch.isinf(block).any()  # the training items were ranked out in the block itself


def test_evaluate_scorer_checks_score_shape():
    with pytest.raises(ValueError, match="score_fn"):
        evaluate_scorer(lambda u: np.zeros((len(u), 3)), csr([[]]), csr([[1]]), ks=(1,))
