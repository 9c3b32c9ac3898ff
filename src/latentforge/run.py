"""A run directory from start to finish: create it, train into it, write its metrics, pictures
and report, and read it back. The CLI and the estimators both go through here."""

from __future__ import annotations

import inspect
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, plots
from .checkpoint import CONFIG, TRAIN_STATE, load_model, read_json, save_model, write_json
from .data import Dataset, Splits, binarize_static, load_data
from .errors import UserError
from .metrics import evaluate_model
from .models import MODELS, build_model
from .report import write_report
from .train import TrainConfig, TrainResult, fit, resolve_device


def default_run_dir(model: str, data: str) -> Path:
    stem = Path(data).stem if ("/" in data or "." in data) else data
    return Path("runs") / f"{model}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_splits(splits: Splits, binarize: str | None, seed: int) -> Splits:
    """Apply ``--binarize``: static fixes one Bernoulli sample of every set; dynamic resamples
    training batches (in the batcher) and fixes one sample of the test set."""
    if binarize is None:
        return splits
    if splits.train.is_sparse:
        raise UserError("--binarize is for grey-level images; interaction data is binarised with --min-rating")
    if not splits.train.in_unit_interval:
        raise UserError(f"--binarize needs grey levels in [0, 1]; {splits.name} ranges over {splits.train.value_range}")
    train = binarize_static(splits.train, seed=seed) if binarize == "static" else splits.train
    return Splits(train=train, test=binarize_static(splits.test, seed=seed + 1), name=splits.name)


def choose_likelihood(likelihood: str, data: Dataset, binarize: str | None) -> str:
    if likelihood == "auto":
        return "bernoulli" if (binarize or data.in_unit_interval) else "gaussian"
    if likelihood in ("bernoulli", "cb") and not data.in_unit_interval:
        raise UserError(f"--likelihood {likelihood} needs values in [0, 1]; {data.name} ranges over "
                        f"{data.value_range}. Use --likelihood gaussian")
    return likelihood


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / CONFIG).exists() or not (out / TRAIN_STATE).exists():
            raise UserError(f"{out}: not a run directory with a checkpoint to resume; check the path, or train without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; choose another --out, or add --resume to continue that run")


