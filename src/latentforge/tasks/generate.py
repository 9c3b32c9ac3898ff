"""The generate task: models that learn the data's distribution or its codes (VAEs, autoencoders,
VQ-VAE, GANs). Evaluated by likelihood, reconstruction, sample quality and the codes' usefulness;
pictures of samples, reconstructions, the latent space and training. A model of this task trained on a
table also scores rows as anomalies (a VAE on a CSV is usually a detector too), with a threshold fitted
on training rows held out from fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import plots
from ..data import Dataset, Splits
from ..data.labels import LabelBudget, budget_splits
from ..errors import UserError
from ..metrics import evaluate_model
from ..models.base import AnomalyScorer, Codebook, Decoder, Denoiser, Encoder, Likelihood, ProgressFrames, Reconstructor, Sampler
from ..train import evaluate_loss
from ..train_records import Monitor, TrainResult
from .augment import save_real_vs_generated
from .base import Figure, Metric, RunOptions, Task, n_classes, register_task
from .scoring import write_run_anomaly

GENERATIVE_METRICS = {
    "loss": Metric("test loss (the training objective), per sample", "lower"),
    "elbo": Metric("evidence lower bound, nats per sample (higher is better)", "higher"),
    "nll_iwae": Metric("−log p(x) by importance sampling (IWAE bound), nats per sample (lower is better)", "lower"),
    "iwae_k": Metric("importance samples per test sample used for nll_iwae"),
    "iwae_n": Metric("test samples the IWAE NLL was computed on"),
    "nll_iwae_se": Metric("standard error of nll_iwae over its test samples (their spread / √iwae_n)"),
    "recon_mse": Metric("mean squared reconstruction error per value", "lower"),
    "recon_bce": Metric("binary cross-entropy of the reconstructions (decoded at the posterior mean), nats per "
                        "sample", "lower"),
    "psnr": Metric("peak signal-to-noise ratio of reconstructions, dB", "higher"),
    "ssim": Metric("structural similarity of reconstructions (1 = identical)", "higher"),
    "probe_acc": Metric("accuracy of a logistic regression on the codes (fixed 50/50 split of the test set)", "higher"),
    "kmeans_acc": Metric("k-means on the codes, clusters matched to labels (Hungarian): accuracy", "higher"),
    "nmi": Metric("normalised mutual information between k-means clusters and labels", "higher"),
    "ari": Metric("adjusted Rand index between k-means clusters and labels", "higher"),
    "fid": Metric("Fréchet distance of samples to test images in the feature space named by quality_features "
                  "(lower is better; in the shipped MNIST net's: test vs training images ≈ 3, noise ≈ 3000)", "lower"),
    "kid": Metric("kernel distance (unbiased MMD², cubic kernel) in the same space, lower is better", "lower"),
    "kid_std": Metric("standard error of the KID estimate"),
    "precision": Metric("share of samples inside the test images' k-NN manifold (fidelity)", "higher"),
    "recall": Metric("share of test images inside the samples' k-NN manifold (diversity)", "higher"),
    "density": Metric("how many test-image neighbourhoods hold each sample, on average (≈ 1 for matching "
                      "distributions)"),
    "denoise_psnr": Metric("PSNR of the denoised first 1,000 test inputs, corrupted with the training noise, dB",
                           "higher"),
    "noisy_psnr": Metric("PSNR of those corrupted inputs themselves, dB (what denoising starts from)"),
    "denoise_ssim": Metric("SSIM of the denoised test images against the clean ones", "higher"),
    "coverage": Metric("share of test images whose neighbourhood holds at least one sample"),
    "quality_features": Metric("feature space of the sample-quality metrics: mnist-cnn (the shipped net) or inception"),
    "quality_n": Metric("samples (and test images) used for the sample-quality metrics"),
    "eval_n": Metric("data streamed from disk: the test rows (a seeded sample) every metric but the loss was computed "
                     "on; the loss is over every test row"),
}

GENERATIVE_FIGURES = (
    Figure("samples.png", "Samples", "Images generated from the prior (one row per class for conditional models)."),
    Figure("real_vs_generated.png", "Real and generated, per class", "Conditional models: one row per class, test "
           "images of that class (left) and the model's samples for that label (right)."),
    Figure("reconstructions.png", "Reconstructions", "Test inputs (odd rows) and their reconstructions (even rows)."),
    Figure("curves.png", "Training curves", "Loss per sample on the training and test sets after each epoch; for a "
           "model that keeps its best epoch by a validation value, that value (right axis) and the kept epoch."),
    Figure("augmentation.png", "Training images changed (--augment)", "Each row: a test image (left) and seven "
           "random changes of it like those the training images went through."),
    Figure("latent_map.png", "Latent space", "Codes (posterior means) of test samples, coloured by label where "
           "labels exist; beside it, the same points coloured by k-means clusters of the codes (as many as classes)."),
    Figure("denoising.png", "Denoising", "Test inputs with the training noise (top), the model's clean estimate "
           "(middle) and the originals (bottom)."),
    Figure("codebook.png", "Codebook usage", "How often each VQ-VAE codeword was assigned during training."),
    Figure("traversals.png", "Latent traversals", "One row per latent dimension (most informative first, by KL): "
           "a test sample's code with that dimension swept from −3 to +3."),
    Figure("interpolations.png", "Interpolations", "Pairs of test inputs (first and last column) and the decoded "
           "points on the straight line between their codes."),
    Figure("manifold.png", "Latent manifold", "Decoded images on a grid over the 2-D latent space (a VAE: the prior's "
           "5–95 % quantiles; an autoencoder: the codes' 1–99th percentiles)."),
    Figure("gan_progress.png", "Training progress", "Samples from the same fixed noise after each epoch (a selection, "
           "top to bottom), drawn by the averaged (EMA) generator: the frames of the training animation."),
)

VALIDATION_FRACTION = 0.1  # of a table's training rows, held out for the anomaly threshold and the kept epoch
MIN_VALIDATION_ROWS = 20  # tables smaller than 10× this train on every row (no held-out slice)
STREAM_EVAL_ROWS = 10_000  # streamed data: rows of each split the metrics and anomaly files read (in memory)


def choose_likelihood(likelihood: str, data: Dataset, binarize: str | None) -> str:
    """``auto`` → bernoulli for values in [0, 1], else gaussian; a Bernoulli likelihood on other values is an error."""
    if likelihood == "auto":
        return "bernoulli" if (binarize or data.in_unit_interval) else "gaussian"
    if likelihood in ("bernoulli", "cb") and not data.in_unit_interval:
        raise UserError(f"likelihood {likelihood} needs values in [0, 1]; {data.name} ranges over "
                        f"{data.value_range}. Use likelihood gaussian")
    return likelihood


def hold_out_rows(splits: Splits, *, fraction: float = VALIDATION_FRACTION, seed: int = 0) -> Splits:
    """Move a seeded ``fraction`` of the training rows to ``splits.validation`` (when enough rows remain)."""
    n = len(splits.train)
    n_val = int(round(n * fraction))
    if n_val < MIN_VALIDATION_ROWS or splits.validation is not None:
        return splits
    perm = np.random.default_rng(seed).permutation(n)
    return Splits(train=splits.train.subset(np.sort(perm[n_val:])), test=splits.test, name=splits.name,
                  validation=splits.train.subset(np.sort(perm[:n_val])), extras=splits.extras)


def sampled(splits: Splits) -> Splits:
    """Streamed splits cut to seeded samples of at most ``STREAM_EVAL_ROWS`` rows each, for what reads its rows in
    memory."""
    val, n = splits.validation, STREAM_EVAL_ROWS
    return Splits(train=splits.train.sample(n), test=splits.test.sample(n), name=splits.name,
                  validation=None if val is None else val.sample(n), extras=splits.extras)


def scores_rows(model: nn.Module, data: Dataset) -> bool:
    """A run of this task on a table (not images, not a conditional model) also scores anomalies."""
    return isinstance(model, AnomalyScorer) and not data.is_image and not data.is_sparse and not model.uses_labels


class GenerateTask(Task):
    name = "generate"
    metrics = GENERATIVE_METRICS
    figures = GENERATIVE_FIGURES
    streams = True
    data_options = ("labels_per_class", "label_seed")  # a label budget (data.labels): conditional models only
    data_example = "--labels-per-class 20 for cvae or cdcgan on breastmnist"

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        splits = super().load(data, options, run)
        if options.get("labels_per_class") is not None:
            splits = budget_splits(splits, options["labels_per_class"], options.get("label_seed") or 0)
        return splits if splits.train.is_image else hold_out_rows(splits, seed=run.seed)

    def model_settings(self, model_cls: type, splits: Splits, given: dict, run: RunOptions) -> dict:
        settings = dict(given)
        names = model_cls.Config.names()
        if isinstance(splits.extras, LabelBudget) and not model_cls.uses_labels:
            raise UserError(f"--labels-per-class picks the labelled rows a conditional model trains on (cvae, cdcgan); "
                            f"{model_cls.registry_name} ignores labels, so train it on every image without the flag")
        if model_cls.uses_labels:
            settings["n_classes"] = n_classes(splits.train)
        if "likelihood" in names:
            settings["likelihood"] = choose_likelihood(settings.get("likelihood", "auto"), splits.train, run.binarize)
        return settings

    def evaluate(self, model: nn.Module, test: Dataset, splits: Splits | None, *, k: int, device,
                 max_iwae: int | None = None, progress: bool = False, features=None) -> dict:
        if test.streamed and len(test) > STREAM_EVAL_ROWS:  # larger than memory: the loss by chunks, the rest sampled
            loss = evaluate_loss(model, test, device=device)["loss"]
            out = evaluate_model(model, test.sample(STREAM_EVAL_ROWS), k=k, max_iwae=max_iwae, device=device,
                                 progress=progress, features=features)
            return {**out, "loss": loss, "eval_n": STREAM_EVAL_ROWS}
        out = evaluate_model(model, test, k=k, max_iwae=max_iwae, device=device, progress=progress,
                             features=features)
        if isinstance(model, Denoiser) and test.in_unit_interval:  # PSNR's peak is the unit range
            out.update(denoising_scores(model.cpu().eval(), test))
            model.to(device)
        return out

    def monitor(self, splits: Splits) -> Monitor | None:
        return Monitor("val_loss", higher_is_better=False) if splits.validation is not None else None

    def epoch_end(self, run_dir: Path, epoch: int, model: nn.Module) -> None:
        """Models that draw progress frames (GANs: ``progress_samples``): ``progress/epoch_NNN.png`` and the
        strip ``gan_progress.png``."""
        if not isinstance(model, ProgressFrames):
            return
        folder = Path(run_dir) / "progress"
        folder.mkdir(exist_ok=True)
        x = model.progress_samples().cpu()
        plots.save_samples(x.numpy(), folder / f"epoch_{epoch:03d}.png")
        plots.save_progress_strip(folder, tuple(x.shape[1:]), Path(run_dir) / "gan_progress.png")

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        out = {}
        if scores_rows(model, splits.train):
            out = write_run_anomaly(run_dir, model, sampled(splits) if splits.train.streamed else splits)
        self.write_pictures(run_dir, model, splits.test, result.history, monitor=self.monitor(splits))
        return out

    def write_pictures(self, run_dir: Path, model: nn.Module, test: Dataset, history: list[dict], *,
                       monitor: Monitor | None = None) -> None:
        write_pictures(run_dir, model, test, history, monitor=monitor)


register_task(GenerateTask())


@torch.no_grad()
def write_pictures(run_dir: Path, model: nn.Module, test: Dataset, history: list[dict], *, seed: int = 0,
                   monitor: Monitor | None = None) -> None:
    """samples.png, reconstructions.png, curves.png, latent_map.png and traversals.png, as the model allows."""
    model = model.cpu().eval()
    if isinstance(model, Sampler) and test.is_image:  # a table's samples are rows, not a picture
        if model.uses_labels:  # a row of 8 per class
            rows = [model.sample(8, label=c, seed=seed + c) for c in range(model.n_classes)]
            plots.save_image(plots.image_grid(torch.cat(rows).numpy(), nrow=8), run_dir / "samples.png")
            save_real_vs_generated(model, test, run_dir / "real_vs_generated.png", seed=seed)
        else:
            plots.save_samples(model.sample(64, seed=seed).numpy(), run_dir / "samples.png")
    x = torch.from_numpy(test.head(32))
    y = torch.as_tensor(test.y[:32].astype(np.int64)) if test.y is not None and model.uses_labels else None
    if isinstance(model, Reconstructor) and test.is_image:
        rec = model.reconstruct(x, y) if y is not None else model.reconstruct(x)
        plots.save_reconstructions(x.numpy(), rec.numpy(), run_dir / "reconstructions.png")
    if isinstance(model, Denoiser) and test.is_image:
        noisy = model.corrupted(x[:8], seed=seed)
        plots.save_denoising(noisy.numpy(), model.reconstruct(noisy).numpy(), x[:8].numpy(), run_dir / "denoising.png")
    if history:
        plots.save_curves(history, run_dir / "curves.png", monitor=monitor.key if monitor is not None else None,
                          higher_is_better=monitor is None or monitor.higher_is_better)
    if isinstance(model, Codebook):
        plots.save_codebook_usage(model.codebook_usage().cpu().numpy(), run_dir / "codebook.png")
    if isinstance(model, Encoder) and len(test) >= 2:
        n = min(len(test), 1000)
        mu, logvar = model.encode(torch.from_numpy(test.head(n)))
        labels = None if test.y is None else np.asarray(test.y[:n])
        codes = mu.flatten(1).numpy()
        plots.save_latent_map(codes, labels, run_dir / "latent_map.png", label_names=test.label_names, seed=seed,
                              clusters=label_clusters(codes, labels, seed=seed))
        if logvar is not None and isinstance(model, Likelihood) and test.is_image and not model.uses_labels:
            write_traversals(model, mu, logvar, run_dir / "traversals.png")
        if isinstance(model, Decoder) and mu.dim() == 2 and test.is_image and not model.uses_labels:
            write_latent_pictures(run_dir, model, test, codes=mu.flatten(1).numpy(), variational=logvar is not None)


def write_traversals(model: nn.Module, mu: torch.Tensor, logvar: torch.Tensor, path: Path) -> None:
    """traversals.png from the posterior (mu, logvar) of some inputs: the first input's code, its latent
    dimensions ranked by their average KL over all the inputs."""
    kl_per_dim = model.kl(mu[:, :, None], logvar[:, :, None]).mean(0)  # (latent,) average KL per dim
    plots.save_traversals(model, mu[0], kl_per_dim.numpy(), path)


def label_clusters(codes: np.ndarray, labels: np.ndarray | None, *, seed: int = 0) -> np.ndarray | None:
    """k-means clusters of the codes with as many clusters as the labels have classes (None without labels)."""
    from .represent import cluster_codes

    k = 0 if labels is None else len(np.unique(labels))
    if not 2 <= k <= min(50, len(codes)):
        return None
    return cluster_codes(codes, k, seed=seed).labels


@torch.no_grad()
def denoising_scores(model: nn.Module, test: Dataset, *, n: int = 1000, seed: int = 0) -> dict:
    """PSNR (and SSIM for images) of the model's clean estimate of the first ``n`` test rows corrupted with its own
    training noise, next to the corrupted rows' own: how much the denoiser removes."""
    from ..metrics.reconstruction import psnr, ssim

    x = torch.from_numpy(test.head(min(n, len(test))))
    noisy = model.corrupted(x, seed=seed)
    cleaned = model.reconstruct(noisy)
    out = {"denoise_psnr": psnr(cleaned.numpy(), x.numpy()), "noisy_psnr": psnr(noisy.numpy(), x.numpy())}
    if test.is_image:
        out["denoise_ssim"] = ssim(cleaned.clamp(0, 1).numpy(), x.numpy())
    return out


def write_latent_pictures(run_dir: Path, model: nn.Module, test: Dataset, *, codes: np.ndarray,
                          variational: bool) -> None:
    """interpolations.png (8 pairs of test inputs) and, for a 2-D latent space, manifold.png."""
    n = min(len(test), 16) // 2
    if n >= 1:
        x = torch.from_numpy(test.head(2 * n))
        plots.save_interpolations(model, x[:n], x[n:], Path(run_dir) / "interpolations.png")
    if codes.shape[1] == 2:
        plots.save_manifold(model, Path(run_dir) / "manifold.png", codes=None if variational else codes)
