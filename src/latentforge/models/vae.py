"""The variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114) and its IWAE bound
(Burda et al. 2015, arXiv:1509.00519).

The seed's VAE is ``VAE(input_shape=(1, 28, 28), arch="mlp")`` (``arch="auto"`` picks convolutions
for images of at least 28×28): encoder 784-400-(20 μ, 20 log σ²),
decoder 20-400-784, Bernoulli likelihood on logits. μ and log σ² come from one 400→40 Linear (the
same arithmetic as two 400→20 heads, one matmul fewer). ``n_classes > 0`` makes it conditional
(the one-hot label joins the encoder features and the code; see CVAE in vae_variants.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import setting
from .base import Batch
from .body import Body, BodyConfig
from .registry import register
from .vae_step import FusedVAEStep, supports_fused_step

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig(BodyConfig):
    """Settings of the VAE."""

    beta: float = setting(1.0, "weight of the KL term (1 = the ELBO)", min=0)


@register("vae", VAEConfig, task="generate")
class VAE(Body):
    """Gaussian encoder q(z|x), standard normal prior, decoder likelihood p(x|z) in nats."""

    use_fused_step: bool = True  # the hand-fused step where it applies (benchmarks switch it off to compare)

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.latent_dim = c.latent_dim
        self.beta = float(getattr(c, "beta", 1.0))  # IWAE has no β: its bound is the ELBO's k-sample form
        self.n_classes = n_classes = getattr(c, "n_classes", 0)  # CVAE
        feat = self.build_from(c, decoder_in=self.latent_dim + n_classes)
        self.to_stats = nn.Linear(feat + n_classes, 2 * self.latent_dim)
        self._fused = self._fused_for = None

    def _cond(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.n_classes:
            return h
        if y is None:
            raise ValueError("this model is conditional: give labels y")
        onehot = F.one_hot(y.long(), self.n_classes).to(h.dtype)
        return torch.cat([h, onehot.expand(*h.shape[:-1], self.n_classes)], dim=-1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        mu, logvar = self.to_stats(self._cond(self.features(x), y)).float().chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) in data units, shaped like the input."""
        return self.output_mean(self.decoder_out(self._cond(z, y)))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y)[0], y)

    @torch.no_grad()
    def sample(self, n: int, *, label: int | None = None, seed: int | None = None) -> torch.Tensor:
        """n draws of the decoder mean at z ~ N(0, I) (with ``label`` for conditional models)."""
        device = self.x_shift.device
        z = torch.randn(n, self.latent_dim, generator=self._generator(seed), device=device)
        y = None
        if self.n_classes:
            if label is None or not 0 <= label < self.n_classes:
                raise ValueError(f"give a label between 0 and {self.n_classes - 1}")
            y = torch.full((n,), label, device=device, dtype=torch.long)
        return self.decode(z, y)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ N(0, I)) per sample, in nats."""
        return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction NLL, KL) per sample, one reparameterised posterior sample."""
        x = x.flatten(1)
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.recon_nll(self.decoder_out(self._cond(z, y)), x), self.kl(mu, logvar)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Negative ELBO per sample (β-weighted KL), averaged over the batch."""
        rec, kl = self.terms(batch.x, batch.y)
        return {"loss": self.trimmed_mean(rec + self.beta * kl), "recon": rec.mean(), "kl": kl.mean()}

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """The hand-fused step (:mod:`.vae_step`: the same arithmetic as ``loss().backward()``, with bf16
        matmuls where the model computes in bf16) for the MLP Bernoulli VAE with one Adam; the generic step
        otherwise."""
        opt = next(iter(optimizers.values()))
        if self._fused_for is not opt or (self._fused is not None and not self._fused.is_current()):
            # a new fit, or the model moved or changed precision since (partial_fit): decide (and flatten) again
            self._fused = FusedVAEStep(self, opt) if self._fused_step_applies(optimizers) else None
            self._fused_for = opt
        if self._fused is not None:
            return self._fused(batch.x)
        return super().training_step(batch, optimizers)

    def _fused_step_applies(self, optimizers: dict[str, torch.optim.Optimizer]) -> bool:
        return self.use_fused_step and len(optimizers) == 1 and supports_fused_step(self)

    def uncompiled_step(self, optimizers: dict[str, torch.optim.Optimizer]) -> str | None:
        """The hand-fused MLP step is not ``loss().backward()``; every other VAE takes the generic step."""
        if self._fused_step_applies(optimizers):
            return "the hand-fused MLP step (fused by hand, measured faster than compiling)"
        return None

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, *, noise: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO per sample (β = 1), in nats: one posterior sample, or the mean over the ``noise`` draws
        (shape (k, latent_dim), shared by every sample, so a sample's value never depends on its batch-mates)."""
        if noise is not None:
            return self.log_weights(x, len(noise), y, noise=noise).mean(0)
        rec, kl = self.terms(x, y)
        return -(rec + kl)

    def log_weights(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None, *,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z_i) − log q(z_i|x) for k posterior samples: shape (k, batch). ``noise`` (k, latent_dim):
        the standard-normal draws to use, the same for every sample of the batch."""
        x = x.flatten(1)
        mu, logvar = self.encode(x, y)
        if noise is None:
            eps = torch.randn(k, *mu.shape, device=mu.device)
        else:
            eps = noise.to(mu.device, mu.dtype)[:, None, :].expand(k, *mu.shape)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_q = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
        log_p_z = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)
        out = self.decoder_out(self._cond(z, None if y is None else y.expand(k, *y.shape)))
        return log_p_z - log_q - self.recon_nll(out, x.expand(k, *x.shape))

    @torch.no_grad()
    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, chunk: int = 250, y: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """−log p(x) estimated with k importance samples (the IWAE bound), per sample, in nats."""
        parts = [self.log_weights(x, min(chunk, k - i), y, noise=None if noise is None else noise[i : i + chunk])
                 for i in range(0, k, chunk)]
        return -(torch.logsumexp(torch.cat(parts), 0) - math.log(k))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO: higher = less likely under the model = more anomalous."""
        return -self.elbo(x)
