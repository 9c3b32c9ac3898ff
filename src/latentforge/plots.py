"""Pictures of a run: sample grids, reconstructions next to inputs, loss curves, latent maps.

Image grids are written with Pillow (crisp pixels, nearest-neighbour upscaling); charts with
matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def image_grid(images: np.ndarray, *, nrow: int | None = None, pad: int = 1, min_cell: int = 28) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → one uint8 (H', W'[, 3]) mosaic, upscaled so cells are ≥ min_cell px."""
    images = np.clip(np.asarray(images, np.float32), 0, 1)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = nrow
    nrows = math.ceil(n / ncol)
    zoom = max(1, math.ceil(min_cell / max(h, w)))
    ch, cw = h * zoom + pad, w * zoom + pad
    grid = np.ones((nrows * ch + pad, ncol * cw + pad, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        up = img.transpose(1, 2, 0).repeat(zoom, 0).repeat(zoom, 1)
        grid[pad + r * ch : pad + r * ch + h * zoom, pad + q * cw : pad + q * cw + w * zoom] = up
    out = (grid * 255 + 0.5).astype(np.uint8)
    return out[..., 0] if c == 1 else out


def save_image(arr: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path)
    return Path(path)


def save_samples(images: np.ndarray, path: Path) -> Path:
    """A square grid of generated images."""
    return save_image(image_grid(images), path)


def save_reconstructions(inputs: np.ndarray, recons: np.ndarray, path: Path, *, per_row: int = 8) -> Path:
    """Pairs of rows: inputs above, their reconstructions below."""
    n = (min(len(inputs), 32) // per_row) * per_row or min(len(inputs), per_row)
    rows = []
    for i in range(0, n, per_row):
        rows += [inputs[i : i + per_row], recons[i : i + per_row]]
    return save_image(image_grid(np.concatenate(rows), nrow=per_row), path)


def _figure(figsize=(6, 4)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=100)
    return plt, fig, ax


def save_curves(history: list[dict], path: Path, *, monitor: str | None = None, higher_is_better: bool = True) -> Path:
    """Train and test loss per epoch (and the loss terms, dashed). ``monitor``: a validation value the
    model kept its best epoch by; drawn on a right-hand axis with that epoch marked."""
    plt, fig, ax = _figure()
    epochs = [r["epoch"] for r in history]
    gan = any("train_d_loss" in r for r in history)  # a GAN's test loss is its discriminator's, on test images
    for key, style in (("train_loss", "-"), ("test_loss", "-"), ("train_d_loss", "--"), ("train_g_loss", "--")):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            label = {"test_loss": "test D loss", "train_d_loss": "train D loss", "train_g_loss": "train G loss"}.get(
                key, key.replace("_", " ")) if gan else key.replace("_", " ")
            ax.plot(epochs, ys, style, marker="o", ms=3, label=label)
    if len(epochs) == 1:  # one point: a readable axis around it, not ±4 % of its value
        ax.set_xticks(epochs)
        ax.margins(y=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per sample (nats)" if any("train_kl" in r for r in history) else "loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    watched = [(r["epoch"], r[monitor]) for r in history if monitor and r.get(monitor) is not None]
    if watched:
        right = ax.twinx()
        xs, ys = zip(*watched)
        best = int(np.nanargmax(ys) if higher_is_better else np.nanargmin(ys))
        handles += right.plot(xs, ys, color="tab:green", marker="o", ms=2, label=monitor.replace("_", " "))
        kept = f"kept: epoch {xs[best]} ({ys[best]:.4g})"
        handles.append(right.axvline(xs[best], color="tab:green", ls=":", label=kept))
        right.set_ylabel(monitor.replace("_", " "))
        labels = [h.get_label() for h in handles]
        # below the axes: the curves fill the box
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    else:
        ax.legend(handles, labels)
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


PROJECTIONS = ("auto", "pca", "umap", "tsne")


def embed_2d(z: np.ndarray, *, seed: int = 0, method: str = "auto") -> tuple[np.ndarray, str]:
    """2-D coordinates of latent codes: the codes themselves if 2-D, else a projection — ``auto`` is t-SNE
    (PCA-initialised) for up to 5,000 points and PCA for more or for very few; ``pca``, ``umap``, ``tsne`` ask."""
    if method not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if z.shape[1] == 1:
        return np.c_[z[:, 0], np.zeros(len(z))], "z"
    if z.shape[1] == 2:
        return z, "z"
    if method == "auto":
        method = "tsne" if 30 <= len(z) <= 5000 else "pca"
    if method == "pca" or len(z) < 30:  # t-SNE and UMAP need more points than their neighbourhoods
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        return (np.c_[xy, np.zeros(len(z))] if xy.shape[1] < 2 else xy), "PCA of z"
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(z), "UMAP of z"
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(z) - 1) / 3))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(z), "t-SNE of z"


def save_latent_map(z: np.ndarray, labels: np.ndarray | None, path: Path, *, label_names: list[str] | None = None,
                    seed: int = 0, projection: str = "auto", what: str = "test samples",
                    clusters: np.ndarray | None = None, cluster_title: str = "k-means clusters") -> Path:
    """Scatter of the latent codes in 2-D, coloured by label (or cluster) when given; with ``clusters`` a
    second panel, the same points coloured by cluster, to see which classes the clusters merge or split."""
    xy, how = embed_2d(z, seed=seed, method=projection)
    panels = [(labels, label_names, f"Latent space ({how}, {len(z):,} {what})")]
    if clusters is not None:
        panels.append((clusters, None, f"{cluster_title} ({len(np.unique(clusters))})"))
    plt, fig, axes = _figure((6 * len(panels), 5.5))
    if clusters is not None:
        fig.clf()
        axes = fig.subplots(1, len(panels))
    for ax, (colour, names, title) in zip(np.atleast_1d(axes), panels):
        _scatter(plt, ax, xy, colour, names)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # (with the legend beside a map of many classes)
    plt.close(fig)
    return Path(path)


def _scatter(plt, ax, xy: np.ndarray, colour: np.ndarray | None, names: list[str] | None) -> None:
    if colour is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7)
    else:
        classes = np.unique(colour)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            m = colour == c
            name = names[int(c)] if names is not None and 0 <= int(c) < len(names) else str(c)
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.8)
        if len(classes) > 10:  # a long legend would cover the points: beside the map instead
            ax.legend(markerscale=3, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        else:
            ax.legend(markerscale=3, fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])


