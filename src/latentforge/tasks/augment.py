"""Generative augmentation: labelled synthetic samples from a conditional model (cvae, cdcgan), exactly N per
class, optionally filtered against the real labelled data.

Filters (both compare in the evaluation feature space of the sample-quality metrics: the shipped net's features
for 28×28 grey images, Inception or a TorchScript net if asked for; else the pixels, or a table's own columns):

- ``realism``: keep a sample of class c only inside the real class-c manifold, the union of balls around the
  real class-c points reaching their k-th nearest neighbour (the manifold of improved precision, Kynkäänniemi
  et al. 2019, https://arxiv.org/abs/1904.06991, taken per class);
- ``confidence``: keep a sample of class c only when a logistic regression trained on the features of the real
  labelled rows predicts c (with at least ``min_confidence`` probability).

Samples are written in the data's own layout and units (:func:`stored`), so they can be added to the real rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_model, read_config
from ..data import Dataset
from ..errors import UserError
from ..io import atomic_path
from ..metrics.sample_quality import _covered, _knn_radius2, image_features
from ..models.base import Sampler
from .base import run_splits

FILTERS = ("realism", "confidence")
MAX_DRAWS = 20  # a class gets at most this many times --per-class samples drawn before its filter is given up on
CHUNK = 1024  # samples generated at a time

Keep = Callable[[np.ndarray, int], np.ndarray]  # (features of samples, their class) → which to keep


@dataclass
class Augmented:
    """Synthetic samples in the data's layout and units, their labels ``(n, 1)``, and per class how many samples
    were drawn and how many of those the filter dropped (drawn − dropped − kept: survivors beyond the need)."""

    images: np.ndarray
    labels: np.ndarray
    filter: str | None = None
    drawn: dict[int, int] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """``images`` and ``labels`` as a compressed .npz (written whole or not at all)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=self.images, labels=self.labels)
        return path


def augment(run: str | Path, *, per_class: int, out: str | Path | None = None, filter: str | None = None,  # noqa: A002
            seed: int = 0, data: str | None = None, features: str = "mnist", k: int = 3,
            min_confidence: float = 0.0, max_draws: int = MAX_DRAWS, device: str = "cpu",
            progress: bool = False) -> Augmented:
    """``per_class`` labelled samples of every class from the conditional model of ``run`` (saved to ``out`` when
    given). Filters compare with the run's training split (its labelled rows under a label budget), or with
    ``data``'s; ``features``: mnist, inception or a TorchScript file, as for ``latentforge evaluate``."""
    from ..metrics.extractors import resolve_features

    check_request(per_class, filter, k=k, min_confidence=min_confidence, max_draws=max_draws)
    config = read_config(Path(run))
    model = load_model(Path(run), device=device)
    check_conditional(model, run)
    real = None
    if filter is not None:
        real = run_splits(config, data).train
    info = config.get("data_info") or {}
    result = augment_model(model, real, per_class=per_class, filter=filter, seed=seed,
                           extractor=resolve_features(features), k=k, min_confidence=min_confidence,
                           max_draws=max_draws, scale=float(info.get("scale", 1.0)),
                           value_range=info.get("value_range"), progress=progress)
    if out is not None:
        result.save(out)
    return result


