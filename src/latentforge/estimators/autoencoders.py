"""Estimators of the autoencoder family: ``VAE``, ``BetaVAE``, ``CVAE``, ``AutoEncoder``, ``DenoisingAutoEncoder``.

``VAE(latent_dim=20, epochs=10).fit(X)`` then ``transform``, ``inverse_transform``, ``reconstruct``,
``sample``, ``score_samples``; outputs are shaped like X's samples and in model units (grey levels in
[0, 1] for images fitted as integers 0–255; a table's own units for a Gaussian decoder). ``VAE``, ``BetaVAE``,
``AutoEncoder`` and ``DenoisingAutoEncoder`` also learn online, ``partial_fit(chunk)`` per chunk of a stream
(:meth:`~latentforge.estimators.base.ModelEstimator.partial_fit`; tests/test_partial_fit.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import TransformerMixin

from ..data import Dataset
from ..errors import UserError
from ..models.base import Likelihood, Sampler
from ..tasks.base import n_classes
from ..tasks.generate import choose_likelihood
from ..tasks.represent import finite_rows
from .base import ModelEstimator, not_fitted

SCORE_DRAWS = 16  # posterior draws per sample of score_samples' ELBO


def check_count(n, what: str = "n") -> int:
    """A count given from Python: a whole number ≥ 1 (``sample(2.5)`` is an error, not 2 samples)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UserError(f"{what} must be a whole number, got {n!r}")
    if n < 1:
        raise UserError(f"{what} must be at least 1, got {n}")
    if n > 10_000_000:
        raise UserError(f"{what} is too large ({n}); ask for at most 10,000,000 at a time")
    return int(n)


class AutoencoderEstimator(TransformerMixin, ModelEstimator):
    """Transformer contract over an autoencoder-family model."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the networks compute in float32, whatever X's dtype
        return tags

    def _model_settings(self, ds: Dataset) -> dict:
        settings = super()._model_settings(ds)
        if "likelihood" in settings:
            settings["likelihood"] = choose_likelihood(settings["likelihood"], ds, None)
        return settings

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Codes of X (posterior means for VAEs), shape (n, latent_dim)."""
        x = self._tensor(X)
        return finite_rows(self.model_.encode(x)[0].numpy(), "transform")

    @torch.no_grad()
    def inverse_transform(self, Z) -> np.ndarray:
        """Decoder means for latent codes Z (n, latent_dim), shaped like X's samples."""
        not_fitted(self)
        width = self.model_.latent_dim
        z = Z.detach().cpu().numpy() if hasattr(Z, "detach") else Z
        try:
            z = np.asarray(z)
            if np.iscomplexobj(z) or not (np.issubdtype(z.dtype, np.number) or z.dtype == np.bool_):
                raise TypeError(z.dtype)
            z = z.astype(np.float64)
        except (TypeError, ValueError):
            raise UserError(f"Z must be a numeric (n, {width}) array of real codes, one per row") from None
        if z.ndim != 2 or z.shape[1] != width:
            raise UserError(f"Z must have shape (n, {width}) (one code per row), got {z.shape}")
        if not np.isfinite(z).all() or (np.abs(z) > np.finfo(np.float32).max).any():
            raise UserError("Z holds NaN/Inf or out-of-range codes; give finite codes")
        if len(z) == 0:
            return np.empty((0, *(self.sample_shape_in_ or self.input_shape_)), np.float32)
        out = self.model_.decode(torch.from_numpy(z.astype(np.float32))).numpy()
        return self._as_input_shape(finite_rows(out, "inverse_transform"))

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        """Encode then decode X; shaped like X's samples, in model units."""
        x = self._tensor(X)
        return self._as_input_shape(finite_rows(self.model_.reconstruct(x).numpy(), "reconstruct"))

    @torch.no_grad()
    def sample(self, n: int = 64, *, label: int | None = None, seed: int | None = None) -> np.ndarray:
        """n new samples from the prior: decoder means, shaped like X's samples, in model units."""
        not_fitted(self)
        if not isinstance(self.model_, Sampler):
            raise UserError(f"{type(self).__name__} is not a generative model; it cannot sample")
        n = check_count(n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or
                                 not 0 <= seed < 2**63):
            raise UserError(f"seed must be a whole number in [0, 2**63), got {seed!r}")
        if self.model_.uses_labels:
            k = self.model_.n_classes
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < k:
                raise UserError(f"this model is conditional: give label=L with L a whole number in 0..{k - 1}")
            return self._as_input_shape(self.model_.sample(n, label=int(label), seed=seed).numpy())
        if label is not None:
            raise UserError(f"{type(self).__name__} is unconditional; sample without a label")
        return self._as_input_shape(self.model_.sample(n, seed=seed).numpy())

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """Per-sample log-likelihood proxy (higher = more typical): the ELBO in nats for VAEs (averaged over
        16 posterior draws shared by all samples, so a sample's score does not depend on its batch-mates),
        the negative reconstruction NLL for autoencoders."""
        x = self._tensor(X)
        if isinstance(self.model_, Likelihood):
            seed = 0 if self.random_state is None else int(self.random_state)
            noise = torch.randn(SCORE_DRAWS, self.model_.latent_dim, generator=torch.Generator().manual_seed(seed))
            return finite_rows(self.model_.elbo(x, noise=noise).numpy(), "score_samples")
        return finite_rows(-self.model_.anomaly_score(x).numpy(), "score_samples")

    def score(self, X, y=None) -> float:
        """Mean of :meth:`score_samples`."""
        return float(np.mean(self.score_samples(X)))

    def decision_function(self, X) -> np.ndarray:
        """Higher = more anomalous (the negative of score_samples)."""
        return -self.score_samples(X)


