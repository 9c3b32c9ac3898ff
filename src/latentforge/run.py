"""A run directory from start to finish: create it, train into it, write its metrics, pictures
and report, and read it back. The CLI goes through here; what differs between runs is the model's
task (:mod:`latentforge.tasks`), looked up by the model's registration."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from . import __version__, distributed
from .checkpoint import CONFIG, TRAIN_STATE, load_model, read_config, save_model
from .data import Dataset, Splits
from .data.image_transforms import parse_image_augment, preview
from .errors import UserError
from .io import read_json_object, write_json
from .memory import release_freed_memory
from .models import model_class
from .report import write_report
from .settings import SettingError
from .tasks import RunOptions, Task, get_task, run_splits
from .train import TrainConfig, TrainResult, fit, resolve_device

DEFAULT_MODEL = "vae"
DEFAULT_DATA = "digits"


def default_run_dir(model: str, data: str) -> Path:
    stem = Path(data).stem if ("/" in data or "." in data) else data
    return Path("runs") / f"{model}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        if _stillborn(out):
            raise UserError(f"{out}: the run stopped before its first epoch finished, so there is nothing to resume; "
                            "run the same command without --resume (the folder is reused)")
        if not (out / CONFIG).exists() or not (out / TRAIN_STATE).exists():
            raise UserError(f"{out}: not a run directory with a checkpoint to resume; check the path, or train without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not _stillborn(out):
        raise UserError(f"{out} already exists and is not empty; choose another --out, or add --resume to continue that run")


def _stillborn(out: Path) -> bool:
    """A run folder that a killed process left before its first checkpoint: config.json alone (a new run may
    reuse it; nothing in it is worth keeping)."""
    return out.is_dir() and {p.name for p in out.iterdir() if not p.name.startswith(".")} == {CONFIG}


def _resume_settings(out: Path, model_name: str | None, data: str | None, given: dict, data_options: dict,
                     cfg: TrainConfig, train_flags: set[str]) -> tuple[dict, TrainConfig]:
    """The saved run's config, after checking that nothing the user gave contradicts it."""
    saved = read_config(out)
    if not isinstance(saved.get("data"), str) or not saved["data"] or not isinstance(saved.get("data_options") or {}, dict):
        raise UserError(f"{out / CONFIG}: its 'data'/'data_options' entries are damaged; the run cannot be resumed "
                        "as it was trained. Restore the file, or train a new run")
    clash = []
    if model_name is not None and model_name != saved["model"]:
        clash.append(f"model {model_name!r} (the run trains {saved['model']!r})")
    if data is not None and data != saved.get("data"):
        clash.append(f"--data {data} (the run trains on {saved.get('data')})")
    mc = saved["model_config"]
    for k, v in given.items():
        if v is not None and (k not in mc or _plain(mc[k]) != _plain(v)):
            clash.append(f"--{k.replace('_', '-')} {v} (the run has {mc.get(k, 'no such setting')})")
    for k, v in data_options.items():
        if v is not None and (saved.get("data_options") or {}).get(k) != v:
            clash.append(f"--{k.replace('_', '-')} {v}")
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    for k in sorted(train_flags - {"epochs", "device", "progress"}):
        if k in train and _comparable(k, train[k]) != _comparable(k, getattr(cfg, k)):
            clash.append(f"--{k.replace('_', '-')} {getattr(cfg, k)} (the run has {train[k]})")
    if clash:
        raise UserError(f"--resume continues {out} with its own settings; these contradict it: {'; '.join(clash)}. "
                        "Drop them, or train a new run into another --out")
    try:
        kept = {k: v for k, v in train.items() if k in TrainConfig.names()}
        cfg = TrainConfig(**{**kept, "epochs": cfg.epochs, "device": cfg.device, "progress": cfg.progress})
    except (SettingError, TypeError) as e:
        raise UserError(f"{out / CONFIG}: its training settings are damaged ({e}); train a new run") from None
    return saved, cfg


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _comparable(key: str, v):
    """A training setting as --resume compares it: --augment by the changes it makes (``rotate:10,shift:2`` is
    ``shift:2,rotate:10``); a saved spec that no longer parses compares as written."""
    if key == "augment":
        try:
            return parse_image_augment(v)
        except (SettingError, AttributeError, TypeError):  # (a hand-edited config: not a spec at all)
            return v
    return _plain(v)


