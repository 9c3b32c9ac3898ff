"""scikit-learn-style estimators over the models and the one trainer.

``VAE(latent_dim=20, epochs=10).fit(X)`` then ``transform``, ``sample``, ``score_samples``,
``save_pretrained`` / ``VAE.from_pretrained``. ``__init__`` only stores parameters; fitted
attributes end in ``_``; inputs are validated once, at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .checkpoint import CONFIG, load_model, read_json, save_model
from .data import Dataset, from_array
from .errors import UserError
from .models import build_model
from .run import choose_likelihood
from .train import TrainConfig, fit


def _not_fitted(est) -> None:
    if not hasattr(est, "model_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit(X) first")


TRAIN_PARAMS = ("epochs", "batch_size", "lr", "random_state", "device", "verbose")


class ModelEstimator(TransformerMixin, BaseEstimator):
    """What every model estimator shares: fit through the one trainer, then transform/sample/score.

    Subclasses name their registered model (``registry_name``) and list its hyperparameters plus
    :data:`TRAIN_PARAMS` in ``__init__``; everything else lives here.
    """

    registry_name = ""

    def _dataset(self, X, y=None) -> Dataset:
        return from_array(X, y, name="X")

    def _model_kwargs(self, ds: Dataset) -> dict:
        kwargs = {k: v for k, v in self.get_params().items() if k not in TRAIN_PARAMS}
        for key in ("hidden", "channels"):
            if key in kwargs:
                kwargs[key] = [int(h) for h in kwargs[key]]
        if "likelihood" in kwargs:
            kwargs["likelihood"] = choose_likelihood(kwargs["likelihood"], ds, None)
        return kwargs

    def fit(self, X, y=None):
        """Train on X; ``y`` is used only by conditional models."""
        ds = self._dataset(X, y if getattr(self, "uses_labels", False) else None)
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)  # initial weights come from random_state, too
        try:
            model = build_model(self.registry_name, input_shape=list(ds.sample_shape), **self._model_kwargs(ds))
        except ValueError as e:
            raise UserError(str(e)) from None
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed, device=self.device,
                          progress=bool(self.verbose))
        result = fit(model, ds, None, cfg)
        self.model_ = model.cpu().eval()
        self.history_ = result.history
        self.input_shape_ = ds.sample_shape
        self.scale_ = ds.scale
        self.n_features_in_ = int(np.prod(ds.sample_shape))
        return self

    def _tensor(self, X) -> torch.Tensor:
        _not_fitted(self)
        ds = self._dataset(X)
        if ds.sample_shape != tuple(self.input_shape_):
            raise UserError(f"X has samples of shape {ds.sample_shape}, but the model was fitted on {tuple(self.input_shape_)}")
        x = ds.x.astype(np.float32)
        # Grey levels are read on the scale the model was fitted on (255, or 16 for digits): integer
        # inputs always, float inputs when they are not already in [0, 1].
        if self.scale_ != 1.0 and (not np.issubdtype(ds.x.dtype, np.floating) or x.max() > 1.0):
            x /= self.scale_
        elif ds.scale != 1.0:
            x /= ds.scale
        return torch.from_numpy(x)

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Codes of X (posterior means for VAEs), shape (n, latent_dim)."""
        x = self._tensor(X)
        return self.model_.encode(x)[0].numpy()

    @torch.no_grad()
    def inverse_transform(self, Z) -> np.ndarray:
        """Decoder means for latent codes Z."""
        _not_fitted(self)
        return self.model_.decode(torch.as_tensor(np.asarray(Z), dtype=torch.float32)).numpy()

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        x = self._tensor(X)
        return self.model_.reconstruct(x).numpy()

    @torch.no_grad()
    def sample(self, n: int = 64, *, label: int | None = None, seed: int | None = None) -> np.ndarray:
        """n new samples from the prior, decoder means in data units, shaped like the inputs."""
        _not_fitted(self)
        if not hasattr(self.model_, "sample"):
            raise UserError(f"{type(self).__name__} is not a generative model; it cannot sample")
        if n < 1:
            raise UserError(f"n must be at least 1, got {n}")
        if label is not None:
            return self.model_.sample(n, label=label, seed=seed).numpy()
        return self.model_.sample(n, seed=seed).numpy()

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """Per-sample log-likelihood proxy (higher = more typical): the ELBO in nats for VAEs,
        the negative reconstruction NLL for autoencoders."""
        x = self._tensor(X)
        with torch.random.fork_rng():  # reproducible scores without touching the caller's RNG
            torch.manual_seed(0 if self.random_state is None else int(self.random_state))
            if hasattr(self.model_, "elbo"):
                return self.model_.elbo(x).numpy()
            return -self.model_.anomaly_score(x).numpy()

    def score(self, X, y=None) -> float:
        return float(np.mean(self.score_samples(X)))

    def decision_function(self, X) -> np.ndarray:
        """Higher = more anomalous (the negative of score_samples)."""
        return -self.score_samples(X)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``model.safetensors`` + ``config.json`` (with the estimator's parameters)."""
        _not_fitted(self)
        directory = Path(directory)
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        save_model(self.model_, directory, {"estimator": params,
                                            "data_info": {"sample_shape": list(self.input_shape_), "scale": self.scale_}})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu"):
        """Load a ``save_pretrained`` directory or a ``latentforge train`` run directory."""
        model = load_model(directory, device=device)
        config = read_json(Path(directory) / CONFIG)
        names = cls._get_param_names()
        if "estimator" in config:
            params = {k: v for k, v in config["estimator"].items() if k in names}
        else:  # a CLI run: the model's settings and the run's training settings
            train = config.get("train", {})
            params = {k: v for k, v in {**config.get("model_config", {}), **train}.items() if k in names}
            if "seed" in train and "random_state" in names:
                params["random_state"] = train["seed"]
        # A setting saved before it existed (scaling, trim, n_nets, …) is the loaded model's own, not
        # today's default: the model rebuilt from the old config knows what it is.
        for key in names:
            if key not in params and key in getattr(model, "config", {}):
                params[key] = model.config[key]
        for key in ("hidden", "channels"):
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        est = cls(**params)
        est.model_ = model
        info = config.get("data_info", {})
        est.input_shape_ = tuple(info.get("sample_shape", model.config["input_shape"]))
        est.scale_ = float(info.get("scale", 1.0))
        est.n_features_in_ = int(np.prod(est.input_shape_))
        est.history_ = []
        return est


class VAE(ModelEstimator):
    """Variational autoencoder on images (n, H, W) / (n, C, H, W) or tables (n, features).

    uint8 inputs are read as grey levels 0–255; floats in [0, 1] get a Bernoulli decoder,
    other floats a Gaussian one on standardised features (``likelihood="auto"``).
    ``score_samples`` is the per-sample ELBO in nats (higher = more typical, scikit-learn's
    convention); ``decision_function`` is its negative (higher = more anomalous, PyOD's).
    """

    registry_name = "vae"

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 beta: float = 1.0, arch: str = "auto", scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.beta = beta
        self.arch = arch
        self.scaling = scaling
        self.trim = trim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017) with optional KL warm-up or capacity schedule (Burgess et al. 2018)."""

    registry_name = "beta-vae"

    def __init__(self, latent_dim: int = 10, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 beta: float = 4.0, arch: str = "auto", kl_warmup: int = 0, capacity: float = 0.0,
                 capacity_steps: int = 10000, scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, beta=beta, arch=arch,
                         scaling=scaling, trim=trim, epochs=epochs, batch_size=batch_size, lr=lr,
                         random_state=random_state, device=device, verbose=verbose)
        self.kl_warmup = kl_warmup
        self.capacity = capacity
        self.capacity_steps = capacity_steps


class AutoEncoder(ModelEstimator):
    """Deterministic autoencoder; ``decision_function`` is the reconstruction NLL (higher = more anomalous)."""

    registry_name = "ae"

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 arch: str = "auto", scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.arch = arch
        self.scaling = scaling
        self.trim = trim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


class DenoisingAutoEncoder(AutoEncoder):
    """Autoencoder trained to undo ``noise`` ("gaussian:0.3", "mask:0.5", "saltpepper:0.1")."""

    registry_name = "dae"

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 arch: str = "auto", noise: str = "mask:0.3", scaling: str = "standard", trim: float = 0.0,
                 epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, arch=arch, scaling=scaling,
                         trim=trim, epochs=epochs, batch_size=batch_size, lr=lr, random_state=random_state,
                         device=device, verbose=verbose)
        self.noise = noise


class CVAE(VAE):
    """Conditional VAE: ``fit(X, y)`` with integer labels, then ``sample(n, label=3)``."""

    registry_name = "cvae"
    uses_labels = True

    def _model_kwargs(self, ds: Dataset) -> dict:
        from .run import n_classes

        return {**super()._model_kwargs(ds), "n_classes": n_classes(ds)}


ESTIMATORS = {cls.registry_name: cls for cls in (VAE, BetaVAE, AutoEncoder, DenoisingAutoEncoder, CVAE)}


def load(run_dir: str | Path, *, device: str = "cpu"):
    """The estimator for any run or ``save_pretrained`` directory."""
    config = read_json(Path(run_dir) / CONFIG) if (Path(run_dir) / CONFIG).exists() else {}
    cls = ESTIMATORS.get(config.get("model", ""))
    if config.get("model") in ("deep-svdd", "ensemble"):
        from .detectors import DeepSVDD, EnsembleDetector

        cls = DeepSVDD if config["model"] == "deep-svdd" else EnsembleDetector
    if cls is None:
        load_model(run_dir)  # raises a clear error for a directory that is not a run
        raise UserError(f"{run_dir}: no Python estimator for model {config.get('model')!r} yet")
    return cls.from_pretrained(run_dir, device=device)


__all__ = ["VAE", "BetaVAE", "AutoEncoder", "DenoisingAutoEncoder", "CVAE", "ModelEstimator", "load"]
