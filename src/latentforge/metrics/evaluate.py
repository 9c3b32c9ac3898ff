"""One evaluation for a trained model on its test set: what applies to its family, nothing else."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import UserError
from ..memory import release_freed_memory
from ..models.base import Encoder, Likelihood, Reconstructor, Sampler
from ..precision import autocast, full_precision
from ..train import NOTE_EVERY, evaluate_loss
from .likelihood import iwae_nll
from .reconstruction import per_sample_bce, per_sample_mse, ssim_per_sample


def evaluate_model(model: nn.Module, test: Dataset, *, k: int = 1000, max_iwae: int | None = None,
                   device: str | torch.device = "cpu", progress: bool = False, seed: int = 0,
                   chunk: int = 250, features=None) -> dict[str, float]:
    """The ``test`` block of ``metrics.json``: loss, ELBO, IWAE NLL (k samples), recon MSE, BCE, PSNR,
    SSIM, sample quality (FID, KID, precision/recall, density/coverage) for generative image models, and
    on labelled data the representation metrics of the codes (probe_acc, kmeans_acc, nmi, ari).

    Streams the test set in chunks so memory stays flat. ``max_iwae`` evaluates the IWAE bound
    on the first N test samples only (recorded as ``iwae_n``). ``features`` is the feature space of
    the sample-quality metrics: None for the shipped MNIST net (28×28 grey images only), or a
    :class:`~latentforge.metrics.extractors.TorchScriptFeatures` (e.g. Inception) for any images.
    """
    with torch.random.fork_rng(), torch.no_grad(), autocast(model):  # same numbers every time, RNG untouched
        torch.manual_seed(seed)
        return _evaluate(model, test, k=k, max_iwae=max_iwae, device=device, progress=progress, chunk=chunk,
                         features=features)


def _evaluate(model: nn.Module, test: Dataset, *, k: int, max_iwae: int | None, device, progress: bool,
              chunk: int, features) -> dict[str, float]:
    model.eval()
    out: dict[str, float] = {"loss": evaluate_loss(model, test, device=device)["loss"]}
    quality = quality_skip_reason(model, test, features) is None
    if quality and features is not None:  # a feature net that cannot run fails now, not after the IWAE pass
        features(test.head(2))
    n_iwae = len(test) if max_iwae is None else min(max_iwae, len(test))
    elbo, nll, mse_i, bce_i, ssim_i, codes = [], [], [], [], [], []
    probe_n = min(len(test), 10000)  # codes for the representation metrics
    image01 = test.is_image and test.in_unit_interval
    from tqdm.auto import tqdm

    last_note = time.perf_counter()
    for start in tqdm(range(0, len(test), chunk), desc="evaluate", disable=not progress, leave=False):
        if not progress and time.perf_counter() - last_note > NOTE_EVERY:  # no bar: a line now and then, not silence
            last_note = time.perf_counter()
            print(f"evaluate: {start:,} of {len(test):,} test samples", file=sys.stderr)
        xn = test.x[start : start + chunk].astype(np.float32) / test.scale
        x = torch.from_numpy(xn).to(device)
        if isinstance(model, Likelihood):
            elbo.append(model.elbo(x).cpu())
        if isinstance(model, Likelihood) and k > 0 and start < n_iwae:
            nll.append(torch.from_numpy(iwae_nll(model, x[: n_iwae - start], k=k)))
        if isinstance(model, Encoder) and test.y is not None and start < probe_n:
            codes.append(model.encode(x[: probe_n - start])[0].flatten(1).float().cpu().numpy())
        if isinstance(model, Reconstructor):
            rec = model.reconstruct(x).float().cpu().numpy()
            mse_i.append(per_sample_mse(xn, rec))
            if test.in_unit_interval:
                bce_i.append(per_sample_bce(xn, rec))
            if image01:
                ssim_i.append(ssim_per_sample(xn, rec))
    if elbo:
        out["elbo"] = float(torch.cat(elbo).mean())
    if nll:
        per_nll = torch.cat(nll).double()
        out["nll_iwae"] = float(per_nll.mean())
        out["nll_iwae_se"] = float(per_nll.std() / len(per_nll) ** 0.5) if len(per_nll) > 1 else float("nan")
        out["iwae_k"] = k
        out["iwae_n"] = n_iwae
    if mse_i:
        per = np.concatenate(mse_i)
        out["recon_mse"] = float(per.mean())
        if bce_i:
            out["recon_bce"] = float(np.concatenate(bce_i).mean())
        if test.in_unit_interval:
            out["psnr"] = float(np.mean(10 * np.log10(1.0 / np.maximum(per, 1e-10))))
        if ssim_i:
            out["ssim"] = float(np.mean(np.concatenate(ssim_i)))
    if quality:
        if not progress:
            print(f"evaluate: sample quality of {min(SAMPLE_QUALITY_N, len(test)):,} samples", file=sys.stderr)
        release_freed_memory()  # the bound's and reconstructions' buffers, before the samples' and features'
        out.update(sample_quality_of(model, test, device=device, features=features))
    if codes:
        from .representation import representation_scores

        out.update(representation_scores(np.concatenate(codes), np.asarray(test.y[:probe_n])))
    return out


def _samples(model: nn.Module, test: Dataset, n: int, seed: int) -> torch.Tensor:
    """``n`` samples in chunks of 1,000: from the prior, or per class in the first ``n`` test labels' counts."""
    if not model.uses_labels:
        return torch.cat([model.sample(min(1000, n - i), seed=seed + i).float().cpu() for i in range(0, n, 1000)])
    if reason := _label_mismatch(model, test, n):
        raise UserError(f"sample quality: {reason}")
    counts = np.bincount(np.asarray(test.y[:n]).astype(np.int64), minlength=model.n_classes)
    return torch.cat([model.sample(min(1000, m - i), label=c, seed=seed + 100_003 * c + i).float().cpu()
                      for c, m in enumerate(counts.tolist()) for i in range(0, m, 1000)])


