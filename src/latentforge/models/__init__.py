"""Models: one module per family, each an ``nn.Module`` that owns its objective (:mod:`.base` is the
contract, :mod:`.registry` maps names to classes). Importing this package registers every family."""

from __future__ import annotations

from . import autoencoder, cgan, deep_svdd, gan, multvae, superres, topic, vae, vae_variants, vqvae  # noqa: F401  (registers them)
from .base import Batch, Model, capabilities
from .registry import MODELS, build_model, model_class, register

__all__ = ["MODELS", "Batch", "Model", "build_model", "capabilities", "model_class", "register"]
