"""Reconstruction metrics against hand computations, and the per-run evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentforge.data import load_data
from latentforge.metrics import evaluate_model, mse, psnr, ssim
from latentforge.metrics.reconstruction import bce, per_sample_bce, per_sample_mse, ssim_per_sample
from latentforge.models import build_model


def test_mse_by_hand() -> None:
    x = np.array([[0.0, 0.5, 1.0, 1.0]], np.float32)
    y = np.array([[0.5, 0.5, 0.0, 1.0]], np.float32)
    assert mse(x, y) == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    a = np.random.default_rng(0).random((7, 1, 5, 5))
    b = np.random.default_rng(1).random((7, 1, 5, 5))
    assert mse(a, b) == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-12)
    np.testing.assert_allclose(per_sample_mse(a, b), ((a - b) ** 2).reshape(7, -1).mean(1), rtol=1e-12)
    with pytest.raises(ValueError):
        mse(a, b[:, :, :4])


def test_mse_chunks_agree() -> None:
    a = np.random.default_rng(0).random((2100, 3)).astype(np.float32)
    b = np.zeros_like(a)
    np.testing.assert_allclose(per_sample_mse(a, b, chunk=100), per_sample_mse(a, b, chunk=5000), rtol=1e-12)


def test_psnr_by_hand() -> None:
    x = np.zeros((2, 1, 2, 2))
    y = np.zeros((2, 1, 2, 2))
    y[0, 0, 0, 0] = 0.2  # mse 0.01 → 20 dB
    y[1] = 0.01  # mse 1e-4 → 40 dB
    assert psnr(x, y) == pytest.approx((20 + 40) / 2)  # the mean of per-image PSNRs
    assert psnr(x, y, data_range=2.0) == pytest.approx((20 + 40) / 2 + 20 * math.log10(2))
    assert psnr(x, x) == pytest.approx(100.0)  # identical images are capped, not infinite
    a = np.random.default_rng(0).random((5, 1, 8, 8))
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.1, a.shape), 0, 1)
    per = ((a - b) ** 2).reshape(5, -1).mean(1)
    assert psnr(a, b) == pytest.approx(float(np.mean(10 * np.log10(1 / per))), rel=1e-12)


def test_ssim_identity_noise_and_symmetry() -> None:
    img = load_data("digits").test.floats()[:20].astype(np.float64)
    assert ssim(img, img) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    values = [ssim(img, np.clip(img + rng.normal(0, s, img.shape), 0, 1)) for s in (0.02, 0.1, 0.3)]
    assert 1.0 > values[0] > values[1] > values[2]
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    assert ssim(img, noisy) == pytest.approx(ssim(noisy, img))
    per = ssim_per_sample(img, noisy)
    assert per.shape == (20,) and ssim(img, noisy) == pytest.approx(per.mean())


def test_bce_by_hand() -> None:
    x = np.array([[1.0, 0.0, 1.0, 0.5]])
    p = np.array([[0.9, 0.2, 1.0, 0.5]])
    by_hand = -(math.log(0.9) + math.log(0.8) + math.log(1 - 1e-7) + 0.5 * math.log(0.5) + 0.5 * math.log(0.5))
    assert bce(x, p) == pytest.approx(by_hand, rel=1e-9)
    # A confident wrong pixel is bounded (p clipped to 1e-7), not infinite.
    assert bce(np.array([[1.0]]), np.array([[0.0]])) == pytest.approx(-math.log(1e-7))
    rng = np.random.default_rng(0)
    xb = (rng.random((50, 64)) < 0.3).astype(np.float32)
    logits = torch.from_numpy(rng.normal(size=(50, 64)))
    torch_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(xb).double(),
                                                                     reduction="none").sum(1).numpy()
    np.testing.assert_allclose(per_sample_bce(xb, torch.sigmoid(logits).numpy(), chunk=7), torch_bce, rtol=1e-9)


def ssim_by_formula(x: np.ndarray, y: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """Wang et al. 2004, eq. 13, over every win×win window that fits (uniform weights, sample
    variances with ddof 1, K1 = 0.01, K2 = 0.03), averaged over windows."""
    from numpy.lib.stride_tricks import sliding_window_view

    wx, wy = sliding_window_view(x, (win, win)), sliding_window_view(y, (win, win))
    n = win * win
    mx, my = wx.mean((-1, -2)), wy.mean((-1, -2))
    vx = ((wx - mx[..., None, None]) ** 2).sum((-1, -2)) / (n - 1)
    vy = ((wy - my[..., None, None]) ** 2).sum((-1, -2)) / (n - 1)
    cxy = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).sum((-1, -2)) / (n - 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_the_reference_formula() -> None:
    img = load_data("digits").test.floats()[:6].astype(np.float64)
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    per = ssim_per_sample(img, noisy)
    for i in range(len(img)):  # 8×8 digits: a 7×7 window
        assert per[i] == pytest.approx(ssim_by_formula(img[i, 0], noisy[i, 0]), abs=1e-9)
    a, b = rng.random((1, 1, 28, 28)), rng.random((1, 1, 28, 28))
    assert ssim(a, b) == pytest.approx(ssim_by_formula(a[0, 0], b[0, 0]), abs=1e-9)


def test_ssim_colour_and_larger_images() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 3, 28, 28))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 1 - img) < 0  # an inverted image anti-correlates


@pytest.fixture(scope="module")
def evaluated():
    digits = load_data("digits")
    torch.manual_seed(0)
    model = build_model("vae", input_shape=[1, 8, 8], latent_dim=4, hidden=[32]).eval()
    return model, digits.test


def test_evaluate_model_keys_and_consistency(evaluated) -> None:
    model, test = evaluated
    state = torch.get_rng_state()
    out = evaluate_model(model, test, k=20, chunk=100)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert {"loss", "elbo", "nll_iwae", "recon_mse", "recon_bce", "psnr", "ssim"} <= set(out)
    assert out["iwae_k"] == 20 and out["iwae_n"] == len(test)
    with torch.no_grad():
        rec = model.reconstruct(torch.from_numpy(test.floats())).numpy()
    assert out["recon_mse"] == pytest.approx(mse(test.floats(), rec), rel=1e-6)
    assert out["psnr"] == pytest.approx(psnr(test.floats(), rec), rel=1e-6)
    assert out["recon_bce"] == pytest.approx(bce(test.floats(), rec), rel=1e-6)
    assert out["ssim"] == pytest.approx(ssim(test.floats(), rec), rel=1e-6)
    assert out["nll_iwae"] < -out["elbo"] + 0.5
    again = evaluate_model(model, test, k=20, chunk=1000)  # deterministic terms do not depend on chunking
    assert again["loss"] == out["loss"]
    assert again["recon_mse"] == pytest.approx(out["recon_mse"], rel=1e-6)
    assert evaluate_model(model, test, k=20, chunk=100) == out  # deterministic


def test_evaluate_model_skips_what_does_not_apply(evaluated) -> None:
    model, test = evaluated
    out = evaluate_model(model, test, k=0)
    assert "nll_iwae" not in out and "iwae_k" not in out


def test_evaluate_adds_sample_quality_for_28x28_generative_models(mnist_dir) -> None:
    """A trained VAE's samples sit between the test-vs-train floor and an untrained model's noise."""
    import torch

    from latentforge.data import load_data
    from latentforge.metrics.evaluate import sample_quality_of
    from latentforge.models import build_model
    from latentforge.train import TrainConfig, fit

    splits = load_data("mnist")
    train, test = splits.train.subset(np.arange(3000)), splits.test.subset(np.arange(600))
    torch.manual_seed(0)
    untrained = build_model("vae", input_shape=[1, 28, 28], arch="mlp", hidden=[200], latent_dim=10)
    trained = build_model("vae", input_shape=[1, 28, 28], arch="mlp", hidden=[200], latent_dim=10)
    fit(trained, train, None, TrainConfig(epochs=3, batch_size=64, progress=False))
    q0 = sample_quality_of(untrained.eval(), test, n=600)
    q1 = sample_quality_of(trained, test, n=600)
    assert set(q1) >= {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "quality_n"}
    assert q1["quality_n"] == 600
    assert 0 < q1["fid"] < q0["fid"]
    assert q1["coverage"] > q0["coverage"]
