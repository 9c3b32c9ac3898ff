"""Conditional DCGAN with a projection discriminator: labelled samples from a GAN, next to the CVAE.

Why projection rather than AC-GAN: an auxiliary classifier (Odena et al. 2017, arXiv:1610.09585) rewards the
generator for images that are *easy to classify*, which pulls classes apart and drops their hard, borderline
cases, exactly the samples a downstream classifier needs; its class loss also competes with the adversarial one.
The projection discriminator (Miyato & Koyama 2018, arXiv:1802.05637) scores ``D(x, y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩``,
the form the optimal discriminator of a conditional GAN takes (log-ratio of the class-conditional densities),
so it matches ``p(x|y)`` instead of separating classes. With spectral normalisation (on by default here, as in
the paper) it is stable at the small sample sizes of scarce-label data.

The generator is DCGAN's, fed the noise and the one-hot label side by side (Mirza & Osindero 2014,
arXiv:1411.1784). Everything else is :class:`~latentforge.models.gan.DCGAN`'s: the non-saturating loss, the
update order, the EMA generator that ``sample`` draws from, the collapse check. Fakes are drawn for the labels
of the real batch they are compared with, so class frequencies follow the training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import conv_encoder, mlp
from ..settings import default, setting
from .base import Batch
from .gan import DCGAN, GANConfig, _spectral_norm_linears, generator_net
from .registry import register


@dataclass
class CGANConfig(GANConfig):
    """Settings of the conditional DCGAN; ``n_classes`` comes from the data's labels."""

    n_classes: int = setting(2, "number of classes (from the labels)", min=2, max=100000, cli=False)
    spectral_norm: bool = default(GANConfig, "spectral_norm", True)


class ConditionalGenerator(nn.Module):
    """G(z, y): the unconditional generator network on ``z ⊕ onehot(y)``."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.net, self.n_classes = net, n_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩ (Miyato & Koyama 2018, eq. 3), one logit per sample."""

    def __init__(self, features: nn.Module, n_features: int, n_classes: int, *, spectral_norm: bool) -> None:
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.features = features
        self.psi = wrap(nn.Linear(n_features, 1))
        self.embed = wrap(nn.Embedding(n_classes, n_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.psi(h).squeeze(-1) + (self.embed(y) * h).sum(-1)


@register("cdcgan", CGANConfig, task="generate")
class ConditionalDCGAN(DCGAN):
    """Conditional DCGAN with a projection discriminator; ``sample(n, label=c)`` as the CVAE's."""

    uses_labels = True

    def __init__(self, c: CGANConfig) -> None:
        super().__init__(c)  # builds the networks by ``networks`` below
        self.n_classes = k = c.n_classes
        self.register_buffer("fixed_labels", torch.arange(len(self.fixed_noise)) * k // len(self.fixed_noise))
        self._y: torch.Tensor | None = None

    def networks(self, c: CGANConfig) -> tuple[nn.Module, nn.Module]:
        """G(z, y) on ``z ⊕ onehot(y)`` and the projection discriminator D(x, y) over features φ(x)."""
        k, shape, channels, hidden = c.n_classes, c.input_shape, list(c.channels), list(c.hidden)
        n_features = hidden[0]  # φ(x)'s size, as the unconditional discriminator's last hidden layer
        g_net = generator_net(c, c.latent_dim + k)
        if c.arch == "conv":
            phi = nn.Sequential(*conv_encoder(shape, n_features, channels=channels, activation="leaky_relu",
                                              spectral_norm=c.spectral_norm), nn.LeakyReLU())
        else:
            phi = nn.Sequential(nn.Flatten(), *mlp([math.prod(shape), *reversed(hidden)], activation="leaky_relu"))
            if c.spectral_norm:
                _spectral_norm_linears(phi)
        return (ConditionalGenerator(g_net, k),
                ProjectionDiscriminator(phi, n_features, k, spectral_norm=c.spectral_norm))

    def _labels(self, n: int) -> torch.Tensor:
        # the labels of the batch being trained on or evaluated (set by training_step / loss): the base class's
        # update code calls _fake and _critic without labels, and stays the one copy of that logic
        if self._y is None or len(self._y) != n:
            raise RuntimeError("cdcgan: networks called outside a labelled batch; use sample(n, label=c)")
        return self._y

    def _fake(self, net: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = self._labels(len(z)) if y is None else y
        return torch.tanh(net(z, y).float()).view(len(z), *self.input_shape)  # fp32 under bf16 autocast

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x, self._labels(len(x))).float()

    def _with_labels(self, batch: Batch) -> torch.Tensor:
        if batch.y is None:
            raise ValueError("cdcgan is conditional: give labels y with every batch")
        return batch.y.long()

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        self._y = self._with_labels(batch)
        try:
            return super().training_step(batch, optimizers)
        finally:
            self._y = None

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._y = self._with_labels(batch)
        try:
            return super().loss(batch)
        finally:
            self._y = None

    @torch.no_grad()
    def sample(self, n: int, *, label: int | None = None, seed: int | None = None) -> torch.Tensor:
        """n images of class ``label`` in [0, 1], shaped (n, *input_shape), from the EMA generator."""
        if label is None or not 0 <= label < self.n_classes:
            raise ValueError(f"give a label between 0 and {self.n_classes - 1}")
        device = self.fixed_noise.device
        g = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.latent_dim, generator=g, device=device)
        y = torch.full((n,), label, dtype=torch.long, device=device)
        return (self._fake(self.g_ema, z, y) + 1) / 2

    @torch.no_grad()
    def progress_samples(self) -> torch.Tensor:
        """The fixed noise drawn for every class in turn (rows grouped by class)."""
        return (self._fake(self.g_ema, self.fixed_noise, self.fixed_labels) + 1) / 2
