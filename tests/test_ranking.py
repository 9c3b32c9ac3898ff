"""Ranking metrics against rankings worked out by hand (Liang et al. 2018 definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from latentforge.metrics.ranking import evaluate_ranking, ndcg_at_k, recall_at_k, top_k

# one row of scores ranks the items 0, 2, 4, 3, 1
SCORES = np.array([[0.9, 0.1, 0.8, 0.3, 0.5]] * 3)
HELD = np.array([[0, 0, 1, 1, 0],   # held-out items 2 (rank 2) and 3 (rank 4)
                 [0, 1, 0, 0, 0],   # held-out item 1 (rank 5)
                 [0, 0, 0, 0, 0]])  # nothing held out: undefined


def test_top_k_orders_best_first() -> None:
    assert top_k(SCORES, 3)[0].tolist() == [0, 2, 4]
    assert top_k(SCORES, 10).shape == (3, 5)  # k larger than the catalogue: all items


def test_recall_by_hand() -> None:
    r2 = recall_at_k(SCORES, HELD, 2)
    assert r2[0] == pytest.approx(0.5) and r2[1] == 0.0 and math.isnan(r2[2])
    assert recall_at_k(SCORES, HELD, 3)[0] == pytest.approx(0.5)  # 1 hit / min(3, 2)
    assert recall_at_k(SCORES, HELD, 4)[0] == pytest.approx(1.0)  # both in the top 4
    assert recall_at_k(SCORES, HELD, 5)[1] == pytest.approx(1.0)  # 1 hit / min(5, 1)


def test_ndcg_by_hand() -> None:
    idcg2 = 1 + 1 / math.log2(3)
    n3 = ndcg_at_k(SCORES, HELD, 3)
    assert n3[0] == pytest.approx((1 / math.log2(3)) / idcg2)
    assert n3[1] == 0.0 and math.isnan(n3[2])
    n5 = ndcg_at_k(SCORES, HELD, 5)
    assert n5[0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg2)
    assert n5[1] == pytest.approx(1 / math.log2(6))
    perfect = np.array([[0.1, 0.2, 0.9, 0.8, 0.0]])
    assert ndcg_at_k(perfect, HELD[:1], 100)[0] == pytest.approx(1.0)


def test_sparse_and_dense_heldout_agree() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((20, 50))
    held = (rng.random((20, 50)) < 0.1).astype(np.float32)
    for fn in (recall_at_k, ndcg_at_k):
        np.testing.assert_allclose(fn(scores, held, 10), fn(scores, sp.csr_matrix(held), 10), equal_nan=True)


def test_evaluate_ranking_never_ranks_fold_in_items() -> None:
    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0]], np.float32))  # item 0 is already the user's
    held = sp.csr_matrix(np.array([[0, 0, 1, 0, 0]], np.float32))
    out = evaluate_ranking(lambda x: SCORES[:1], fold_in, held, metrics=("recall@1", "ndcg@100"), batch_size=1)
    assert out["recall@1"] == pytest.approx(1.0)  # item 2 moves up to first once item 0 is excluded
    assert out["ndcg@100"] == pytest.approx(1.0) and out["eval_users"] == 1


def test_evaluate_ranking_per_user_values_average_to_the_mean() -> None:
    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0]], np.float32))
    held = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], np.float32))
    score = lambda x: np.tile(SCORES[:1], (len(x), 1))  # noqa: E731
    per = evaluate_ranking(score, fold_in, held, metrics=("ndcg@2",), batch_size=2, per_user=True)["ndcg@2"]
    # user 0: item 0 excluded, so its held-out item 2 ranks first; user 1: item 4 excluded, item 2
    # second after item 0; user 2 has nothing held out (NaN, left out of the mean)
    assert per.shape == (3,) and np.isnan(per[2]) and per[0] == pytest.approx(1.0)
    assert per[1] == pytest.approx(1 / math.log2(3))
    mean = evaluate_ranking(score, fold_in, held, metrics=("ndcg@2",))["ndcg@2"]
    assert np.nanmean(per) == pytest.approx(mean)
