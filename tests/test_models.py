"""Every autoencoder-family model of the zoo on digits: trains, saves/loads, samples, resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentforge.checkpoint import load_model, save_model
from latentforge.data import load_data
from latentforge.models import build_model
from latentforge.train import TrainConfig, evaluate_loss, fit

CASES = {
    "ae": {},
    "dae": {"noise": "gaussian:0.3"},
    "vae-conv": {"arch": "conv"},
    "beta-vae": {"kl_warmup": 20},
    "beta-vae-capacity": {"capacity": 5.0, "capacity_steps": 30},
    "cvae": {"n_classes": 10},
    "iwae": {"k": 3},
    "vqvae": {"n_codes": 16},
}


def model_name(case: str) -> str:
    return {"vae-conv": "vae", "beta-vae-capacity": "beta-vae"}.get(case, case)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def build(case: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(model_name(case), input_shape=[1, 8, 8], **CASES[case])


@pytest.mark.parametrize("case", list(CASES))
def test_training_lowers_the_test_loss(case: str, digits) -> None:
    model = build(case)
    before = evaluate_loss(model, digits.test)["loss"]
    fit(model, digits.train, digits.test, TrainConfig(epochs=4, batch_size=64, progress=False))
    after = evaluate_loss(model, digits.test)["loss"]
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_gives_identical_outputs(case: str, digits, tmp_path: Path) -> None:
    model = build(case)
    fit(model, digits.train, None, TrainConfig(epochs=1, progress=False))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.from_numpy(digits.test.floats()[:16])
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
        if hasattr(model, "sample"):
            kw = {"label": 2} if case == "cvae" else {}
            a, b = model.sample(8, seed=3, **kw), loaded.sample(8, seed=3, **kw)
            assert torch.equal(a, b)
            assert a.shape == (8, 1, 8, 8)
            assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("case", ["ae", "beta-vae", "cvae", "vqvae"])
def test_resume_equals_uninterrupted(case: str, digits, tmp_path: Path) -> None:
    cfg = dict(batch_size=64, progress=False, seed=5)
    straight = build(case)
    fit(straight, digits.train, digits.test, TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "a")
    resumed = build(case)
    fit(resumed, digits.train, digits.test, TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "b")
    again = build(case, seed=123)  # a fresh process would start from other weights: resume must restore them
    fit(again, digits.train, digits.test, TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "b", resume=True)
    for (k, v), w in zip(straight.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_cvae_samples_follow_the_label(digits) -> None:
    """Samples for label c are closer to the class-c mean image than to other classes' means."""
    model = build("cvae")
    fit(model, digits.train, None, TrainConfig(epochs=30, batch_size=64, progress=False))
    x, y = digits.train.floats().reshape(len(digits.train), -1), digits.train.y
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    hits = 0
    for c in range(10):
        s = model.sample(20, label=c, seed=c).numpy().reshape(20, -1).mean(0)
        hits += int(np.argmin(((means - s) ** 2).sum(1)) == c)
    assert hits >= 8, hits


def test_dae_noise_kinds_and_bad_spec() -> None:
    from latentforge.errors import UserError
    from latentforge.models.autoencoder import corrupt, parse_noise

    x = torch.full((1000, 4), 0.5)
    assert parse_noise("mask:0.5") == ("mask", 0.5)
    masked = corrupt(x, "mask", 0.5)
    assert 0.4 < float((masked == 0).float().mean()) < 0.6
    sp = corrupt(x, "saltpepper", 0.2)
    flipped = sp != 0.5
    assert 0.15 < float(flipped.float().mean()) < 0.25 and set(sp[flipped].unique().tolist()) <= {0.0, 1.0}
    assert abs(float((corrupt(x, "gaussian", 0.3) - x).std()) - 0.3) < 0.03
    for bad in ("blur:0.1", "mask:1.5", "gaussian:abc"):
        with pytest.raises(UserError):
            parse_noise(bad)


def test_dae_clipped_noise_stays_in_the_unit_interval_and_needs_it() -> None:
    """``clipped:σ`` is Gaussian noise then clipped to [0, 1] (grey levels); refused where values are not in [0, 1]."""
    from latentforge.errors import UserError
    from latentforge.models.autoencoder import corrupt, parse_noise

    assert parse_noise("clipped:0.5") == ("clipped", 0.5)
    x = torch.rand(2000, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    noisy = corrupt(x, "clipped", 0.5)
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0  # σ = 0.5 pushes many values past both ends
    inside = (noisy > 0) & (noisy < 1)
    assert torch.allclose((noisy - x)[inside].abs().mean(), torch.tensor(0.3), atol=0.1)  # noise, not a copy
    torch.manual_seed(0)
    assert torch.equal(noisy, (x + 0.5 * torch.randn_like(x)).clamp(0, 1))
    assert build_model("dae", input_shape=[1, 8, 8], noise="clipped:0.5").noise_kind == "clipped"
    with pytest.raises(UserError, match="clips to"):
        build_model("dae", input_shape=[4], likelihood="gaussian", noise="clipped:0.5")
    for bad in ("clipped:-0.1", "clipped:nan"):
        with pytest.raises(UserError):
            parse_noise(bad)


def test_vqvae_codebook_stats_and_prior(digits) -> None:
    model = build("vqvae")
    res = fit(model, digits.train, None, TrainConfig(epochs=3, batch_size=64, progress=False))
    last = res.history[-1]
    assert 1.0 <= last["train_perplexity"] <= 16.0
    assert 0.0 < last["train_codes_used"] <= 1.0
    assert res.history[-1]["train_prior_nll"] < res.history[0]["train_prior_nll"]
    assert float(model.quantizer.usage.sum()) > 0


def test_conv_stacks_fit_odd_image_sizes() -> None:
    for shape in ([1, 28, 28], [3, 32, 32], [1, 15, 17]):
        for name in ("vae", "ae", "vqvae"):
            kw = {"arch": "conv"} if name != "vqvae" else {}
            m = build_model(name, input_shape=shape, **kw)
            x = torch.rand(2, *shape)
            assert m.reconstruct(x).shape == (2, *shape), (name, shape)


def test_cli_conv_run_end_to_end(tmp_path: Path) -> None:
    """`latentforge train vqvae` / conv VAE on digits through the CLI: run files, then sample from the run."""
    import json

    from latentforge.cli import main

    run = tmp_path / "conv"
    assert main(["train", "vae", "--arch", "conv", "--data", "digits", "--epochs", "2", "--eval-k", "10",
                 "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_config"]["arch"] == "conv"
    for f in ("samples.png", "reconstructions.png", "traversals.png", "report.html", "metrics.json"):
        assert (run / f).exists(), f
    assert main(["sample", str(run), "-n", "9", "--seed", "1", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (9, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
    vq = tmp_path / "vq"
    assert main(["train", "vqvae", "--data", "digits", "--epochs", "2", "--n-codes", "16", "--out", str(vq)]) == 0
    assert (vq / "codebook.png").exists() and "Codebook usage" in (vq / "report.html").read_text()
