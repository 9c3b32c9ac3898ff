"""Every registered model does what it declares: it trains through the one trainer, and each capability
protocol it implements gives outputs of the promised shape; its settings are declared once, with help, and
the CLI flags and the estimators' parameters agree with them."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import fields

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from latentforge.cli_options import model_flags
from latentforge.data import Dataset
from latentforge.estimators import (AEDetector, AutoEncoder, BetaVAE, CVAE, DeepSVDD, DenoisingAutoEncoder, MultDAE,
                                    MultVAE, TopicModel, VAE)
from latentforge.models import MODELS, build_model, capabilities
from latentforge.models.base import Model
from latentforge.settings import SettingError
from latentforge.tasks import TASKS
from latentforge.train import TrainConfig, fit

rng = np.random.default_rng(0)
IMAGES = Dataset(x=(rng.random((48, 1, 16, 16)) < 0.3).astype(np.float32), y=rng.integers(0, 3, 48), name="img")
TABLE = Dataset(x=rng.normal(size=(48, 6)).astype(np.float32), name="table")
ITEMS = Dataset(x=sp.csr_matrix((rng.random((48, 30)) < 0.2).astype(np.float32)), name="items")
COUNTS = Dataset(x=sp.csr_matrix(rng.poisson(0.5, (48, 40)).astype(np.float32)), name="counts")  # words per document

SMALL = {"latent_dim": 4, "hidden": (16,), "channels": (4, 8), "n_codes": 8, "code_dim": 4, "prior_width": 8,
         "n_nets": 2}


def data_for(name: str) -> Dataset:
    cls = MODELS[name]
    return {"recommend": ITEMS, "anomaly": TABLE, "topics": COUNTS}.get(cls.task, IMAGES)


def small_model(name: str) -> Model:
    cls, ds = MODELS[name], data_for(name)
    settings = {k: v for k, v in SMALL.items() if k in cls.Config.names()}
    if "n_classes" in cls.Config.names():
        settings["n_classes"] = 3
    torch.manual_seed(0)
    return build_model(name, input_shape=list(ds.sample_shape), **settings)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_and_does_what_it_declares(name: str) -> None:
    model, ds = small_model(name), data_for(name)
    assert model.task in TASKS and model.registry_name == name
    result = fit(model, ds, ds, TrainConfig(epochs=1, batch_size=16, device="cpu", progress=False))
    row = result.history[0]
    trained = [v for k, v in row.items() if k in ("train_loss", "train_d_loss")]  # GANs log D's and G's losses
    assert trained and np.isfinite(trained).all() and np.isfinite(row["test_loss"])
    x = torch.from_numpy(ds.head(5))
    caps = capabilities(model)
    with torch.no_grad():
        if "encode" in caps:
            z = model.encode(x)[0] if not model.uses_labels else model.encode(x, torch.zeros(5, dtype=torch.long))[0]
            assert z.shape[0] == 5 and torch.isfinite(z).all()
            if "decode" in caps and not model.uses_labels:
                assert model.decode(z).shape == (5, *ds.sample_shape)
        if "sample" in caps:
            s = model.sample(3, seed=0) if not model.uses_labels else model.sample(3, label=1, seed=0)
            assert s.shape == (3, *ds.sample_shape) and torch.isfinite(s).all()
            again = model.sample(3, seed=0) if not model.uses_labels else model.sample(3, label=1, seed=0)
            assert torch.equal(s, again)  # a seed gives the same samples
        if "reconstruct" in caps:
            assert model.reconstruct(x).shape == x.shape
        if "denoise" in caps:
            noisy = model.corrupted(x, seed=3)
            assert noisy.shape == x.shape and not torch.equal(noisy, x)
            assert torch.equal(noisy, model.corrupted(x, seed=3))  # the seed gives the same noise
        if "anomaly_score" in caps:
            a = model.anomaly_score(x)
            assert a.shape == (5,) and torch.isfinite(a).all()
        if "likelihood" in caps:
            assert model.elbo(x).shape == (5,) and model.iwae_nll(x, k=4).shape == (5,)
            noise = torch.randn(4, model.latent_dim)
            alone = model.elbo(x[:1], noise=noise)
            assert torch.allclose(alone, model.elbo(x, noise=noise)[:1], atol=1e-4)  # batch-mates change nothing
        if "rank" in caps:
            assert model.scores(x).shape == (5, ds.sample_shape[0])
        if "progress" in caps:
            assert model.progress_samples().shape[1:] == ds.sample_shape
        if "codebook" in caps:
            assert model.codebook_usage().shape == (model.config["n_codes"],)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_is_recorded_and_rebuilds_the_same_model(name: str) -> None:
    model = small_model(name)
    again = build_model(name, **model.config)
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_setting_is_declared_with_help_and_checked(name: str) -> None:
    cls = MODELS[name]
    hints = typing.get_type_hints(cls.Config)
    for f in fields(cls.Config):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
        assert f.name in hints
    with pytest.raises(SettingError, match="not a setting"):
        build_model(name, input_shape=list(data_for(name).sample_shape), no_such_setting=1)


def test_negative_and_out_of_range_settings_are_refused_by_name() -> None:
    for name, bad in (("vae", {"beta": -1}), ("vqvae", {"n_codes": 0}), ("vqvae", {"commitment": -1}),
                      ("dae", {"noise": "gaussian:-1"}), ("deep-svdd", {"nu": 0}), ("wgan-gp", {"gp_weight": -1}),
                      ("mult-vae", {"dropout": 1.0}), ("iwae", {"k": 0}), ("beta-vae", {"capacity_steps": 0})):
        with pytest.raises(SettingError, match=next(iter(bad))):
            build_model(name, input_shape=list(data_for(name).sample_shape), **bad)


def test_cli_flags_cover_every_setting_with_every_models_default() -> None:
    flags = model_flags()
    for name, cls in MODELS.items():
        defaults = cls.Config.defaults()
        for f in fields(cls.Config):
            if f.name == "input_shape" or not f.metadata.get("cli", True):
                continue
            shown = f.metadata.get("cli_default") or defaults[f.name]
            assert flags[f.name]["defaults"][name] == shown, (name, f.name)
    out = subprocess.run([sys.executable, "-m", "latentforge.cli", "train", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""})
    text = " ".join(out.stdout.split())
    for name in MODELS:
        assert name in text, name
    assert "--n-codes" in text and "vqvae: 128" in text and "--gp-weight" in text and "beta-vae: 10" in text


# Estimator parameters that deliberately differ from the model's default, and why.
OVERRIDES = {
    "likelihood": "auto: the estimator picks bernoulli or gaussian from the data",
    (AEDetector, "latent_dim"): "None: a quarter of a table's width, 32 for images",
    (AEDetector, "hidden"): "(64,): detectors work on tables of a few dozen columns",
    (AEDetector, "scaling"): "robust: training data that contain anomalies",
    (AEDetector, "trim"): "0.2: leave the least likely rows out of the loss",
}


@pytest.mark.parametrize("est", [VAE, BetaVAE, CVAE, AutoEncoder, DenoisingAutoEncoder, DeepSVDD, AEDetector, MultVAE,
                                 MultDAE, TopicModel])
def test_estimator_parameters_agree_with_the_model_settings(est) -> None:
    model = MODELS[est.model_names[0]]
    defaults = model.Config.defaults()
    for name, value in est().get_params().items():
        if name not in defaults or name in OVERRIDES or (est, name) in OVERRIDES:
            continue
        want = defaults[name]
        got = tuple(value) if isinstance(value, list) else value
        assert got == want, f"{est.__name__}({name}={value!r}) but {model.registry_name} defaults to {want!r}"
