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
    for name in ("vae", "ae", "dcgan", "cdcgan"):
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
    model = build_model("vqvae", input_shape=(1, 28, 28))
    with pytest.raises(UserError, match="does not support --precision bf16"):
        prec.resolve_precision("bf16", model, "cpu")
    assert prec.resolve_precision("auto", model, "cpu") == "fp32"
    with pytest.raises(UserError, match="precision must be one of"):
        prec.check_precision("fp16")


@pytest.mark.parametrize("name", ["vae", "ae", "dcgan", "deep-svdd"])
def test_objective_stays_fp32_under_bf16(name, images):
    """Networks run in bf16, but losses and the values they are made of come back as fp32."""
    model = build_model(name, input_shape=(1, 28, 28))
    model.prepare(from_array(images))
    model.precision = "bf16"
    x = torch.from_numpy(images[:16]).float() / 255
    with prec.autocast(model):
        out = model.loss(Batch(x))
        assert all(v.dtype == torch.float32 for v in out.values()), {k: v.dtype for k, v in out.items()}
        if hasattr(model, "encode"):
            assert all(t is None or t.dtype == torch.float32 for t in model.encode(x))
        if hasattr(model, "sample"):
            assert model.sample(4, seed=0).dtype == torch.float32
    weights = {p.dtype for p in model.parameters()}
    assert weights == {torch.float32}  # master weights stay fp32


def test_bf16_and_fp32_train_to_the_same_loss(images):
    """The short version of the benchmark's check: two epochs of a conv VAE, same seed, fp32 vs bf16; the test
    loss (a −ELBO in nats per image) agrees within 1 % (bench_precision_quality.py: within 0.5 nats at 10 epochs)."""
    data, test = from_array(images[:500]), from_array(images[500:])
    losses = {}
    for p in ("fp32", "bf16"):
        model = build_model("vae", input_shape=(1, 28, 28), latent_dim=8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on CPUs without it: slow, still right
            fit(model, data, None, TrainConfig(epochs=2, precision=p, progress=False, batch_size=50))
        model.precision = "fp32"
        torch.manual_seed(0)
        losses[p] = evaluate_loss(model, test)["loss"]
    assert abs(losses["bf16"] - losses["fp32"]) < 0.01 * losses["fp32"], losses


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
    """Conv weights are kept channels-last in memory; saved files hold plain tensors that load back exactly."""
    from latentforge.checkpoint import load_model, save_model

    model = build_model("vae", input_shape=(1, 28, 28))
    conv = model.encoder[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
