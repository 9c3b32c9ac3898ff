"""The variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114) and its IWAE bound
(Burda et al. 2015, arXiv:1509.00519).

The seed's VAE is ``VAE(input_shape=(1, 28, 28))``: encoder 784-400-(20 μ, 20 log σ²), decoder
20-400-784, Bernoulli likelihood on logits. μ and log σ² come from one 400→40 Linear (the same
arithmetic as two 400→20 heads, one matmul fewer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..nn import mlp
from . import register
from .likelihoods import LIKELIHOODS, bernoulli_nll, cb_mean, cb_nll, gaussian_nll


@register("vae")
class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior, decoder likelihood p(x|z) in nats."""

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if latent_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError("latent_dim and hidden sizes must be positive")
        self.config = dict(
            input_shape=list(input_shape), latent_dim=latent_dim, hidden=list(hidden),
            likelihood=likelihood, beta=beta, activation=activation,
        )
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = beta
        d = math.prod(input_shape)
        self.encoder = mlp([d, *hidden], activation=activation)
        self.to_stats = nn.Linear(hidden[-1] if hidden else d, 2 * latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden), d], activation=activation, last_activation=False)
        # Gaussian decoders work on standardised features; the statistics travel with the weights.
        self.register_buffer("x_shift", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(d))
        self.log_scale = nn.Parameter(torch.zeros(d)) if likelihood == "gaussian" else None

    def prepare(self, data) -> None:
        """Fit the stored standardisation to the training set (Gaussian likelihood only).

        std + 1e-8 keeps a feature that is constant in training finite at test time.
        """
        if self.likelihood == "gaussian":
            x = data.floats().reshape(len(data), -1).astype("float64")
            self.x_shift.copy_(torch.from_numpy(x.mean(0)))
            self.x_scale.copy_(torch.from_numpy(x.std(0) + 1e-8))

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return (x - self.x_shift) / self.x_scale if self.likelihood == "gaussian" else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        mu, logvar = self.to_stats(self.encoder(self._in(x))).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) in data units, shaped like the input."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            out = torch.sigmoid(out)
        elif self.likelihood == "cb":
            out = cb_mean(out)
        else:
            out = out * self.x_scale + self.x_shift
        return out.view(*z.shape[:-1], *self.input_shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        device = self.x_shift.device
        g = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.latent_dim, generator=g, device=device)
        return self.decode(z)

    def recon_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x|z) per sample, in nats of the original data units."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(out, x)
        if self.likelihood == "cb":
            return cb_nll(out, x)
        xs = (x - self.x_shift) / self.x_scale
        return gaussian_nll(out, xs, self.log_scale) + torch.log(self.x_scale).sum()

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO per sample (β-weighted KL), averaged over the batch."""
        x = x.flatten(1)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = self.recon_nll(self.decoder(z), x)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return {"loss": (rec + self.beta * kl).mean(), "recon": rec.mean(), "kl": kl.mean()}

    def fused_step(self, optimizer: torch.optim.Optimizer):
        """The trainer's fast path (same arithmetic as ``loss().backward()``), or None if unsupported."""
        from .vae_step import FusedVAEStep, supports_fused_step

        return FusedVAEStep(self, optimizer) if supports_fused_step(self) else None

    @torch.no_grad()
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO per sample (β = 1), one posterior sample, in nats."""
        x = x.flatten(1)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return -(self.recon_nll(self.decoder(z), x) + kl)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_i) − log q(z_i|x) for k posterior samples: shape (k, batch)."""
        x = x.flatten(1)
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(k, *mu.shape, device=mu.device)
        z = mu + eps * std
        log_q = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p_z = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
        out = self.decoder(z)
        log_p_x = -self.recon_nll(out, x.expand(k, *x.shape))
        return log_p_x + log_p_z - log_q

    @torch.no_grad()
    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, chunk: int = 250) -> torch.Tensor:
        """−log p(x) estimated with k importance samples (the IWAE bound), per sample, in nats."""
        parts = [self.log_weights(x, min(chunk, k - i)) for i in range(0, k, chunk)]
        return -(torch.logsumexp(torch.cat(parts), 0) - math.log(k))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO: higher = less likely under the model = more anomalous."""
        return -self.elbo(x)
