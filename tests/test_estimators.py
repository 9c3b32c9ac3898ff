"""The scikit-learn-style estimator: ``from latentforge import VAE``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

import latentforge
from latentforge import VAE, UserError
from latentforge.checkpoint import save_model, write_json
from latentforge.models import build_model

FAST = dict(latent_dim=4, hidden=(64,), epochs=2, random_state=0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images.astype(np.uint8)  # (1797, 8, 8), grey levels 0..16


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return load_digits().data  # (1797, 64) float64, 0..16: not in [0, 1] → Gaussian decoder


@pytest.fixture(scope="module")
def fitted(images) -> VAE:
    est = VAE(**FAST)
    assert est.fit(images) is est
    return est


def test_fit_on_uint8_images(fitted: VAE, images) -> None:
    assert fitted.model_.likelihood == "bernoulli"
    assert fitted.input_shape_ == (1, 8, 8) and fitted.n_features_in_ == 64
    assert [r["epoch"] for r in fitted.history_] == [1, 2]
    z = fitted.transform(images[:100])
    assert z.shape == (100, 4) and z.dtype == np.float32 and np.isfinite(z).all()
    xs = fitted.sample(10, seed=1)
    assert xs.shape == (10, 8, 8) and xs.min() >= 0.0 and xs.max() <= 1.0  # shaped like X, in model units [0, 1]
    np.testing.assert_array_equal(xs, fitted.sample(10, seed=1))
    s = fitted.score_samples(images[:50])
    assert s.shape == (50,) and np.isfinite(s).all() and (s < 0).all()  # an ELBO in nats
    np.testing.assert_array_equal(s, fitted.score_samples(images[:50]))  # reproducible
    np.testing.assert_array_equal(fitted.decision_function(images[:50]), -s)
    assert fitted.score(images[:50]) == pytest.approx(float(s.mean()))
    rec = fitted.reconstruct(images[:5])
    assert rec.shape == (5, 8, 8)
    assert fitted.inverse_transform(z[:5]).shape == (5, 8, 8)


def test_scores_do_not_touch_the_global_rng(fitted: VAE, images) -> None:
    state = torch.get_rng_state()
    fitted.score_samples(images[:10])
    assert torch.equal(torch.get_rng_state(), state)


def test_fit_on_a_float_table(table) -> None:
    est = VAE(**FAST).fit(table)
    assert est.model_.likelihood == "gaussian"
    z = est.transform(table[:30])
    assert z.shape == (30, 4)
    xs = est.sample(6, seed=0)
    assert xs.shape == (6, 64)
    assert abs(float(xs.mean()) - float(table.mean())) < 3.0  # samples come back in data units (0..16)
    assert est.score_samples(table[:30]).shape == (30,)


def test_random_state_makes_fits_reproducible(images) -> None:
    a = VAE(**{**FAST, "epochs": 1}).fit(images[:300])
    torch.randn(10)  # whatever the global RNG did in between
    b = VAE(**{**FAST, "epochs": 1}).fit(images[:300])
    c = VAE(**{**FAST, "epochs": 1, "random_state": 1}).fit(images[:300])
    np.testing.assert_array_equal(a.transform(images[:20]), b.transform(images[:20]))
    assert not np.array_equal(a.transform(images[:20]), c.transform(images[:20]))


def test_params_and_clone() -> None:
    est = VAE(latent_dim=3, hidden=(8, 4), epochs=1)
    assert est.get_params()["latent_dim"] == 3 and est.get_params()["hidden"] == (8, 4)
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "model_")


def test_save_and_from_pretrained(fitted: VAE, images, tmp_path: Path) -> None:
    fitted.save_pretrained(tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json", "model.safetensors"]
    back = VAE.from_pretrained(tmp_path / "vae")
    def params(e):  # JSON keeps sequences as lists
        return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in e.get_params().items()}

    assert params(back) == params(fitted)
    np.testing.assert_array_equal(back.transform(images[:40]), fitted.transform(images[:40]))
    np.testing.assert_array_equal(back.sample(8, seed=3), fitted.sample(8, seed=3))
    np.testing.assert_array_equal(back.score_samples(images[:40]), fitted.score_samples(images[:40]))
    same = latentforge.load(tmp_path / "vae")
    np.testing.assert_array_equal(same.transform(images[:40]), fitted.transform(images[:40]))


def test_load_a_cli_run_directory(digits_run: Path) -> None:
    est = latentforge.load(digits_run)
    assert isinstance(est, VAE)
    floats = load_digits().images  # grey levels 0..16, as the run's data
    z = est.transform(floats[:25].astype(np.int64))  # integers are read on the run's scale, decided at training
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        est.transform(floats[:25])  # floats are model inputs: 0..16 is outside the Bernoulli range, not rescaled
    assert z.shape == (25, 20)
    xs = est.sample(9, seed=0)
    assert xs.shape == (9, 1, 8, 8) and 0 <= xs.min() and xs.max() <= 1  # a run: shaped like its data
    # the estimator sees what the run's own model sees: digits / 16
    with torch.no_grad():
        want = est.model_.encode(torch.from_numpy(floats[:25].astype(np.float32)[:, None] / 16))[0].numpy()
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)


def test_cli_run_accepts_digits_as_uint8(digits_run: Path, images) -> None:
    est = latentforge.load(digits_run)
    # uint8 grey levels are read on the run's own scale (0..16 for digits), like the floats they stand for
    np.testing.assert_allclose(est.transform(images[:10]), est.transform(images[:10].astype(np.float64) / 16), atol=1e-6)


def test_loaded_params_describe_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vae", input_shape=[1, 8, 8], latent_dim=4, hidden=[32])
    write_json(tmp_path / "config.json", {"model": "vae", "data": "digits",
                                           "data_info": {"sample_shape": [1, 8, 8], "scale": 16.0}})
    save_model(model, tmp_path)  # what `latentforge train` writes
    est = latentforge.load(tmp_path)
    assert est.transform(np.zeros((2, 8, 8))).shape == (2, 4)
    assert (est.latent_dim, tuple(est.hidden)) == (4, (32,))


def test_wrong_input_is_a_user_error(fitted: VAE, images) -> None:
    with pytest.raises(UserError, match="shape"):
        fitted.transform(np.zeros((5, 7, 7), np.uint8))
    with pytest.raises(UserError, match="shape"):
        fitted.score_samples(np.zeros((5, 65)))
    with pytest.raises(UserError, match="1-D"):
        fitted.transform(np.zeros(64))
    with pytest.raises(UserError, match="NaN"):
        fitted.transform(np.full((2, 8, 8), np.nan))
    with pytest.raises(UserError):
        fitted.sample(0)
    with pytest.raises(UserError):
        VAE(epochs=0).fit(images[:20])
    with pytest.raises(UserError):
        VAE(latent_dim=0, epochs=1).fit(images[:20])


def _call(method: str, est: VAE, X):
    if method == "sample":
        return est.sample(3)
    if method == "inverse_transform":
        return est.inverse_transform(np.zeros((2, 4)))
    if method == "save_pretrained":
        return est.save_pretrained("never-written")
    return getattr(est, method)(X)


AF = "BUG: {} on an unfitted VAE raises AttributeError('model_'), not NotFittedError"


@pytest.mark.parametrize("method", [
    "transform",
    "reconstruct",
    "score_samples", "decision_function", "score", "sample", "inverse_transform", "save_pretrained",
])
def test_not_fitted(method: str, images, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFittedError, match="fit"):
        _call(method, VAE(), images[:5])
    assert not (tmp_path / "never-written").exists()
