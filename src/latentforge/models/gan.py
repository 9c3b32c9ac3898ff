"""GANs: DCGAN (Radford et al. 2015, arXiv:1511.06434) and WGAN-GP (Gulrajani et al. 2017,
arXiv:1704.00028), with optional spectral normalisation of the discriminator (Miyato et al. 2018,
arXiv:1802.05957) and an exponential moving average of the generator's weights (Yazıcı et al. 2018,
arXiv:1806.04498), which is what ``sample`` draws from and what a run ships.

Networks come from :mod:`latentforge.nn` sized from the input shape: a transposed-conv generator
(batchnorm, tanh output) and a strided-conv discriminator with leaky ReLUs (0.2) and no batchnorm,
so every critic value depends on one sample only, as the gradient penalty requires. Images in
[0, 1] are mapped to [-1, 1] for the networks. One ``training_step`` per real batch does one
discriminator update; every ``d_steps``-th also does a generator update.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn import conv_decoder, conv_encoder, default_arch, mlp
from ..precision import autocast, full_precision
from ..settings import SettingError, default, setting
from .base import Batch, Model, ModelConfig
from .registry import register

COLLAPSE_RATIO = 0.5  # a generator batch less than half as diverse as usual counts as collapsed
DIVERSITY_WARMUP = 200  # generator steps before the collapse check starts


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     weight: float = 10.0, eps: torch.Tensor | None = None) -> torch.Tensor:
    """λ·E[(‖∇D(x̂)‖₂ − 1)²] on x̂ = ε·real + (1−ε)·fake, ε ~ U[0, 1] per sample (WGAN-GP, Alg. 1)."""
    if eps is None:
        eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return weight * (grad.flatten(1).norm(dim=1) - 1).square().mean()


def _grad_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def _mlp_generator(sizes: Sequence[int]) -> nn.Sequential:
    """Linear → batchnorm → ReLU per hidden layer (batchnorm in G, as DCGAN), then a plain Linear."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def generator_net(c: GANConfig, z_dim: int) -> nn.Module:
    """The generator network for ``c``'s data and ``arch`` from a ``z_dim``-wide input (the noise, and for
    conditional models the one-hot class beside it)."""
    if c.arch == "conv":
        return conv_decoder(z_dim, c.input_shape, channels=list(c.channels), batchnorm=True)
    return _mlp_generator([z_dim, *c.hidden, math.prod(c.input_shape)])


def dcgan_slopes(net: nn.Module) -> nn.Module:
    """Every leaky ReLU of ``net`` at DCGAN's slope, 0.2 (the builders in nn.py default to PyTorch's 0.01)."""
    for m in net.modules():
        if isinstance(m, nn.LeakyReLU):
            m.negative_slope = 0.2
    return net


def _spectral_norm_linears(net: nn.Sequential) -> nn.Sequential:
    for i, m in enumerate(net):
        if isinstance(m, nn.Linear):
            net[i] = nn.utils.parametrizations.spectral_norm(m)
    return net


@dataclass
class GANConfig(ModelConfig):
    """Settings of the GANs."""

    latent_dim: int = setting(64, "size of the generator's noise z", min=1, max=100000)
    hidden: tuple[int, ...] = setting((256, 256), "hidden sizes of the MLP generator (the discriminator mirrors them)",
                                      min=1)
    channels: tuple[int, ...] = setting((32, 64), "conv channels per stride-2 stage", min=1)
    arch: str = setting("auto", "network: mlp, conv or auto (conv for images)", choices=("auto", "mlp", "conv"))
    d_steps: int = setting(1, "discriminator (critic) steps per generator step", min=1, max=1000)
    spectral_norm: bool = setting(False, "spectral normalisation of the discriminator")
    ema: float = setting(0.999, "decay of the generator's weight average that samples are drawn from (0: none)",
                         min=0, below=1)
    lr_d: float | None = setting(None, "discriminator learning rate (default: the trainer's lr)", above=0)

    def check(self) -> None:
        super().check()
        arch = default_arch(self.input_shape) if self.arch == "auto" else self.arch
        if arch == "conv" and len(self.input_shape) != 3:
            raise SettingError("arch", f"conv needs images (channels, height, width); got samples of shape "
                               f"{list(self.input_shape)}")


@dataclass
class WGANGPConfig(GANConfig):
    """Settings of WGAN-GP (the paper's 5 critic steps)."""

    d_steps: int = default(GANConfig, "d_steps", 5)
    gp_weight: float = setting(10.0, "gradient penalty weight λ", min=0)


