"""One evaluation for a trained model on its test set: what applies to its family, nothing else."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..train import evaluate_loss
from .likelihood import iwae_nll, mean_elbo
from .reconstruction import mse, psnr, ssim


@torch.no_grad()
def evaluate_model(model: nn.Module, test: Dataset, *, k: int = 1000, max_iwae: int | None = None,
                   device: str | torch.device = "cpu", progress: bool = False, seed: int = 0) -> dict[str, float]:
    """The ``test`` block of ``metrics.json``: loss, ELBO, IWAE NLL (k samples), recon MSE, PSNR, SSIM.

    ``max_iwae`` evaluates the IWAE bound on the first N test samples only (recorded as ``iwae_n``).
    """
    torch.manual_seed(seed)  # the same run evaluated twice gives the same numbers
    model.eval()
    out: dict[str, float] = {}
    out.update({k_: v for k_, v in evaluate_loss(model, test, device=device).items() if k_ == "loss"})
    x = torch.from_numpy(test.floats()).to(device)
    if hasattr(model, "elbo"):
        out["elbo"] = mean_elbo(model, x)
    if hasattr(model, "iwae_nll") and k > 0:
        xs = x if max_iwae is None else x[:max_iwae]
        out["nll_iwae"] = float(np.mean(iwae_nll(model, xs, k=k, progress=progress)))
        out["iwae_k"] = k
        out["iwae_n"] = len(xs)
    if hasattr(model, "reconstruct"):
        rec = torch.cat([model.reconstruct(x[i : i + 1000]) for i in range(0, len(x), 1000)]).cpu().numpy()
        ref = test.floats()
        out["recon_mse"] = mse(ref, rec)
        if test.in_unit_interval:
            out["psnr"] = psnr(ref, rec)
            if test.is_image:
                out["ssim"] = ssim(ref, rec)
    return out