def save_denoising(noisy: np.ndarray, cleaned: np.ndarray, clean: np.ndarray, path: Path, *, per_row: int = 8) -> Path:
    """Triples of rows: corrupted inputs, the model's clean estimate, the originals."""
    n = min(len(noisy), per_row)
    return save_image(image_grid(np.concatenate([noisy[:n], cleaned[:n], clean[:n]]), nrow=n), path)


def save_traversals(model, z0, kl_per_dim: np.ndarray, path: Path, *, n_dims: int = 10, steps: int = 9,
                    span: float = 3.0) -> Path:
    """Latent traversals: one row per latent dimension (the most informative by KL first), each
    decoding z0 with that dimension swept from −span to +span."""
    import torch

    dims = np.argsort(-kl_per_dim)[: min(n_dims, len(kl_per_dim))]
    values = torch.linspace(-span, span, steps)
    rows = []
    for d in dims:
        z = z0.repeat(steps, 1)
        z[:, int(d)] = values
        rows.append(model.decode(z))
    return save_image(image_grid(torch.cat(rows).numpy(), nrow=steps), path)


def save_interpolations(model, xa, xb, path: Path, *, steps: int = 10) -> Path:
    """One row per pair (xa[i] → xb[i]): the two inputs at the ends and the decoded codes on the straight line
    between their codes in between."""
    import torch

    za, zb = model.encode(xa)[0].flatten(1), model.encode(xb)[0].flatten(1)
    t = torch.linspace(0, 1, steps)[None, :, None]
    z = (za[:, None] * (1 - t) + zb[:, None] * t).reshape(-1, za.shape[1])
    inner = model.decode(z).reshape(len(xa), steps, *xa.shape[1:])
    rows = torch.cat([xa[:, None], inner, xb[:, None]], 1).reshape(-1, *xa.shape[1:])
    return save_image(image_grid(rows.numpy(), nrow=steps + 2), path)


def save_manifold(model, path: Path, *, n: int = 15, codes: np.ndarray | None = None) -> Path:
    """Decoded images on an n×n grid over a 2-D latent space: at the prior's quantiles 5 %…95 % when
    ``codes`` is None (a VAE), else over the 1st…99th percentile of the given codes (an autoencoder)."""
    import torch
    from scipy.stats import norm

    if codes is None:
        axes = [norm.ppf(np.linspace(0.05, 0.95, n))] * 2
    else:
        axes = [np.linspace(*np.percentile(codes[:, d], [1, 99]), n) for d in range(2)]
    gx, gy = np.meshgrid(axes[0], axes[1][::-1])  # top row = high second coordinate, as on a chart
    z = torch.as_tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32)
    return save_image(image_grid(model.decode(z).numpy(), nrow=n), path)


def grid_cells(grid: np.ndarray, shape: tuple[int, int, int], n: int, *, nrow: int | None = None, pad: int = 1,
               min_cell: int = 28) -> np.ndarray:
    """Inverse of :func:`image_grid` (same ``nrow``/``pad``/``min_cell``): the n images as (n, C, H, W) floats."""
    c, h, w = shape
    ncol = nrow or math.ceil(math.sqrt(n))
    zoom = max(1, math.ceil(min_cell / max(h, w)))
    grid = grid.reshape(*grid.shape[:2], -1).astype(np.float32) / 255
    out = np.empty((n, c, h, w), np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h * zoom + pad), pad + q * (w * zoom + pad)
        out[i] = grid[top : top + h * zoom : zoom, left : left + w * zoom : zoom].transpose(2, 0, 1)
    return out