class GAN(Model):
    """Generator G(z), z ~ N(0, I), against a discriminator D; subclasses give the two losses."""

    betas = (0.5, 0.999)

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        c.arch = self.arch = default_arch(c.input_shape) if c.arch == "auto" else c.arch
        self.input_shape, self.latent_dim, self.d_steps, self.ema, self.lr_d = (tuple(c.input_shape), c.latent_dim,
                                                                                c.d_steps, c.ema, c.lr_d)
        self.generator, self.discriminator = self.networks(c)
        dcgan_slopes(self.discriminator)
        self.g_ema = deepcopy(self.generator).requires_grad_(False).eval()
        self.register_buffer("fixed_noise", torch.randn(64, c.latent_dim))  # the per-epoch progress grid
        # cached generator statistics (g_loss, g_grad_norm, diversity, collapse), logged between generator steps,
        # the running diversity level, and the count of collapsed generator steps since the last epoch's check
        self.register_buffer("g_stats", torch.zeros(4))
        self.register_buffer("diversity_level", torch.zeros(()))
        self.register_buffer("collapsed", torch.zeros(()))
        self.steps = 0  # discriminator steps so far; in the state dict as extra state (no host sync to read it)
        self.g_steps = 0

    # --- networks -----------------------------------------------------------------------------------------
    def networks(self, c: GANConfig) -> tuple[nn.Module, nn.Module]:
        """The generator and the discriminator (its leaky ReLUs are set to DCGAN's slope afterwards)."""
        generator = generator_net(c, c.latent_dim)  # (first: the same initial weights per seed as before)
        if c.arch == "conv":
            return generator, conv_encoder(c.input_shape, 1, channels=list(c.channels), activation="leaky_relu",
                                           spectral_norm=c.spectral_norm)
        discriminator = nn.Sequential(nn.Flatten(), *mlp([math.prod(c.input_shape), *reversed(c.hidden), 1],
                                                         activation="leaky_relu", last_activation=False))
        if c.spectral_norm:
            _spectral_norm_linears(discriminator)
        return generator, discriminator

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.steps, self.g_steps])

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.steps, self.g_steps = (int(v) for v in state)

    def train(self, mode: bool = True) -> GAN:
        super().train(mode)
        self.g_ema.eval()  # the averaged generator always uses its running batchnorm statistics
        return self

    def _fake(self, net: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1], shaped like the data."""
        return torch.tanh(net(z).float()).view(len(z), *self.input_shape)  # fp32 under bf16 autocast

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x).squeeze(-1).float()

    def prefers_bf16(self) -> bool:
        """Conv networks measured faster under bf16 autocast on CPUs with native bf16; MLP GANs are not measured."""
        return self.arch == "conv"

    def prepare(self, data) -> None:
        """GANs here model values in [0, 1] (the generator's tanh range, rescaled)."""
        if not data.in_unit_interval:
            raise UserError(f"{self.registry_name} needs values in [0, 1]; {data.name} ranges over {data.value_range}. "
                            "Rescale the data first")

    # --- objectives (subclasses) --------------------------------------------------------------------------
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- training -----------------------------------------------------------------------------------------
    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Two Adams: D at ``lr_d`` (default: ``lr``), G at ``lr`` (the trainer's --lr)."""
        return {"d": torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d or lr, betas=self.betas,
                                      fused=True),
                "g": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=self.betas, fused=True)}

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One D update on this real batch; every ``d_steps``-th call also one G update and the EMA.

        Between G updates the last G values are logged again, so every key has a value per batch.
        """
        x = batch.x
        real = x.view(len(x), *self.input_shape) * 2 - 1
        with torch.no_grad(), autocast(self):
            fake = self._fake(self.generator, torch.randn(len(real), self.latent_dim, device=real.device))
        with autocast(self):
            out = self.d_loss(real, fake)
        opt_d = optimizers["d"]
        opt_d.zero_grad(set_to_none=True)
        out["d_loss"].backward()
        out["d_grad_norm"] = _grad_norm(list(self.discriminator.parameters()))
        opt_d.step()
        if self.steps % self.d_steps == 0:
            self._generator_step(len(real), optimizers["g"])
        self.steps += 1
        g_loss, g_grad, diversity, collapse = self.g_stats
        return {**{k: v.detach() for k, v in out.items()}, "g_loss": g_loss, "g_grad_norm": g_grad,
                "diversity": diversity, "collapse": collapse}

    def _generator_step(self, n: int, opt_g: torch.optim.Optimizer) -> None:
        self.discriminator.requires_grad_(False)  # G's step needs D's input gradients, not its weight gradients
        with autocast(self):
            fake = self._fake(self.generator, torch.randn(n, self.latent_dim, device=self.fixed_noise.device))
            loss = self.g_loss(self._critic(fake))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator.requires_grad_(True)
        g_grad = _grad_norm(list(self.generator.parameters()))
        opt_g.step()
        self._update_ema()
        with torch.no_grad():
            diversity = self._diversity(fake)
            # running level: a moving average over ~10 generator steps during the warm-up (it forgets the noise-like,
            # very diverse output of the untrained generator and the blobs that follow it), then over ~100
            rate = 1.0 if self.g_steps == 0 else 0.1 if self.g_steps < DIVERSITY_WARMUP else 0.01
            level = self.diversity_level.lerp(diversity, rate)
            collapse = (diversity < COLLAPSE_RATIO * self.diversity_level).float() * (self.g_steps >= DIVERSITY_WARMUP)
            self.diversity_level.copy_(level)
            self.collapsed.add_(collapse)
            self.g_stats.copy_(torch.stack([loss.detach(), g_grad, diversity, collapse]))
        self.g_steps += 1

    def _diversity(self, fake: torch.Tensor) -> torch.Tensor:
        """Mean pairwise distance of a batch in [0, 1] units, per √value (so sizes compare); 0 = collapsed."""
        flat = (fake.flatten(1) + 1) / 2
        return torch.pdist(flat).mean() / math.sqrt(flat.shape[1])

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Averaged generator weights; the decay warms up as (1+t)/(10+t) so early samples are not stale."""
        decay = min(self.ema, (1 + self.g_steps) / (10 + self.g_steps))
        for e, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            e.copy_(b)  # batchnorm statistics: the current generator's

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Discriminator loss on held-out real data against fresh fakes (no penalty; no updates)."""
        x = batch.x
        real = x.view(len(x), *self.input_shape) * 2 - 1
        fake = self._fake(self.generator, torch.randn(len(real), self.latent_dim, device=real.device))
        d_real, d_fake = self._critic(real), self._critic(fake)
        return {"loss": self.d_loss_terms(d_real, d_fake), "g_loss": self.g_loss(d_fake), "d_real": d_real.mean(), "d_fake": d_fake.mean()}

    def d_loss_terms(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- using a trained model ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, label: int | None = None, seed: int | None = None) -> torch.Tensor:
        """n images in [0, 1], shaped (n, *input_shape), from the EMA generator; no data needed."""
        if label is not None:
            raise ValueError(f"{self.registry_name} is unconditional; sample without a label")
        device = self.fixed_noise.device
        g = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.latent_dim, generator=g, device=device)
        return (self._fake(self.g_ema, z) + 1) / 2

    @torch.no_grad()
    def progress_samples(self) -> torch.Tensor:
        """The averaged generator's images for the fixed noise: the frames a run draws after each epoch."""
        return (self._fake(self.g_ema, self.fixed_noise) + 1) / 2

    def on_epoch_end(self, epoch: int, train, run_dir: Path | None) -> dict[str, float]:
        """A warning on stderr when generator batches collapsed during the epoch."""
        if self.g_steps and self.collapsed.item() > 0:
            print(f"warning: epoch {epoch}: generator samples collapsed (diversity below {COLLAPSE_RATIO:g}× its "
                  f"running level) in {int(self.collapsed.item())} generator steps; see the collapse and diversity "
                  "columns of history.csv. Try --spectral-norm, a lower --lr or wgan-gp", file=sys.stderr)
        self.collapsed.zero_()
        return {}


