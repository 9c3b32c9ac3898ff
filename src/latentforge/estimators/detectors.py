"""Anomaly detectors with PyOD's contract, on the models and the one trainer.

``DeepSVDD().fit(X)``, ``AEDetector(kind="vae").fit(X)``, ``EnsembleDetector().fit(X)`` (:mod:`.ensemble`); then
``decision_function(X)`` (**higher = more anomalous**), ``score_samples(X)`` (its negative:
scikit-learn's "higher = more normal"), ``predict(X)`` (1 = anomaly), ``predict_proba(X)`` (PyOD's linear
rescaling of the training scores), and the fitted ``decision_scores_`` (training scores), ``threshold_``
and ``labels_``.

No contamination rate has to be guessed: the default rule (``threshold=None``) is ``"fpr:0.01"``, a
split-conformal threshold that flags at most 1 % of new rows drawn like its calibration rows: a slice of
the training data held out from fitting, or rows known to be normal given to ``calibrate(X_normal)``
(then about 1 % of normal data is flagged; with unlabeled, contaminated training data the slice's
anomalies take part of the 1 %, so fewer normal rows are). ``"quantile:0.99"`` uses the training scores;
``contamination=0.05`` is PyOD's rule. ``set_threshold`` changes the rule without refitting (the fitted
``threshold_rule_``; the constructor parameters stay as given). The held-out slice also drives early
stopping (its loss, ``patience``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..errors import UserError
from ..io import load_tensors, save_tensors
from ..models import model_class
from ..tasks.scoring import (SCORES, SCORES_FILE, anomaly_scores, check_detector_input, check_finite_scores,
                             check_score, parse_threshold, threshold_from)
from ..train_records import Monitor
from .autoencoders import AutoencoderEstimator
from .base import ModelEstimator, not_fitted

DEFAULT_RULE = "fpr:0.01"
SCORE_K = 16  # posterior draws of the elbo score (importance samples of iwae), as `latentforge score --k`


def auto_epochs(n: int, samples: int = 64_000) -> int:
    """``epochs=None``: about ``samples`` training samples seen (5 to 300 epochs), so a 200-row table and
    a 50,000-row one both get enough updates and neither takes minutes."""
    return int(min(300, max(5, round(samples / max(n, 1)))))


def _rule(threshold, contamination) -> str:
    """The threshold rule these parameters ask for: ``contamination`` (PyOD's alias) when given, else
    ``threshold``, else the default ``fpr:0.01``."""
    if contamination is not None:
        if threshold is not None and threshold != f"contamination:{contamination}":
            raise UserError(f"give either threshold={threshold!r} or contamination={contamination!r}, not both")
        parse_threshold(None, contamination)
        return f"contamination:{contamination}"
    rule = DEFAULT_RULE if threshold is None else threshold
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        rule = f"contamination:{rule}"
    parse_threshold(rule)
    return str(rule)


class Detector(ModelEstimator):
    """Shared fit/score/threshold logic; subclasses choose the model and list its hyperparameters."""

    extra_params = ("contamination", "threshold", "validation_fraction", "patience", "score_kind")
    min_fit = 2

    def _dataset(self, X, y=None) -> Dataset:
        return super()._dataset(X, None)  # y is ignored, as in PyOD

    def _epochs(self, n: int) -> int:
        return self.epochs if self.epochs is not None else auto_epochs(n)

    def _split(self, ds: Dataset) -> tuple[Dataset, Dataset | None]:
        """Check the data and the threshold settings, then hold out ``validation_fraction`` of the rows
        (by ``random_state``); none when fewer than ``min_fit`` would be left to fit on."""
        if len(ds) < 2:
            raise UserError(f"{ds.name}: got 1 sample; a detector needs at least 2 samples to fit")
        check_detector_input(ds)
        _rule(self.threshold, self.contamination)  # a bad threshold fails before training
        if hasattr(self, "score_kind"):  # so does a score the model cannot give
            check_score(model_class(self._model_name()), self._score_kind(), what="score_kind")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 0.5:
            raise UserError(f"validation_fraction must be in [0, 0.5), got {vf!r}")
        seed = 0 if self.random_state is None else int(self.random_state)
        perm = np.random.default_rng(seed).permutation(len(ds))
        n_val = int(round(len(ds) * vf))
        if len(ds) - n_val < self.min_fit:
            n_val = 0
        self._fit_rows, self._held_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        if n_val == 0:
            return ds, None
        return ds.subset(self._fit_rows), ds.subset(self._held_rows)

    def _monitor(self, ds: Dataset) -> Monitor | None:
        return Monitor("val_loss", higher_is_better=False)

    def _after_fit(self, ds: Dataset, train: Dataset, held: Dataset | None) -> None:
        self.feature_names_in_ = ds.meta.get("columns")
        self.decision_scores_ = self._scores(ds.floats())
        check_finite_scores(self.decision_scores_, "X")
        self.validation_scores_ = self.decision_scores_[self._held_rows]
        self.calibration_scores_ = None  # a refit forgets an earlier calibrate()
        self._apply_rule(_rule(self.threshold, self.contamination))

    def _scores(self, x: np.ndarray) -> np.ndarray:
        seed = 0 if self.random_state is None else int(self.random_state)
        return anomaly_scores(self.model_, x, score=self._score_kind(), k=SCORE_K, seed=seed)

    def _score_kind(self) -> str:
        kind = getattr(self, "score_kind", "auto")
        if kind not in SCORES:
            raise UserError(f"score_kind must be one of {', '.join(SCORES)}, got {kind!r}")
        return kind

    def decision_function(self, X) -> np.ndarray:
        """Anomaly score per sample: higher = more anomalous. Rows whose score is not finite are refused."""
        scores = self._scores(self._tensor(X).numpy())
        check_finite_scores(scores, "X")
        return scores

    def score_samples(self, X) -> np.ndarray:
        """Normality per sample (scikit-learn's convention): the negative of :meth:`decision_function`."""
        return -self.decision_function(X)

    def predict(self, X) -> np.ndarray:
        """1 for anomalies (score above ``threshold_``), 0 for inliers."""
        not_fitted(self)
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): probability of inlier and of anomaly, PyOD's "linear" method: the score rescaled to [0, 1]
        by the training scores' range (clipped)."""
        not_fitted(self)
        lo, hi = float(self.decision_scores_.min()), float(self.decision_scores_.max())
        p = np.clip((self.decision_function(X) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        return np.c_[1 - p, p]

    def _apply_rule(self, rule: str) -> None:
        calibration = getattr(self, "calibration_scores_", None)
        if calibration is None:
            self.threshold_ = threshold_from(rule, self.decision_scores_, self.validation_scores_)
        else:
            self.threshold_ = threshold_from(rule, self.decision_scores_, calibration, source="rows given to calibrate()")
        self.threshold_rule_ = rule
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

    def calibrate(self, X, threshold: str | None = None):
        """Set the ``fpr:`` threshold on rows known to be normal (rows not used to fit, e.g. checked by hand):
        then ``fpr:R`` flags at most R, and about R, of new normal rows, whatever anomalies the training data
        held. ``threshold`` is an ``fpr:`` rule (default: the fitted rule when it is one, else ``fpr:0.01``).
        The calibration scores are kept (``calibration_scores_``) and saved with ``save_pretrained``."""
        not_fitted(self, "decision_scores_")
        rule = threshold if threshold is not None else (
            self.threshold_rule_ if str(self.threshold_rule_).startswith("fpr:") else DEFAULT_RULE)
        if parse_threshold(rule)[0] != "fpr":
            raise UserError(f"calibrate sets an fpr: threshold (e.g. 'fpr:0.01'), got {rule!r}; quantile: and "
                            "contamination rules are set on the training scores (set_threshold)")
        scores = self.decision_function(X)
        if len(scores) < 2:
            raise UserError(f"calibrate needs at least 2 rows known to be normal, got {len(scores)}")
        self.calibration_scores_ = scores
        self._apply_rule(str(rule))
        return self

    def set_threshold(self, threshold: str | float | None = None, *, contamination: float | None = None):
        """Change the threshold rule without refitting; updates ``threshold_``, ``threshold_rule_`` and
        ``labels_`` (the constructor parameters stay as they were, so ``clone`` gives the original detector)."""
        not_fitted(self, "decision_scores_")
        self._apply_rule(_rule(threshold, contamination))
        return self

    def _save_extra(self, directory: Path) -> dict:
        meta = {}
        if hasattr(self, "score_kind"):  # what `latentforge score` needs to reuse these scores as its reference
            meta = {"score": check_score(self.model_, self._score_kind()), "k": str(SCORE_K)}
        tensors = {"train": torch.from_numpy(self.decision_scores_),
                   "validation": torch.from_numpy(self.validation_scores_)}
        if getattr(self, "calibration_scores_", None) is not None:
            tensors["calibration"] = torch.from_numpy(self.calibration_scores_)
        save_tensors(directory / SCORES_FILE, tensors, meta)
        return {"detector": {"threshold": self.threshold_, "rule": self.threshold_rule_,
                             "feature_names": self.feature_names_in_}}

    def _load_extra(self, directory: Path, config: dict) -> None:
        """Training/held-out scores and the threshold from a saved directory (or a `latentforge train` run)."""
        scores = load_tensors(directory / SCORES_FILE)
        try:
            self.decision_scores_ = scores["train"].numpy().astype(np.float64)
            self.validation_scores_ = scores["validation"].numpy().astype(np.float64)
        except KeyError as e:
            raise UserError(f"{directory / SCORES_FILE} is damaged (no {e} scores); restore it or fit again") from None
        self.calibration_scores_ = (scores["calibration"].numpy().astype(np.float64) if "calibration" in scores
                                    else None)
        info = config.get("detector") if isinstance(config.get("detector"), dict) else {}
        self.feature_names_in_ = info.get("feature_names", (config.get("data_info") or {}).get("columns"))
        if "threshold" in info:
            self.threshold_ = float(info["threshold"])
            self.threshold_rule_ = str(info.get("rule", _rule(self.threshold, self.contamination)))
            self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        else:  # a `latentforge train` run: its held-out scores are those of the rows held out from fitting
            self._apply_rule(_rule(self.threshold, self.contamination))


class DeepSVDD(Detector):
    """One-class Deep SVDD (Ruff et al. 2018): score = squared distance of φ(x) to the centre.

    ``objective="soft-boundary"`` with ``nu`` learns a radius; ``arch`` conv (images) or mlp (tables);
    ``n_nets`` networks from different random starts are trained and their standardised scores
    averaged (5; 1 is the paper's single network); ``pretrain=N`` first trains each network for N
    epochs as an autoencoder's encoder, as the paper does (off by default: at this library's training
    budget it did not help on one-class MNIST, docs/results.md).
    """

    model_names = ("deep-svdd",)

    def __init__(self, latent_dim: int | None = 32, hidden: Sequence[int] = (128, 64), arch: str = "auto",
                 channels: Sequence[int] = (8, 4), objective: str = "one-class", nu: float = 0.1, n_nets: int = 5,
                 pretrain: int = 0, contamination: float | None = None, threshold: str | None = None,
                 validation_fraction: float = 0.1, patience: int | None = 10, score_kind: str = "auto",
                 epochs: int | None = None, batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False, precision: str = "auto", **deprecated) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.arch = arch
        self.channels = channels
        self.objective = objective
        self.nu = nu
        self.n_nets = n_nets
        self.pretrain = pretrain
        self.contamination = contamination
        self.threshold = threshold
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.score_kind = _renamed_score(score_kind, deprecated)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision

    def _model_settings(self, ds: Dataset) -> dict:
        settings = super()._model_settings(ds)
        if settings.get("latent_dim") is None:
            settings["latent_dim"] = 32
        return settings


def _renamed_score(score_kind: str, deprecated: dict) -> str:
    """``score=`` was renamed ``score_kind=`` (a parameter named ``score`` hid the ``score`` method)."""
    unknown = [k for k in deprecated if k != "score"]
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    if "score" in deprecated:
        warnings.warn("the parameter score= is now score_kind= (score is a method); score= will be removed",
                      FutureWarning, stacklevel=3)
        return deprecated["score"]
    return score_kind


class AEDetector(Detector, AutoencoderEstimator):
    """Autoencoder-family detector: ``kind`` ae, dae or vae; ``score_kind`` recon (AE/DAE/VAE), elbo or
    iwae (VAE; ``auto``: elbo for a VAE, recon otherwise). ``latent_dim=None``: a quarter of a table's
    width, 32 for images. ``epochs=None``: about 64,000 samples seen (see :func:`auto_epochs`).

    Made for training data that contain anomalies: tables are scaled robustly (``scaling="robust"``:
    median, IQR and asinh, so a few extreme rows do not squeeze the rest) and the 20 % least likely
    rows of each batch are left out of the training loss (``trim=0.2``). ``scaling="standard",
    trim=0`` is the plain model (docs/results.md compares them on the ODDS tables).
    """

    model_names = ("vae", "ae", "dae")
    extra_params = (*Detector.extra_params, "kind")

    def __init__(self, kind: str = "vae", latent_dim: int | None = None, hidden: Sequence[int] = (64,),
                 arch: str = "auto", likelihood: str = "auto", scaling: str = "robust", trim: float = 0.2,
                 contamination: float | None = None, threshold: str | None = None, validation_fraction: float = 0.1,
                 patience: int | None = 10, score_kind: str = "auto", epochs: int | None = None, batch_size: int = 64,
                 lr: float = 1e-3, random_state: int | None = None, device: str = "auto", verbose: bool = False,
                 precision: str = "auto",
                 **deprecated) -> None:
        self.kind = kind
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.arch = arch
        self.likelihood = likelihood
        self.scaling = scaling
        self.trim = trim
        self.contamination = contamination
        self.threshold = threshold
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.score_kind = _renamed_score(score_kind, deprecated)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision

    def _model_name(self) -> str:
        if self.kind not in ("ae", "dae", "vae"):
            raise UserError(f"kind must be ae, dae or vae, got {self.kind!r}")
        return self.kind

    def _model_settings(self, ds: Dataset) -> dict:
        settings = ModelEstimator._model_settings(self, ds)
        if settings.get("latent_dim") is None:  # tables: a quarter of the width; images: 32
            settings["latent_dim"] = 32 if ds.is_image else max(2, int(np.prod(ds.sample_shape)) // 4)
        if settings.get("likelihood", "auto") == "auto":
            settings["likelihood"] = "bernoulli" if ds.is_image and ds.in_unit_interval else "gaussian"
        from ..tasks.generate import choose_likelihood

        settings["likelihood"] = choose_likelihood(settings["likelihood"], ds, None)
        if settings["likelihood"] != "gaussian":  # robust scaling is for tables; grey levels stay as they are
            settings["scaling"] = "standard"
        return settings

    def score(self, X, y=None) -> float:
        """Mean normality of X (the mean of :meth:`score_samples`; higher = more typical)."""
        return float(np.mean(self.score_samples(X)))


DETECTORS = {"deep-svdd": DeepSVDD, "ae": AEDetector, "dae": AEDetector, "vae": AEDetector}