def save_progress_strip(folder: Path, shape: tuple[int, int, int], path: Path, *, n: int = 64, max_rows: int = 10,
                        per_row: int = 16) -> Path | None:
    """One row per (selected) epoch from the fixed-noise grids ``folder/epoch_NNN.png``, labelled with the
    epoch: the frames of a training animation on one page. Each grid holds ``n`` images (a
    :func:`save_samples` grid); a row shows its first ``per_row``. Up to ``max_rows`` epochs, evenly spaced, first
    and last always included."""
    from PIL import Image, ImageDraw

    frames = sorted(Path(folder).glob("epoch_*.png"))
    if not frames:
        return None
    k = min(max_rows, len(frames))
    pick = sorted({round(i * (len(frames) - 1) / max(1, k - 1)) for i in range(k)})
    rows = []
    for i in pick:
        grid = np.asarray(Image.open(frames[i]))
        cells = grid_cells(grid, shape, n)[:per_row]
        rows.append((int(frames[i].stem.split("_")[1]), Image.fromarray(image_grid(cells, nrow=per_row))))
    margin = 44
    w, h = rows[0][1].size
    canvas = Image.new(rows[0][1].mode, (w + margin, h * len(rows)), color=255 if rows[0][1].mode == "L" else (255,) * 3)
    draw = ImageDraw.Draw(canvas)
    for k, (epoch, img) in enumerate(rows):
        canvas.paste(img, (margin, k * h))
        draw.text((4, k * h + h // 2 - 6), f"ep {epoch}", fill=0 if canvas.mode == "L" else (0, 0, 0))
    canvas.save(path)
    return Path(path)


def save_codebook_usage(usage: np.ndarray, path: Path) -> Path:
    """Bar chart of how often each codeword was used in training, most used first."""
    usage = np.asarray(usage, np.float64)
    order = np.argsort(-usage)
    share = usage[order] / max(usage.sum(), 1.0)
    p = share[share > 0]
    perplexity = float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0
    plt, fig, ax = _figure((7, 3.5))
    ax.bar(np.arange(len(share)), share, width=1.0, color="#4c72b0")
    ax.set_xlabel("codeword (sorted by use)")
    ax.set_ylabel("share of assignments")
    ax.set_title(f"Codebook usage: {int((usage > 0).sum())}/{len(usage)} codes used, perplexity {perplexity:.1f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_score_histogram(train: np.ndarray, test: np.ndarray, threshold: float, path: Path, *,
                         test_labels: np.ndarray | None = None, rule: str = "") -> Path:
    """Anomaly-score histograms (training, and test — split by label when labels say which are anomalies)
    with the threshold as a vertical line."""
    plt, fig, ax = _figure((7, 4))
    allv = np.concatenate([train, test])
    lo, hi = np.quantile(allv, [0.001, 0.999])
    hi = max(hi, threshold)
    bins = np.linspace(lo, hi + 1e-12, 60)
    clip = lambda v: np.clip(v, lo, hi)  # noqa: E731  (the far tail piles up in the edge bins, not off-screen)
    ax.hist(clip(train), bins=bins, density=True, alpha=0.45, label=f"training ({len(train)})", color="#4c72b0")
    if test_labels is not None and set(np.unique(test_labels)) <= {0, 1}:
        ax.hist(clip(test[test_labels == 0]), bins=bins, density=True, histtype="step", lw=1.8, color="#55a868",
                label=f"test, normal ({int((test_labels == 0).sum())})")
        ax.hist(clip(test[test_labels == 1]), bins=bins, density=True, histtype="step", lw=1.8, color="#c44e52",
                label=f"test, anomalies ({int((test_labels == 1).sum())})")
    else:
        ax.hist(clip(test), bins=bins, density=True, histtype="step", lw=1.8, color="#dd8452", label=f"test ({len(test)})")
    ax.axvline(threshold, color="k", ls="--", lw=1.5, label=f"threshold {threshold:.4g}" + (f" ({rule})" if rule else ""))
    flagged = float((test > threshold).mean())
    ax.set_title(f"Anomaly scores (higher = more anomalous): {flagged:.1%} of test flagged")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_top_anomalies(images: np.ndarray, recons: np.ndarray | None, path: Path) -> Path:
    """The most anomalous images, most anomalous first (with their reconstructions underneath when given)."""
    if recons is None:
        return save_image(image_grid(images, nrow=8), path)
    return save_reconstructions(images, recons, path)
