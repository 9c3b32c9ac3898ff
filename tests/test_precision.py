"""--precision auto|fp32|bf16: what auto picks, what stays fp32, and that bf16 trains to the same result."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from latentforge import precision as prec
from latentforge.data import from_array
from latentforge.errors import UserError
from latentforge.models import build_model
from latentforge.models.base import Batch
from latentforge.train import TrainConfig, evaluate_loss, fit


@pytest.fixture
def images() -> np.ndarray:
    """Blobs on 28×28 grey images: enough structure for a conv VAE to learn in an epoch."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = rng.uniform(8, 20, (2, 600))
    x = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 18.0)
    return (x[:, None] * 255).astype(np.uint8)


def native(monkeypatch, kind: str | None) -> None:
    monkeypatch.setattr(prec, "cpu_bf16_kind", lambda: kind)


@pytest.mark.parametrize("kind", ["amx", "avx512_bf16"])
def test_auto_picks_bf16_for_conv_models_on_native_cpus(monkeypatch, kind):
    native(monkeypatch, kind)
    for name in ("vae", "ae", "dcgan", "cdcgan", "vqvae"):
        assert prec.resolve_precision("auto", build_model(name, input_shape=(1, 28, 28)), "cpu") == "bf16", name
    assert prec.resolve_precision("auto", build_model("vae", input_shape=(1, 28, 28), arch="mlp"), "cpu") == "bf16"
    for model in (build_model("vae", input_shape=(30,)), build_model("deep-svdd", input_shape=(1, 28, 28)),
                  build_model("wgan-gp", input_shape=(1, 28, 28))):
        assert prec.resolve_precision("auto", model, "cpu") == "fp32"  # measured no faster in bf16


def test_auto_stays_fp32_where_bf16_is_emulated(monkeypatch):
    native(monkeypatch, None)
    model = build_model("vae", input_shape=(1, 28, 28))
    assert prec.resolve_precision("auto", model, "cpu") == "fp32"
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert prec.resolve_precision("bf16", model, "cpu") == "bf16"


def test_emulated_bf16_still_trains(monkeypatch, images):
    """The forced-emulation path: an explicit bf16 on a CPU without native bf16 warns, then trains correctly."""
    native(monkeypatch, None)
    model = build_model("vae", input_shape=(1, 28, 28), latent_dim=4)
    with pytest.warns(RuntimeWarning, match="emulated"):
        result = fit(model, from_array(images), None, TrainConfig(epochs=1, precision="bf16", progress=False))
    assert result.precision == "bf16"
    assert np.isfinite(result.history[0]["train_loss"])


def test_models_that_are_not_ready_refuse_bf16():
    model = build_model("prodlda", input_shape=(50,))
    with pytest.raises(UserError, match="does not support --precision bf16"):
        prec.resolve_precision("bf16", model, "cpu")
    assert prec.resolve_precision("auto", model, "cpu") == "fp32"
    with pytest.raises(UserError, match="precision must be one of"):
        prec.check_precision("fp16")


@pytest.mark.parametrize("name", ["vae", "ae", "dcgan", "deep-svdd", "vqvae", "cdcgan"])
def test_objective_stays_fp32_under_bf16(name, images):
    """Networks run in bf16, but losses and the values they are made of come back as fp32."""
    model = build_model(name, input_shape=(1, 28, 28), **({"n_classes": 2} if name == "cdcgan" else {}))
    model.prepare(from_array(images))
    model.precision = "bf16"
    x = torch.from_numpy(images[:16]).float() / 255
    y = torch.zeros(16, dtype=torch.long) if model.uses_labels else None
    floats = lambda ts: [t for t in ts if t is not None and t.is_floating_point()]  # noqa: E731
    with prec.autocast(model):
        out = model.loss(Batch(x, y))
        assert all(v.dtype == torch.float32 for v in out.values()), {k: v.dtype for k, v in out.items()}
        if hasattr(model, "encode"):
            assert all(t.dtype == torch.float32 for t in floats(model.encode(x)))
        if hasattr(model, "sample"):
            drawn = model.sample(4, seed=0, label=0) if model.uses_labels else model.sample(4, seed=0)
            assert drawn.dtype == torch.float32
    weights = {p.dtype for p in model.parameters()}
    assert weights == {torch.float32}  # master weights stay fp32


def test_bf16_computes_the_same_objective_and_trains(images):
    """The same weights give the same test loss (a −ELBO in nats per image) in bf16 as in fp32, within 0.5 %;
    and a bf16 run learns. (Whole runs agree within 0.5 nats after 10 epochs on MNIST: bench_precision_quality.py;
    a short run from scratch is too chaotic to compare two runs.)"""
    data, test = from_array(images[:500]), from_array(images[500:])
    model = build_model("vae", input_shape=(1, 28, 28), latent_dim=8)
    fit(model, data, None, TrainConfig(epochs=2, precision="fp32", progress=False, batch_size=50))
    losses = {}
    for p in ("fp32", "bf16"):
        model.precision = p
        torch.manual_seed(0)
        losses[p] = evaluate_loss(model, test)["loss"]
    assert abs(losses["bf16"] - losses["fp32"]) < 0.005 * losses["fp32"], losses
    fresh = build_model("vae", input_shape=(1, 28, 28), latent_dim=8)
    torch.manual_seed(0)
    untrained = evaluate_loss(fresh, test)["loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on CPUs without it: slow, still right
        fit(fresh, data, None, TrainConfig(epochs=2, precision="bf16", progress=False, batch_size=50))
    fresh.precision = "fp32"
    torch.manual_seed(0)
    assert evaluate_loss(fresh, test)["loss"] < 0.6 * untrained


def test_precision_is_recorded_in_the_run(tmp_path, images, monkeypatch):
    from latentforge.run import train_run

    native(monkeypatch, "amx")
    np.save(tmp_path / "x.npy", images[:300])
    out = train_run("ae", str(tmp_path / "x.npy"), TrainConfig(epochs=1, progress=False, precision="auto"),
                    out=tmp_path / "run", eval_k=0)
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["train"]["precision"] == "auto"
    assert metrics["precision"] == "bf16" and metrics["evaluation"]["precision"] == "bf16"


def test_weights_save_and_load_across_layouts(tmp_path):
    """Weights held channels-last in memory (as runs of the tenth session's version did) are saved as plain tensors
    and load back exactly."""
    from latentforge.checkpoint import load_model, save_model

    model = build_model("vae", input_shape=(1, 28, 28)).to(memory_format=torch.channels_last)
    conv = model.encoder[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
