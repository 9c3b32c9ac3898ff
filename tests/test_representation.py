"""Representation metrics against hand-made cases and scikit-learn's own values."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from latentforge.metrics.representation import cluster_acc, kmeans_scores, linear_probe_acc, representation_scores


def test_cluster_acc_is_invariant_to_relabelling() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    # one of six points in the wrong cluster
    assert abs(cluster_acc(y, np.array([1, 1, 0, 2, 2, 2])) - 5 / 6) < 1e-12


def test_kmeans_finds_separated_blobs_and_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    z = rng.normal(size=(150, 4)) * 0.1 + np.eye(3, 4)[y] * 5
    s = kmeans_scores(z, y)
    assert s["kmeans_acc"] == 1.0 and abs(s["nmi"] - 1.0) < 1e-9 and abs(s["ari"] - 1.0) < 1e-9
    noise = rng.normal(size=(150, 4))
    s = kmeans_scores(noise, y)
    assert s["kmeans_acc"] < 0.6 and s["nmi"] < 0.2
    assert abs(s["ari"]) < 0.1


def test_probe_separates_informative_codes_only() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(2), 200)
    informative = rng.normal(size=(400, 3)) + y[:, None] * 3
    assert linear_probe_acc(informative, y) > 0.95
    assert linear_probe_acc(rng.normal(size=(400, 3)), y) < 0.65


def test_representation_scores_drop_singletons() -> None:
    rng = np.random.default_rng(2)
    y = np.r_[np.repeat([0, 1], 30), 7]  # class 7 has one member: a probe cannot split it
    z = rng.normal(size=(61, 2)) + np.r_[y[:60], 0][:, None]
    out = representation_scores(z, y)
    assert set(out) == {"probe_acc", "kmeans_acc", "nmi", "ari"}
    pred = np.zeros(60, dtype=int)
    assert normalized_mutual_info_score(y[:60], pred) == 0.0 and adjusted_rand_score(y[:60], pred) == 0.0
