"""Per-sample negative log-likelihoods of decoder outputs, in nats.

All take decoder *logits/means* and targets flattened to ``(batch, features)`` and return one
value per sample. Logit forms keep them numerically stable (never sigmoid-then-log).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "cb", "gaussian")


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(λ) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019, arXiv:1907.06845).

    With λ = σ(l): C = 2·atanh(1−2λ)/(1−2λ) = l / tanh(l/2); near l = 0 its Taylor form 2 + l²/6.
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe.abs()) - torch.log(torch.tanh(safe.abs() / 2))
    taylor = math.log(2.0) + torch.log1p(logits.square() / 12)
    return torch.where(small, taylor, exact)


def cb_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return bernoulli_nll(logits, x) - cb_log_norm(logits).sum(-1)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli: λ/(2λ−1) + 1/(2·atanh(1−2λ)), ½ at λ = ½."""
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = 0.5 / torch.tanh(safe / 2) + 0.5 - 1 / safe  # 2λ−1 = tanh(l/2)
    mean = torch.where(small, 0.5 + logits / 12, exact)
    return mean.clamp(0, 1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    z = (x - mean) * torch.exp(-log_scale)
    return (0.5 * z.square() + log_scale + 0.5 * math.log(2 * math.pi)).sum(-1)
