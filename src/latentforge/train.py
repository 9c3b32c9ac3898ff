"""The one training loop, for every model: batching, optimisers, per-epoch test loss,
``history.csv``, atomic checkpoints, ``--resume``, NaN guard, Ctrl-C, progress.

The loop knows nothing model-specific: it calls the hooks of the model contract
(:class:`~latentforge.models.base.Model`: ``prepare``, ``configure_optimizers``, ``training_step``,
``on_epoch_end``), each with a default. What to watch on held-out data is the task's choice, given as a
:class:`Monitor`: the trainer logs it each epoch, keeps the weights of the epoch where it was best (also
across ``--resume``) and, with ``TrainConfig.patience``, stops once it has not improved for that many
epochs (early stopping).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import load_training_extra, load_training_state, save_training_state
from .data import Batcher, Dataset, StreamBatcher
from .data.image_transforms import check_images, parse_image_augment
from .data.stream_batcher import eval_batches
from .errors import UserError
from .models.base import Batch, Model
from .precision import PRECISIONS, autocast, set_precision
from .settings import SettingError, Settings, setting
from .train_records import KeepBest, Monitor, TrainResult, write_history


@dataclass
class TrainConfig(Settings):
    """Settings of one training run (every field is a flag of ``latentforge train``)."""

    epochs: int = setting(10, "epochs to train (total, also with --resume)", min=1, max=10_000_000)
    batch_size: int = setting(128, "mini-batch size", min=1, max=10_000_000)
    lr: float = setting(1e-3, "Adam learning rate", above=0)
    seed: int = setting(0, "random seed: the same seed gives the same weights", min=0, max=2**63 - 1)
    device: str = setting("auto", "auto, cpu or cuda (auto picks CUDA when present)")
    compile: str = setting("auto", "torch.compile the loss: auto, on or off", choices=("auto", "on", "off"))
    binarize: str | None = setting(None, "dynamic or static: train and test on Bernoulli samples of grey levels "
                                   "(for likelihoods comparable with papers)", choices=(None, "dynamic", "static"))
    progress: bool | None = setting(None, "progress bar (None: only on a terminal; elsewhere a line per epoch)")
    eval_batch_size: int = setting(1000, "batch size of evaluation passes", min=1)
    patience: int | None = setting(None, "early stopping: epochs without improvement of the monitored value",
                                   min=1)
    precision: str = setting("auto", "fp32, bf16 or auto: bf16 autocast of the networks (weights, optimiser state "
                             "and losses stay fp32); auto picks bf16 where the model measured faster and the "
                             "device computes bf16 natively (CPU with AMX or AVX-512 BF16, CUDA)",
                             choices=PRECISIONS)
    augment: str | None = setting(None, "random changes of each training image: shift:P (pixels), rotate:D (degrees), "
                                  "scale:F (zoom by up to F), flip (mirror half); comma-separated, e.g. "
                                  "shift:2,rotate:10. Images only")
    stream: str = setting("auto", "read the data from disk a block at a time instead of into memory: on, off or auto "
                          "(.npy and Parquet files larger than a quarter of the memory, and folders of .npy/.npz "
                          "shards)", choices=("auto", "on", "off"))

    def check(self) -> None:
        if parse_image_augment(self.augment) is not None and self.binarize is not None:
            raise SettingError("augment", "changing images blends neighbouring grey levels, which binarised training "
                               "is meant to avoid; drop --augment or --binarize")
        if not isinstance(self.device, str):
            raise SettingError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        resolve_device(self.device)

    def validate(self) -> None:
        """Checked on creation already; kept for callers that changed fields afterwards."""
        type(self)(**self.to_json())


class TrainingDiverged(UserError):
    """Loss became NaN/Inf; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise SettingError("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingError("device", f"{name} was asked for but no CUDA GPU is visible; use cpu or auto")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise SettingError("device", f"{name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 to "
                               f"cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def _should_compile(cfg: TrainConfig, steps: int, device: torch.device) -> bool:
    if cfg.compile == "off":
        return False
    if cfg.compile == "on":
        return True
    # Compiling costs ~5-30 s once. On a 2-core CPU it did not speed up the MLP VAE measurably
    # (benchmarks/bench_vae_speed.py), so "auto" compiles only long runs on a GPU.
    return steps >= 3000 and device.type == "cuda"


def _make_step(model: Model, optimizers: dict, compiled: bool) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """The model's ``training_step``; compiled: with ``loss`` compiled (``Model.training_step`` calls it), for every
    model whose step goes through ``loss``; for the others a warning says that training runs uncompiled."""
    model.__dict__.pop("compiled_loss", None)
    if compiled:
        why = model.uncompiled_step(optimizers)
        if why is None:
            import torch._inductor.config as inductor_config

            inductor_config.fallback_random = True  # same random numbers compiled or not: resume stays exact
            model.__dict__["compiled_loss"] = torch.compile(model.loss, dynamic=False)
        else:
            warnings.warn(f"--compile: {getattr(model, 'registry_name', type(model).__name__)} trains with {why}, "
                          "which is not compiled; training runs uncompiled", UserWarning, stacklevel=2)
    return lambda batch: model.training_step(batch, optimizers)


def _rng_state(batch_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "batches": batch_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(rng: dict[str, torch.Tensor], batch_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    batch_gen.set_state(rng["batches"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: Dataset, *, batch_size: int = 1000, device: torch.device | str = "cpu",
                  binarized: bool = False) -> dict[str, float]:
    """Mean of each loss term over a data set (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    labels = _labels(data) if model.uses_labels else None
    sums: dict[str, float] = {}
    n = 0
    batches = (eval_batches(data, labels, batch_size=batch_size, device=device) if data.streamed else
               Batcher(data.tensor(), labels, batch_size=batch_size, scale=data.scale, shuffle=False, device=device))
    for xb, yb in batches:
        with autocast(model):
            out = model.loss(Batch(xb, yb))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(xb)
        n += len(xb)
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}


def _labels(data: Dataset) -> torch.Tensor | None:
    if data.y is None:
        return None
    try:
        return torch.as_tensor(data.y.astype("int64"))
    except (TypeError, ValueError):
        return None


def fit(
    model: Model,
    train: Dataset,
    test: Dataset | None,
    cfg: TrainConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    validation: Dataset | None = None,
    monitor: Monitor | None = None,
    after_epoch: Callable[[int, Model], None] | None = None,
    finish_only: bool = False,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    prepare: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train``; with a ``run_dir``, checkpoint every epoch and allow resume.

    With ``validation`` (held out from the training data), its loss is logged as ``val_loss`` each epoch
    and, unless a ``monitor`` says otherwise, decides the kept weights and early stopping (after ``cfg.patience``
    epochs without improvement). Training also ends early once ``model.finished()`` (the model's own rule, e.g.
    DEC's share of rows that changed cluster) holds after an epoch. Ctrl-C stops at
    once: the checkpoint of the last finished epoch stays, and the KeyboardInterrupt goes on to the caller.
    ``after_epoch(epoch, model)`` runs after each epoch (a task's per-epoch files). ``finish_only``: a resumed
    run that already has all its epochs (it was stopped while being finished) returns its checkpoint's state
    instead of refusing.

    ``optimizers`` (an earlier result's ``optimizers``) continues with those optimisers and their state (Adam's
    moments and step counts) instead of new ones from ``model.configure_optimizers``; ``prepare=False`` skips
    ``model.prepare``, whose statistics were fitted before. Together they train on a stream of chunks, one call
    per chunk (the estimators' ``partial_fit``).
    """
    cfg.validate()
    here = distributed.world()  # under torchrun: this process's rank among the others
    files = run_dir if here.main else None  # only rank 0 writes the run's files
    if files is not None:
        Path(files).mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    batch_gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: the batches are the same
    model.to(device).train()
    result = TrainResult(precision=set_precision(model, cfg.precision, device))
    distributed.broadcast_model(model)
    if here.distributed:  # per-step noise (dropout, reparameterisation) differs between ranks, like their rows
        torch.manual_seed(cfg.seed + 7919 * here.rank)
    if model.uses_labels and train.y is None:
        raise UserError(f"model {model.registry_name!r} needs labels, but {train.name} has none")
    if cfg.stream == "on" and not train.streamed:
        raise UserError(f"--stream on: {train.name} was read into memory; streaming applies to .npy files, folders of "
                        ".npy/.npz shards and .parquet files (models of the generate task); drop --stream on")
    y_all = _labels(train) if model.uses_labels else None
    if y_all is not None:
        y_all = y_all.to(device)
    x_all = None if train.streamed else train.tensor(device)  # streamed: read a window at a time by the batcher
    if optimizers is None:
        optimizers = model.configure_optimizers(cfg.lr)
        if here.distributed:  # hooks stay on the optimisers: registered once, when they are made
            distributed.average_gradients_before_step(optimizers)
    else:
        optimizer_state_to_params(optimizers)  # the model may have moved since (e.g. kept on the CPU between calls)
    start_epoch = 0
    if resume:
        start_epoch = _resume(run_dir, model, optimizers, result, train, batch_gen, device, cfg, finish_only)
    elif prepare:
        model.prepare(train)
    if monitor is None and validation is not None:
        monitor = Monitor("val_loss", higher_is_better=False)
    best = KeepBest(monitor, result.history, load_training_extra(run_dir, "best") if resume else None)
    batcher = _batcher(train, x_all, y_all, cfg, batch_gen, device)
    steps_left = len(batcher) * (cfg.epochs - start_epoch)
    step = _make_step(model, optimizers, _should_compile(cfg, steps_left, device))
    bar_on = (sys.stderr.isatty() if cfg.progress is None else cfg.progress) and here.main

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sums, seen, seconds = _train_epoch(step, batcher, epoch, cfg, run_dir, bar_on)
            row = {"epoch": epoch + 1, **{f"train_{k}": float(v) / max(seen, 1) for k, v in sums.items()}}
            weights_ok = all(bool(torch.isfinite(p).all()) for p in model.parameters())  # the last step may break them
            if not weights_ok or not all(math.isfinite(v) for v in row.values()):
                raise TrainingDiverged(_diverged_message(epoch, len(batcher), run_dir))
            result.train_seconds += seconds
            result.samples_seen += len(train)
            if test is not None:
                row.update({f"test_{k}": v for k, v in evaluate_loss(model, test, batch_size=cfg.eval_batch_size, device=device).items()})
            if validation is not None:
                row["val_loss"] = evaluate_loss(model, validation, batch_size=cfg.eval_batch_size, device=device)["loss"]
            row.update(model.on_epoch_end(epoch + 1, train, Path(files) if files is not None else None))
            if after_epoch is not None and here.main:
                after_epoch(epoch + 1, model)
            if monitor is not None and monitor.compute is not None:
                row.update(monitor.compute(model))
            row["seconds"] = round(seconds, 4)
            if train.streamed:  # how long the steps waited for the disk reader (0: it always kept ahead)
                row["read_wait_seconds"] = round(batcher.waited, 4)
            result.history.append(row)
            best.update(row, model)
            if files is not None:
                write_history(Path(run_dir) / "history.csv", result.history)
                save_training_state(run_dir, model, optimizers,
                                    {"epoch": epoch + 1, "history": result.history, "train_seconds": result.train_seconds,
                                     "samples_seen": result.samples_seen, "config": cfg.to_json(),
                                     "streamed": train.streamed},
                                    _rng_state(batch_gen, device), extra={"best": best.state} if best.state else None)
            distributed.barrier()  # the other ranks wait for rank 0's checkpoint
            if bar_on or (cfg.progress is None and files is not None):
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k in ("train_loss", "test_loss", best.key))
                print(f"epoch {epoch + 1}/{cfg.epochs}: {shown} ({seconds:.1f}s)", file=sys.stderr)
            if distributed.any_rank(model.finished()):  # one rank's rule stops them all
                if bar_on:
                    print(f"stopped after epoch {epoch + 1}: the model met its stopping rule", file=sys.stderr)
                break
            if cfg.patience is not None and best.epoch is not None and epoch + 1 - best.epoch >= cfg.patience:
                if bar_on:
                    print(f"early stop: {best.key} has not improved since epoch {best.epoch}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        if run_dir is not None and epoch > 0:
            print(f"\ninterrupted in epoch {epoch + 1}: the checkpoint of epoch {epoch} is kept; continue with "
                  f"--resume --out {run_dir}", file=sys.stderr)
        else:
            print(f"\ninterrupted in epoch {epoch + 1}, before any epoch finished: nothing was saved", file=sys.stderr)
        raise
    finally:
        model.__dict__.pop("compiled_loss", None)  # evaluation and later calls run the eager loss
    result.best_epoch = best.restore(model)
    result.optimizers = optimizers
    model.eval()
    return result


def _resume(run_dir: Path | None, model: Model, optimizers: dict, result: TrainResult, train: Dataset,
            batch_gen: torch.Generator, device: torch.device, cfg: TrainConfig, finish_only: bool) -> int:
    """Load ``run_dir``'s checkpoint into the model, optimisers, history and random state; the epoch to go on from."""
    if run_dir is None:
        raise UserError("--resume needs the run directory (--out RUN_DIR)")
    here = distributed.world()
    state, rng = load_training_state(run_dir, model, optimizers)
    start_epoch = state["epoch"]
    result.history = state["history"]
    result.train_seconds = state.get("train_seconds", 0.0)
    result.samples_seen = state.get("samples_seen", 0)
    if bool(state.get("streamed", False)) != train.streamed:  # the two paths serve rows in different orders
        how = {True: "streamed from disk", False: "read into memory"}
        raise UserError(f"{run_dir} was trained on data {how[bool(state.get('streamed', False))]}, but the data is "
                        f"now {how[train.streamed]} (the memory budget changed?); resume with the same --stream "
                        "setting on a machine with as much memory, or train a new run")
    _set_rng_state(rng, batch_gen, device)
    if here.distributed:  # rank 0's saved state is the batch order's; each rank's noise its own again
        torch.manual_seed(cfg.seed + 7919 * here.rank + 104729 * start_epoch)
    if start_epoch >= cfg.epochs and not finish_only:
        raise UserError(f"{run_dir} already has {start_epoch} epochs; ask for more with --epochs N (N > {start_epoch})")
    return start_epoch


def _batcher(train: Dataset, x_all, y_all, cfg: TrainConfig, batch_gen: torch.Generator, device: torch.device):
    """The training batches: from memory, or read from disk a window at a time for streamed data; with
    ``cfg.augment``, each image batch randomly changed (drawn from ``batch_gen``, so resumable)."""
    here = distributed.world()
    binarize = "dynamic" if cfg.binarize == "dynamic" else None
    augment = parse_image_augment(cfg.augment)
    check_images(augment, train)
    if train.streamed:
        return StreamBatcher(train, y_all, batch_size=cfg.batch_size, generator=batch_gen, binarize=binarize,
                             device=device, shard=(here.rank, here.size), augment=augment)
    return Batcher(x_all, y_all, batch_size=cfg.batch_size, scale=train.scale, generator=batch_gen,
                   binarize=binarize, device=device, shard=(here.rank, here.size), augment=augment)


def _train_epoch(step: Callable[[Batch], dict[str, torch.Tensor]], batcher, epoch: int, cfg: TrainConfig,
                 run_dir: Path | None, bar_on: bool) -> tuple[dict[str, torch.Tensor], int, float]:
    """One pass over the batches: each loss term summed over rows (over every rank's rows when distributed), the
    rows seen and the seconds taken. Checks for NaN/Inf every 25 steps, without a host sync on the others."""
    from tqdm.auto import tqdm

    here = distributed.world()
    t0 = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    bar = tqdm(batcher, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not bar_on, leave=False, unit="batch",
               dynamic_ncols=True)
    last_note = t0
    for i, (xb, yb) in enumerate(bar):
        out = step(Batch(xb, yb))
        seen += len(xb)
        for k, v in out.items():
            v = v.detach()
            sums[k] = sums[k] + v * len(xb) if k in sums else v * len(xb)
        if i % 25 == 24:  # one host sync per 25 steps, for the guard and the progress
            now = {k: float(v.detach()) for k, v in out.items()}
            if distributed.any_rank(not all(map(math.isfinite, now.values()))):
                raise TrainingDiverged(_diverged_message(epoch, i, run_dir))
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(now.items())[:3]})
            if not bar_on and cfg.progress is None and here.main and time.perf_counter() - last_note > NOTE_EVERY:
                last_note = time.perf_counter()  # not on a terminal: a line every so often, not silence
                print(f"epoch {epoch + 1}/{cfg.epochs}: batch {i + 1}/{len(batcher)}", file=sys.stderr)
    bar.close()
    seconds = time.perf_counter() - t0
    if here.distributed:  # the epoch's means over every rank's rows
        keys = list(sums)
        total = distributed.all_sum(torch.stack([sums[k].float().cpu() for k in keys] + [torch.tensor(seen)]))
        sums, seen = dict(zip(keys, total[:-1])), int(total[-1])
    return sums, seen, seconds


def optimizer_state_to_params(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Move each optimiser's state onto the devices of its parameters, after ``model.to(...)`` moved them.
    ``load_state_dict`` knows where each entry belongs (Adam's ``step`` stays on the CPU unless fused)."""
    for opt in optimizers.values():
        if any(torch.is_tensor(v) and v.device != p.device
               for p, state in opt.state.items() for k, v in state.items() if k != "step"):
            opt.load_state_dict(opt.state_dict())


NOTE_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal


def _diverged_message(epoch: int, step: int, run_dir: Path | None) -> str:
    kept = f"the checkpoint of epoch {epoch} in {run_dir} is kept" if run_dir is not None and epoch > 0 else "nothing was saved"
    return (f"training diverged: the loss became NaN/Inf in epoch {epoch + 1} near step {step + 1}; {kept}. "
            "Lower --lr, or check the data for extreme values")
