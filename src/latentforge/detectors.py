"""Anomaly detectors with PyOD's contract, on the models and the one trainer.

``DeepSVDD().fit(X)``, ``AEDetector(kind="vae").fit(X)``, ``EnsembleDetector().fit(X)``; then
``decision_function(X)`` (**higher = more anomalous**), ``score_samples(X)`` (its negative:
scikit-learn's "higher = more normal"), ``predict(X)`` (1 = anomaly), and the fitted
``decision_scores_`` (training scores), ``threshold_`` and ``labels_``.

No contamination rate has to be guessed: the default threshold ``"fpr:0.01"`` flags 1 % of a slice of
the training data held out from fitting (an estimate of the false-positive rate on new normal data);
``"quantile:0.99"`` uses the training scores; ``contamination=0.05`` is PyOD's rule. ``set_threshold``
changes it without refitting. The held-out slice also drives early stopping (its loss, ``patience``).
Tables are standardised inside the model with stored training statistics; a column that is constant in
training keeps scale 1, so its scores stay finite at test time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CONFIG, load_tensors, read_json, save_tensors, write_json
from .data import Dataset
from .errors import UserError
from .estimators import TRAIN_PARAMS, ModelEstimator, _not_fitted
from .models import build_model
from .models.body import robust_location_scale
from .tasks.anomaly import SCORES_FILE, anomaly_scores, parse_threshold, threshold_from
from .train import TrainConfig, fit

DETECTOR_PARAMS = (*TRAIN_PARAMS, "contamination", "threshold", "validation_fraction", "patience", "score")



def check_detector_input(ds: Dataset) -> None:
    """What no detector can fit: a single row, or a table whose every column is constant."""
    if len(ds) < 2:
        raise UserError(f"{ds.name}: need at least 2 samples to fit a detector, got {len(ds)}")
    if not ds.is_image:
        x = ds.floats().reshape(len(ds), -1)
        if np.all(x.max(0) == x.min(0)):
            raise UserError(f"{ds.name}: every column is constant in the training data; there is nothing to learn")


def auto_epochs(n: int, samples: int = 64_000) -> int:
    """``epochs=None``: about ``samples`` training samples seen (5 to 300 epochs), so a 200-row table and
    a 50,000-row one both get enough updates and neither takes minutes."""
    return int(min(300, max(5, round(samples / max(n, 1)))))


class Detector(ModelEstimator):
    """Shared fit/score/threshold logic; subclasses choose the model and list its hyperparameters."""

    def _held_out(self, ds: Dataset, *, min_fit: int) -> tuple[np.ndarray, np.ndarray]:
        """Check the threshold settings, then split row indices into (fit, held-out) by ``random_state``;
        no held-out rows when fewer than ``min_fit`` would be left to fit on."""
        parse_threshold(self.threshold, self.contamination)  # a bad threshold fails before training
        if not 0 <= self.validation_fraction < 0.5:
            raise UserError(f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}")
        seed = 0 if self.random_state is None else int(self.random_state)
        perm = np.random.default_rng(seed).permutation(len(ds))
        n_val = int(round(len(ds) * self.validation_fraction))
        if len(ds) - n_val < min_fit:
            n_val = 0
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _save_scores(self, directory: Path, info: dict) -> None:
        save_tensors(directory / SCORES_FILE, {"train": torch.from_numpy(self.decision_scores_),
                                               "validation": torch.from_numpy(self.validation_scores_)})
        config = read_json(directory / CONFIG) if (directory / CONFIG).exists() else {}
        config["detector"] = {"threshold": self.threshold_, "feature_names": self.feature_names_in_, **info}
        write_json(directory / CONFIG, config)

    def _load_scores(self, directory: Path) -> dict:
        """Training/held-out scores and the threshold from a saved directory; returns its detector info."""
        scores = load_tensors(directory / SCORES_FILE)
        self.decision_scores_ = scores["train"].numpy()
        self.validation_scores_ = scores["validation"].numpy()
        config = read_json(directory / CONFIG)
        info = config.get("detector", {})
        self.feature_names_in_ = info.get("feature_names", config.get("data_info", {}).get("columns"))
        if "threshold" in info:
            self.threshold_ = float(info["threshold"])
            self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        else:  # a `latentforge train` run: its held-out scores are those of the test split
            self.set_threshold(self.threshold, contamination=self.contamination)
        return info

    def _model_kwargs(self, ds: Dataset) -> dict:
        kwargs = {k: v for k, v in self.get_params().items() if k not in DETECTOR_PARAMS and k != "kind"}
        for key in ("hidden", "channels"):
            if key in kwargs:
                kwargs[key] = [int(h) for h in kwargs[key]]
        if kwargs.get("latent_dim") is None:  # tables: a quarter of the width; images: 32
            kwargs["latent_dim"] = 32 if ds.is_image else max(2, int(np.prod(ds.sample_shape)) // 4)
        if "likelihood" in kwargs:
            kwargs["likelihood"] = "bernoulli" if ds.is_image and ds.in_unit_interval else "gaussian"
            if kwargs["likelihood"] != "gaussian":  # robust scaling is for tables; grey levels stay as they are
                kwargs["scaling"] = "standard"
        return kwargs

    def _model_name(self) -> str:
        return self.registry_name

    def fit(self, X, y=None):
        """Fit on unlabeled X (``y`` is ignored, as in PyOD)."""
        ds = self._dataset(X)
        check_detector_input(ds)
        fit_idx, val_idx = self._held_out(ds, min_fit=2)
        seed = 0 if self.random_state is None else int(self.random_state)
        train = ds.subset(fit_idx) if len(val_idx) else ds
        val = ds.subset(val_idx) if len(val_idx) else None
        torch.manual_seed(seed)
        try:
            model = build_model(self._model_name(), input_shape=list(ds.sample_shape), **self._model_kwargs(ds))
        except ValueError as e:
            raise UserError(str(e)) from None
        cfg = TrainConfig(epochs=self.epochs or auto_epochs(len(train)), batch_size=self.batch_size, lr=self.lr, seed=seed, device=self.device,
                          progress=bool(self.verbose), patience=self.patience if val is not None else None)
        result = fit(model, train, None, cfg, validation=val)
        self.model_ = model.cpu().eval()
        self.history_ = result.history
        self.input_shape_ = ds.sample_shape
        self.scale_ = ds.scale
        self.n_features_in_ = int(np.prod(ds.sample_shape))
        self.feature_names_in_ = ds.meta.get("columns")
        self.decision_scores_ = self._scores(ds.floats())
        self.validation_scores_ = self.decision_scores_[val_idx]
        self.set_threshold(self.threshold, contamination=self.contamination)
        return self

    def _scores(self, x: np.ndarray) -> np.ndarray:
        seed = 0 if self.random_state is None else int(self.random_state)
        return anomaly_scores(self.model_, x, score=self.score, seed=seed)

    def decision_function(self, X) -> np.ndarray:
        """Anomaly score per sample: higher = more anomalous."""
        return self._scores(self._tensor(X).numpy())

    def score_samples(self, X) -> np.ndarray:
        """Normality per sample (scikit-learn's convention): the negative of :meth:`decision_function`."""
        return -self.decision_function(X)

    def predict(self, X) -> np.ndarray:
        """1 for anomalies (score above ``threshold_``), 0 for inliers."""
        _not_fitted(self)
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def set_threshold(self, threshold: str | float | None = None, *, contamination: float | None = None):
        """Change the threshold rule without refitting; updates ``threshold_`` and ``labels_``."""
        _not_fitted(self)
        self.threshold_ = threshold_from(threshold, self.decision_scores_, self.validation_scores_,
                                         contamination=contamination)
        self.threshold, self.contamination = (None, contamination) if contamination is not None else (threshold, None)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        return self

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = super().save_pretrained(directory)
        self._save_scores(directory, {})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu"):
        est = super().from_pretrained(directory, device=device)
        est._load_scores(Path(directory))
        return est


class DeepSVDD(Detector):
    """One-class Deep SVDD (Ruff et al. 2018): score = squared distance of φ(x) to the centre.

    ``objective="soft-boundary"`` with ``nu`` learns a radius; ``arch`` conv (images) or mlp (tables);
    ``n_nets`` networks from different random starts are trained and their standardised scores
    averaged (5; 1 is the paper's single network); ``pretrain=N`` first trains each network for N
    epochs as an autoencoder's encoder, as the paper does (off by default: at this library's training
    budget it did not help on one-class MNIST, docs/results.md).
    """

    registry_name = "deep-svdd"

    def __init__(self, latent_dim: int | None = 32, hidden: Sequence[int] = (128, 64), arch: str = "auto",
                 channels: Sequence[int] = (8, 4), objective: str = "one-class", nu: float = 0.1, n_nets: int = 5,
                 pretrain: int = 0, contamination: float | None = None, threshold: str | None = "fpr:0.01",
                 validation_fraction: float = 0.1, patience: int | None = 10, score: str = "auto",
                 epochs: int | None = None, batch_size: int = 128, lr: float = 1e-3, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False) -> None:
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
        self.score = score
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


class AEDetector(Detector):
    """Autoencoder-family detector: ``kind`` ae, dae or vae; ``score`` recon (AE/DAE/VAE), elbo or
    iwae (VAE; ``auto``: elbo for a VAE, recon otherwise). ``latent_dim=None``: a quarter of a table's
    width, 32 for images. ``epochs=None``: about 64,000 samples seen (see :func:`auto_epochs`).

    Made for training data that contain anomalies: tables are scaled robustly (``scaling="robust"``:
    median, IQR and asinh, so a few extreme rows do not squeeze the rest) and the 20 % least likely
    rows of each batch are left out of the training loss (``trim=0.2``). ``scaling="standard",
    trim=0`` is the plain model (docs/results.md compares them on the ODDS tables).
    """

    def __init__(self, kind: str = "vae", latent_dim: int | None = None, hidden: Sequence[int] = (64,),
                 arch: str = "auto", likelihood: str = "auto", scaling: str = "robust", trim: float = 0.2,
                 contamination: float | None = None,
                 threshold: str | None = "fpr:0.01", validation_fraction: float = 0.1, patience: int | None = 10,
                 score: str = "auto", epochs: int | None = None, batch_size: int = 64, lr: float = 1e-3,
                 random_state: int | None = None, device: str = "auto", verbose: bool = False) -> None:
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
        self.score = score
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _model_name(self) -> str:
        if self.kind not in ("ae", "dae", "vae"):
            raise UserError(f"kind must be ae, dae or vae, got {self.kind!r}")
        return self.kind


def robust_standardise(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(scores − median) / IQR of the reference (training) scores: members on one scale, outliers kept;
    a member whose training scores do not spread gives 0 (see :func:`robust_location_scale`)."""
    shift, scale = robust_location_scale(torch.as_tensor(np.asarray(reference, dtype=np.float64)))
    return (np.asarray(scores, dtype=np.float64) - float(shift)) / float(scale)


class EnsembleDetector(Detector):
    """Average of member detectors' scores, each standardised by its training scores' median and IQR.

    ``members``: detector names (``"vae"``, ``"ae"``, ``"dae"``, ``"deep-svdd"``) with their default
    settings (so a ``"deep-svdd"`` member is itself five networks), each fitted ``n_per_member`` times
    with seeds ``random_state + i``. A slice of the training data is held out from every member for
    the ``fpr:`` threshold.
    """

    def __init__(self, members: Sequence[str] = ("vae", "deep-svdd"), n_per_member: int = 1,
                 contamination: float | None = None, threshold: str | None = "fpr:0.01",
                 validation_fraction: float = 0.1, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.members = members
        self.n_per_member = n_per_member
        self.contamination = contamination
        self.threshold = threshold
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _make(self, name: str, seed: int) -> Detector:
        if name not in DETECTORS:
            raise UserError(f"unknown ensemble member {name!r}; use {', '.join(DETECTORS)}")
        kw = {"kind": name} if DETECTORS[name] is AEDetector else {}
        return DETECTORS[name](**kw, random_state=seed, device=self.device, verbose=self.verbose)

    def fit(self, X, y=None):
        if self.n_per_member < 1 or not self.members:
            raise UserError("an ensemble needs at least one member and n_per_member >= 1")
        ds = self._dataset(X)
        check_detector_input(ds)
        fit_idx, val_idx = self._held_out(ds, min_fit=4)
        seed = 0 if self.random_state is None else int(self.random_state)
        x = ds.x
        self.estimators_ = [self._make(name, seed + i).fit(x[fit_idx])
                            for name in self.members for i in range(self.n_per_member)]
        self.input_shape_, self.scale_ = ds.sample_shape, ds.scale
        self.n_features_in_ = int(np.prod(ds.sample_shape))
        self.feature_names_in_ = ds.meta.get("columns")
        self.model_ = self.estimators_[0].model_  # for transform/reconstruct by the first member
        self.decision_scores_ = self.decision_function(x)
        self.validation_scores_ = self.decision_scores_[val_idx]
        self.set_threshold(self.threshold, contamination=self.contamination)
        return self

    def decision_function(self, X) -> np.ndarray:
        _not_fitted(self)
        return np.mean([robust_standardise(est.decision_function(X), est.decision_scores_)
                        for est in self.estimators_], axis=0)

    def save_pretrained(self, directory: str | Path) -> Path:
        _not_fitted(self)
        directory = Path(directory)
        for i, est in enumerate(self.estimators_):
            est.save_pretrained(directory / f"member-{i}")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        write_json(directory / CONFIG, {"model": "ensemble", "estimator": params})
        self._save_scores(directory, {"n_members": len(self.estimators_),
                                      "member_classes": [type(e).__name__ for e in self.estimators_]})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu"):
        directory = Path(directory)
        config = read_json(directory / CONFIG)
        info = config.get("detector", {})
        if config.get("model") != "ensemble":
            raise UserError(f"{directory}: not a saved EnsembleDetector")
        est = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["estimator"].items()
                     if k in cls._get_param_names()})
        classes = {c.__name__: c for c in (DeepSVDD, AEDetector)}
        est.estimators_ = [classes[name].from_pretrained(directory / f"member-{i}", device=device)
                           for i, name in enumerate(info["member_classes"])]
        first = est.estimators_[0]
        est.model_, est.input_shape_, est.scale_ = first.model_, first.input_shape_, first.scale_
        est.n_features_in_ = first.n_features_in_
        est._load_scores(directory)
        return est


DETECTORS = {"deep-svdd": DeepSVDD, "ae": AEDetector, "dae": AEDetector, "vae": AEDetector}
