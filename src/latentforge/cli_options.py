"""The model flags of ``latentforge train``, derived from the registered models' settings dataclasses:
one flag per setting name (``--latent-dim``), its help from the declaration and every model's true default.
Nothing here is written twice: a new setting in a model's config is a new flag."""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields
from typing import Any, Optional

import typer

from .errors import UserError
from .models import MODELS
from .settings import _kind

SKIP = {"input_shape"}  # set from the data


def model_flags() -> dict[str, dict[str, Any]]:
    """name → {"kind", "help", "defaults": {model: default}} over every registered model's CLI settings."""
    flags: dict[str, dict[str, Any]] = {}
    for name, cls in MODELS.items():
        hints = typing.get_type_hints(cls.Config)
        defaults = cls.Config.defaults()
        for f in fields(cls.Config):
            if f.name in SKIP or not f.metadata.get("cli", True):
                continue
            kind, _ = _kind(hints[f.name])
            entry = flags.setdefault(f.name, {"kind": kind, "help": f.metadata.get("help", ""), "defaults": {}})
            if entry["kind"] != kind:
                raise TypeError(f"setting {f.name!r} is a {kind} in {name} but a {entry['kind']} elsewhere")
            cli_default = f.metadata.get("cli_default")
            entry["defaults"][name] = cli_default if cli_default is not None else defaults.get(f.name)
    return flags


def _show(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v)) if v else "none"
    return "off" if v is False else "on" if v is True else "—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def defaults_text(defaults: dict[str, Any]) -> str:
    """"vae, ae: 20; beta-vae: 10" — every model's default, grouped by value."""
    groups: dict[str, list[str]] = {}
    for model, v in defaults.items():
        groups.setdefault(_show(v), []).append(model)
    return "; ".join(f"{', '.join(models)}: {v}" for v, models in groups.items())


def flag_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per model setting, for Typer (default None = not set)."""
    params = []
    for name, info in sorted(model_flags().items()):
        flag = "--" + name.replace("_", "-")
        text = f"{info['help']} (default {defaults_text(info['defaults'])})"
        if info["kind"] == "bool":
            option, tp = typer.Option(None, f"{flag}/--no-{name.replace('_', '-')}", help=text), Optional[bool]
        else:
            tp = {"int": Optional[int], "float": Optional[float]}.get(info["kind"], Optional[str])
            option = typer.Option(None, flag, help=text + (" (comma-separated sizes)" if info["kind"] == "ints" else ""))
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
    return params


def parse_flags(values: dict[str, Any]) -> dict[str, Any]:
    """The model flags the user set, typed: sizes "512,256" → (512, 256)."""
    kinds = {k: v["kind"] for k, v in model_flags().items()}
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        out[k] = sizes(v, "--" + k.replace("_", "-")) if kinds.get(k) == "ints" else v
    return out


def sizes(text: str, flag: str) -> tuple[int, ...]:
    try:
        parsed = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise UserError(f"{flag} must be comma-separated sizes like 400 or 512,256; got {text!r}") from None
    if any(s < 1 for s in parsed):
        raise UserError(f"{flag} sizes must be positive integers, got {text!r}")
    return parsed


def flag_name(param: str) -> str:
    """The CLI spelling of a setting's Python name (``seed`` is ``--seed``, ``latent_dim`` ``--latent-dim``)."""
    return "--" + param.replace("_", "-")
