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
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .body import Body

LOG_2PI = math.log(2 * math.pi)


@register("vae")
class VAE(Body):
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
        arch: str = "auto",
        channels: Sequence[int] = (32, 64),
        scaling: str = "standard",
        trim: float = 0.0,
    ) -> None:
        super().__init__()
        self._init_vae(locals())

    def _init_vae(self, args: dict, n_classes: int = 0) -> None:
        if args["latent_dim"] < 1:
            raise ValueError("latent_dim must be positive")
        self.config = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in args.items()
                       if k not in ("self", "__class__")}
        self.latent_dim = args["latent_dim"]
        self.beta = float(args["beta"])
        self.n_classes = n_classes
        feat = self.build(input_shape=args["input_shape"], likelihood=args["likelihood"], arch=args["arch"],
                          hidden=args["hidden"], channels=args["channels"], activation=args["activation"],
                          decoder_in=self.latent_dim + n_classes, scaling=args["scaling"], trim=args["trim"])
        self.config["arch"] = self.arch  # "auto" resolved, so a saved run rebuilds the same network
        self.to_stats = nn.Linear(feat + n_classes, 2 * self.latent_dim)

    def _cond(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.n_classes:
            return h
        if y is None:
            raise ValueError("this model is conditional: give labels y")
        onehot = F.one_hot(y.long(), self.n_classes).to(h.dtype)
        return torch.cat([h, onehot.expand(*h.shape[:-1], self.n_classes)], dim=-1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        mu, logvar = self.to_stats(self._cond(self.features(x), y)).chunk(2, dim=-1)
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

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per sample (β-weighted KL), averaged over the batch."""
        rec, kl = self.terms(x, y)
        return {"loss": self.trimmed_mean(rec + self.beta * kl), "recon": rec.mean(), "kl": kl.mean()}

    def fused_step(self, optimizer: torch.optim.Optimizer):
        """The trainer's fast path (same arithmetic as ``loss().backward()``), or None if unsupported."""
        from .vae_step import FusedVAEStep, supports_fused_step

        return FusedVAEStep(self, optimizer) if supports_fused_step(self) else None

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO per sample (β = 1), one posterior sample, in nats."""
        rec, kl = self.terms(x, y)
        return -(rec + kl)

    def log_weights(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z_i) − log q(z_i|x) for k posterior samples: shape (k, batch)."""
        x = x.flatten(1)
        mu, logvar = self.encode(x, y)
        eps = torch.randn(k, *mu.shape, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_q = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
        log_p_z = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)
        out = self.decoder_out(self._cond(z, None if y is None else y.expand(k, *y.shape)))
        return log_p_z - log_q - self.recon_nll(out, x.expand(k, *x.shape))

    @torch.no_grad()
    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, chunk: int = 250, y: torch.Tensor | None = None) -> torch.Tensor:
        """−log p(x) estimated with k importance samples (the IWAE bound), per sample, in nats."""
        parts = [self.log_weights(x, min(chunk, k - i), y) for i in range(0, k, chunk)]
        return -(torch.logsumexp(torch.cat(parts), 0) - math.log(k))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO: higher = less likely under the model = more anomalous."""
        return -self.elbo(x)
