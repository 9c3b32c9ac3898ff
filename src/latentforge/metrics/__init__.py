"""Metrics: likelihood, reconstruction, and the per-run evaluation that fills ``metrics.json``."""

from .evaluate import evaluate_model
from .likelihood import iwae_nll, mean_elbo
from .reconstruction import bce, mse, psnr, ssim

__all__ = ["evaluate_model", "iwae_nll", "mean_elbo", "bce", "mse", "psnr", "ssim"]
