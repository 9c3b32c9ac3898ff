"""Save and load models and training state: safetensors weights + JSON config; never pickle.

A run directory (or any ``save_pretrained`` directory) holds ``config.json`` and
``model.safetensors``; ``checkpoint/`` adds optimiser and RNG state for ``--resume``. Every
write goes to a temporary name first and is renamed into place, so a crash never leaves a
half-written file where a good one was.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .io import atomic_folder, load_tensors, read_json, read_json_object, save_tensors, write_json
from .models import model_class
from .settings import SettingError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "checkpoint"
FORMAT_VERSION = 1  # of config.json and checkpoint/state.json; raise it when an older latentforge could misread them

__all__ = ["CONFIG", "FORMAT_VERSION", "TRAIN_STATE", "WEIGHTS", "check_format", "disk_errors", "load_model", "load_tensors",
           "load_training_extra", "load_training_state", "read_config", "read_json", "save_model", "save_tensors",
           "save_training_state", "write_json"]


def save_model(model: nn.Module, directory: Path, extra: dict | None = None, *, shown_as: Path | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` (model name + config + ``extra``). ``shown_as``: the folder
    an error names, when ``directory`` is a temporary one that will be renamed to it."""
    directory = Path(directory)
    with disk_errors(f"cannot save the model in {shown_as or directory}", "no file already there was damaged"):
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / WEIGHTS, model.state_dict(), {"format": "pt"})
        config = read_json(directory / CONFIG) if (directory / CONFIG).exists() else {}
        config.update(extra or {})
        config.update({"model": model.registry_name, "model_config": model.config, "format_version": FORMAT_VERSION})
        write_json(directory / CONFIG, config)


@contextmanager
def disk_errors(what: str, kept: str) -> Iterator[None]:
    """An OSError while writing (a full disk, a read-only folder) as a UserError that says what is kept.
    Every write goes to a temporary name first, so nothing already written is damaged."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e)
        raise UserError(f"{what}: {reason} ({type(e).__name__}); {kept}. Free some space or make the folder "
                        "writable, then try again") from None


def check_format(obj: dict, path: Path) -> None:
    """Refuse a file written by a newer latentforge (``format_version`` above ours); no key = version 1."""
    version = obj.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: 'format_version' is {version!r}, not a positive integer; the file was edited or is "
                        "damaged")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: saved by a newer latentforge (format {version}; this one reads up to format "
                        f"{FORMAT_VERSION}); upgrade latentforge")


def read_config(directory: Path) -> dict:
    """``config.json`` of a run or saved model, checked to be one before anything is built from it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory; give the folder that `latentforge train` wrote")
    if not (directory / CONFIG).exists():
        raise UserError(f"{directory}: not a latentforge run directory (no {CONFIG}); give the folder that "
                        "`latentforge train` wrote")
    config = read_json_object(directory / CONFIG)
    check_format(config, directory / CONFIG)
    if not isinstance(config.get("model"), str) or not isinstance(config.get("model_config"), dict):
        raise UserError(f"{directory / CONFIG}: has no valid 'model'/'model_config' entries; it was not written by "
                        "latentforge, or it was edited")
    return config


