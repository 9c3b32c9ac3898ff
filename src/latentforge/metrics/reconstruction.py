"""Reconstruction metrics: MSE, PSNR and SSIM (scikit-image's implementation)."""

from __future__ import annotations

import numpy as np


def mse(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error per value (averaged over samples and features)."""
    return float(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))


def psnr(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean over samples of 10·log10(range² / MSE_i), in dB; identical samples are capped at 100 dB."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    per = np.mean((x - y) ** 2, axis=1)
    vals = 10 * np.log10(data_range**2 / np.maximum(per, 1e-10))
    return float(np.mean(vals))


def ssim(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean structural similarity over images (N, C, H, W) (Wang et al. 2004, 7×7 window)."""
    from skimage.metrics import structural_similarity

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    win = min(7, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd window that fits small images (digits are 8×8)
    vals = [
        structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win)
        for a, b in zip(x, y)
    ]
    return float(np.mean(vals))
