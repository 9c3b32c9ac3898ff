"""Anomaly scores from trained models, and thresholds that need no guessed contamination rate.

Every score is **higher = more anomalous** (PyOD's convention):

- ``recon``: reconstruction NLL of an AE/DAE (for a VAE: of the decoder mean at the posterior mean);
- ``elbo``: the negative ELBO of a VAE, in nats, averaged over ``k`` posterior samples
  (reconstruction + KL: also flags points whose code is far out in the prior, which reconstruction
  alone misses);
- ``iwae``: the IWAE bound on −log p(x) with ``k`` importance samples (tighter, k times slower);
- ``distance``: Deep SVDD's squared distance to the centre.

Thresholds (:func:`threshold_from`): ``"quantile:0.99"`` of the training scores; ``"fpr:0.01"``, a
split-conformal threshold set on calibration scores — by default those of a slice of the training data
held out from fitting, or of rows the user knows to be normal (``calibrate``, ``score --calibrate``); or
a contamination rate ``c`` in (0, 0.5], the (1 − c)-quantile of the training scores (PyOD's rule).

What ``fpr:R`` promises (:func:`fpr_threshold`): new rows drawn like the calibration rows are flagged
with probability **at most R**, and at least R − 1/(n + 1) for n calibration rows. When the calibration
rows are unlabeled training data that hold anomalies, the anomalies take part of that share, so normal
rows are flagged less often than R (docs/results.md measures it on the ODDS tables); calibrating on
known-normal rows gives about R on normal data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import plots
from ..checkpoint import load_model, read_config
from ..data import Dataset, Splits
from ..errors import UserError
from ..io import atomic_path, load_tensors, save_tensors, tensor_metadata
from ..models.base import AnomalyScorer, Likelihood, Reconstructor, capabilities
from ..precision import autocast, check_precision, set_precision
from .base import Figure, Metric, run_splits, scoring_data

SCORES = ("auto", "recon", "elbo", "iwae", "distance")

ANOMALY_METRICS = {
    "loss": Metric("test loss (the training objective), per sample", "lower"),
    "auroc": Metric("area under the ROC curve of the anomaly scores against the test labels (1 = anomalies "
                    "ranked first)", "higher"),
    "average_precision": Metric("average precision of the anomaly scores against the test labels (anomalies = "
                                "positives)", "higher"),
    "threshold": Metric("anomaly-score threshold: above it a point is flagged"),
    "flagged": Metric("share of test points above the threshold"),
    "false_alarm_rate": Metric("share of the test split's normal points (label 0) above the threshold: the realised "
                               "false-positive rate (fpr:R promises at most R on rows like its calibration rows; "
                               "anomalies among held-out training rows make it lower)"),
}

ANOMALY_FIGURES = (
    Figure("anomaly_scores.png", "Anomaly scores", "Histogram of anomaly scores on the training and test data; the "
           "dashed line is the threshold above which a point is flagged."),
    Figure("anomalies.png", "Top anomalies", "The most anomalous test images, most anomalous first (rows below "
           "them: their reconstructions, where the model reconstructs)."),
)


def check_detector_input(ds: Dataset) -> None:
    """What no detector can fit: a single row, or data (a table or images) that is the same everywhere."""
    if len(ds) < 2:
        raise UserError(f"{ds.name}: need at least 2 samples to fit a detector, got {len(ds)}")
    x = ds.floats().reshape(len(ds), -1)
    if ds.is_image:
        if np.all(x == x[:1]):
            raise UserError(f"{ds.name}: every training image is the same; there is nothing to learn")
    elif np.all(x.max(0) == x.min(0)):
        raise UserError(f"{ds.name}: every column is constant in the training data; there is nothing to learn")


def default_score(model) -> str:
    """The score a model (or model class) is read by when none is asked for."""
    if model.task == "anomaly":
        return "distance"
    return "elbo" if "likelihood" in capabilities(model) else "recon"


def check_score(model, score: str, *, what: str = "score") -> str:
    """The score kind to use for ``model`` (a model or a model class; ``auto`` → its natural one), or a
    UserError that calls the setting ``what`` (``--score`` on the command line, ``score_kind`` in Python)."""
    if score not in SCORES:
        raise UserError(f"{what} must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "auto":
        return default_score(model)
    caps = capabilities(model)
    ok = {"distance": model.task == "anomaly", "elbo": "likelihood" in caps, "iwae": "likelihood" in caps,
          "recon": "reconstruct" in caps}
    if not ok[score]:
        raise UserError(f"{what} {score!r} does not apply to model {model.registry_name!r}; use "
                        f"{default_score(model)!r}")
    return score


@torch.no_grad()
def anomaly_scores(model: nn.Module, x: np.ndarray | torch.Tensor, *, score: str = "auto", k: int = 16,
                   batch_size: int = 1000, seed: int = 0) -> np.ndarray:
    """Per-sample anomaly scores of model inputs ``x`` (floats as the model reads them), higher = more anomalous."""
    score = check_score(model, score)
    model.eval()
    device = next(iter(model.buffers()), next(model.parameters())).device
    out = []
    # The same standard-normal draws for every sample (seeded): a sample's score never depends on which
    # samples share its batch, and scores are reproducible.
    latent = getattr(model, "latent_dim", None)
    noise = None
    if score in ("elbo", "iwae") and latent:
        noise = torch.randn(k, latent, generator=torch.Generator().manual_seed(seed)).to(device)
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32, device=device)
        with autocast(model):
            s = _scores(model, xb, score, k, noise)
        out.append(s.double().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0)


def _scores(model: nn.Module, xb: torch.Tensor, score: str, k: int, noise: torch.Tensor | None) -> torch.Tensor:
    if score == "distance":
        return model.anomaly_score(xb)
    if score == "elbo":  # averaged over k posterior samples: one sample is too noisy to rank by
        return -model.elbo(xb, noise=noise)
    if score == "iwae":
        return model.iwae_nll(xb, k=k, noise=noise)
    if isinstance(model, Likelihood):  # a VAE's reconstruction error at the posterior mean
        return model.recon_nll(model.decoder_out(model.encode(xb)[0]), xb.flatten(1))
    return model.anomaly_score(xb)


def parse_threshold(spec: str | float | None, contamination: float | None = None) -> tuple[str, float]:
    """``"quantile:0.99"`` / ``"fpr:0.01"`` / a contamination → (kind, value), checked."""
    if contamination is not None:
        if spec is not None and spec != f"contamination:{contamination}":
            raise UserError("give either a threshold or a contamination, not both")
        spec = f"contamination:{contamination}"
    if spec is None:
        spec = "fpr:0.01"
    if isinstance(spec, (int, float)):
        spec = f"contamination:{spec}"
    kind, _, value = str(spec).partition(":")
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if kind == "contamination":
        if not 0 < v <= 0.5:
            raise UserError(f"contamination must be in (0, 0.5], got {value}")
    elif kind == "quantile":
        if not 0 < v < 1:
            raise UserError(f"threshold quantile:q needs 0 < q < 1, got {value!r}")
    elif kind == "fpr":
        if not 0 < v < 1:
            raise UserError(f"threshold fpr:r needs a false-positive rate 0 < r < 1, got {value!r}")
    else:
        raise UserError(f"threshold must look like quantile:0.99, fpr:0.01 or a contamination in (0, 0.5]; got {spec!r}")
    return kind, v


def fpr_rows_needed(rate: float) -> int:
    """The fewest calibration rows for which ``fpr:rate`` can keep its promise (n ≥ 1/rate − 1)."""
    return int(math.ceil((1 - rate) / rate - 1e-9))


def fpr_threshold(calibration: np.ndarray, rate: float, *, source: str = "held-out training rows") -> float:
    """The split-conformal threshold: the ⌈(n + 1)(1 − rate)⌉-th smallest of the n calibration scores.

    A new score exchangeable with the calibration scores exceeds it with probability at most ``rate`` (and at
    least ``rate − 1/(n + 1)``, ties aside). With fewer than :func:`fpr_rows_needed` rows no calibration score
    is high enough; then the largest is used, which flags about 1/(n + 1) of such rows, and a warning says so."""
    scores = np.sort(np.asarray(calibration, dtype=np.float64).ravel())
    n = len(scores)
    if n == 0:
        raise UserError("threshold fpr:r needs calibration scores: fit with validation_fraction > 0, calibrate on "
                        "rows known to be normal, or use quantile:q")
    rank = int(math.ceil((n + 1) * (1 - rate) - 1e-9))
    if rank > n:
        warnings.warn(f"fpr:{rate:g} needs at least {fpr_rows_needed(rate)} calibration rows, got {n} {source}: "
                      f"the threshold is their largest score, which flags about 1/(n + 1) = {1 / (n + 1):.1%} of "
                      f"rows like them, not {rate:.1%}; calibrate on more rows known to be normal (score --calibrate "
                      "FILE; in Python calibrate(X), or a larger validation_fraction)", UserWarning, stacklevel=2)
        rank = n
    return float(scores[rank - 1])


def threshold_from(spec: str | float | None, train_scores: np.ndarray, held_out_scores: np.ndarray | None = None,
                   *, contamination: float | None = None, source: str = "held-out training rows") -> float:
    """The score above which a point is an anomaly (see the module docstring for the rules); ``fpr:`` is set on
    ``held_out_scores`` (the calibration scores, which ``source`` names in the small-sample warning)."""
    kind, v = parse_threshold(spec, contamination)
    if kind == "fpr":
        return fpr_threshold(np.empty(0) if held_out_scores is None else held_out_scores, v, source=source)
    q = v if kind == "quantile" else 1 - v
    return float(np.quantile(train_scores, q, method="higher"))


SCORES_FILE = "anomaly_scores.safetensors"
MAX_REFERENCE = 20000  # training rows scored for the threshold reference (a fixed random subset beyond that)


def binary_labels(y: np.ndarray | None) -> np.ndarray | None:
    """Labels usable as ground truth for detection (0 = normal, 1 = anomaly), else None."""
    if y is None:
        return None
    try:
        y = np.asarray(y).astype(np.float64)
    except (TypeError, ValueError):
        return None
    if not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
        return None
    return y.astype(np.int64)


def detection_metrics(labels: np.ndarray | None, scores: np.ndarray) -> dict:
    """AUROC and average precision of ``scores`` when ``labels`` (from :func:`binary_labels`) exist."""
    if labels is None:
        return {}
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(labels, scores)), "average_precision": float(average_precision_score(labels, scores))}


def store_reference_scores(path, model: nn.Module, train, held, *, score: str, k: int,
                           meta: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of (a fixed subset of) the training data and of the held-out data, saved to ``path``."""
    kind = check_score(model, score)
    rows = reference_rows(len(train))
    train_scores = anomaly_scores(model, (train.subset(rows) if len(rows) < len(train) else train).floats(),
                                  score=kind, k=k)
    held_scores = anomaly_scores(model, held.floats(), score=kind, k=k)
    save_tensors(path, {"train": torch.from_numpy(train_scores), "validation": torch.from_numpy(held_scores)},
                 {"score": kind, "k": str(k), "precision": getattr(model, "precision", "fp32"), **(meta or {})})
    return train_scores, held_scores


