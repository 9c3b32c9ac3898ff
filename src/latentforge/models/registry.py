"""The model registry: names (``"vae"``, …) → model classes, each with its settings dataclass and the
task it serves. Imports no model family; :mod:`latentforge.models` imports them all."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..settings import SettingError, Settings

if TYPE_CHECKING:
    from .base import Model

MODELS: dict[str, type[Model]] = {}


def register(name: str, config: type[Settings], *, task: str):
    """Class decorator: make a model reachable as ``latentforge train NAME``.

    The model is built from ``config`` (a :class:`~latentforge.settings.Settings` dataclass): it may be
    called with the dataclass or with its fields as keywords (``VAE(input_shape=(1, 28, 28), latent_dim=8)``);
    either way the values are checked once and recorded as ``model.config`` (plain JSON), which is what
    a saved model is rebuilt from."""

    def add(cls):
        own = cls.__dict__.get("__init__")

        def parent_init(self, settings: Settings) -> None:
            super(cls, self).__init__(settings)

        init = own or parent_init

        @functools.wraps(init)
        def __init__(self, settings: Settings | None = None, /, **values: Any) -> None:
            if not isinstance(settings, Settings):
                settings = config.from_dict(values, where=f" of {name}")
            elif values:
                settings = type(settings).from_dict({**settings.to_json(), **values}, where=f" of {name}")
            init(self, settings)
            self.settings = settings
            self.config = settings.to_json()

        cls.__init__ = __init__
        cls.Config, cls.registry_name, cls.task = config, name, task
        MODELS[name] = cls
        return cls

    return add


def model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, **config: Any) -> Model:
    """Instantiate a registered model from its JSON-able config (a SettingError names a bad value)."""
    cls = model_class(name)
    try:
        return cls(**config)
    except SettingError:
        raise
    except (TypeError, ValueError) as e:
        raise UserError(f"cannot build {name}: {e}") from None
