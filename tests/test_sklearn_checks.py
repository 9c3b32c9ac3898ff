"""scikit-learn's own conformance suite (``parametrize_with_checks``) over every public array estimator."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from latentforge import CVAE, VAE, AEDetector, AutoEncoder, BetaVAE, DeepSVDD, DenoisingAutoEncoder, EnsembleDetector
from latentforge.errors import UserError

# Tiny networks, one epoch, on the CPU: the suite fits each estimator some thirty times.
FAST = {"latent_dim": 2, "hidden": (8,), "epochs": 1, "random_state": 0, "device": "cpu"}

# MultVAE/MultDAE are left out: they fit user-item interactions, not an (n_samples, n_features) array.
ESTIMATORS = [
    VAE(**FAST),
    BetaVAE(**FAST),
    AutoEncoder(**FAST),
    DenoisingAutoEncoder(**FAST),
    CVAE(**FAST),  # supervised: the suite gives it labels (its tags say y is required)
    DeepSVDD(**FAST, n_nets=1),
    AEDetector(kind="vae", **FAST),
    AEDetector(kind="ae", **FAST),
    # Members keep their own default settings (auto epochs), so one small member keeps this fast.
    EnsembleDetector(members=("ae",), random_state=0, device="cpu"),
]

# The networks compute in float32: a row scored alone or among 20 rows (or in another order) goes through
# other BLAS kernels and differs in the 7th significant digit, beyond these checks' rtol=1e-7 / atol=1e-9.
# Whether a given estimator trips them is luck of rounding (and of the CPU), so all are marked;
# test_batch_mates_do_not_change_outputs below checks the same property at float32 precision.
FLOAT32 = {
    "check_methods_subset_invariance": "float32 networks: outputs on 1-row batches differ from those on the "
                                       "whole batch by float32 rounding (~1e-7 relative)",
    "check_methods_sample_order_invariance": "float32 networks: outputs on permuted rows differ by float32 "
                                             "rounding (~1e-7 relative)",
}

# The detectors' **deprecated catches the old score= keyword (renamed score_kind=); the check passes
# every name in the signature, so it calls DetectorClass(deprecated=...), which is rightly refused.
DEPRECATED_KWARGS = {
    "check_do_not_raise_errors_in_init_or_set_params": "**deprecated (the old score= alias) is in the signature; "
                                                        "the check passes deprecated=... as a parameter",
}


def expected_failures(estimator) -> dict[str, str]:
    if isinstance(estimator, (DeepSVDD, AEDetector)):
        return {**FLOAT32, **DEPRECATED_KWARGS}
    return FLOAT32


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_conformance(estimator, check) -> None:
    check(estimator)


def _name(est) -> str:
    return f"{type(est).__name__}-{est.kind}" if hasattr(est, "kind") else type(est).__name__


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=_name)
def test_batch_mates_do_not_change_outputs(estimator) -> None:
    """What the two float32-marked checks test, at float32 precision: a row's output depends on that row only."""
    rng = np.random.default_rng(0)
    X = 3 * rng.uniform(size=(20, 3))
    y = (X[:, 0] > 1.5).astype(np.int64)
    est = clone(estimator).fit(X, y)
    order = rng.permutation(len(X))
    for method in ("transform", "decision_function", "score_samples", "predict_proba"):  # predict: a threshold
        if not hasattr(est, method):
            continue
        f = getattr(est, method)
        full = f(X)
        one_by_one = np.concatenate([f(X[i : i + 1]) for i in range(len(X))])
        np.testing.assert_allclose(one_by_one, full, rtol=1e-5, atol=1e-6, err_msg=method)
        np.testing.assert_allclose(f(X[order]), full[order], rtol=1e-5, atol=1e-6, err_msg=method)


def test_what_the_checks_refuse_is_a_user_error() -> None:
    """The refusals the suite asks for are UserErrors (the CLI's one-line errors) that say what to do."""
    X = np.random.default_rng(0).uniform(size=(12, 4))
    est = VAE(**FAST).fit(X)
    bad_object = X.astype(object)
    bad_object[0, 0] = {"foo": "bar"}
    cases = {
        "sparse": (sp.csr_matrix(X), "toarray"),
        "complex": (X + 1j, "Complex data not supported"),
        "object": (bad_object, "non-numeric"),
        "ragged": ([[1.0] * 4, [1.0] * 5], "equal length"),
        "no rows": (np.empty((0, 4)), "at least one sample"),
        "no columns": (np.empty((12, 0)), "0 feature(s)"),
        "1-D": (X[0], "Reshape your data"),
    }
    for bad, words in cases.values():
        with pytest.raises(UserError, match=re.escape(words)):
            VAE(**FAST).fit(bad)
        with pytest.raises(UserError, match=re.escape(words)):
            est.transform(bad)
    with pytest.raises(UserError, match="X has 3 features, but VAE is expecting 4 features as input"):
        est.transform(X[:, :3])
    with pytest.raises(UserError, match="1 sample"):
        DeepSVDD(**FAST, n_nets=1).fit(X[:1])
    assert np.allclose(est.transform(X.astype(object)), est.transform(X), atol=1e-6)  # numbers as objects are fine