def reference_rows(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_REFERENCE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE, replace=False))


def write_run_anomaly(run_dir, model: nn.Module, splits: Splits, *, score: str = "auto",
                      threshold: str = "fpr:0.01", k: int = 16) -> dict:
    """A run's anomaly files: scores of the training rows and of the rows held out from fitting
    (``splits.validation``; the training rows when the data was too small to hold any out), the threshold
    fitted on those, the score histogram and, for images, the top anomalies. Returns the metrics to add to
    ``metrics.json`` (on the test split: the flagged share, AUROC and the false-alarm rate where labels exist)."""
    run_dir = Path(run_dir)
    train, test = splits.train, splits.test
    held = splits.validation if splits.validation is not None else train
    train_scores, held_scores = store_reference_scores(run_dir / SCORES_FILE, model, train, held, score=score, k=k,
                                                       meta={"threshold": str(threshold)})
    thr = threshold_from(threshold, train_scores, held_scores)
    test_scores = anomaly_scores(model, test.floats(), score=score, k=k)
    check_finite_scores(test_scores, test.name)
    labels = binary_labels(test.y)
    out = {"threshold": thr, "flagged": float((test_scores > thr).mean()), **detection_metrics(labels, test_scores)}
    if labels is not None:
        out["false_alarm_rate"] = float((test_scores[labels == 0] > thr).mean())
    plots.save_score_histogram(train_scores, test_scores, thr, run_dir / "anomaly_scores.png", test_labels=labels,
                               rule=str(threshold))
    if test.is_image:
        top = np.argsort(-test_scores)[:16]
        x = torch.from_numpy(test.floats()[top])
        rec = None
        if isinstance(model, Reconstructor):
            with torch.no_grad():
                rec = model.reconstruct(x.to(next(model.parameters()).device)).cpu().numpy()
        plots.save_top_anomalies(x.numpy(), rec, run_dir / "anomalies.png")
    return out


