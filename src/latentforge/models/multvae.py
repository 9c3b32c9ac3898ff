"""Mult-VAE and Mult-DAE for collaborative filtering (Liang, Krishnan, Hoffman & Jebara 2018,
"Variational Autoencoders for Collaborative Filtering", arXiv:1802.05814).

A user is the bag of items they liked. The input row is L2-normalised, dropped out (p = 0.5) and
encoded by tanh MLPs; the decoder gives logits over all items and the likelihood is multinomial:
log p(x|z) = Σ_i x_i log softmax(f(z))_i. Mult-VAE adds a Gaussian latent code whose KL term is
weighted by β, annealed linearly from 0 to ``beta_cap`` over ``anneal_steps`` updates (§2.2.2); the
trainer keeps the weights of the epoch with the best validation NDCG@100 (``monitor``), which is how
the paper keeps "the best β". Mult-DAE is the same network without the latent noise and KL, with an
L2 penalty on the weights. Paper setting (ML-20M): hidden 600, latent 200, dropout 0.5, batch 500,
Adam 1e-3, no L2, β cap 0.2 reached after 40,000 updates (``anneal_steps=40000``; the paper states it
as 0.2 of 200,000). The defaults here were chosen on MovieLens-100K validation users (docs/results.md):
no hidden layer, latent 600, dropout 0.1, β cap 0.2 after 300 updates of 128 users, L2 1e-3 on the
weights (``l2`` · Σw² added to the batch-mean loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn import exporting, mlp
from ..settings import SettingError, default, setting
from .base import Batch, Model, ModelConfig
from .registry import register


@dataclass
class MultDAEConfig(ModelConfig):
    """Settings of Mult-DAE; ``item_ids`` come from the data."""

    hidden: tuple[int, ...] = setting((), "hidden layer sizes between the items and the code", min=1)
    latent_dim: int = setting(600, "size of the user code", min=1, max=1000000)
    dropout: float = setting(0.5, "input dropout", min=0, below=1)
    l2: float = setting(2e-5, "L2 penalty on the weights", min=0)
    item_ids: Any = setting(None, "the data's item ids, one per input column", cli=False)

    def check(self) -> None:
        super().check()
        if self.item_ids is not None:
            if not isinstance(self.item_ids, (list, tuple)) or len(self.item_ids) != int(self.input_shape[-1]):
                raise SettingError("item_ids", f"must list one id per item column ({int(self.input_shape[-1])})")
            self.item_ids = list(self.item_ids)


@dataclass
class MultVAEConfig(MultDAEConfig):
    """Settings of Mult-VAE (defaults chosen on MovieLens-100K validation users, docs/results.md)."""

    dropout: float = default(MultDAEConfig, "dropout", 0.1)
    l2: float = default(MultDAEConfig, "l2", 1e-3)
    beta_cap: float = setting(0.2, "the KL weight is annealed from 0 up to this; the epoch best on validation "
                              "users is kept", min=0)
    anneal_steps: int = setting(300, "updates over which the KL weight rises to beta_cap (0: from the start)", min=0)


@register("mult-vae", MultVAEConfig, task="recommend")
class MultVAE(Model):
    """Multinomial-likelihood VAE over a user's items; ``scores(x)`` ranks items for fold-in rows ``x``."""

    variational = True
    likelihood = "multinomial"
    default_epochs = 200

    def __init__(self, c: MultVAEConfig) -> None:
        super().__init__()
        n_items, hidden, latent_dim = int(c.input_shape[-1]), c.hidden, c.latent_dim
        self.n_items, self.dropout, self.l2 = n_items, c.dropout, c.l2
        self.beta_cap, self.anneal_steps = getattr(c, "beta_cap", 0.0), getattr(c, "anneal_steps", 0)
        dims = [*hidden, 2 * latent_dim if self.variational else latent_dim]
        # The first layer reads only a user's items (a few dozen of thousands): its weight is stored
        # item-major and applied as a weighted sum of item rows (embedding_bag), which is the same
        # arithmetic as the dense matmul at a fraction of the cost. tanh follows every encoder layer
        # except the VAE's last, which gives (μ, log σ²).
        self.item_weight = nn.Parameter(torch.empty(n_items, dims[0]))
        self.item_bias = nn.Parameter(torch.empty(dims[0]))
        self.first_tanh = len(dims) > 1 or not self.variational
        self.encoder = mlp(dims, activation="tanh", last_activation=not self.variational) if len(dims) > 1 else nn.Identity()
        self.decoder = mlp([latent_dim, *reversed(hidden), n_items], activation="tanh", last_activation=False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # drives the β schedule; saved for resume
        nn.init.xavier_uniform_(self.item_weight)  # the paper's initialisation: Glorot weights, small-normal biases
        nn.init.normal_(self.item_bias, std=1e-3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-3)

    def beta(self) -> torch.Tensor:
        """Current KL weight: β_cap · min(1, updates / anneal_steps)."""
        if self.anneal_steps == 0:
            return torch.tensor(self.beta_cap, device=self.updates.device)
        return self.beta_cap * torch.clamp(self.updates.float() / self.anneal_steps, max=1.0)

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(x / ‖x‖) @ W + b`` computed from the non-zeros of ``x`` only (dropping out zeros
        changes nothing, so the mask is drawn for a user's items alone); the dense product while exporting."""
        if exporting():
            w = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if self.training and self.dropout > 0:
                w = F.dropout(w, self.dropout)
            return w @ self.item_weight + self.item_bias
        rows, cols = x.nonzero(as_tuple=True)  # row-major, so each row's items are contiguous
        v = x[rows, cols]
        norm = torch.zeros(len(x), device=x.device).index_add_(0, rows, v * v).sqrt_().clamp_min_(1e-12)
        w = v / norm[rows]
        if self.training and self.dropout > 0:
            w = w * (torch.rand_like(w) >= self.dropout) / (1 - self.dropout)
        counts = torch.bincount(rows, minlength=len(x))
        offsets = torch.cumsum(counts, 0) - counts
        return F.embedding_bag(cols, self.item_weight, offsets, mode="sum", per_sample_weights=w) + self.item_bias

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(μ, log σ²) of q(z|x) for Mult-VAE, (code, None) for Mult-DAE; dropout only in training."""
        h = self.first_layer(x.flatten(1))
        h = self.encoder(torch.tanh(h) if self.first_tanh else h)
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Negative ELBO with the annealed β (VAE), or multinomial NLL + L2 (DAE), averaged over users."""
        x = batch.x
        mu, logvar = self.encode(x)
        z = mu
        out: dict[str, torch.Tensor] = {}
        if self.variational:
            if self.training:  # the paper samples z in training and uses μ otherwise
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            kl = (0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)).mean()
            beta = self.beta()
            out.update(kl=kl, beta=beta)
        nll = -(F.log_softmax(self.decoder(z), dim=-1) * x).sum(-1).mean()
        loss = nll + out["beta"] * out["kl"] if self.variational else nll
        if self.l2 > 0:
            weights = [self.item_weight, *(m.weight for m in self.modules() if isinstance(m, nn.Linear))]
            loss = loss + self.l2 * sum(w.square().sum() for w in weights)
        if self.training:
            self.updates += 1
        return {"loss": loss, "nll": nll, **out}

    @torch.no_grad()
    def scores(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Item logits for fold-in rows (higher = recommend first); uses μ, no dropout."""
        was = self.training
        self.eval()
        p = next(self.parameters())
        x = torch.as_tensor(x, dtype=torch.float32, device=p.device)
        out = self.decoder(self.encode(x)[0])
        self.train(was)
        return out

    def on_epoch_end(self, epoch: int, train, run_dir: Path | None) -> dict[str, float]:
        """The KL weight reached, for the history."""
        return {"beta": float(self.beta())} if self.variational else {}


@register("mult-dae", MultDAEConfig, task="recommend")
class MultDAE(MultVAE):
    """Denoising autoencoder with the multinomial likelihood: dropout on the input, no latent noise."""

    variational = False
    default_epochs = 150
