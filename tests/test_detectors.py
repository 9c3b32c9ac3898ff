"""Anomaly detectors: PyOD's contract, thresholds without a guessed contamination, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_data
from sklearn.metrics import roc_auc_score

from latentforge.detectors import AEDetector, DeepSVDD, EnsembleDetector
from latentforge.errors import UserError
from latentforge.tasks.anomaly import parse_threshold, threshold_from
from latentforge.tasks.scoring import fpr_rows_needed, fpr_threshold


def blob_with_outliers(seed: int = 0, n: int = 600, n_out: int = 30):
    """A correlated Gaussian blob (normal) and points far from it (anomalies), plus a constant column."""
    a = np.random.default_rng(42).normal(size=(6, 6))  # one distribution; seed picks the sample
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n, 6)) @ a
    far = rng.normal(size=(n_out, 6)) @ a + rng.choice([-1, 1], size=(n_out, 6)) * 20
    x = np.vstack([normal, far])
    x = np.hstack([x, np.full((len(x), 1), 2.5)])
    y = np.r_[np.zeros(n), np.ones(n_out)].astype(int)
    return x.astype(np.float32), y


FAST = dict(epochs=15, random_state=0, device="cpu")


@pytest.mark.parametrize("make,n_out", [(lambda: DeepSVDD(**FAST), 0), (lambda: DeepSVDD(objective="soft-boundary", **FAST), 0),
                                        (lambda: AEDetector(kind="vae", **FAST), 30), (lambda: AEDetector(kind="ae", **FAST), 30),
                                        (lambda: AEDetector(kind="dae", **FAST), 30)],
                         ids=["deep-svdd", "deep-svdd-soft", "vae", "ae", "dae"])
def test_known_anomalies_rank_first(make, n_out: int) -> None:
    """Deep SVDD is one-class (the paper fits clean data); the autoencoders also cope with 5 % contamination."""
    x, y = blob_with_outliers(n_out=n_out)
    det = make().fit(x)
    xt, yt = blob_with_outliers(seed=1)
    s = det.decision_function(xt)
    assert np.isfinite(s).all()
    assert roc_auc_score(yt, s) > 0.95
    np.testing.assert_allclose(det.score_samples(xt), -s)
    assert det.decision_scores_.shape == (len(x),) and det.labels_.shape == (len(x),)
    assert set(np.unique(det.predict(xt))) <= {0, 1}


def test_constant_column_changing_at_test_time_stays_finite() -> None:
    x, _ = blob_with_outliers()
    det = DeepSVDD(**FAST).fit(x)
    xt = x[:20].copy()
    xt[:, -1] = 1e6  # the column was constant (2.5) in training
    s = det.decision_function(xt)
    assert np.isfinite(s).all() and (s > det.decision_scores_.max()).all()


def test_thresholds_give_the_promised_false_positive_rate() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 5)).astype(np.float32)
    det = AEDetector(kind="ae", threshold="fpr:0.05", **FAST).fit(x)
    new_normal = rng.normal(size=(4000, 5)).astype(np.float32)
    assert abs(det.predict(new_normal).mean() - 0.05) < 0.025  # estimated on the held-out slice
    det.set_threshold("quantile:0.9")
    assert abs(det.labels_.mean() - 0.1) < 0.01
    det.set_threshold(contamination=0.2)
    assert abs(det.labels_.mean() - 0.2) < 0.01
    # the rule in force is fitted state; the constructor parameters stay as given (clone gives the original)
    assert det.threshold_rule_ == "contamination:0.2" and det.contamination is None and det.threshold == "fpr:0.05"


def test_set_threshold_changes_labels_without_refit() -> None:
    x, _ = blob_with_outliers()
    det = DeepSVDD(**FAST).fit(x)
    before = {k: v.clone() for k, v in det.model_.state_dict().items()}
    scores = det.decision_scores_.copy()
    n1 = det.labels_.sum()
    det.set_threshold("quantile:0.5")
    assert det.labels_.sum() > n1
    assert np.array_equal(det.decision_scores_, scores)
    assert all((before[k] == v).all() for k, v in det.model_.state_dict().items())


def test_random_state_reproduces_scores() -> None:
    x, _ = blob_with_outliers()
    a = AEDetector(kind="vae", **FAST).fit(x).decision_scores_
    b = AEDetector(kind="vae", **FAST).fit(x).decision_scores_
    c = AEDetector(kind="vae", **{**FAST, "random_state": 1}).fit(x).decision_scores_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("make", [lambda: DeepSVDD(**FAST), lambda: AEDetector(kind="vae", **FAST),
                                  lambda: EnsembleDetector(members=("ae", "deep-svdd"), random_state=0, device="cpu")],
                         ids=["deep-svdd", "vae", "ensemble"])
def test_save_load_gives_identical_scores(make, tmp_path) -> None:
    x, _ = blob_with_outliers()
    det = make().fit(x)
    det.save_pretrained(tmp_path / "det")
    back = type(det).from_pretrained(tmp_path / "det")
    np.testing.assert_array_equal(back.decision_function(x[:50]), det.decision_function(x[:50]))
    assert back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.labels_, det.labels_)
    assert not any(p.suffix in (".pkl", ".pt", ".pickle") for p in (tmp_path / "det").rglob("*"))


def test_threshold_rules() -> None:
    train = np.arange(100, dtype=float)
    held = np.arange(1000, 1100, dtype=float)
    assert threshold_from("quantile:0.9", train) == 90
    assert threshold_from(None, train, held, contamination=0.1) == 90
    assert threshold_from("fpr:0.05", train, held) == 1095
    for bad in ("quantile:1.5", "fpr:0", "median", "quantile:x"):
        with pytest.raises(UserError):
            parse_threshold(bad)
    for c in (0.0, 0.6, -0.1):
        with pytest.raises(UserError, match="contamination"):
            parse_threshold(None, c)


def test_fpr_threshold_is_split_conformal() -> None:
    """fpr:R on n calibration scores flags a new exchangeable score with probability (n + 1 − k)/(n + 1) for
    k = ⌈(n + 1)(1 − R)⌉, i.e. in [R − 1/(n + 1), R]: checked by simulation, averaged over many calibrations."""
    rng = np.random.default_rng(0)
    for n, rate in ((999, 0.01), (150, 0.05), (120, 0.01)):
        k = int(np.ceil((n + 1) * (1 - rate)))
        promised = (n + 1 - k) / (n + 1)
        assert rate - 1 / (n + 1) <= promised <= rate
        realised = [(rng.normal(size=20000) > fpr_threshold(rng.normal(size=n), rate)).mean() for _ in range(300)]
        assert abs(np.mean(realised) - promised) < 0.15 * promised + 0.001, (n, rate, np.mean(realised), promised)
    scores = rng.permutation(np.arange(200.0))
    assert fpr_threshold(scores, 0.01) == 198.0  # k = ⌈201 · 0.99⌉ = 199th smallest of 0..199
    assert fpr_rows_needed(0.01) == 99 and fpr_rows_needed(0.05) == 19


def test_fpr_threshold_on_too_few_rows_warns_and_uses_the_largest() -> None:
    with pytest.warns(UserWarning, match=r"needs at least 99 calibration rows, got 40 .*2\.4%"):
        assert fpr_threshold(np.arange(40.0), 0.01) == 39.0
    with pytest.raises(UserError, match="calibration scores"):
        fpr_threshold(np.empty(0), 0.01)
    x, _ = blob_with_outliers(n=150, n_out=0)
    with pytest.warns(UserWarning, match="needs at least 99 calibration rows, got 15 held-out training rows"):
        AEDetector(kind="ae", **FAST).fit(x)  # 10 % of 150 rows held out: said at fit


def test_calibrate_on_known_normal_rows_gives_the_promised_rate(tmp_path) -> None:
    """Contaminated training data: the held-out slice's anomalies take the 1 %, so normal rows are flagged
    less often; calibrating on rows known to be normal brings the realised rate to about 1 %."""
    x, _ = blob_with_outliers(n=3000, n_out=300)
    det = AEDetector(kind="ae", **FAST).fit(x)
    normal = lambda seed, n: blob_with_outliers(seed=seed, n=n, n_out=0)[0]  # noqa: E731
    fresh = normal(7, 40000)
    before = det.predict(fresh).mean()
    assert before < 0.005, before  # the 1 % of the slice is mostly its anomalies
    det.calibrate(normal(5, 8000))  # the realised rate of one calibration has sd ≈ sqrt(0.01 · 0.99 / n) ≈ 0.0011
    after = det.predict(fresh).mean()
    assert 0.006 < after < 0.014, after
    assert det.threshold_rule_ == "fpr:0.01" and len(det.calibration_scores_) == 8000
    det.save_pretrained(tmp_path / "cal")
    back = AEDetector.from_pretrained(tmp_path / "cal")
    assert back.threshold_ == det.threshold_ and len(back.calibration_scores_) == 8000
    back.set_threshold("fpr:0.05")  # later fpr: rules keep using the calibration rows
    assert abs(back.predict(fresh).mean() - 0.05) < 0.012
    with pytest.raises(UserError, match="fpr:"):
        det.calibrate(normal(5, 200), threshold="quantile:0.9")
    det.fit(x)  # a refit forgets the calibration
    assert det.calibration_scores_ is None and det.predict(fresh).mean() < 0.005


def test_bad_input_is_a_user_error() -> None:
    x, _ = blob_with_outliers()
    with pytest.raises(UserError, match="at least 2"):
        DeepSVDD(**FAST).fit(x[:1])
    with pytest.raises(UserError, match="constant"):
        DeepSVDD(**FAST).fit(np.ones((50, 3)))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(UserError, match="NaN"):
        DeepSVDD(**FAST).fit(bad)
    with pytest.raises(UserError, match="contamination"):
        DeepSVDD(contamination=0.7, **FAST).fit(x)
    det = DeepSVDD(**FAST).fit(x)
    with pytest.raises(UserError, match="shape"):
        det.decision_function(x[:, :3])


def test_one_class_digits_images() -> None:
    """Images: train on one digit of scikit-learn's digits, the others are anomalies."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    train = x[:1200][d.target[:1200] == 0]
    test, yt = x[1200:], (d.target[1200:] != 0).astype(int)
    for det in (AEDetector(kind="vae", epochs=40, random_state=0, device="cpu"), DeepSVDD(epochs=40, random_state=0, device="cpu")):
        s = det.fit(train).decision_function(test)
        assert roc_auc_score(yt, s) > 0.85, type(det).__name__


