"""Likelihood metrics, per sample in nats: the ELBO and the IWAE estimate of −log p(x)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _batches(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i : i + size]


@torch.no_grad()
def mean_elbo(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Average ELBO (a lower bound on log p(x)), one posterior sample per data point."""
    return float(torch.cat([model.elbo(b) for b in _batches(x, batch_size)]).mean())


@torch.no_grad()
def iwae_nll(model: nn.Module, x: torch.Tensor, *, k: int = 1000, batch_size: int | None = None,
             progress: bool = False) -> np.ndarray:
    """Per-sample −log p(x) estimated with k importance samples (Burda et al. 2015, eq. 8)."""
    d = int(np.prod(x.shape[1:]))
    batch_size = batch_size or max(1, int(1_000_000 // (min(k, 250) * d)))  # ~4 MB of decoder output per chunk
    from tqdm.auto import tqdm

    out = [model.iwae_nll(b, k=k) for b in tqdm(list(_batches(x, batch_size)), desc=f"IWAE k={k}", disable=not progress,
                                                  leave=False)]
    return torch.cat(out).cpu().numpy()
