"""The conditional DCGAN (projection discriminator): builds for images and small images, draws the class it is
asked for, learns the conditioning, and trains from the command line on a label budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentforge.data import Dataset
from latentforge.models import model_class
from latentforge.models.base import Batch, capabilities
from latentforge.train import TrainConfig, fit

from conftest import lf, require_data

CDCGAN = model_class("cdcgan")


@pytest.mark.parametrize("shape,arch", [((1, 28, 28), "conv"), ((1, 8, 8), "mlp")])
def test_builds_steps_and_samples_by_label(shape, arch) -> None:
    torch.manual_seed(0)
    m = CDCGAN(input_shape=shape, n_classes=3, hidden=(32, 32), channels=(8, 16))
    assert m.config["arch"] == arch and m.uses_labels and {"sample", "progress"} <= capabilities(m)
    opts = m.configure_optimizers(2e-4)
    x, y = torch.rand(12, *shape), torch.randint(0, 3, (12,))
    out = m.training_step(Batch(x, y), opts)
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(out) and all(torch.isfinite(v) for v in out.values())
    m.eval()
    assert torch.isfinite(m.loss(Batch(x, y))["loss"])
    a, b = m.sample(6, label=2, seed=5), m.sample(6, label=2, seed=5)
    assert a.shape == (6, *shape) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, m.sample(6, label=0, seed=5))  # the label changes the image for the same noise
    assert m.progress_samples().shape == (64, *shape)


def test_sampling_needs_a_valid_label_and_training_needs_labels() -> None:
    m = CDCGAN(input_shape=(1, 8, 8), n_classes=2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        m.sample(3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        m.sample(3, label=2)
    with pytest.raises(ValueError, match="give labels y"):
        m.training_step(Batch(torch.rand(4, 1, 8, 8)), m.configure_optimizers(1e-3))


def test_learns_the_conditioning() -> None:
    """Class 0 is dark, class 1 bright: after a short training the samples of each label follow their class."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 256)
    x = np.clip(np.where(y[:, None, None, None] == 0, 0.15, 0.85) + 0.05 * rng.standard_normal((512, 1, 8, 8)),
                0, 1).astype(np.float32)
    data = Dataset(x=x, y=y, name="dark-bright")
    torch.manual_seed(0)
    m = CDCGAN(input_shape=(1, 8, 8), n_classes=2, hidden=(64, 64), ema=0.9)
    fit(m, data, None, TrainConfig(epochs=25, batch_size=64, lr=1e-3, device="cpu", progress=False, compile="off"))
    dark, bright = m.sample(200, label=0, seed=1).mean().item(), m.sample(200, label=1, seed=1).mean().item()
    assert dark < 0.35 and bright > 0.65, (dark, bright)


def test_cli_trains_on_a_label_budget_of_breastmnist(tmp_path) -> None:
    require_data("medmnist", "breastmnist.npz")
    run = tmp_path / "run"
    r = lf("train", "cdcgan", "--data", "breastmnist", "--epochs", "2", "--labels-per-class", "10", "--label-seed",
           "3", "--channels", "8,16", "--eval-k", "0", "--out", str(run))
    assert r.returncode == 0, r.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["data_options"] == {"labels_per_class": 10, "label_seed": 3}
    assert config["data_info"]["n_train"] == 20 and config["model_config"]["n_classes"] == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert (run / "real_vs_generated.png").exists() and "Real and generated" in (run / "report.html").read_text()
    r = lf("sample", str(run), "-n", "5", "--label", "1", "--seed", "2", "--out", str(tmp_path / "s.npy"))
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    r = lf("sample", str(run), "-n", "5", "--out", str(tmp_path / "t.npy"))
    assert r.returncode == 2 and "give --label L with L in 0..1" in r.stderr


def test_trains_under_bf16_autocast() -> None:
    """Its networks' outputs are cast back to fp32 before the losses, as the DCGAN's (``bf16_ready``)."""
    torch.manual_seed(0)
    m = CDCGAN(input_shape=(1, 28, 28), n_classes=2, hidden=(32, 32), channels=(8, 16))
    m.precision = "bf16"
    out = m.training_step(Batch(torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,))), m.configure_optimizers(2e-4))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