@register("dcgan", GANConfig, task="generate")
class DCGAN(GAN):
    """Non-saturating GAN loss (Goodfellow et al. 2014, arXiv:1406.2661, §3) with DCGAN's Adam(2e-4, β₁=0.5)."""

    bf16_ready = True  # generator images and critic values are cast to fp32 before the losses

    def d_loss_terms(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        # −log σ(D(x)) − log(1 − σ(D(G(z)))) on logits, stable via softplus
        return (F.softplus(-d_real) + F.softplus(d_fake)).mean()

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        d_real, d_fake = self._critic(real), self._critic(fake)
        return {"d_loss": self.d_loss_terms(d_real, d_fake), "d_real": d_real.mean(), "d_fake": d_fake.mean()}

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-d_fake).mean()  # −log σ(D(G(z))): the non-saturating generator loss


@register("wgan-gp", WGANGPConfig, task="generate")
class WGANGP(GAN):
    """Wasserstein critic with a gradient penalty; Adam(1e-4, β=(0, 0.9)) and 5 critic steps, as in the paper."""

    betas = (0.0, 0.9)
    bf16_ready = True  # fp32 critic values; the gradient penalty is computed without autocast

    def prefers_bf16(self) -> bool:
        """No: the fp32 gradient penalty's double backward dominates the step; bf16 measured 1.00× on 2 threads."""
        return False

    def __init__(self, c: WGANGPConfig) -> None:
        super().__init__(c)
        self.gp_weight = c.gp_weight

    def d_loss_terms(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return d_fake.mean() - d_real.mean()  # −(Wasserstein-1 estimate)

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        d_real, d_fake = self._critic(real), self._critic(fake)
        with full_precision():  # the penalty's double backward stays fp32 under --precision bf16
            gp = gradient_penalty(self._critic, real, fake, weight=self.gp_weight)
        return {"d_loss": self.d_loss_terms(d_real, d_fake) + gp, "gp": gp, "d_real": d_real.mean(),
                "d_fake": d_fake.mean()}

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return -d_fake.mean()