def quality_skip_reason(model: nn.Module, test: Dataset, features=None) -> str | None:
    """Why sample quality does not apply to this model and data (None: it applies)."""
    if not isinstance(model, Sampler):
        return "the model does not draw samples"
    if model.uses_labels and (reason := _label_mismatch(model, test)):
        return reason
    if not (test.is_image and test.in_unit_interval):
        return "sample quality needs images with values in [0, 1]"
    if features is None and test.sample_shape != (1, 28, 28):
        return "the shipped feature net is for 28×28 grey images; use --features inception or a TorchScript net"
    if test.sample_shape[0] not in (1, 3):
        return f"feature networks take 1- or 3-channel images, these have {test.sample_shape[0]}"
    return None


def _label_mismatch(model: nn.Module, test: Dataset, n: int | None = None) -> str | None:
    """Why a conditional model cannot draw samples with the first ``n`` test images' labels (None: it can)."""
    if test.y is None:
        return "a conditional model's samples are compared with test images of the same classes: the test data has no labels"
    try:
        y = np.asarray(test.y[: SAMPLE_QUALITY_N if n is None else n], dtype=np.float64)
    except (TypeError, ValueError):
        y = np.array([np.nan])
    if not np.all(np.isfinite(y) & (y == np.round(y))):
        return "a conditional model's samples need whole-number class labels on the test images"
    if len(y) and (y.min() < 0 or y.max() >= model.n_classes):
        return f"the test labels go outside the model's classes 0..{model.n_classes - 1}"
    return None


SAMPLE_QUALITY_N = 5000  # samples and test images compared; the feature net's floor is measured at this n too


def sample_quality_of(model: nn.Module, test: Dataset, *, device="cpu", n: int = SAMPLE_QUALITY_N,
                      seed: int = 0, features=None) -> dict[str, float]:
    """FID, KID (± its standard error), precision/recall and density/coverage of ``n`` prior samples
    against ``n`` test images, in the shipped MNIST feature net's space (28×28 grey images only) or
    ``features``' (e.g. Inception); ``quality_features`` names the space. A conditional model draws, for each
    class, as many samples as the ``n`` test images hold of it, so both sets have the same class mix."""
    from .sample_quality import sample_quality

    n = min(n, len(test))
    fake = _samples(model, test, n, seed)
    release_freed_memory()  # the generator's activations, before the feature net's
    with full_precision():  # the feature space is fp32 whatever the model computes in
        q = sample_quality(test.head(n), fake.clamp(0, 1).numpy(), extractor=features)
    return {**q, "quality_n": n, "quality_features": "mnist-cnn" if features is None else features.name}