def train_run(
    model_name: str,
    data: str,
    cfg: TrainConfig,
    *,
    model_kwargs: dict | None = None,
    out: Path | None = None,
    resume: bool = False,
    eval_k: int = 100,
    data_options: dict | None = None,
) -> Path:
    """Train ``model_name`` on ``data`` into a run directory and write everything it holds.

    ``data_options`` go to :func:`load_data` (e.g. interaction column names, ``min_rating``) and are
    saved in config.json so evaluation reads the data the same way."""
    cfg.validate()
    out = Path(out) if out is not None else default_run_dir(model_name, data)
    _check_out_dir(out, resume)
    if resume:
        saved = read_json(out / CONFIG)
        model_name, data = saved["model"], saved["data"]
        data_options = saved.get("data_options")
        epochs, device, progress = cfg.epochs, cfg.device, cfg.progress
        cfg = TrainConfig(**{**saved["train"], "epochs": epochs, "device": device, "progress": progress})
    if model_name not in MODELS:
        raise UserError(f"unknown model {model_name!r}; available: {', '.join(sorted(MODELS))}")
    data_options = {k: v for k, v in (data_options or {}).items() if v is not None}
    if getattr(MODELS[model_name], "data_kind", None) == "interactions":
        data_options["interactions"] = True
    splits = prepare_splits(load_data(data, **data_options), cfg.binarize, cfg.seed)
    if splits.train.is_sparse and "interactions" not in data_options:
        raise UserError(f"{data} is user-item interaction data; train a recommender on it (mult-vae or mult-dae)")
    if getattr(MODELS[model_name], "detector", False):
        from .detectors import check_detector_input

        check_detector_input(splits.train)
    torch.manual_seed(cfg.seed)  # initial weights come from the seed, too
    if resume:
        model = build_model(model_name, **saved["model_config"])
    else:
        kwargs = model_arguments(model_name, model_kwargs or {})
        params = inspect.signature(MODELS[model_name]).parameters
        if "n_classes" in params and "n_classes" not in kwargs:
            kwargs["n_classes"] = n_classes(splits.train)
        if "likelihood" in params:
            kwargs["likelihood"] = choose_likelihood(kwargs.get("likelihood", "auto"), splits.train, cfg.binarize)
        # constructor arguments the data decides (e.g. a recommender's item ids)
        kwargs.update({k: v for k, v in splits.train.meta.get("model_args", {}).items() if k in params})
        try:
            model = build_model(model_name, input_shape=list(splits.train.sample_shape), **kwargs)
        except (ValueError, TypeError) as e:
            raise UserError(f"cannot build {model_name}: {e}") from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not resume:
            write_json(out / CONFIG, {
                "model": model_name, "model_config": model.config, "data": data, "train": asdict(cfg),
                "data_options": data_options,
                "data_info": data_info(splits.train), "latentforge_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            })
        result = fit(model, splits.train, splits.test, cfg, run_dir=out, resume=resume,
                     on_epoch_end=lambda epoch, m: epoch_artifacts(m, epoch, out))
    except BaseException:
        if created and not (out / TRAIN_STATE).exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no half-made run behind
        raise
    finish_run(out, model, splits, result, eval_k=eval_k, device=cfg.device)
    return out


def epoch_artifacts(model: nn.Module, epoch: int, run_dir: Path) -> None:
    """Let a model leave per-epoch files in its run (e.g. a GAN's fixed-noise samples)."""
    hook = getattr(model, "epoch_artifacts", None)
    if hook is not None:
        hook(epoch, Path(run_dir))


def model_arguments(model_name: str, flags: dict) -> dict:
    """The flags a user set (None = not set) that the model takes; a flag it does not take is an error."""
    accepted = inspect.signature(MODELS[model_name]).parameters
    given = {k: v for k, v in flags.items() if v is not None}
    wrong = [k for k in given if k not in accepted]
    if wrong:
        names = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise UserError(f"{names} does not apply to model {model_name!r}; see `latentforge train --help`")
    return given


def n_classes(ds: Dataset) -> int:
    """Number of classes for conditional models: from the data's labels (integers 0..K−1)."""
    if ds.y is None:
        raise UserError(f"{ds.name} has no labels; a conditional model needs them (labels in 'y', a 'label' column, "
                        "or image sub-folders)")
    try:
        y = ds.y.astype(np.int64)
    except (TypeError, ValueError):
        raise UserError(f"{ds.name}: labels must be integers 0..K-1 for a conditional model") from None
    if y.min() < 0:
        raise UserError(f"{ds.name}: labels must be integers 0..K-1, found {int(y.min())}")
    return int(y.max()) + 1


def data_info(ds: Dataset) -> dict:
    return {"sample_shape": list(ds.sample_shape), "scale": ds.scale, "value_range": list(ds.value_range),
            "label_names": ds.label_names, "n_train": len(ds), "columns": ds.meta.get("columns")}


def finish_run(run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult, *, eval_k: int = 100,
               device: str = "cpu") -> None:
    """Weights, metrics.json, pictures and report.html for a trained model."""
    run_dir = Path(run_dir)
    model = model.to(resolve_device(device)).eval()
    save_model(model, run_dir)
    for write in splits.train.meta.get("run_files", []):  # files the data keeps with a model (e.g. known users)
        write(run_dir)
    test = evaluate_model(model, splits.test, k=eval_k, device=resolve_device(device))
    # Detectors, and any scoring model trained on a table (a VAE on a CSV is usually a detector too),
    # get the score histogram with its threshold.
    data = splits.train
    scores_a_table = (hasattr(model, "anomaly_score") and not data.is_image and not data.is_sparse
                      and not getattr(model, "uses_labels", False))
    if getattr(model, "detector", False) or scores_a_table:
        from .tasks.anomaly import write_run_anomaly

        test.update(write_run_anomaly(run_dir, model, splits.train, splits.test))
    config = read_json(run_dir / CONFIG)
    metrics = {
        "model": config["model"], "data": config["data"], "epochs": len(result.history),
        "train_seconds": round(result.train_seconds, 3), "samples_per_second": round(result.samples_per_second, 1),
        "likelihood": model.config.get("likelihood", getattr(model, "likelihood", None)), "binarize": config["train"].get("binarize"),
        "interrupted": result.interrupted, "test": test,
    }
    if result.best_epoch is not None:  # the model kept its best epoch on validation data (train.KeepBest)
        metrics["best_epoch"] = result.best_epoch
        metrics["best_epoch_stats"] = {k: v for k, v in result.history[result.best_epoch - 1].items() if k != "epoch"}
    write_json(run_dir / "metrics.json", metrics)
    write_pictures(run_dir, model, splits.test, result.history)
    if hasattr(model, "scores") and "holdout" in splits.test.meta:  # a recommender: a few test users' lists
        from .data.histories import read_item_names
        from .tasks.recommend import example_recommendations

        examples = example_recommendations(model, splits.test, read_item_names(run_dir))
        write_json(run_dir / "examples.json", examples)
    write_report(run_dir)


@torch.no_grad()
def write_pictures(run_dir: Path, model: nn.Module, test: Dataset, history: list[dict], *, seed: int = 0) -> None:
    """samples.png, reconstructions.png, curves.png, latent_map.png and traversals.png, as the model allows."""
    model = model.cpu().eval()
    if hasattr(model, "sample") and test.is_image:  # a table's samples are rows, not a picture
        if getattr(model, "uses_labels", False):  # a row of 8 per class
            rows = [model.sample(8, label=c, seed=seed + c) for c in range(model.n_classes)]
            plots.save_image(plots.image_grid(torch.cat(rows).numpy(), nrow=8), run_dir / "samples.png")
        else:
            plots.save_samples(model.sample(64, seed=seed).numpy(), run_dir / "samples.png")
    x = torch.from_numpy(test.head(32))
    y = None if test.y is None or not getattr(model, "uses_labels", False) else torch.as_tensor(test.y[:32].astype(np.int64))
    if hasattr(model, "reconstruct") and test.is_image:
        rec = model.reconstruct(x, y) if y is not None else model.reconstruct(x)
        plots.save_reconstructions(x.numpy(), rec.numpy(), run_dir / "reconstructions.png")
    if history:
        plots.save_curves(history, run_dir / "curves.png", monitor=getattr(model, "monitor", None))
    if hasattr(model, "quantizer"):
        plots.save_codebook_usage(model.quantizer.usage.numpy(), run_dir / "codebook.png")
    if hasattr(model, "encode"):
        n = min(len(test), 1000)
        mu, logvar = model.encode(torch.from_numpy(test.head(n)))
        labels = None if test.y is None else np.asarray(test.y[:n])
        plots.save_latent_map(mu.numpy(), labels, run_dir / "latent_map.png", label_names=test.label_names, seed=seed)
        if hasattr(model, "kl") and test.is_image and not getattr(model, "uses_labels", False):
            kl_per_dim = model.kl(mu[:, :, None], logvar[:, :, None]).mean(0)  # (latent,) average KL per dim
            plots.save_traversals(model, mu[0], kl_per_dim.numpy(), run_dir / "traversals.png")


def load_run(run_dir: Path, *, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The trained model of a run directory and its config."""
    model = load_model(run_dir, device=resolve_device(device))
    return model, read_json(Path(run_dir) / CONFIG)


def run_test_data(config: dict, data: str | None) -> Dataset:
    """The test set a run is evaluated on: its own (binarised as in training), or ``data``'s."""
    spec = data or config["data"]
    binarize = config.get("train", {}).get("binarize")
    splits = prepare_splits(load_data(spec, **(config.get("data_options") or {})), binarize, config.get("train", {}).get("seed", 0))
    check_compatible(config, splits.test)
    return splits.test


def check_compatible(config: dict, ds: Dataset) -> None:
    want = config.get("model_config", {}).get("input_shape")
    if want is not None and list(ds.sample_shape) != list(want):
        raise UserError(f"{ds.name}: samples have shape {list(ds.sample_shape)} but the model was trained on {want}; "
                        "give data of the same shape")
    items = config.get("model_config", {}).get("item_ids")
    if items is not None and ds.meta.get("item_ids") is not None and list(ds.meta["item_ids"]) != list(items):
        raise UserError(f"{ds.name}: its items are not the ones the model was trained on; evaluate on the run's own data")


def update_metrics(run_dir: Path, test: dict) -> dict:
    path = Path(run_dir) / "metrics.json"
    metrics = read_json(path) if path.exists() else {}
    metrics.setdefault("test", {}).update(test)
    write_json(path, metrics)
    return metrics


def as_json(obj: dict) -> str:
    return json.dumps(obj, indent=2)