def check_request(per_class: int, filter: str | None, *, k: int = 3, min_confidence: float = 0.0,  # noqa: A002
                  max_draws: int = MAX_DRAWS) -> None:
    """Refuse settings that cannot work, before a model is loaded."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise UserError(f"--per-class must be a whole number of at least 1, got {per_class!r}")
    if filter is not None and filter not in FILTERS:
        raise UserError(f"--filter must be one of {', '.join(FILTERS)}, got {filter!r}")
    if k < 1:
        raise UserError(f"k (nearest neighbours of the realism filter) must be at least 1, got {k}")
    if not 0.0 <= min_confidence < 1.0:
        raise UserError(f"--min-confidence must be in [0, 1), got {min_confidence}")
    if max_draws < 1:
        raise UserError(f"max_draws must be at least 1, got {max_draws}")


def check_conditional(model: nn.Module, run: str | Path) -> None:
    if not (isinstance(model, Sampler) and getattr(model, "uses_labels", False)):
        raise UserError(f"{run}: augment needs a conditional model that samples a given class (cvae, cdcgan); this "
                        f"run holds a {model.registry_name}. Train one with `latentforge train cvae --data …` "
                        "(or cdcgan)")


@torch.no_grad()
def augment_model(model: nn.Module, real: Dataset | None, *, per_class: int, filter: str | None = None,  # noqa: A002
                  seed: int = 0, extractor=None, k: int = 3, min_confidence: float = 0.0,
                  max_draws: int = MAX_DRAWS, scale: float = 1.0, value_range: list[float] | None = None,
                  progress: bool = False) -> Augmented:
    """``per_class`` samples of each of the model's classes, kept by ``filter`` (against ``real``'s labelled
    rows), in stored units (``scale``: 255 for uint8 data)."""
    from tqdm.auto import tqdm

    check_request(per_class, filter, k=k, min_confidence=min_confidence, max_draws=max_draws)
    n_classes = int(model.n_classes)
    model = model.eval()
    keep = None
    if filter is not None:
        if real is None:
            raise UserError(f"the {filter} filter compares with real labelled data; give the data")
        keep = make_filter(filter, real, n_classes, extractor=extractor, k=k, min_confidence=min_confidence)
    parts, drawn, dropped = [], {}, {}
    with tqdm(total=per_class * n_classes, desc="augment", unit="sample", disable=not progress, leave=False) as bar:
        for c in range(n_classes):
            got, n_drawn, n_kept, n_dropped, rnd = [], 0, 0, 0, 0
            while n_kept < per_class:
                if n_drawn >= max_draws * per_class:
                    why = ("lie outside the real class's manifold" if filter == "realism"
                           else "are not recognised as that class by a classifier of the real rows")
                    raise UserError(f"class {c}: only {n_kept} of {per_class} samples passed the {filter} filter in "
                                    f"{n_drawn} drawn: the model's class-{c} samples {why}. Train the model longer, "
                                    "ask for fewer with --per-class, or drop --filter")
                need = per_class - n_kept
                rate = max(n_kept / n_drawn, 0.05) if n_drawn else 1.0  # the filter's pass rate so far
                want = need if keep is None else max(16, math.ceil(1.1 * need / rate))
                size = min(CHUNK, max_draws * per_class - n_drawn, want)
                x = model.sample(size, label=c, seed=draw_seed(seed, c, rnd)).float().cpu().numpy()
                rnd, n_drawn = rnd + 1, n_drawn + size
                if keep is not None:
                    passed = keep(features_of(x, extractor), c)
                    x, n_dropped = x[passed], n_dropped + int((~passed).sum())
                x = x[:need]  # survivors beyond the need are not used
                got.append(x)
                n_kept += len(x)
                bar.update(len(x))
            parts.append(np.concatenate(got))
            drawn[c], dropped[c] = n_drawn, n_dropped
    x = np.concatenate(parts)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)[:, None]
    return Augmented(images=stored(x, scale, value_range), labels=labels, filter=filter, drawn=drawn,
                     dropped=dropped)


def draw_seed(seed: int, c: int, rnd: int) -> int:
    """A seed per (run seed, class, round): the same call draws the same samples."""
    return int(np.random.SeedSequence([seed, c, rnd]).generate_state(1, dtype=np.uint64)[0] >> 1)


def features_of(x: np.ndarray, extractor=None) -> np.ndarray:
    """Samples in the evaluation feature space: the shipped net's features of 28×28 grey images, ``extractor``'s of
    any images; else (other images without an extractor, tables) the values themselves."""
    if x.ndim == 4 and (extractor is not None or x.shape[1:] == (1, 28, 28)):
        return image_features(np.clip(x, 0, 1), extractor=extractor, name="samples")
    return x.reshape(len(x), -1).astype(np.float64)


def make_filter(name: str, real: Dataset, n_classes: int, *, extractor=None, k: int = 3,
                min_confidence: float = 0.0) -> Keep:
    """The ``realism`` or ``confidence`` test, fitted on ``real``'s labelled rows."""
    if real.y is None:
        raise UserError(f"{real.name}: the {name} filter needs labelled real rows; this data has no labels")
    y = np.asarray(real.y).astype(np.int64)
    feats = features_of(real.floats(), extractor)
    counts = np.bincount(y, minlength=n_classes)
    if len(counts) > n_classes:
        raise UserError(f"{real.name}: labels go up to {len(counts) - 1}, but the model has {n_classes} classes; "
                        "give the data the model was trained on")
    if name == "realism":
        return realism_filter(feats, y, n_classes, k=k)
    return confidence_filter(feats, y, n_classes, min_confidence=min_confidence)


