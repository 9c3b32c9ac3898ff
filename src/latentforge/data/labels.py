"""Label budgets: a reproducible, stratified labelled subset of a training set (the rest is unlabelled).

Scarce labels are simulated the way semi-supervised papers do (Kingma et al. 2014,
https://arxiv.org/abs/1406.5298): keep ``per_class`` labelled rows of every class, drawn with a fixed seed,
and treat the remaining rows as unlabelled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .dataset import Dataset, Splits


def label_budget(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted int64 row indices of ``per_class`` rows drawn from each class of ``y``.

    The draw depends only on ``y``, ``per_class`` and ``seed`` (the same call gives the same rows); a class
    with fewer than ``per_class`` rows is an error rather than a silently unbalanced budget.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise UserError(f"labels per class must be a positive whole number, got {per_class!r}")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # MedMNIST stores labels as (n, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"labels must be one per row, shape (n,) or (n, 1); got shape {y.shape}")
    if len(y) == 0:
        raise UserError("no labelled rows to draw a label budget from")
    classes, counts = np.unique(y, return_counts=True)
    short = [f"{c!r} has {k}" for c, k in zip(classes.tolist(), counts.tolist()) if k < per_class]
    if short:
        raise UserError(f"{per_class} labels per class asked, but class {', class '.join(short)} rows; "
                        f"lower --labels-per-class to at most {int(counts.min())}")
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def split_by_budget(ds: Dataset, per_class: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """``ds`` as (labelled subset of ``per_class`` rows per class, the other rows as unlabelled data)."""
    if ds.y is None:
        raise UserError(f"{ds.name}: a label budget needs labelled data; this set has no labels")
    picked = label_budget(ds.y, per_class, seed)
    rest = np.setdiff1d(np.arange(len(ds)), picked)
    unlabelled = ds.subset(rest)
    unlabelled.y = None
    return ds.subset(picked), unlabelled


@dataclass(frozen=True)
class LabelBudget:
    """What a label budget left out of a training split: the rows whose labels are withheld (``unlabelled``, no
    ``y``), and the budget itself, as ``Splits.extras``."""

    per_class: int
    seed: int
    unlabelled: Dataset


def budget_splits(splits: Splits, per_class: int, seed: int = 0) -> Splits:
    """``splits`` with the training split cut to ``per_class`` labelled rows per class; the test and validation
    splits untouched, the other training rows in ``extras`` (:class:`LabelBudget`)."""
    if splits.train.streamed:
        raise UserError(f"--labels-per-class selects rows in memory, and {splits.name} is streamed from disk; "
                        "read the data into memory with --stream off")
    labelled, unlabelled = split_by_budget(splits.train, per_class, seed)
    return Splits(train=labelled, test=splits.test, name=splits.name, validation=splits.validation,
                  extras=LabelBudget(per_class, seed, unlabelled))