def check_finite_scores(scores: np.ndarray, name: str) -> None:
    """A NaN/Inf score would hide the most anomalous rows (NaN > threshold is False): refuse them by index."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise UserError(f"{name}: rows {', '.join(map(str, bad[:5]))}{' …' if len(bad) > 5 else ''} get no finite "
                        f"anomaly score (values far outside the training range overflow the model); check or remove "
                        "them")


def reference_scores(run_dir, model: nn.Module, config: dict, *, score: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out scores of a run, read from the run or computed once and stored there."""
    path = Path(run_dir) / SCORES_FILE
    kind = check_score(model, score)
    if path.exists():
        meta = tensor_metadata(path)
        same_precision = meta.get("precision", "fp32") == getattr(model, "precision", "fp32")  # else recomputed
        if meta.get("score") == kind and (kind not in ("elbo", "iwae") or meta.get("k") == str(k)) and same_precision:
            t = load_tensors(path)  # an estimator's calibrate() rows, when it had some, set the fpr: threshold
            return t["train"].numpy(), t.get("calibration", t["validation"]).numpy()
    if "data" not in config:  # a save_pretrained folder: its training data are not known, only its stored scores
        have = tensor_metadata(path) if path.exists() else {}
        raise UserError(f"{run_dir}: the model was saved with reference scores for score {have.get('score', '?')!r} "
                        f"(k {have.get('k', '?')}, precision {have.get('precision', 'fp32')}), not {kind!r} (k {k}, "
                        f"precision {getattr(model, 'precision', 'fp32')}); score with those settings")
    splits = run_splits(config)
    held = splits.validation if splits.validation is not None else splits.train
    return store_reference_scores(path, model, splits.train, held, score=kind, k=k)


