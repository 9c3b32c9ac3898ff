"""Deterministic autoencoders: the plain AE and the denoising AE (Vincent et al. 2008)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..settings import SettingError, setting
from .base import Batch
from .body import Body, BodyConfig
from .registry import register

NOISES = ("gaussian", "clipped", "mask", "saltpepper")


def parse_noise(spec: str) -> tuple[str, float]:
    """``"gaussian:0.3"`` → ("gaussian", 0.3): σ of added noise (``clipped``: then clipped to [0, 1]), or the
    fraction masked / flipped."""
    kind, _, level = spec.partition(":")
    try:
        value = float(level)
    except ValueError:
        raise SettingError("noise", f"must look like gaussian:0.3, clipped:0.5, mask:0.5 or saltpepper:0.1; "
                           f"got {spec!r}") from None
    if kind not in NOISES or not value >= 0 or (kind in ("mask", "saltpepper") and value > 1):
        raise SettingError("noise", f"must be one of gaussian:σ, clipped:σ, mask:p, saltpepper:p (0 ≤ p ≤ 1); "
                           f"got {spec!r}")
    return kind, value


def corrupt(x: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """A noisy copy of x (values in the units the model sees)."""
    if kind == "gaussian":
        return x + level * torch.randn_like(x)
    if kind == "clipped":  # sensor-like noise on grey levels in [0, 1]: what a saturated image keeps
        return (x + level * torch.randn_like(x)).clamp(0.0, 1.0)
    keep = torch.rand_like(x) >= level
    if kind == "mask":
        return x * keep
    salt = (torch.rand_like(x) < 0.5).to(x.dtype)  # flipped entries become 0 or 1 with equal odds
    return torch.where(keep, x, salt)


@dataclass
class AEConfig(BodyConfig):
    """Settings of the plain autoencoder."""


@dataclass
class DAEConfig(BodyConfig):
    """Settings of the denoising autoencoder."""

    noise: str = setting("mask:0.3", "corruption while training: gaussian:σ, clipped:σ (Gaussian, then clipped to "
                         "[0, 1]), mask:p or saltpepper:p")

    def check(self) -> None:
        super().check()
        kind, _ = parse_noise(self.noise)
        if kind == "clipped" and self.likelihood == "gaussian":
            raise SettingError("noise", f"{self.noise} clips to [0, 1], which only fits values in [0, 1] (bernoulli "
                               "or cb likelihood); for other data use gaussian:σ")


@register("ae", AEConfig, task="generate")
class AutoEncoder(Body):
    """x → z → x̂ with a reconstruction loss: BCE (``likelihood="bernoulli"``) or Gaussian NLL (MSE-like)."""

    def __init__(self, c: AEConfig) -> None:
        super().__init__()
        self.latent_dim = c.latent_dim
        self.to_code = nn.Linear(self.build_from(c, decoder_in=c.latent_dim), c.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The code z (a tuple like VAE.encode, so tasks treat both alike)."""
        return self.to_code(self.features(x)).float(), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.output_mean(self.decoder_out(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.x.flatten(1)
        rec = self.recon_nll(self.decoder_out(self.encode(self._input(x))[0]), x)
        return {"loss": self.trimmed_mean(rec)}

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction NLL per sample: higher = more anomalous."""
        x = x.flatten(1)
        return self.recon_nll(self.decoder_out(self.encode(x)[0]), x)


@register("dae", DAEConfig, task="generate")
class DenoisingAutoEncoder(AutoEncoder):
    """Trained to reconstruct clean inputs from corrupted ones (``noise="gaussian:0.3"``, ``"clipped:0.5"``,
    ``"mask:0.5"``, ``"saltpepper:0.1"``); corruption only while training."""

    def __init__(self, c: DAEConfig) -> None:
        super().__init__(c)
        self.noise_kind, self.noise_level = parse_noise(c.noise)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return self._noisy(x) if self.training else x

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "gaussian":  # corrupt in standardised units, then back
            return self.unstandardise(corrupt(self.standardise(x), self.noise_kind, self.noise_level))
        return corrupt(x, self.noise_kind, self.noise_level)

    @torch.no_grad()
    def corrupted(self, x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """``x`` with the training noise (kind and level), drawn from ``seed`` (the global generator is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._noisy(x)
