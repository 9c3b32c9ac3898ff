"""An ensemble of anomaly detectors: the members' scores, each on its own training scores' robust scale,
averaged; thresholds, calibration and saving as every :class:`~.detectors.Detector`'s."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CONFIG, read_config
from ..errors import UserError
from ..io import write_json
from ..models.body import robust_location_scale
from .detectors import DETECTORS, AEDetector, DeepSVDD, Detector, _rule


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

    model_names = ()
    min_fit = 4

    def __init__(self, members: Sequence[str] = ("vae", "deep-svdd"), n_per_member: int = 1,
                 contamination: float | None = None, threshold: str | None = None,
                 validation_fraction: float = 0.1, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False, precision: str = "auto") -> None:
        self.members = members
        self.n_per_member = n_per_member
        self.contamination = contamination
        self.threshold = threshold
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision

    def _make(self, name: str, seed: int) -> Detector:
        if name not in DETECTORS:
            raise UserError(f"unknown ensemble member {name!r}; use {', '.join(DETECTORS)}")
        kw = {"kind": name} if DETECTORS[name] is AEDetector else {}
        return DETECTORS[name](**kw, random_state=seed, device=self.device, verbose=self.verbose,
                               precision=self.precision)

    def fit(self, X, y=None):
        """Fit every member on the same rows (a slice held out for the threshold)."""
        if isinstance(self.n_per_member, bool) or not isinstance(self.n_per_member, int) or self.n_per_member < 1 \
                or not self.members:
            raise UserError("an ensemble needs at least one member and n_per_member >= 1")
        ds = self._dataset(X)
        self._split(ds)
        seed = 0 if self.random_state is None else int(self.random_state)
        x = ds.x
        self.estimators_ = [self._make(name, seed + i).fit(x[self._fit_rows])
                            for name in self.members for i in range(self.n_per_member)]
        self._adopt(self.estimators_[0])
        self.feature_names_in_ = ds.meta.get("columns")
        self.decision_scores_ = self.decision_function(x)
        self.validation_scores_ = self.decision_scores_[self._held_rows]
        self.calibration_scores_ = None  # a refit forgets an earlier calibrate()
        self._apply_rule(_rule(self.threshold, self.contamination))
        return self

    def _adopt(self, first: Detector) -> None:
        """Shape and scale facts (and transform/reconstruct) from the first member."""
        self.model_ = first.model_
        for attr in ("input_shape_", "scale_", "n_features_in_", "sample_shape_in_", "value_range_"):
            setattr(self, attr, getattr(first, attr))
        self.history_ = []

    def decision_function(self, X) -> np.ndarray:
        self._tensor(X)  # checked here, so errors name the ensemble rather than its first member
        return np.mean([robust_standardise(est.decision_function(X), est.decision_scores_)
                        for est in self.estimators_], axis=0)

    def _write(self, directory: Path) -> None:
        for i, est in enumerate(self.estimators_):
            est._write(directory / f"member-{i}")
        write_json(directory / CONFIG, {"model": "ensemble", "estimator_class": type(self).__name__,
                                        "estimator": self._params_json(), "model_config": {}})
        config = read_config(directory)
        write_json(directory / CONFIG, {**config, **self._save_extra(directory),
                                        "members": [type(e).__name__ for e in self.estimators_]})

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu"):
        directory = Path(directory)
        config = read_config(directory)
        if config.get("model") != "ensemble":
            raise UserError(f"{directory}: not a saved EnsembleDetector; load it with latentforge.load")
        params = config["estimator"] if isinstance(config.get("estimator"), dict) else {}
        est = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()
                     if k in cls._get_param_names()})
        classes = {c.__name__: c for c in (DeepSVDD, AEDetector)}
        names = config.get("members") or (config.get("detector") or {}).get("member_classes") or []
        if not names or any(n not in classes for n in names):
            raise UserError(f"{directory / CONFIG}: its member list is damaged; restore it or fit again")
        est.estimators_ = [classes[name].from_pretrained(directory / f"member-{i}", device=device)
                           for i, name in enumerate(names)]
        est._adopt(est.estimators_[0])
        est._load_extra(directory, config)
        return est