def score_run(run_dir, data: str, out, *, threshold: str | None = None, contamination: float | None = None,
              score: str = "auto", k: int = 16, precision: str = "auto", calibrate: str | None = None) -> dict:
    """Score ``data`` with a trained run and write ``out`` (CSV: index, score, is_anomaly). The threshold's
    reference scores are computed in the same ``precision`` as the new ones (recomputed when it changes).
    ``calibrate``: data known to be normal (its label-0 rows when it has 0/1 labels) that sets the ``fpr:``
    threshold instead of the run's held-out training rows."""
    check_precision(precision)
    rule_kind = parse_threshold(threshold, contamination)[0]  # a bad rule fails before any work
    if calibrate is not None and rule_kind != "fpr":
        raise UserError("--calibrate sets an fpr:R threshold from rows known to be normal; it does not go with "
                        "--contamination or --threshold quantile:q")
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out must be a .csv file, got {out}")
    if not out.parent.exists():
        raise UserError(f"{out.parent}: no such folder for --out")
    config, model = read_config(Path(run_dir)), load_model(Path(run_dir))
    set_precision(model, precision, next(model.parameters()).device)
    if not (isinstance(model, AnomalyScorer) or isinstance(model, Likelihood)):
        raise UserError(f"{run_dir}: model {config['model']!r} gives no anomaly scores; train ae, dae, vae or deep-svdd")
    ds = scoring_data(data, config)
    kind = check_score(model, score, what="--score")
    scores = anomaly_scores(model, ds.floats(), score=kind, k=k)
    check_finite_scores(scores, ds.name)  # before the threshold, whose warnings would precede this error
    calibration, source = None, "held-out training rows"
    if calibrate is not None:  # an fpr: rule on these rows alone: the run's reference scores are not needed
        held, calibration = calibration_scores(model, calibrate, config, score=kind, k=k)
        train, source = np.empty(0), f"rows of {calibration['data']}"
    else:
        train, held = reference_scores(run_dir, model, config, score=kind, k=k)
    thr = threshold_from(threshold, train, held, contamination=contamination, source=source)
    flagged = scores > thr
    with atomic_path(out) as tmp:
        pd.DataFrame({"index": np.arange(len(ds)), "score": scores, "is_anomaly": flagged.astype(int)}).to_csv(
            tmp, index=False)
    result = {"n": len(ds), "flagged": int(flagged.sum()), "threshold": thr,
              "rule": threshold if contamination is None else f"contamination:{contamination}", "score": kind,
              "calibration_rows": len(held)}
    if calibration is not None:
        result["calibration"] = calibration
    labels = binary_labels(ds.y)
    if labels is not None:
        result["false_alarm_rate"] = float(flagged[labels == 0].mean())
    return {**result, **detection_metrics(labels, scores)}


def calibration_scores(model: nn.Module, data: str, config: dict, *, score: str, k: int) -> tuple[np.ndarray, dict]:
    """Scores of the rows of ``data`` known to be normal: all of them, or those labelled 0 when the data has 0/1
    labels (ODDS files, a CSV with a label column). Returns the scores and what was used."""
    ds = scoring_data(data, config)
    labels = binary_labels(ds.y)
    rows = np.arange(len(ds)) if labels is None else np.flatnonzero(labels == 0)
    if len(rows) < 2:
        raise UserError(f"--calibrate {data}: need at least 2 rows known to be normal, got {len(rows)}")
    scores = anomaly_scores(model, (ds.subset(rows) if labels is not None else ds).floats(), score=score, k=k)
    check_finite_scores(scores, ds.name)
    return scores, {"data": str(data), "rows": int(len(rows)), "labelled_normal": labels is not None}
