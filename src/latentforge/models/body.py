"""What the autoencoder family shares: encoder/decoder stacks chosen by ``arch``, input
standardisation for tables, the decoder likelihood (per-sample NLL in nats, output means) and the
optionally trimmed training loss.

Tables (Gaussian likelihood) are standardised inside the model with stored training statistics:
``scaling="standard"`` uses mean and standard deviation; ``scaling="robust"`` uses the median and
the interquartile range (IQR / 1.349, the standard deviation of a normal distribution) and then
``u = 3·asinh(x/3)``, which is close to linear within three robust standard deviations of the
median (the range of normal values) and logarithmic beyond. The robust form is meant for
training data that contain the anomalies one wants to find: a few extreme rows inflate the standard
deviation and squeeze the bulk of a skewed feature (a lab value, say) into a sliver, where a
moderately raised value no longer stands out. The likelihood keeps the change-of-variables term, so
−log p(x) is in nats of the original units with either scaling.

``trim=q`` makes the objective the mean loss over the (1 − q) share of each batch with the lowest
per-sample loss: rows the model finds least likely (often the anomalies hidden in unlabeled
training data) do not pull the model towards them. The objective is the same on held-out data, so
early stopping watches the fit to the normal rows, not how badly the anomalies among the held-out
rows fit (which should grow). Likelihood metrics (ELBO, IWAE NLL, reconstruction errors) are never
trimmed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..nn import ACTIVATIONS, conv_decoder, conv_encoder, mlp, resolve_arch
from ..settings import setting
from .base import Model, ModelConfig
from .likelihoods import LIKELIHOODS, bernoulli_nll, cb_mean, cb_nll, gaussian_nll

SCALINGS = ("standard", "robust")
ROBUST_SAMPLE = 100_000  # rows of streamed data the robust scaling's median and IQR are taken from
KNEE = 3.0  # robust scaling: u = KNEE·asinh(x / KNEE), linear for |x| ≲ KNEE, logarithmic beyond


ARCHS = ("auto", "mlp", "conv")


@dataclass
class BodyConfig(ModelConfig):
    """Settings of the autoencoder family's networks."""

    latent_dim: int = setting(20, "size of the latent code z", min=1)
    hidden: tuple[int, ...] = setting((400,), "hidden layer sizes of the encoder; the decoder mirrors them", min=1)
    likelihood: str = setting("bernoulli", "decoder likelihood: bernoulli, cb (continuous Bernoulli) or gaussian "
                              "(auto: bernoulli for values in [0, 1], else gaussian)", choices=LIKELIHOODS,
                              cli_default="auto")
    activation: str = setting("relu", "activation between layers", choices=tuple(ACTIVATIONS))
    arch: str = setting("auto", "network: mlp, conv or auto (conv for images of at least 28x28, else mlp)",
                        choices=ARCHS)
    channels: tuple[int, ...] = setting((32, 64), "conv channels per stride-2 stage", min=1)
    scaling: str = setting("standard", "tables: standard (mean/std) or robust (median/IQR, asinh)", choices=SCALINGS)
    trim: float = setting(0.0, "leave this share of worst-fit rows out of each batch's loss", min=0, below=1)


