"""VAE variants on the same network: β-VAE (with KL warm-up or a capacity schedule), the
conditional VAE and the IWAE objective."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..settings import default, setting
from .base import Batch
from .body import BodyConfig
from .registry import register
from .vae import VAE, VAEConfig


@dataclass
class BetaVAEConfig(VAEConfig):
    """Settings of the β-VAE."""

    latent_dim: int = default(VAEConfig, "latent_dim", 10)
    beta: float = setting(4.0, "weight of the KL term (β > 1 for disentangled codes)", min=0)
    kl_warmup: int = setting(0, "steps to ramp the KL weight from 0 to beta", min=0)
    capacity: float = setting(0.0, "target KL capacity in nats (Burgess et al. 2018); grows linearly over "
                              "capacity_steps", min=0)
    capacity_steps: int = setting(10000, "steps to reach capacity", min=1)


@dataclass
class CVAEConfig(VAEConfig):
    """Settings of the conditional VAE; ``n_classes`` comes from the data's labels."""

    n_classes: int = setting(2, "number of classes (from the labels)", min=2, max=100000, cli=False)


@dataclass
class IWAEConfig(BodyConfig):
    """Settings of the IWAE."""

    k: int = setting(5, "importance samples in the training bound", min=1, max=100000)


@register("beta-vae", BetaVAEConfig, task="generate")
class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): KL weighted by β > 1 for disentangled codes.

    ``kl_warmup`` linearly ramps the KL weight from 0 to β over that many steps (Bowman et al.
    2016). ``capacity`` > 0 switches to the capacity objective of Burgess et al. 2018
    (arXiv:1804.03599): recon + β·|KL − C|, with C growing linearly to ``capacity`` nats over
    ``capacity_steps`` steps.
    """

    def __init__(self, c: BetaVAEConfig) -> None:
        super().__init__(c)
        self.kl_warmup, self.capacity, self.capacity_steps = c.kl_warmup, c.capacity, c.capacity_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # saved, so resume continues the schedule

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        rec, kl = self.terms(batch.x, batch.y)
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


@register("cvae", CVAEConfig, task="generate")
class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y); ``sample(n, label=3)``."""

    uses_labels = True

    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, *, noise: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:  # unlabelled data: the ELBO of the most likely label (a lower bound on max_y log p(x|y))
            return torch.stack([super(CVAE, self).elbo(x, torch.full((len(x),), c, dtype=torch.long, device=x.device),
                                                       noise=noise)
                                for c in range(self.n_classes)]).max(0).values
        return super().elbo(x, y, noise=noise)

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

    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, chunk: int = 250, y: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        return super().iwae_nll(x, k=k, chunk=chunk, y=self._best_label(x) if y is None else y, noise=noise)


@register("iwae", IWAEConfig, task="generate")
class IWAE(VAE):
    """Trains on the k-sample importance-weighted bound (Burda et al. 2015, eq. 8) instead of the ELBO."""

    def __init__(self, c: IWAEConfig) -> None:
        super().__init__(c)
        self.k = c.k

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        lw = self.log_weights(batch.x, self.k)
        bound = torch.logsumexp(lw, 0) - math.log(self.k)
        return {"loss": self.trimmed_mean(-bound), "elbo_k1": lw.mean()}
