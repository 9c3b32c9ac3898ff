"""latentforge: deep unsupervised learning on PyTorch — train, then generate, reconstruct, embed."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402

# Estimators load on first use, so that `latentforge --help` does not import scikit-learn.
_LAZY = {
    "VAE": "estimators", "BetaVAE": "estimators", "CVAE": "estimators", "AutoEncoder": "estimators",
    "DenoisingAutoEncoder": "estimators", "load": "estimators",
    "MultVAE": "estimators", "MultDAE": "estimators",
    "DeepSVDD": "estimators", "AEDetector": "estimators", "EnsembleDetector": "estimators",
    "TopicModel": "estimators",
    "SemiSupervisedClassifier": "estimators.classify", "classify": "tasks.classify",
    "cluster_codes": "tasks.represent", "clustering_scores": "metrics.representation", "augment": "tasks.augment",
}

__all__ = ["UserError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'latentforge' has no attribute {name!r}")
