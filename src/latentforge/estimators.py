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

from .checkpoint import CONFIG, load_model, read_json, save_model, write_json
from .data import Dataset, from_array
from .errors import UserError
from .models import build_model
from .run import choose_likelihood
from .train import TrainConfig, fit


def _not_fitted(est) -> None:
    if not hasattr(est, "model_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit(X) first")


class VAE(TransformerMixin, BaseEstimator):
    """Variational autoencoder on images (n, H, W) / (n, C, H, W) or tables (n, features).

    uint8 inputs are read as grey levels 0–255; floats in [0, 1] get a Bernoulli decoder,
    other floats a Gaussian one on standardised features (``likelihood="auto"``).
    ``score_samples`` is the per-sample ELBO in nats (higher = more typical, scikit-learn's
    convention); ``decision_function`` is its negative (higher = more anomalous, PyOD's).
    """

    registry_name = "vae"

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 beta: float = 1.0, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                 random_state: int | None = None, device: str = "auto", verbose: bool = False) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _dataset(self, X, y=None) -> Dataset:
        return from_array(X, y, name="X")

    def fit(self, X, y=None) -> VAE:
        """Train on X (labels are not used for training; they only colour pictures)."""
        ds = self._dataset(X, y)
        likelihood = choose_likelihood(self.likelihood, ds, None)
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)  # initial weights come from random_state, too
        try:
            model = build_model(self.registry_name, input_shape=list(ds.sample_shape), latent_dim=int(self.latent_dim),
                                hidden=[int(h) for h in self.hidden], likelihood=likelihood, beta=float(self.beta))
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
        x = ds.floats() if ds.scale != 1.0 else ds.x.astype(np.float32) / self.scale_
        return torch.from_numpy(x)

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Posterior means E[z|x], shape (n, latent_dim)."""
        return self.model_.encode(self._tensor(X))[0].numpy()

    @torch.no_grad()
    def inverse_transform(self, Z) -> np.ndarray:
        """Decoder means for latent codes Z."""
        _not_fitted(self)
        return self.model_.decode(torch.as_tensor(np.asarray(Z), dtype=torch.float32)).numpy()

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        return self.model_.reconstruct(self._tensor(X)).numpy()

    @torch.no_grad()
    def sample(self, n: int = 64, *, seed: int | None = None) -> np.ndarray:
        """n new samples from the prior, decoder means in data units, shaped like the inputs."""
        _not_fitted(self)
        if n < 1:
            raise UserError(f"n must be at least 1, got {n}")
        return self.model_.sample(n, seed=seed).numpy()

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """Per-sample ELBO in nats (higher = more typical)."""
        x = self._tensor(X)
        with torch.random.fork_rng():  # reproducible scores without touching the caller's RNG
            torch.manual_seed(0 if self.random_state is None else int(self.random_state))
            return self.model_.elbo(x).numpy()

    def score(self, X, y=None) -> float:
        return float(np.mean(self.score_samples(X)))

    def decision_function(self, X) -> np.ndarray:
        """Negative ELBO: higher = more anomalous."""
        return -self.score_samples(X)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``model.safetensors`` + ``config.json`` (with the estimator's parameters)."""
        _not_fitted(self)
        directory = Path(directory)
        save_model(self.model_, directory, {"estimator": {**self.get_params(), "hidden": list(self.hidden)},
                                            "data_info": {"sample_shape": list(self.input_shape_), "scale": self.scale_}})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu") -> VAE:
        """Load a ``save_pretrained`` directory or a ``latentforge train`` run directory."""
        model = load_model(directory, device=device)
        config = read_json(Path(directory) / CONFIG)
        params = {k: v for k, v in config.get("estimator", {}).items() if k in cls._get_param_names()}
        est = cls(**params)
        est.model_ = model
        info = config.get("data_info", {})
        est.input_shape_ = tuple(info.get("sample_shape", model.config["input_shape"]))
        est.scale_ = float(info.get("scale", 1.0))
        est.n_features_in_ = int(np.prod(est.input_shape_))
        est.history_ = []
        return est


ESTIMATORS = {"vae": VAE}


def load(run_dir: str | Path, *, device: str = "cpu"):
    """The estimator for any run or ``save_pretrained`` directory."""
    config = read_json(Path(run_dir) / CONFIG) if (Path(run_dir) / CONFIG).exists() else {}
    cls = ESTIMATORS.get(config.get("model", ""))
    if cls is None:
        load_model(run_dir)  # raises a clear error for a directory that is not a run
        raise UserError(f"{run_dir}: no Python estimator for model {config.get('model')!r} yet")
    return cls.from_pretrained(run_dir, device=device)


__all__ = ["VAE", "load", "write_json"]
