"""Ranking metrics for top-K recommendation, as defined by Liang et al. 2018 (arXiv:1802.05814, §4.2).

Recall@K = |top-K ∩ held-out| / min(K, |held-out|) (the denominator keeps it in [0, 1] and reachable);
NDCG@K = DCG@K / IDCG@K with gain 1/log2(rank + 1). Everything is vectorised over users: one
``argpartition`` per batch of score rows, no per-user Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest scores, best first; shape ``(n, min(k, n_items))``."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _relevance(heldout, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is each ranked item held out? (n, k) bool, number of held-out items per user (n,))."""
    if sp.issparse(heldout):
        heldout = heldout.tocsr()
        n_rel = np.diff(heldout.indptr)
        rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
        hit = np.asarray(heldout[rows, ranked.ravel()]).reshape(ranked.shape) > 0
        return hit, n_rel
    heldout = np.asarray(heldout) > 0
    return np.take_along_axis(heldout, ranked, 1), heldout.sum(1)


def recall_at_k(scores: np.ndarray, heldout, k: int) -> np.ndarray:
    """Per-user Recall@K (NaN for users without held-out items)."""
    hit, n_rel = _relevance(heldout, top_k(scores, k))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, hit.sum(1) / np.minimum(k, n_rel), np.nan)


def ndcg_at_k(scores: np.ndarray, heldout, k: int) -> np.ndarray:
    """Per-user NDCG@K with binary relevance (NaN for users without held-out items)."""
    hit, n_rel = _relevance(heldout, top_k(scores, k))
    gains = 1.0 / np.log2(np.arange(2, hit.shape[1] + 2))
    dcg = (hit * gains).sum(1)
    ideal = np.concatenate([[0.0], np.cumsum(gains)])[np.minimum(n_rel, hit.shape[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, dcg / ideal, np.nan)


METRICS = {"recall": recall_at_k, "ndcg": ndcg_at_k}
DEFAULT = ("recall@20", "recall@50", "ndcg@100")


def evaluate_ranking(score_fn: Callable[[np.ndarray], np.ndarray], fold_in: sp.csr_matrix, heldout: sp.csr_matrix,
                     *, metrics: Sequence[str] = DEFAULT, batch_size: int = 1000, per_user: bool = False) -> dict:
    """Mean of each metric (``"recall@20"``, ``"ndcg@100"``, …) over users with held-out items.

    ``score_fn`` maps dense fold-in rows (float32, ``(n, n_items)``) to scores; items a user already
    has are never ranked (their score becomes −inf), as in the paper's protocol. ``per_user=True``
    gives each metric's per-user values instead (NaN for users without held-out items), for paired
    comparisons of two recommenders on the same users.
    """
    fold_in, heldout = fold_in.tocsr(), heldout.tocsr()
    parsed = [(m, METRICS[m.split("@")[0]], int(m.split("@")[1])) for m in metrics]
    per: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for start in range(0, fold_in.shape[0], batch_size):
        x = fold_in[start : start + batch_size]
        dense = x.astype(np.float32).toarray()
        scores = np.array(score_fn(dense), dtype=np.float32, copy=True)
        scores[dense > 0] = -np.inf
        out = heldout[start : start + batch_size]
        for name, fn, k in parsed:
            per[name].append(fn(scores, out, k))
    if per_user:
        return {m: np.concatenate(v) for m, v in per.items()}
    result = {m: float(np.nanmean(np.concatenate(v))) for m, v in per.items()}
    result["eval_users"] = int((np.diff(heldout.indptr) > 0).sum())
    return result