def train_run(
    model_name: str | None,
    data: str | None,
    cfg: TrainConfig,
    *,
    model_kwargs: dict | None = None,
    out: Path | None = None,
    resume: bool = False,
    eval_k: int = 100,
    data_options: dict | None = None,
    train_flags: set[str] = frozenset(),
) -> Path:
    """Train ``model_name`` on ``data`` into a run directory and write everything it holds.

    ``model_kwargs`` are the model settings the user set (None = not set); ``data_options`` go to the task's
    reader (e.g. interaction column names, ``min_rating``) and are saved in config.json so evaluation reads
    the data the same way. With ``resume``, settings that contradict the saved run are refused
    (``train_flags``: the training flags the user gave)."""
    given = {k: v for k, v in (model_kwargs or {}).items() if v is not None}
    data_options = {k: v for k, v in (data_options or {}).items() if v is not None}
    if out is None:
        if resume:
            raise UserError("--resume needs the run directory: --out RUN_DIR")
        out = default_run_dir(model_name or DEFAULT_MODEL, data or DEFAULT_DATA)
    out = Path(distributed.broadcast_object(str(out)))  # under torchrun: rank 0's name (it has the clock in it)
    _check_out_dir(out, resume)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    here = distributed.world()
    saved = None
    if resume:
        saved, cfg = _resume_settings(out, model_name, data, given, data_options, cfg, set(train_flags))
        model_name, data = saved["model"], saved["data"]
        data_options = saved.get("data_options") or {}
    else:
        model_name, data = model_name or DEFAULT_MODEL, data or DEFAULT_DATA
    cls = model_class(model_name)
    task = get_task(cls.task)
    given = model_arguments(model_name, given)
    run = RunOptions(binarize=cfg.binarize, seed=cfg.seed, eval_k=eval_k, device=cfg.device, stream=cfg.stream)
    splits = task.load(data, data_options, run)
    task.check_training_data(splits)
    torch.manual_seed(cfg.seed)  # initial weights come from the seed, too
    if saved is not None:
        model = _build(cls, saved["model_config"])
        if list(model.config["input_shape"]) != list(splits.train.sample_shape):
            raise UserError(f"{out}: the data now has samples of shape {list(splits.train.sample_shape)}, the run "
                            f"was trained on {model.config['input_shape']}; the data changed since, train a new run")
    else:
        settings = task.model_settings(cls, splits, given, run)
        model = _build(cls, {"input_shape": list(splits.train.sample_shape), **settings})
    created = not out.exists()
    if here.main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if saved is None and here.main:
            write_json(out / CONFIG, {
                "model": model_name, "task": task.name, "model_config": model.config, "data": data,
                "train": cfg.to_json(), "data_options": data_options, "data_info": data_info(splits.train),
                "latentforge_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            })
        result = fit(model, splits.train, splits.test, cfg, run_dir=out, resume=resume,
                     validation=splits.validation, monitor=task.monitor(splits),
                     after_epoch=lambda epoch, m: task.epoch_end(out, epoch, m),
                     finish_only=resume and not (out / "metrics.json").exists())
    except BaseException:
        if here.main and created and not (out / TRAIN_STATE).exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no half-made run behind
        raise
    if here.main:  # the other ranks' work ends with training
        finish_run(out, model, splits, result, task=task, run=run)
    distributed.barrier()
    return out


def model_arguments(model_name: str, flags: dict) -> dict:
    """The flags a user set (None = not set) that the model takes; a flag it does not take is an error."""
    cls = model_class(model_name)
    given = {k: v for k, v in flags.items() if v is not None}
    wrong = [k for k in given if k not in cls.Config.names() or k == "input_shape"]
    if wrong:
        names = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise UserError(f"{names} does not apply to model {model_name!r}; see `latentforge train --help`")
    return given


def _build(cls: type, settings: dict) -> nn.Module:
    try:
        return cls(**settings)
    except (TypeError, ValueError, RuntimeError, MemoryError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot build {cls.registry_name}: {e}") from None


def write_augmentation(run_dir: Path, spec: str | None, test: Dataset) -> None:
    """augmentation.png for a run trained with ``--augment``: 8 test images, each with 7 changes like those made
    to the training images, so the setting can be judged by eye (too strong a change makes one digit another)."""
    augment = parse_image_augment(spec)
    if augment is None or not test.is_image or test.is_sparse or not test.in_unit_interval or len(test) == 0:
        return  # (the picture shows grey levels in [0, 1])
    from . import plots

    images = preview(torch.from_numpy(test.head(min(8, len(test)))), augment)
    plots.save_image(plots.image_grid(images.clamp(0, 1).numpy(), nrow=8), run_dir / "augmentation.png")


def data_info(ds: Dataset) -> dict:
    """Facts of the training data that later calls are checked against."""
    return {"sample_shape": list(ds.sample_shape), "scale": ds.scale, "value_range": list(ds.value_range),
            "label_names": ds.label_names, "n_train": len(ds), "columns": ds.meta.get("columns")}


def finish_run(run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult, *, task: Task,
               run: RunOptions) -> None:
    """Weights, metrics.json, the task's files and pictures, and report.html for a trained model."""
    run_dir = Path(run_dir)
    device = resolve_device(run.device)
    model = model.to(device).eval()
    save_model(model, run_dir)
    print(f"evaluating on {len(splits.test):,} test samples…", file=sys.stderr)
    release_freed_memory()  # each stage's peak on its own, not on top of what the last one freed
    test = task.evaluate(model, splits.test, splits, k=run.eval_k, device=device, progress=sys.stderr.isatty())
    release_freed_memory()
    test.update(task.write_artifacts(run_dir, model, splits, result, run))
    config = read_config(run_dir)
    write_augmentation(run_dir, config["train"].get("augment"), splits.test)
    metrics = {
        "model": config["model"], "task": task.name, "data": config["data"], "epochs": len(result.history),
        "train_seconds": round(result.train_seconds, 3), "samples_per_second": round(result.samples_per_second, 1),
        "likelihood": model.config.get("likelihood", getattr(model, "likelihood", None)),
        "binarize": config["train"].get("binarize"), "interrupted": result.interrupted, "precision": result.precision,
        "evaluation": {"iwae_k": run.eval_k, "precision": getattr(model, "precision", "fp32")}, "test": test,
    }
    if result.best_epoch is not None:  # the model kept its best epoch on validation data (train_records.KeepBest)
        metrics["best_epoch"] = result.best_epoch
        metrics["best_epoch_stats"] = {k: v for k, v in result.history[result.best_epoch - 1].items() if k != "epoch"}
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir)


def load_run(run_dir: Path, *, device: str = "cpu", precision: str = "fp32") -> tuple[nn.Module, dict]:
    """The trained model of a run directory and its config; the model computes in ``precision`` (auto, fp32 or
    bf16, resolved for it and the device: :func:`latentforge.precision.set_precision`)."""
    from .precision import check_precision, set_precision

    check_precision(precision)  # a bad value fails before the weights are read
    config = read_config(Path(run_dir))
    model = load_model(run_dir, device=resolve_device(device))
    set_precision(model, precision, resolve_device(device))
    return model, config


def run_test_data(config: dict, data: str | None) -> Dataset:
    """The test set a run is evaluated on: its own (binarised as in training), or ``data``'s."""
    ds = run_splits(config, data).test
    check_compatible(config, ds)
    return ds


USE_SPLITS = ("test", "train", "all")


def use_data(config: dict, data: str | None, split: str | None = None) -> Dataset:
    """The rows a run's model is used on (``embed``, ``cluster``, ``denoise``, ``plot``): a file is read whole, in
    its own row order; a data name (or, without ``data``, the run's own data) gives its ``split`` — test
    (default), train (with the rows held out for validation) or all of them."""
    from .data import NAMES
    from .data.dataset import concat
    from .data.text import NEWSGROUPS
    from .tasks.base import run_options

    if split is not None and split not in USE_SPLITS:
        raise UserError(f"--split must be one of {', '.join(USE_SPLITS)}, got {split!r}")
    if data is not None and data not in NAMES and data != NEWSGROUPS:
        if split not in (None, "all"):
            raise UserError(f"{data} is a file: it is read whole, in its own order; drop --split {split}")
        ds = get_task(model_class(config["model"]).task).read_rows(data, config, run_options(config))
    else:
        splits = run_splits(config, data)
        train = [splits.train] + ([splits.validation] if splits.validation is not None else [])
        parts = {"test": [splits.test], "train": train, "all": train + [splits.test]}[split or "test"]
        ds = concat(parts, name=f"{splits.name} ({split or 'test'})")
    check_compatible(config, ds)
    return ds


def check_compatible(config: dict, ds: Dataset) -> None:
    """New data must look like what the model was trained on: shape, items, and the value range its
    likelihood needs (the same rules as at training)."""
    mc = config.get("model_config", {})
    want = mc.get("input_shape")
    if want is not None and list(ds.sample_shape) != list(want):
        raise UserError(f"{ds.name}: samples have shape {list(ds.sample_shape)} but the model was trained on {want}; "
                        "give data of the same shape")
    if mc.get("likelihood") in ("bernoulli", "cb") and not ds.is_sparse and not ds.in_unit_interval:
        raise UserError(f"{ds.name}: values range over {ds.value_range}, but the model's {mc['likelihood']} "
                        "likelihood needs values in [0, 1] as in training; rescale the data")


def update_metrics(run_dir: Path, test: dict, evaluation: dict) -> dict:
    """Merge a new evaluation into metrics.json, keeping the settings it was made with next to it."""
    path = Path(run_dir) / "metrics.json"
    metrics = read_json_object(path) if path.exists() else {}
    metrics.setdefault("test", {}).update(test)
    metrics["evaluation"] = {**(metrics.get("evaluation") or {}), **evaluation}
    write_json(path, metrics)
    return metrics


def as_json(obj: dict) -> str:
    return json.dumps(obj, indent=2)
