"""scikit-learn-style estimators over the models and the one trainer (:mod:`.base` is the stack).

``VAE(latent_dim=20, epochs=10).fit(X)`` then ``transform``, ``sample``, ``score_samples``,
``save_pretrained`` / ``VAE.from_pretrained``; :func:`load` returns whichever estimator class a folder holds.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import read_config
from ..errors import UserError
from .autoencoders import VAE, AutoEncoder, BetaVAE, CVAE, DenoisingAutoEncoder
from .base import ESTIMATOR_CLASSES, TRAIN_PARAMS, ModelEstimator, not_fitted
from .detectors import AEDetector, DeepSVDD, Detector
from .ensemble import EnsembleDetector
from .recommenders import MultDAE, MultVAE
from .topics import TopicModel

# The estimator of a folder saved before config.json named its class, or of a `latentforge train` run.
BY_MODEL: dict[str, type[ModelEstimator]] = {
    "vae": VAE, "beta-vae": BetaVAE, "cvae": CVAE, "ae": AutoEncoder, "dae": DenoisingAutoEncoder,
    "deep-svdd": DeepSVDD, "ensemble": EnsembleDetector, "mult-vae": MultVAE, "mult-dae": MultDAE,
    "prodlda": TopicModel, "nvdm": TopicModel,
}


def load(run_dir: str | Path, *, device: str = "cpu"):
    """The estimator for any run or ``save_pretrained`` directory: the class that was saved."""
    config = read_config(Path(run_dir))
    name = config.get("estimator_class")
    cls = ESTIMATOR_CLASSES.get(name) if name else BY_MODEL.get(config["model"])
    if cls is None:
        raise UserError(f"{run_dir}: no Python estimator for model {config['model']!r}; use it from the command "
                        "line (latentforge sample/evaluate/report)")
    return cls.from_pretrained(run_dir, device=device)


__all__ = ["VAE", "BetaVAE", "AutoEncoder", "DenoisingAutoEncoder", "CVAE", "DeepSVDD", "AEDetector",
           "EnsembleDetector", "Detector", "MultVAE", "MultDAE", "TopicModel", "ModelEstimator", "ESTIMATOR_CLASSES",
           "TRAIN_PARAMS", "load", "not_fitted"]
