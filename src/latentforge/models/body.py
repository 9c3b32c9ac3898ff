"""What the autoencoder family shares: encoder/decoder stacks chosen by ``arch``, input
standardisation for tables, and the decoder likelihood (per-sample NLL in nats, output means).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..nn import ACTIVATIONS, conv_decoder, conv_encoder, mlp, resolve_arch
from .likelihoods import LIKELIHOODS, bernoulli_nll, cb_mean, cb_nll, gaussian_nll


class Body(nn.Module):
    """Base for AE/DAE/VAE-style models. Subclasses call :meth:`build` in ``__init__``."""

    def build(self, *, input_shape: Sequence[int], likelihood: str, arch: str, hidden: Sequence[int],
              channels: Sequence[int], activation: str, decoder_in: int) -> int:
        """Create ``encoder`` (x → features) and ``decoder`` (code → flat outputs); return the feature size."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        arch = resolve_arch(arch, input_shape)
        if any(h < 1 for h in hidden) or any(c < 1 for c in channels):
            raise ValueError("hidden sizes and channels must be positive")
        self.setup_io(input_shape=input_shape, likelihood=likelihood)
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

    def setup_io(self, *, input_shape: Sequence[int], likelihood: str) -> None:
        """Input shape, likelihood and the standardisation buffers (for models with their own networks)."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        self.input_shape = tuple(input_shape)
        self.likelihood = likelihood
        d = math.prod(input_shape)
        # Gaussian decoders work on standardised features; the statistics travel with the weights.
        self.register_buffer("x_shift", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(d))
        self.log_scale = nn.Parameter(torch.zeros(d)) if likelihood == "gaussian" else None

    def prepare(self, data) -> None:
        """Fit the stored standardisation to the training set (Gaussian likelihood only).

        A feature that is constant in training gets scale 1 (see :func:`feature_scaling`).
        """
        if self.likelihood == "gaussian":
            shift, scale = feature_scaling(data.floats().reshape(len(data), -1))
            self.x_shift.copy_(shift)
            self.x_scale.copy_(scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of raw inputs (standardised first where the likelihood is Gaussian)."""
        x = x.flatten(1)
        if self.likelihood == "gaussian":
            x = (x - self.x_shift) / self.x_scale
        if self.arch == "conv":
            x = x.view(-1, *self.input_shape)
        return self.encoder(x)

    def decoder_out(self, code: torch.Tensor) -> torch.Tensor:
        """Flat decoder pre-activations; extra leading dims of ``code`` (e.g. importance samples) are kept."""
        lead = code.shape[:-1]
        return self.decoder(code.reshape(-1, code.shape[-1])).view(*lead, -1)

    def output_mean(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder pre-activations → mean of p(x|·) in data units, shaped like the input."""
        if self.likelihood == "bernoulli":
            out = torch.sigmoid(out)
        elif self.likelihood == "cb":
            out = cb_mean(out)
        else:
            out = out * self.x_scale + self.x_shift
        return out.view(*out.shape[:-1], *self.input_shape)

    def recon_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x|·) per sample, in nats of the original data units (x flat)."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(out, x)
        if self.likelihood == "cb":
            return cb_nll(out, x)
        xs = (x - self.x_shift) / self.x_scale
        return gaussian_nll(out, xs, self.log_scale) + torch.log(self.x_scale).sum()

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return torch.Generator(device=self.x_shift.device).manual_seed(seed) if seed is not None else None


def feature_scaling(x, *, floor: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale for standardising a table.

    The scale is the standard deviation, or 1 for a feature that is constant in training: dividing by
    std + 1e-8 there would turn any change at test time into a score of 10¹⁶; with 1 the change counts
    in the feature's own units and every score stays finite.
    """
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > floor * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(scale).float()
