"""Hyperparameters declared once: a dataclass field per setting, with its default, help text and
allowed range. Models, the trainer, the CLI and the estimators all read the same declaration, so a
default or a range is written in one place.

    @dataclass
    class VAEConfig(ModelConfig):
        latent_dim: int = setting(20, "size of the latent code z", min=1)

Errors name the setting in Python's spelling (``latent_dim must be at least 1, got 0``); the CLI
rewrites that to its flag (``--latent-dim``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError


class SettingError(UserError):
    """A setting outside what it allows; ``param`` is its Python name."""

    def __init__(self, param: str, problem: str) -> None:
        self.param, self.problem = param, problem
        super().__init__(f"{param} {problem}")

    def renamed(self, name: str) -> UserError:
        """The same complaint about the setting under another name (a CLI flag, an estimator parameter)."""
        return UserError(f"{name} {self.problem}")


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,  # noqa: A002
            below: float | None = None, above: float | None = None, choices: Sequence[Any] | None = None,
            cli: bool = True, cli_default: Any = None) -> Any:
    """A dataclass field with its help text and allowed range (``min``/``max`` inclusive, ``above``/``below``
    exclusive, ``choices`` a closed list). Sequences (``hidden``) are checked element by element.
    ``cli=False``: set from the data, not by a flag; ``cli_default``: what the command line uses when the flag
    is not given, where that differs (``likelihood``: auto, resolved from the data)."""
    meta = {"help": help, "min": min, "max": max, "above": above, "below": below,
            "choices": None if choices is None else tuple(choices), "cli": cli, "cli_default": cli_default}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def default(base: type, name: str, value: Any) -> Any:
    """``base``'s setting ``name`` with another default, for a subclass: its help and allowed range stay the one
    declaration (``latent_dim: int = default(VAEConfig, "latent_dim", 10)``)."""
    meta = dict(next(f for f in fields(base) if f.name == name).metadata)
    return setting(value, meta.pop("help"), **meta)


def _kind(tp: Any) -> tuple[str, bool]:
    """(base kind, optional) of an annotation: int, float, bool, str, ints (a sequence of ints), any."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else Any
    for base, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if tp is base:
            return name, optional
    if typing.get_origin(tp) in (tuple, list, Sequence, collections.abc.Sequence) and int in typing.get_args(tp):
        return "ints", optional
    return "any", optional


def _check_number(name: str, v: Any, kind: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or isinstance(v, complex):
        raise SettingError(name, f"must be a{'n integer' if kind == 'int' else ' number'}, got {v!r}")
    if kind == "int":
        if isinstance(v, float) and not v.is_integer():
            raise SettingError(name, f"must be a whole number, got {v!r}")
        if not math.isfinite(float(v)):
            raise SettingError(name, f"must be a whole number, got {v!r}")
        v = int(v)
        if abs(v) >= 2**62:
            raise SettingError(name, f"is too large ({v})")
        return v
    v = float(v)
    if not math.isfinite(v):
        raise SettingError(name, f"must be a finite number, got {v!r}")
    return v


def _check_range(name: str, v: Any, meta: dict) -> None:
    lo, hi, above, below = meta.get("min"), meta.get("max"), meta.get("above"), meta.get("below")
    if lo is not None and v < lo:
        raise SettingError(name, f"must be at least {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise SettingError(name, f"must be at most {hi:g}, got {v!r}")
    if above is not None and not v > above:
        raise SettingError(name, f"must be greater than {above:g}, got {v!r}")
    if below is not None and not v < below:
        raise SettingError(name, f"must be less than {below:g}, got {v!r}")


def check_value(name: str, v: Any, tp: Any, meta: dict) -> Any:
    """``v`` coerced to the declared type and checked against the declared range (or a SettingError)."""
    kind, optional = _kind(tp)
    if v is None:
        if optional or kind == "any":
            return None
        raise SettingError(name, "must be given (None is not allowed)")
    choices = meta.get("choices")
    if kind == "bool":
        if not isinstance(v, (bool, int)) or v not in (0, 1, True, False):
            raise SettingError(name, f"must be True or False, got {v!r}")
        return bool(v)
    if kind in ("int", "float"):
        v = _check_number(name, v, kind)
        _check_range(name, v, meta)
    elif kind == "ints":
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) and not hasattr(v, "__iter__"):
            raise SettingError(name, f"must be a list of whole numbers like (400,) or (512, 256), got {v!r}")
        v = tuple(_check_number(name, e, "int") for e in v)
        for e in v:
            _check_range(name, e, meta)
    elif kind == "str":
        if not isinstance(v, str):
            raise SettingError(name, f"must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise SettingError(name, f"must be one of {', '.join(map(str, choices))}; got {v!r}")
    return v


@dataclass
class Settings:
    """Base of every settings dataclass: values checked on creation (:meth:`checked`)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name), hints[f.name], dict(f.metadata)))
        self.check()

    def check(self) -> None:
        """Rules that involve several settings (subclasses); raise SettingError."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "") -> Settings:
        """Build from a mapping; a name the class does not have is an error that lists the known ones."""
        unknown = [k for k in values if k not in cls.names()]
        if unknown:
            raise SettingError(unknown[0], f"is not a setting{where}; known: {', '.join(cls.names())}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def describe(cls: type[Settings], name: str) -> tuple[Any, str]:
    """(default, help) of one setting."""
    for f in fields(cls):
        if f.name == name:
            return cls.defaults().get(name), f.metadata.get("help", "")
    raise KeyError(name)
