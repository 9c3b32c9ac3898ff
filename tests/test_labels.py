"""Label budgets: reproducible, stratified, and a clear error when a class is too small."""

from __future__ import annotations

import numpy as np
import pytest

from latentforge.data import Dataset, label_budget, split_by_budget
from latentforge.errors import UserError


def labels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice([0, 1, 2], size=300, p=[0.6, 0.3, 0.1])


def test_budget_is_stratified_sorted_and_int64() -> None:
    y = labels()
    idx = label_budget(y, 7, seed=3)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [7, 7, 7]


def test_budget_is_reproducible_and_depends_on_seed() -> None:
    y = labels()
    assert np.array_equal(label_budget(y, 5, seed=1), label_budget(y.copy(), 5, seed=1))
    assert not np.array_equal(label_budget(y, 5, seed=1), label_budget(y, 5, seed=2))


def test_budget_accepts_medmnist_column_labels() -> None:
    y = labels()
    assert np.array_equal(label_budget(y[:, None], 4, seed=0), label_budget(y, 4, seed=0))


def test_too_small_class_names_it_and_the_fix() -> None:
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(UserError, match=r"class 1 has 3 rows.*at most 3"):
        label_budget(y, 5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_budget_is_refused(bad) -> None:
    with pytest.raises(UserError, match="positive whole number"):
        label_budget(labels(), bad)


def test_split_by_budget_partitions_the_rows() -> None:
    y = labels()
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1).repeat(2, axis=1)
    lab, unl = split_by_budget(Dataset(x=x, y=y), 6, seed=0)
    assert len(lab) == 18 and len(unl) == len(y) - 18 and unl.y is None
    seen = np.concatenate([lab.x[:, 0], unl.x[:, 0]])
    assert sorted(seen.tolist()) == x[:, 0].tolist()


def test_split_by_budget_needs_labels() -> None:
    with pytest.raises(UserError, match="needs labelled data"):
        split_by_budget(Dataset(x=np.zeros((4, 2), np.float32)), 1)


def test_generate_task_trains_on_the_budget_and_keeps_the_test_split() -> None:
    from latentforge.data.labels import LabelBudget
    from latentforge.models import model_class
    from latentforge.tasks import RunOptions, get_task, run_splits

    task = get_task("generate")
    full = task.load("digits", {}, RunOptions())
    cut = task.load("digits", {"labels_per_class": 5, "label_seed": 2}, RunOptions())
    assert len(cut.train) == 50 and np.bincount(cut.train.y).tolist() == [5] * 10
    assert np.array_equal(cut.test.x, full.test.x) and np.array_equal(cut.test.y, full.test.y)
    assert isinstance(cut.extras, LabelBudget) and len(cut.extras.unlabelled) == len(full.train) - 50
    # a saved run reads the same rows back (config.json's data_options)
    again = run_splits({"model": "cvae", "data": "digits", "data_options": {"labels_per_class": 5, "label_seed": 2}})
    assert np.array_equal(again.train.x, cut.train.x)
    assert task.model_settings(model_class("cvae"), cut, {}, RunOptions())["n_classes"] == 10
    with pytest.raises(UserError, match="vae ignores labels"):
        task.model_settings(model_class("vae"), cut, {}, RunOptions())


def test_cli_label_flags_are_checked() -> None:
    from conftest import lf

    r = lf("train", "cvae", "--data", "digits", "--label-seed", "3", "--epochs", "1")
    assert r.returncode == 2 and "give --labels-per-class N too" in r.stderr
    r = lf("train", "cvae", "--data", "digits", "--labels-per-class", "500", "--epochs", "1")
    assert r.returncode == 2 and "lower --labels-per-class to at most" in r.stderr
    r = lf("train", "deep-svdd", "--data", "digits", "--labels-per-class", "5", "--epochs", "1")
    assert r.returncode == 2 and "apply to the generate task's data" in r.stderr and "anomaly task" in r.stderr
