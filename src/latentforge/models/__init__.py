"""Model registry: names (``"vae"``, …) → ``nn.Module`` classes that own their objective."""

from __future__ import annotations

from torch import nn

from ..errors import UserError

MODELS: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model reachable as ``latentforge train NAME``."""

    def add(cls):
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return add


def build_model(name: str, **config) -> nn.Module:
    """Instantiate a registered model from its JSON-able config."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**config)


from . import autoencoder, vae, vae_variants, vqvae  # noqa: E402,F401  (registers their models)
from . import gan  # noqa: E402,F401  (registers dcgan, wgan-gp)
from . import multvae  # noqa: E402,F401  (registers mult-vae, mult-dae)
from . import deep_svdd  # noqa: E402,F401  (registers deep-svdd)
