"""Reconstruction metrics: MSE, BCE, PSNR and SSIM (scikit-image's implementation)."""

from __future__ import annotations

import numpy as np


def _per_sample(x: np.ndarray, y: np.ndarray, chunk: int, rows) -> np.ndarray:
    """``rows(x_chunk, y_chunk) -> per-row values`` over flattened float64 chunks (bounded memory)."""
    x = np.asarray(x).reshape(len(x), -1)
    y = np.asarray(y).reshape(len(y), -1)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        out[i : i + chunk] = rows(x[i : i + chunk].astype(np.float64), y[i : i + chunk].astype(np.float64))
    return out


def per_sample_mse(x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per-sample mean squared error, in float64, a chunk of rows at a time (bounded memory)."""
    def rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a - b
        return np.einsum("ij,ij->i", d, d) / d.shape[1]

    return _per_sample(x, y, chunk, rows)


BCE_EPS = 1e-7  # a reconstruction of exactly 0 or 1 costs at most −log(1e-7) ≈ 16.1 nats per value, not ∞


def per_sample_bce(x: np.ndarray, p: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per-sample binary cross-entropy −Σ_j [x_j log p_j + (1−x_j) log(1−p_j)], summed over the values,
    in nats, for targets x and reconstructions p in [0, 1] (p clipped to [1e-7, 1−1e-7]).

    On binary x it is the Bernoulli reconstruction term of a VAE's ELBO; on grey levels it is the
    cross-entropy that pytorch/examples' VAE minimises, not a normalised likelihood.
    """
    def rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        b = np.clip(b, BCE_EPS, 1 - BCE_EPS)
        return -(a * np.log(b) + (1 - a) * np.log1p(-b)).sum(1)

    return _per_sample(x, p, chunk, rows)


def bce(x: np.ndarray, p: np.ndarray) -> float:
    """Mean over samples of the per-sample binary cross-entropy (nats per sample)."""
    return float(np.mean(per_sample_bce(x, p)))


def mse(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error per value (averaged over samples and features)."""
    return float(np.mean(per_sample_mse(x, y)))


def psnr(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean over samples of 10·log10(range² / MSE_i), in dB; identical samples are capped at 100 dB."""
    per = per_sample_mse(x, y)
    return float(np.mean(10 * np.log10(data_range**2 / np.maximum(per, 1e-10))))


def ssim_per_sample(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity of each image pair (N, C, H, W) (Wang et al. 2004; scikit-image,
    7×7 uniform window, shrunk to the largest odd size that fits small images such as 8×8 digits)."""
    from skimage.metrics import structural_similarity

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    win = min(7, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2
    return np.array([structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win)
                     for a, b in zip(x, y)])


def ssim(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean structural similarity over images (N, C, H, W)."""
    return float(np.mean(ssim_per_sample(x, y, data_range=data_range)))