def load_model(directory: Path, *, device: str | torch.device = "cpu", expect: type | None = None) -> nn.Module:
    """Rebuild a model from ``config.json`` and load its weights, with clear errors on mismatch (``expect``: the
    class the caller needs; another is refused before anything is built)."""
    directory = Path(directory)
    config = read_config(directory)
    cls = model_class(config["model"])
    if expect is not None and not issubclass(cls, expect):
        raise UserError(f"{directory} holds a {config['model']}, not a {getattr(expect, 'registry_name', '') or expect.__name__}")
    state = load_tensors(directory / WEIGHTS)
    try:
        model_config, state = cls.upgrade_saved(dict(config["model_config"]), state)  # older versions' files
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{directory / WEIGHTS} does not match {CONFIG} (a {config['model']} cannot read these weights: "
                        f"{type(e).__name__} {e}); were they copied from different runs?") from None
    try:
        model = cls(**model_config)
    except SettingError as e:
        raise UserError(f"{directory / CONFIG}: model_config does not fit model {config['model']!r} ({e}); restore "
                        "the file or train again") from None
    except (TypeError, ValueError, RuntimeError, MemoryError) as e:
        raise UserError(f"{directory / CONFIG}: model_config does not fit model {config['model']!r} ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise UserError(f"{directory / WEIGHTS} does not match {CONFIG} ({first[0].strip()}); were they copied from "
                        "different runs?") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{directory / WEIGHTS}: {len(bad)} tensors hold NaN/Inf (first {bad[0]!r}); the weights "
                        "are damaged, restore them or train again")
    return model.to(device).eval()


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}.{pid}.{key}"] = val
            else:
                plain[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = val
    for name, val in info["plain"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    return {"state": state, "param_groups": info["param_groups"]}


def save_training_state(run_dir: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], state: dict,
                        rng: dict[str, torch.Tensor], *, extra: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Atomically replace ``run_dir/checkpoint`` with weights, optimiser, RNG and loop state
    (and ``extra`` tensor sets, e.g. the best epoch's weights, as ``<name>.safetensors``)."""
    run_dir = Path(run_dir)
    final = run_dir / TRAIN_STATE
    tensors = {f"rng.{k}": v for k, v in rng.items()}
    opt_info = {}
    for name, opt in optimizers.items():
        t, info = _flatten_optimizer(f"opt.{name}", opt)
        tensors.update(t)
        opt_info[name] = info
    kept = (f"the previous checkpoint ({final}) is intact: continue later with --resume --out {run_dir}"
            if final.exists() else "no checkpoint had been written yet")
    with disk_errors(f"cannot write the checkpoint of epoch {state.get('epoch', '?')} in {run_dir}", kept):
        for stale in run_dir.glob(".checkpoint-*"):  # left by a process killed while writing (one writer per run)
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_folder(final, prefix=".checkpoint-") as tmp:  # a failed write leaves no half-made folder
            save_tensors(tmp / WEIGHTS, model.state_dict())
            save_tensors(tmp / "train_state.safetensors", tensors)
            for name, tensors_ in (extra or {}).items():
                save_tensors(tmp / f"{name}.safetensors", tensors_)
            write_json(tmp / "state.json", {**state, "optimizers": opt_info, "format_version": FORMAT_VERSION})


def load_training_state(run_dir: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Restore weights and optimisers in place; return (loop state, RNG tensors)."""
    ckpt = Path(run_dir) / TRAIN_STATE
    if not (ckpt / "state.json").exists():
        raise UserError(f"{run_dir}: nothing to resume (no {TRAIN_STATE}/ folder); train without --resume")
    state = read_json_object(ckpt / "state.json")
    check_format(state, ckpt / "state.json")
    try:
        model.load_state_dict(load_tensors(ckpt / WEIGHTS))
    except RuntimeError:
        raise UserError(f"{ckpt}: the checkpoint does not match this model's settings; resume with the run's own settings") from None
    tensors = load_tensors(ckpt / "train_state.safetensors")
    try:
        history = state["history"]
        if (not isinstance(state["epoch"], int) or state["epoch"] < 0 or not isinstance(history, list)
                or len(history) != state["epoch"] or not all(isinstance(r, dict) and "epoch" in r for r in history)):
            raise TypeError("epoch/history")
        for name, opt in optimizers.items():
            opt.load_state_dict(_unflatten_optimizer(f"opt.{name}", tensors, state["optimizers"][name]))
        rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
        if "torch" not in rng or "batches" not in rng:
            raise KeyError("rng")
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"{ckpt}: the training state is damaged ({type(e).__name__}: {e}); it cannot be resumed. "
                        "Train again into a new --out") from None
    return state, rng


def load_training_extra(run_dir: Path | None, name: str) -> dict[str, torch.Tensor] | None:
    """A tensor set saved with ``save_training_state(extra={name: …})``, or None."""
    path = Path(run_dir) / TRAIN_STATE / f"{name}.safetensors" if run_dir is not None else None
    return load_tensors(path) if path is not None and path.exists() else None
