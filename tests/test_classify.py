"""Semi-supervised classification with few labels (M1): ``latentforge classify``, ``tasks.classify`` and the
``SemiSupervisedClassifier`` estimator, on a tiny VAE fitted to BreastMNIST for one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import BaseEstimator
from conftest import require_data

from latentforge.checkpoint import save_model
from latentforge.cli import main
from latentforge.data.labels import label_budget
from latentforge.errors import UserError
from latentforge.metrics.classification import classification_scores
from latentforge.models import build_model
from latentforge.run import load_run
from latentforge.tasks.classify import C_GRID, check_encoder, classify, labelled_splits, select_C


@pytest.fixture(scope="module")
def breast() -> Path:
    return require_data("medmnist", "breastmnist.npz")


@pytest.fixture(scope="module")
def vae_run(breast: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("classify") / "vae"
    assert main(["train", "vae", "--data", "breastmnist", "--epochs", "1", "--latent-dim", "8", "--eval-k", "0",
                 "--out", str(run)]) == 0
    return run


def lf(capsys, *args: str) -> tuple[int, str, str]:
    """``latentforge ARGS`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_cli_reports_scores_and_writes_one_prediction_per_test_row(vae_run: Path, breast: Path,
                                                                           tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred.csv"
    code, stdout, err = lf(capsys, "classify", str(vae_run), "--data", "breastmnist", "--labels-per-class", "10",
                           "--label-seed", "3", "--out", str(pred), "--json")
    assert code == 0, err
    out = json.loads(stdout)
    assert out["labelled"] == 20 and out["label_seed"] == 3 and out["C"] in C_GRID
    assert 0 <= out["test"]["acc"] <= 1 and 0 <= out["test"]["auc"] <= 1
    assert out["validation"] is not None  # MedMNIST's val split chose C
    frame = pd.read_csv(pred)
    y_test = np.load(breast)["test_labels"].reshape(-1)
    assert list(frame.columns) == ["index", "label", "prediction", "p0", "p1"]
    assert len(frame) == len(y_test) and np.array_equal(frame["label"], y_test)
    probs = frame[["p0", "p1"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(frame["prediction"], probs.argmax(1))
    assert out["test"]["acc"] == pytest.approx(np.mean(probs.argmax(1) == y_test), abs=1e-9)


def test_the_labelled_rows_are_the_budget_and_reproducible(vae_run: Path) -> None:
    model, _ = load_run(vae_run)
    splits = labelled_splits("breastmnist")
    first = classify(model, splits, labels_per_class=10, label_seed=3)
    again = classify(model, splits, labels_per_class=10, label_seed=3)
    other = classify(model, splits, labels_per_class=10, label_seed=4)
    assert np.array_equal(first.labelled, label_budget(splits.train.y, 10, seed=3))
    assert np.array_equal(first.labelled, again.labelled) and np.allclose(first.proba, again.proba)
    assert not np.array_equal(first.labelled, other.labelled)
    assert first.proba.shape == (len(splits.test), 2)


@pytest.mark.parametrize("args, message", [
    (["--labels-per-class", "1000"], "at most"),
    (["--labels-per-class", "0"], "at least 1"),
])
def test_bad_budgets_are_one_line_errors(vae_run: Path, args: list[str], message: str, capsys) -> None:
    code, _, err = lf(capsys, "classify", str(vae_run), "--data", "breastmnist", *args)
    assert code == 2 and message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_data_without_labels_is_refused(vae_run: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.zeros((30, 28, 28), np.uint8))
    code, _, err = lf(capsys, "classify", str(vae_run), "--data", str(path), "--labels-per-class", "2")
    assert code == 2 and "no labels" in err


def test_a_run_without_an_encoder_is_refused(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    save_model(build_model("dcgan", input_shape=[1, 28, 28]), tmp_path / "gan")
    code, _, err = lf(capsys, "classify", str(tmp_path / "gan"), "--data", "breastmnist")
    assert code == 2 and "has no encoder" in err
    with pytest.raises(UserError, match="conditional"):
        check_encoder(build_model("cvae", input_shape=[1, 28, 28], n_classes=2))


def test_scores_match_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1])
    right = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    assert classification_scores(y, right) == {"acc": 1.0, "auc": 1.0}
    assert classification_scores(y, right[:, ::-1]) == {"acc": 0.0, "auc": 0.0}
    three = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    assert classification_scores(np.array([0, 1, 2, 1]), three)["acc"] == 0.75


def test_C_is_chosen_on_the_validation_split() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 20)), np.repeat([0, 1], 15)
    x[:, 0] += 1.5 * y  # one informative feature, 19 of noise
    xv, yv = rng.normal(size=(300, 20)), np.repeat([0, 1], 150)
    xv[:, 0] += 1.5 * yv
    # the two Cs rank the validation rows differently (AUC 0.77 vs 0.81): the choice follows the validation labels
    assert select_C(x, y, x_val=xv, y_val=yv, Cs=(1e-3, 1.0)) == 1.0
    assert select_C(x, y, x_val=xv, y_val=1 - yv, Cs=(1e-3, 1.0)) == 1e-3
    assert select_C(x, y, Cs=(1e-3, 1.0)) in (1e-3, 1.0)  # no validation split: cross-validation on (x, y)


class Recorder(BaseEstimator):
    """An encoder that keeps how many rows it was fitted on; its codes are every 50th pixel."""

    def fit(self, X):
        self.n_fit_ = len(X)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float64).reshape(len(X), -1)[:, ::50]


def test_estimator_fits_the_encoder_on_all_rows_and_the_classifier_on_the_labelled(breast: Path) -> None:
    from latentforge import VAE, SemiSupervisedClassifier

    z = np.load(breast)
    x, y = z["train_images"][:200], z["train_labels"][:200].reshape(-1)
    idx = label_budget(y, 8, seed=0)
    y_semi = np.full(len(y), -1)
    y_semi[idx] = y[idx]
    counted = SemiSupervisedClassifier(Recorder()).fit(x, y_semi)
    assert counted.encoder_.n_fit_ == 200 and counted.n_labelled_ == 16
    assert not hasattr(counted.encoder, "n_fit_")  # the given encoder is cloned, not fitted in place
    encoder = VAE(latent_dim=4, hidden=(32,), arch="mlp", epochs=1, random_state=0, device="cpu")
    clf = SemiSupervisedClassifier(encoder, random_state=0).fit(x, y_semi, X_val=z["val_images"],
                                                                y_val=z["val_labels"])
    assert list(clf.classes_) == [0, 1] and clf.C_ in C_GRID
    proba = clf.predict_proba(z["test_images"])
    assert proba.shape == (len(z["test_images"]), 2) and np.allclose(proba.sum(1), 1)
    assert 0 <= clf.score(z["test_images"], z["test_labels"].reshape(-1)) <= 1
    assert clf.transform(x[:5]).shape == (5, 4)
    with pytest.raises(UserError, match="at least 2 classes"):
        SemiSupervisedClassifier(encoder).fit(x, np.full(len(y), -1))
    with pytest.raises(UserError, match="both X_val and y_val"):
        SemiSupervisedClassifier(encoder).fit(x, y_semi, X_val=z["val_images"])


def test_a_binarized_run_classifies_bernoulli_samples_as_it_was_trained(tmp_path: Path, capsys, monkeypatch) -> None:
    from latentforge.tasks import classify as classify_module
    from latentforge.tasks.classify import binarized_as_trained

    splits = labelled_splits("digits")
    same = binarized_as_trained(splits, None, 0)
    assert same is splits
    once, again = binarized_as_trained(splits, "dynamic", 3), binarized_as_trained(splits, "dynamic", 3)
    for a, b, grey in ((once.train, again.train, splits.train), (once.test, again.test, splits.test)):
        assert set(np.unique(a.x)) <= {0, 1} and a.x.shape == grey.x.shape and np.array_equal(a.y, grey.y)
        assert np.array_equal(a.x, b.x)  # one fixed draw per seed
        # a pixel is 1 about as often as its grey level says
        assert abs(a.x.mean() - grey.floats().mean()) < 0.01
    assert not np.array_equal(once.train.x, binarized_as_trained(splits, "static", 4).train.x)

    run = tmp_path / "bin"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--latent-dim", "4", "--eval-k", "0",
                 "--binarize", "static", "--seed", "5", "--out", str(run)]) == 0
    seen = []
    real = classify_module.classify
    monkeypatch.setattr(classify_module, "classify", lambda model, sp, **kw: seen.append(sp) or real(model, sp, **kw))
    code, stdout, err = lf(capsys, "classify", str(run), "--json")
    assert code == 0, err
    (used,) = seen
    assert set(np.unique(used.test.x)) <= {0, 1}
    assert np.array_equal(used.test.x, binarized_as_trained(labelled_splits("digits"), "static", 5).test.x)
    assert 0 <= json.loads(stdout)["test"]["acc"] <= 1