def test_real_outlier_table_beats_chance() -> None:
    """WBC from the ODDS benchmarks: fit without labels, AUROC on the labels."""
    path = require_data("odds", "42_WBC.npz")
    d = np.load(path)
    s = AEDetector(kind="vae", epochs=50, random_state=0, device="cpu").fit(d["X"]).decision_scores_
    assert roc_auc_score(d["y"], s) > 0.85


def test_robust_scaling_and_trimming_find_annthyroids_raised_values() -> None:
    """annthyroid (ODDS): the anomalies have a moderately raised TSH, a skewed lab value whose standard
    deviation is set by a few extreme rows. Fitted without labels on 70 % of the table (anomalies
    included), the default VAE detector (robust scaling, trimmed loss) ranks them far better than the
    same detector with mean/std scaling and the plain loss."""
    from sklearn.model_selection import train_test_split

    z = np.load(require_data("odds", "2_annthyroid.npz"))
    xtr, xte, _, yte = train_test_split(z["X"].astype(np.float32), z["y"], test_size=0.3, stratify=z["y"], random_state=0)
    robust = AEDetector(kind="vae", random_state=0, device="cpu").fit(xtr)
    plain = AEDetector(kind="vae", scaling="standard", trim=0.0, random_state=0, device="cpu").fit(xtr)
    auc_robust, auc_plain = roc_auc_score(yte, robust.decision_function(xte)), roc_auc_score(yte, plain.decision_function(xte))
    assert auc_robust > 0.85 and auc_robust > auc_plain + 0.1, (auc_robust, auc_plain)