class Body(Model):
    """Base for AE/DAE/VAE-style models. Subclasses call :meth:`build` in ``__init__``."""

    bf16_ready = True  # encoder codes and decoder outputs are cast to fp32 before the objective

    def prefers_bf16(self) -> bool:
        """Measured faster under bf16 autocast on a CPU with AVX-512 BF16 (benchmarks/bench_conv_speed.py,
        bench_vae_speed.py): conv networks (1.3×), and MLPs on images of 28×28 and up (the seed VAE, 1.29×: its
        784-wide matmuls pay for the casts). Small tables stay fp32: there the casts cost more than they save."""
        return self.arch == "conv" or (len(self.input_shape) == 3 and math.prod(self.input_shape) >= 784)

    def build(self, *, input_shape: Sequence[int], likelihood: str, arch: str, hidden: Sequence[int],
              channels: Sequence[int], activation: str, decoder_in: int, scaling: str = "standard",
              trim: float = 0.0) -> int:
        """Create ``encoder`` (x → features) and ``decoder`` (code → flat outputs); return the feature size."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        arch = resolve_arch(arch, input_shape)
        if any(h < 1 for h in hidden) or any(c < 1 for c in channels):
            raise ValueError("hidden sizes and channels must be positive")
        self.setup_io(input_shape=input_shape, likelihood=likelihood, scaling=scaling, trim=trim)
        self.arch = arch
        d = math.prod(input_shape)
        if arch == "mlp":
            self.encoder = mlp([d, *hidden], activation=activation)
            feat = hidden[-1] if hidden else d
            self.decoder = mlp([decoder_in, *reversed(hidden), d], activation=activation, last_activation=False)
        else:
            feat = hidden[-1] if hidden else 256
            self.encoder = nn.Sequential(conv_encoder(input_shape, feat, channels=channels, activation=activation),
                                         ACTIVATIONS[activation]())
            self.decoder = conv_decoder(decoder_in, input_shape, channels=channels, activation=activation)
        return feat

    def build_from(self, c: BodyConfig, *, decoder_in: int) -> int:
        """:meth:`build` from the family's settings; records the resolved ``arch`` in them."""
        feat = self.build(input_shape=c.input_shape, likelihood=c.likelihood, arch=c.arch, hidden=c.hidden,
                          channels=c.channels, activation=c.activation, decoder_in=decoder_in, scaling=c.scaling,
                          trim=c.trim)
        c.arch = self.arch  # "auto" resolved, so a saved run rebuilds the same network
        return feat

    def setup_io(self, *, input_shape: Sequence[int], likelihood: str, scaling: str = "standard",
                 trim: float = 0.0) -> None:
        """Input shape, likelihood, scaling, trimming and the standardisation buffers (for models with
        their own networks)."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
        if not 0.0 <= trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {trim}")
        if scaling != "standard" and likelihood != "gaussian":
            raise ValueError(f"scaling={scaling!r} applies to tables (the Gaussian likelihood), not {likelihood!r}")
        self.input_shape = tuple(input_shape)
        self.likelihood, self.scaling, self.trim = likelihood, scaling, float(trim)
        d = math.prod(input_shape)
        # Gaussian decoders work on standardised features; the statistics travel with the weights.
        self.register_buffer("x_shift", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(d))
        self.log_scale = nn.Parameter(torch.zeros(d)) if likelihood == "gaussian" else None

    def prepare(self, data) -> None:
        """Fit the stored standardisation to the training set (Gaussian likelihood only).

        A feature that is constant in training gets scale 1 (see :func:`feature_scaling`). Data streamed from
        disk (larger than memory) is not read whole: the mean and standard deviation come from its one
        streaming pass; the robust median and IQR from a seeded sample of ``ROBUST_SAMPLE`` rows.
        """
        if self.likelihood == "gaussian":
            robust, streamed = self.scaling == "robust", getattr(data, "streamed", False)
            if streamed and not robust:
                shift, scale = feature_scaling(None, moments=data.moments())
            else:
                rows = data.sample(ROBUST_SAMPLE) if streamed else data
                shift, scale = feature_scaling(rows.floats().reshape(len(rows), -1), robust=robust)
            self.x_shift.copy_(shift)
            self.x_scale.copy_(scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of raw inputs (standardised first where the likelihood is Gaussian)."""
        x = x.flatten(1)
        if self.likelihood == "gaussian":
            x = self.standardise(x)
        if self.arch == "conv":
            x = x.view(-1, *self.input_shape)
        return self.encoder(x)

    def decoder_out(self, code: torch.Tensor) -> torch.Tensor:
        """Flat decoder pre-activations; extra leading dims of ``code`` (e.g. importance samples) are kept."""
        lead = code.shape[:-1]
        return self.decoder(code.reshape(-1, code.shape[-1])).float().view(*lead, -1)  # fp32 under bf16 autocast

    def output_mean(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder pre-activations → mean of p(x|·) in data units, shaped like the input (robust scaling:
        the median, sinh of the Gaussian's mean, which is what reconstructions and samples show)."""
        if self.likelihood == "bernoulli":
            out = torch.sigmoid(out)
        elif self.likelihood == "cb":
            out = cb_mean(out)
        else:
            out = self.unstandardise(out)
        return out.view(*out.shape[:-1], *self.input_shape)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Data units → the units the network sees (flat x)."""
        return self._soft_tails((x - self.x_shift) / self.x_scale)

    def _soft_tails(self, xs: torch.Tensor) -> torch.Tensor:
        """Robust scaling's second step on scaled values: KNEE·asinh(xs / KNEE); identity otherwise."""
        return KNEE * torch.asinh(xs / KNEE) if self.scaling == "robust" else xs

    def unstandardise(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`standardise` (robust: sinh's argument is capped at 80, where it still fits float32)."""
        if self.scaling == "robust":
            u = KNEE * torch.sinh((u / KNEE).clamp(-80.0, 80.0))
        return u * self.x_scale + self.x_shift

    def trimmed_mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Batch mean of a per-sample loss; with ``trim > 0``, over the lowest (1 − trim) share."""
        if self.trim <= 0:
            return per_sample.mean()
        keep = max(1, int(round(len(per_sample) * (1.0 - self.trim))))
        return per_sample.topk(keep, largest=False, sorted=False).values.mean()

    def recon_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x|·) per sample, in nats of the original data units (x flat)."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(out, x)
        if self.likelihood == "cb":
            return cb_nll(out, x)
        xs = (x - self.x_shift) / self.x_scale
        log_jacobian = torch.log(self.x_scale).sum()
        if self.scaling == "robust":  # u = K·asinh(xs/K): −log |du/dx| = log scale + log √(1 + (xs/K)²)
            root = torch.hypot(torch.ones_like(xs), xs / KNEE)  # without overflowing the square
            return gaussian_nll(out, self._soft_tails(xs), self.log_scale) + log_jacobian + torch.log(root).sum(-1)
        return gaussian_nll(out, xs, self.log_scale) + log_jacobian

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return torch.Generator(device=self.x_shift.device).manual_seed(seed) if seed is not None else None


def feature_scaling(x, *, floor: float = 1e-8, robust: bool = False,
                    moments: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature shift and scale for standardising a table.

    The scale is the standard deviation, or 1 for a feature that is constant in training: dividing by
    std + 1e-8 there would turn any change at test time into a score of 10¹⁶; with 1 the change counts
    in the feature's own units and every score stays finite. ``robust``: the median and IQR / 1.349,
    falling back to the standard deviation where the IQR is zero (a feature that is mostly one value).
    ``moments``: (mean, standard deviation) computed elsewhere (a streaming pass) instead of ``x``.
    """
    if moments is not None:
        shift, std = (np.asarray(m, dtype=np.float64) for m in moments)
    else:
        x = np.asarray(x, dtype=np.float64)
        shift, std = (np.median(x, 0) if robust else x.mean(0)), x.std(0)
    usable = lambda s: s > floor * np.maximum(1.0, np.abs(shift))  # noqa: E731
    scale = np.where(usable(std), std, 1.0)
    if robust:
        q1, q3 = np.percentile(x, [25, 75], axis=0)
        iqr = (q3 - q1) / 1.349
        scale = np.where(usable(iqr), iqr, scale)
    return torch.from_numpy(shift).float(), torch.from_numpy(scale).float()


def robust_location_scale(scores: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and IQR along ``dim``, to put scores of different models on one scale. Where the IQR
    is (near) zero the scores carry no ranking, and the scale is infinite: standardised, they are 0."""
    probs = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64, device=scores.device)
    q1, med, q3 = torch.quantile(scores.double(), probs, dim=dim)
    iqr = q3 - q1
    scale = torch.where(iqr > 1e-9 * torch.clamp(med.abs(), min=1.0), iqr, torch.full_like(iqr, math.inf))
    return med.to(scores.dtype), scale.to(scores.dtype)
