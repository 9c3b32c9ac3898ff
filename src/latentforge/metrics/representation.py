"""How much class structure the codes carry, without training on labels: a linear probe
(logistic regression on a fixed split) and k-means clustering scored by ACC, NMI and ARI."""

from __future__ import annotations

import numpy as np


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Clustering accuracy under the best one-to-one cluster→class matching (Hungarian method)."""
    from scipy.optimize import linear_sum_assignment

    classes, yt = np.unique(y_true, return_inverse=True)
    clusters, yp = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(counts, (yp, yt), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Clusters against labels: ACC (Hungarian matching), NMI and ARI."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need one cluster per label, got {len(y_pred)} clusters for {len(y_true)} labels")
    return {"acc": cluster_acc(y_true, y_pred), "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
            "ari": float(adjusted_rand_score(y_true, y_pred))}


def kmeans_scores(z: np.ndarray, y: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """k-means with k = number of classes on standardised codes: ACC, NMI, ARI."""
    from sklearn.cluster import KMeans

    zs = (z - z.mean(0)) / (z.std(0) + 1e-8)
    pred = KMeans(n_clusters=len(np.unique(y)), n_init=10, random_state=seed).fit_predict(zs)
    s = clustering_scores(y, pred)
    return {"kmeans_acc": s["acc"], "nmi": s["nmi"], "ari": s["ari"]}


def linear_probe_acc(z: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Test accuracy of a logistic regression on the codes; fixed stratified 50/50 split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z_tr, z_te, y_tr, y_te = train_test_split(z, y, test_size=0.5, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(clf.fit(z_tr, y_tr).score(z_te, y_te))


def representation_scores(z: np.ndarray, y: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """All representation metrics for codes z with labels y (classes with < 2 members are dropped)."""
    classes, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, classes[counts >= 2])
    z, y = z[keep], y[keep]
    if len(np.unique(y)) < 2:
        return {}
    return {"probe_acc": linear_probe_acc(z, y, seed=seed), **kmeans_scores(z, y, seed=seed)}
