"""Anomaly detectors (kept importable from here; they live in :mod:`latentforge.estimators.detectors`)."""

from .estimators.detectors import DETECTORS, AEDetector, DeepSVDD, Detector, auto_epochs
from .estimators.ensemble import EnsembleDetector, robust_standardise
from .tasks.scoring import check_detector_input

__all__ = ["AEDetector", "DeepSVDD", "Detector", "EnsembleDetector", "DETECTORS", "auto_epochs", "check_detector_input",
           "robust_standardise"]
