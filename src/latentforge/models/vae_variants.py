"""VAE variants on the same network: β-VAE (with KL warm-up or a capacity schedule), the
conditional VAE and the IWAE objective."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import register
from .vae import VAE


@register("beta-vae")
class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): KL weighted by β > 1 for disentangled codes.

    ``kl_warmup`` linearly ramps the KL weight from 0 to β over that many steps (Bowman et al.
    2016). ``capacity`` > 0 switches to the capacity objective of Burgess et al. 2018
    (arXiv:1804.03599): recon + β·|KL − C|, with C growing linearly to ``capacity`` nats over
    ``capacity_steps`` steps.
    """

    def __init__(self, *, input_shape: Sequence[int], latent_dim: int = 10, hidden: Sequence[int] = (400,),
                 likelihood: str = "bernoulli", beta: float = 4.0, activation: str = "relu", arch: str = "auto",
                 channels: Sequence[int] = (32, 64), kl_warmup: int = 0, capacity: float = 0.0,
                 capacity_steps: int = 10000, scaling: str = "standard", trim: float = 0.0) -> None:
        super().__init__(input_shape=input_shape, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood,
                         beta=beta, activation=activation, arch=arch, channels=channels, scaling=scaling, trim=trim)
        if kl_warmup < 0 or capacity < 0 or capacity_steps < 1:
            raise ValueError("kl_warmup and capacity must be ≥ 0 and capacity_steps ≥ 1")
        self.config.update(kl_warmup=kl_warmup, capacity=capacity, capacity_steps=capacity_steps)
        self.kl_warmup, self.capacity, self.capacity_steps = kl_warmup, capacity, capacity_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # saved, so resume continues the schedule

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        rec, kl = self.terms(x, y)
        step = float(self.step)
        if self.training:
            self.step += 1
        out = {"recon": rec.mean(), "kl": kl.mean()}
        if self.capacity > 0:
            c = self.capacity * min(1.0, step / self.capacity_steps)
            out["loss"] = self.trimmed_mean(rec + self.beta * (kl - c).abs())
            out["capacity"] = torch.tensor(c)
        else:
            w = self.beta * (min(1.0, step / self.kl_warmup) if self.kl_warmup else 1.0)
            out["loss"] = self.trimmed_mean(rec + w * kl)
            out["kl_weight"] = torch.tensor(w)
        return out


@register("cvae")
class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y); ``sample(n, label=3)``."""

    uses_labels = True

    def __init__(self, *, input_shape: Sequence[int], n_classes: int, latent_dim: int = 20,
                 hidden: Sequence[int] = (400,), likelihood: str = "bernoulli", beta: float = 1.0,
                 activation: str = "relu", arch: str = "auto", channels: Sequence[int] = (32, 64),
                 scaling: str = "standard", trim: float = 0.0) -> None:
        super(VAE, self).__init__()
        if n_classes < 2:
            raise ValueError(f"a conditional model needs at least 2 classes, got {n_classes}")
        args = {k: v for k, v in locals().items() if k != "n_classes"}
        self._init_vae(args, n_classes=n_classes)
        self.config["n_classes"] = n_classes

    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:  # unlabelled data: the ELBO of the most likely label (a lower bound on max_y log p(x|y))
            return torch.stack([super(CVAE, self).elbo(x, torch.full((len(x),), c, dtype=torch.long))
                                for c in range(self.n_classes)]).max(0).values
        return super().elbo(x, y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:  # embeddings of unlabelled data: condition on the best label
            y = self._best_label(x)
        return super().encode(x, y)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = self._best_label(x) if y is None else y
        return super().reconstruct(x, y)

    @torch.no_grad()
    def _best_label(self, x: torch.Tensor) -> torch.Tensor:
        """The label whose ELBO, evaluated at the posterior mean (deterministic), is highest."""
        x = x.flatten(1)
        scores = []
        for c in range(self.n_classes):
            y = torch.full((len(x),), c, dtype=torch.long, device=x.device)
            mu, logvar = VAE.encode(self, x, y)
            scores.append(-(self.recon_nll(self.decoder_out(self._cond(mu, y)), x) + self.kl(mu, logvar)))
        return torch.stack(scores).argmax(0)

    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, chunk: int = 250, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().iwae_nll(x, k=k, chunk=chunk, y=self._best_label(x) if y is None else y)


@register("iwae")
class IWAE(VAE):
    """Trains on the k-sample importance-weighted bound (Burda et al. 2015, eq. 8) instead of the ELBO."""

    def __init__(self, *, input_shape: Sequence[int], latent_dim: int = 20, hidden: Sequence[int] = (400,),
                 likelihood: str = "bernoulli", activation: str = "relu", arch: str = "auto",
                 channels: Sequence[int] = (32, 64), k: int = 5, scaling: str = "standard", trim: float = 0.0) -> None:
        super().__init__(input_shape=input_shape, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood,
                         beta=1.0, activation=activation, arch=arch, channels=channels, scaling=scaling, trim=trim)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.config.pop("beta", None)
        self.config["k"] = k
        self.k = k

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        lw = self.log_weights(x, self.k)
        bound = torch.logsumexp(lw, 0) - math.log(self.k)
        return {"loss": self.trimmed_mean(-bound), "elbo_k1": lw.mean()}