def realism_filter(feats: np.ndarray, y: np.ndarray, n_classes: int, *, k: int = 3) -> Keep:
    """Keep samples inside the k-NN manifold of their class's real features."""
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() <= k:
        c = int(counts.argmin())
        raise UserError(f"the realism filter's {k}-nearest-neighbour radii need more than {k} real rows per class; "
                        f"class {c} has {int(counts[c])}. Use --filter confidence, or label more rows")
    balls = [(feats[y == c], _knn_radius2(feats[y == c], k)) for c in range(n_classes)]

    def keep(f: np.ndarray, c: int) -> np.ndarray:
        centres, rad2 = balls[c]
        return _covered(f, centres, rad2)

    return keep


def confidence_filter(feats: np.ndarray, y: np.ndarray, n_classes: int, *, min_confidence: float = 0.0) -> Keep:
    """Keep samples that a logistic regression on the real rows' (standardised) features assigns to their class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.flatnonzero(np.bincount(y, minlength=n_classes))
    if len(present) < 2:
        raise UserError("the confidence filter's classifier needs real rows of at least 2 classes")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(feats, y)
    column = {int(c): i for i, c in enumerate(clf.classes_)}

    def keep(f: np.ndarray, c: int) -> np.ndarray:
        if c not in column:  # no real rows of this class: nothing to check its samples against
            return np.zeros(len(f), dtype=bool)
        p = clf.predict_proba(f)
        return (p.argmax(1) == column[c]) & (p[:, column[c]] >= min_confidence)

    return keep


def stored(x: np.ndarray, scale: float, value_range: list[float] | None = None) -> np.ndarray:
    """Model outputs (model units) in the data's layout and units: uint8 0–255 for images stored as bytes, else
    float32 clipped to the training data's range; grey images as ``(n, H, W)`` and colour as ``(n, H, W, C)`` (the
    MedMNIST layout), tables as ``(n, D)``."""
    if value_range is not None:
        x = np.clip(x, *value_range)
    if scale == 255.0:
        x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    else:
        x = (x * scale).astype(np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 4 and x.shape[1] == 3:
        return x.transpose(0, 2, 3, 1)
    return x


def summary(result: Augmented) -> str:
    """One line per class: kept, drawn and dropped."""
    lines = []
    for c, n in result.drawn.items():
        kept = int((result.labels[:, 0] == c).sum())
        extra = f", {result.dropped[c]} dropped by the {result.filter} filter" if result.filter else ""
        lines.append(f"  class {c}: {kept} kept of {n} drawn{extra}")
    return "\n".join(lines)


@torch.no_grad()
def save_real_vs_generated(model: nn.Module, test: Dataset, path: Path, *, per_row: int = 8,
                           seed: int = 0) -> Path | None:
    """``real_vs_generated.png``: one row per class, real test images of that class on the left and the model's
    samples for that label on the right (None when the test set has no labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plots

    if test.y is None or not test.is_image or test.streamed:
        return None
    y = np.asarray(test.y).astype(np.int64)
    shape = tuple(model.config["input_shape"])
    real, fake = [], []
    for c in range(model.n_classes):
        rows = test.x[np.flatnonzero(y == c)[:per_row]].astype(np.float32) / test.scale
        blank = np.ones((per_row - len(rows), *shape), np.float32)  # a class with fewer test images: white cells
        real.append(np.concatenate([rows.reshape(-1, *shape), blank]))
        fake.append(model.sample(per_row, label=c, seed=seed + c).float().cpu().numpy())
    grids = [plots.image_grid(np.concatenate(part), nrow=per_row) for part in (real, fake)]
    names = test.label_names or [str(c) for c in range(model.n_classes)]
    k = model.n_classes
    fig, axes = plt.subplots(1, 2, figsize=(0.8 * per_row + 2.0, 0.45 * k + 0.55), dpi=100)
    cell = grids[0].shape[0] / k
    for ax, grid, title in zip(axes, grids, ("real (test set)", "generated")):
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([(c + 0.5) * cell for c in range(k)])
        ax.set_yticklabels([str(names[c]) if c < len(names) else str(c) for c in range(k)], fontsize=7)
    axes[1].set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
