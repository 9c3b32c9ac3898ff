"""DCGAN and WGAN-GP: objectives, training, sampling, save/load, resume and the CLI, on small digits."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentforge.checkpoint import load_model, save_model
from latentforge.cli import main
from latentforge.data import load_data
from latentforge.models import build_model
from latentforge.errors import UserError
from latentforge.models.gan import DIVERSITY_WARMUP, DCGAN, WGANGP, gradient_penalty
from latentforge.run import model_arguments
from latentforge.tasks import get_task
from latentforge.train import TrainConfig, fit
from latentforge.models.base import Batch

GANS = ("dcgan", "wgan-gp")


@pytest.fixture(scope="module")
def digits():
    sp = load_data("digits")
    return sp.train.subset(np.arange(512)), sp.test.subset(np.arange(128))


def make(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(name, input_shape=[1, 8, 8], **kw)


def test_gradient_penalty_of_a_linear_critic_is_known() -> None:
    # f(x) = w·x has ∇f = w everywhere, so the penalty is λ(‖w‖ − 1)² whatever the interpolates
    w = torch.randn(64, dtype=torch.float64)
    real, fake = torch.rand(16, 1, 8, 8, dtype=torch.float64), torch.rand(16, 1, 8, 8, dtype=torch.float64)
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake, weight=10.0)
    assert torch.allclose(gp, 10 * (w.norm() - 1) ** 2)


def test_gradient_penalty_is_taken_on_interpolates() -> None:
    # f(x) = ½‖x‖² has ∇f(x̂) = x̂: the penalty reveals the points it was evaluated at
    real, fake = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.rand(8, 1, 8, 8, dtype=torch.float64)
    eps = torch.rand(8, 1, 1, 1, dtype=torch.float64)
    gp = gradient_penalty(lambda x: 0.5 * x.flatten(1).square().sum(1), real, fake, weight=2.0, eps=eps)
    x_hat = (eps * real + (1 - eps) * fake).flatten(1)
    assert torch.allclose(gp, 2.0 * (x_hat.norm(dim=1) - 1).square().mean())
    seen = []
    gradient_penalty(lambda x: seen.append(x.detach()) or x.flatten(1).sum(1), real, fake)
    t = (seen[0] - fake) / (real - fake)  # the same ε for every value of a sample, in [0, 1]
    assert torch.allclose(t, t.flatten(1)[:, :1].view(-1, 1, 1, 1).expand_as(t)) and ((t >= 0) & (t <= 1)).all()


@pytest.mark.parametrize("name", GANS)
def test_short_training_updates_both_networks_and_logs_stability(name: str, digits) -> None:
    train, test = digits
    model = make(name, spectral_norm=name == "dcgan")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    result = fit(model, train, test, TrainConfig(epochs=4, batch_size=32, seed=0, progress=False))
    fixed = {"discriminator.5.bias"} if name == "wgan-gp" else set()  # a critic's offset cancels in D(fake) − D(real)
    moved = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert moved == set(before) - fixed
    assert any(k.startswith("discriminator.") for k in moved) and any(k.startswith("generator.") for k in moved)
    assert any(k.startswith("g_ema.") for k in before) and any(k.startswith("g_ema.") for k in moved)
    steps = 4 * 16
    assert model.steps == steps and model.g_steps == -(-steps // model.d_steps)  # d_steps critic steps per G step
    h = result.history
    for key in ("train_d_loss", "train_g_loss", "train_d_grad_norm", "train_g_grad_norm", "train_diversity",
                "train_collapse", "test_loss"):
        assert all(np.isfinite(r[key]) for r in h), key
    assert all(r["train_d_grad_norm"] > 0 and r["train_g_grad_norm"] > 0 for r in h)
    if name == "dcgan":
        assert h[-1]["train_d_loss"] < np.log(4)  # D beats chance (log 4 = D outputs ½ everywhere)
    else:
        assert h[-1]["train_gp"] < h[0]["train_gp"] and h[-1]["train_d_loss"] < h[0]["train_d_loss"]


@pytest.mark.parametrize("name", GANS)
def test_samples_have_the_data_shape_and_range(name: str) -> None:
    model = make(name).eval()
    x = model.sample(10, seed=1)
    assert x.shape == (10, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, model.sample(10, seed=1)) and not torch.equal(x, model.sample(10, seed=2))
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, label=3)


def test_conv_networks_for_mnist_sized_images() -> None:
    torch.manual_seed(0)
    model = build_model("dcgan", input_shape=[1, 28, 28], spectral_norm=True)
    assert model.config["arch"] == "conv"
    opts = model.configure_optimizers(2e-4)
    out = model.training_step(Batch(torch.rand(4, 1, 28, 28)), opts)
    assert all(torch.isfinite(v) for v in out.values())
    assert model.sample(3, seed=0).shape == (3, 1, 28, 28)


def test_save_and_load_give_identical_samples(tmp_path: Path, digits) -> None:
    train, _ = digits
    model = make("wgan-gp", spectral_norm=True)
    fit(model, train, None, TrainConfig(epochs=1, batch_size=64, progress=False))
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = load_model(tmp_path / "m", expect=WGANGP)
    assert torch.equal(model.sample(16, seed=3), again.sample(16, seed=3))
    assert again.steps == model.steps and again.config == model.config
    assert torch.equal(load_model(tmp_path / "m").sample(4, seed=0), model.sample(4, seed=0))
    with pytest.raises(Exception, match="not a dcgan"):
        load_model(tmp_path / "m", expect=DCGAN)


def test_resume_equals_a_straight_run(tmp_path: Path, digits) -> None:
    train, test = digits

    def run(out: Path, epochs: int, resume: bool = False):
        model = make("wgan-gp", seed=5, d_steps=3)  # 16 batches an epoch: G steps straddle epoch ends
        fit(model, train, test, TrainConfig(epochs=epochs, batch_size=32, seed=5, progress=False), run_dir=out,
            resume=resume)
        return model

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 3, resume=True)
    # every weight, optimiser moment, RNG stream and counter is restored, so the runs agree bit for bit
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(out: Path) -> list[dict]:
        with open(out / "history.csv") as f:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]

    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_collapse_is_flagged_and_warned(tmp_path: Path, capsys) -> None:
    model = make("dcgan", ema=0.0)
    opts = model.configure_optimizers(1e-3)
    x = torch.rand(32, 1, 8, 8)
    model.training_step(Batch(x), opts)
    model.g_steps = DIVERSITY_WARMUP
    model.diversity_level.fill_(0.3)  # as diverse as the data until now …
    torch.nn.init.zeros_(model.generator[-1].weight)  # … then every z gives the same image
    out = model.training_step(Batch(x), opts)
    assert out["collapse"] == 1 and out["diversity"] < 1e-6
    model.on_epoch_end(7, None, tmp_path)
    get_task("generate").epoch_end(tmp_path, 7, model)
    assert "epoch 7" in capsys.readouterr().err and model.collapsed == 0
    assert (tmp_path / "progress" / "epoch_007.png").exists() and (tmp_path / "gan_progress.png").exists()


def lf(*args: str) -> subprocess.CompletedProcess:
    # one thread: on a busy 2-core machine two threads per process made these tiny steps ~50× slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "latentforge.cli", *args], capture_output=True, text=True, env=env)


def test_cli_train_resume_sample_report(tmp_path: Path) -> None:
    run = tmp_path / "wgan"
    r = lf("train", "wgan-gp", "--data", "digits", "--epochs", "2", "--batch-size", "256", "--d-steps", "2",
           "--lr-d", "2e-3", "--ema", "0.99", "--gp-weight", "5", "--spectral-norm", "--out", str(run))
    assert r.returncode == 0, r.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the rest in-process through the same entry point: one interpreter start is enough
        assert main(["train", "--resume", "--epochs", "3", "--out", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    for name in ("config.json", "model.safetensors", "metrics.json", "history.csv", "samples.png", "curves.png",
                 "gan_progress.png", "progress/epoch_003.png", "report.html", "checkpoint"):
        assert (run / name).exists(), name
    assert not (run / "reconstructions.png").exists() and not (run / "latent_map.png").exists()
    config = json.loads((run / "config.json").read_text())["model_config"]
    assert config["d_steps"] == 2 and config["lr_d"] == 2e-3 and config["gp_weight"] == 5 and config["spectral_norm"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs"] == 3 and "loss" in m["test"] and "elbo" not in m["test"]
    assert "Training progress" in (run / "report.html").read_text()
    assert all(k in load_file(str(run / "model.safetensors")) for k in ("fixed_noise", "g_ema.0.weight"))
    assert main(["sample", str(run), "-n", "64", "--out", str(tmp_path / "s.png")]) == 0 and (tmp_path / "s.png").exists()
    assert main(["sample", str(run), "-n", "16", "--seed", "4", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (16, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    assert np.array_equal(s, load_model(run).sample(16, seed=4).numpy())


def test_gan_flags_reach_only_the_models_that_take_them() -> None:
    assert model_arguments("wgan-gp", {"gp_weight": 5.0, "d_steps": None}) == {"gp_weight": 5.0}
    with pytest.raises(UserError, match="--gp-weight does not apply to model 'dcgan'"):
        model_arguments("dcgan", {"gp_weight": 5.0})
    with pytest.raises(UserError, match="--d-steps does not apply"):
        model_arguments("vae", {"d_steps": 2})