class VAE(AutoencoderEstimator):
    """Variational autoencoder on images (n, H, W) / (n, C, H, W) or tables (n, features).

    uint8 inputs are read as grey levels 0–255; floats in [0, 1] get a Bernoulli decoder,
    other floats a Gaussian one on standardised features (``likelihood="auto"``).
    ``score_samples`` is the per-sample ELBO in nats (higher = more typical, scikit-learn's
    convention); ``decision_function`` is its negative (higher = more anomalous, PyOD's).
    ``augment="shift:2,rotate:10"`` changes each training image at random (images only; see ``--augment``).
    """

    model_names = ("vae",)
    partial_fit_refused = None

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 beta: float = 1.0, arch: str = "auto", scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False, precision: str = "auto",
                 augment: str | None = None) -> None:
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
        self.precision = precision
        self.augment = augment


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017) with optional KL warm-up or capacity schedule (Burgess et al. 2018)."""

    model_names = ("beta-vae",)

    def __init__(self, latent_dim: int = 10, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 beta: float = 4.0, arch: str = "auto", kl_warmup: int = 0, capacity: float = 0.0,
                 capacity_steps: int = 10000, scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False, precision: str = "auto",
                 augment: str | None = None) -> None:
        super().__init__(latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, beta=beta, arch=arch,
                         scaling=scaling, trim=trim, epochs=epochs, batch_size=batch_size, lr=lr,
                         random_state=random_state, device=device, verbose=verbose, precision=precision,
                         augment=augment)
        self.kl_warmup = kl_warmup
        self.capacity = capacity
        self.capacity_steps = capacity_steps


class CVAE(VAE):
    """Conditional VAE: ``fit(X, y)`` with integer labels, then ``sample(n, label=3)``."""

    model_names = ("cvae",)
    # Its label embedding is sized by the labels fit sees; a first chunk without the highest class could not
    # take that class later. (A classes= argument, as scikit-learn's classifiers have, would lift this.)
    partial_fit_refused = "its number of classes is set from all the labels given to fit"

    def _model_settings(self, ds: Dataset) -> dict:
        return {**super()._model_settings(ds), "n_classes": n_classes(ds)}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def fit(self, X, y=None):
        """Train on X with integer labels y (0..K−1)."""
        if y is None:
            raise UserError("CVAE requires y to be passed, but the target y is None: fit(X, y) with integer "
                            "labels 0..K-1")
        return super().fit(X, y)


class AutoEncoder(AutoencoderEstimator):
    """Deterministic autoencoder; ``decision_function`` is the reconstruction NLL (higher = more anomalous).
    ``augment="shift:2,rotate:10"`` changes each training image at random (images only; see ``--augment``)."""

    model_names = ("ae",)
    partial_fit_refused = None

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 arch: str = "auto", scaling: str = "standard", trim: float = 0.0, epochs: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False, precision: str = "auto",
                 augment: str | None = None) -> None:
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
        self.precision = precision
        self.augment = augment


class DenoisingAutoEncoder(AutoEncoder):
    """Autoencoder trained to undo ``noise`` ("gaussian:0.3", "mask:0.5", "saltpepper:0.1")."""

    model_names = ("dae",)

    def __init__(self, latent_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "auto",
                 arch: str = "auto", noise: str = "mask:0.3", scaling: str = "standard", trim: float = 0.0,
                 epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False, precision: str = "auto",
                 augment: str | None = None) -> None:
        super().__init__(latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, arch=arch, scaling=scaling,
                         trim=trim, epochs=epochs, batch_size=batch_size, lr=lr, random_state=random_state,
                         device=device, verbose=verbose, precision=precision, augment=augment)
        self.noise = noise
