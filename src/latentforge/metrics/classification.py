"""How well predicted class probabilities match labels: accuracy and ROC AUC (binary: the positive class's
probability; more classes: one-vs-rest, macro-averaged, as MedMNIST v2 reports it)."""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC of class probabilities ``proba`` (n, K) for labels ``y`` in 0..K−1; NaN when ``y`` holds one class."""
    from sklearn.metrics import roc_auc_score

    y, proba = np.asarray(y).reshape(-1), np.asarray(proba, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    present = np.unique(y)
    if len(present) < proba.shape[1]:  # one-vs-rest is defined only for the classes that occur
        p = proba[:, present] / proba[:, present].sum(1, keepdims=True)
        return float(roc_auc_score(np.searchsorted(present, y), p, multi_class="ovr", average="macro"))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def classification_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``{"acc", "auc"}`` of probabilities ``proba`` (n, K) against labels ``y`` in 0..K−1."""
    y, proba = np.asarray(y).reshape(-1), np.asarray(proba)
    if proba.ndim != 2 or len(proba) != len(y) or len(y) == 0:
        raise ValueError(f"need one row of class probabilities per label, got {proba.shape} for {len(y)} labels")
    return {"acc": float(np.mean(proba.argmax(1) == y)), "auc": roc_auc(y, proba)}
