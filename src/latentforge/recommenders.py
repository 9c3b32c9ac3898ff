"""Recommenders (kept importable from here; they live in :mod:`latentforge.estimators.recommenders`)."""

from .estimators.recommenders import MultDAE, MultVAE

__all__ = ["MultVAE", "MultDAE"]
