"""The one training loop, for every model: batching, optimisers, per-epoch test loss,
``history.csv``, atomic checkpoints, ``--resume``, NaN guard, Ctrl-C, progress bar.

The loop knows nothing model-specific. A model gives ``loss(x) -> {"loss": …, …}``; it may also
give ``prepare(dataset)`` (fit data statistics once), ``configure_optimizers(lr)`` (several
optimisers, e.g. GANs), ``training_step(x, y, optimizers)`` (its own update order; returns the
values to log, every one of them guarded against NaN/Inf) and ``fused_step(optimizer)``. A model
may also score itself after each epoch, ``validate(train) -> {name: value}`` (on held-out data the
training set carries, logged in the history), and name one of those values ``monitor``: the trainer
then keeps the weights of the epoch where it peaked (higher is better), also across ``--resume``,
and with ``TrainConfig.patience`` stops once it has not improved for that many epochs (early
stopping). ``after_epoch(train) -> {name: value}`` lets a model update what it fits between epochs
(e.g. the Deep SVDD radius).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_training_state, load_training_extra, save_training_state
from .data import Batcher, Dataset
from .errors import UserError


@dataclass
class TrainConfig:
    """Settings of one training run (every field is a CLI flag of ``latentforge train``)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    compile: str = "auto"  # auto | on | off: torch.compile the loss (forward + backward)
    binarize: str | None = None  # None | dynamic | static
    progress: bool | None = None  # None: a progress bar only on a terminal
    eval_batch_size: int = 1000
    patience: int | None = None  # early stopping on the model's ``monitor`` value (None: train every epoch)

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"--compile must be auto, on or off, got {self.compile!r}")
        if self.binarize not in (None, "dynamic", "static"):
            raise UserError(f"--binarize must be dynamic or static, got {self.binarize!r}")
        if self.patience is not None and self.patience < 1:
            raise UserError(f"--patience must be at least 1, got {self.patience}")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0
    interrupted: bool = False
    best_epoch: int | None = None  # set when the model has a ``monitor``: the epoch whose weights it ends with

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


class TrainingDiverged(UserError):
    """Loss became NaN/Inf; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def default_optimizers(model: nn.Module, lr: float) -> dict[str, torch.optim.Optimizer]:
    # fused Adam: one kernel over all parameters instead of a dozen elementwise passes.
    return {"main": torch.optim.Adam(model.parameters(), lr=lr, fused=True)}


def _should_compile(cfg: TrainConfig, steps: int, device: torch.device) -> bool:
    if cfg.compile == "off" or os.environ.get("LATENTFORGE_NO_COMPILE"):
        return False
    if cfg.compile == "on":
        return True
    # Compiling costs ~5-30 s once. On a 2-core CPU it did not speed up the MLP VAE measurably
    # (benchmarks/bench_vae_speed.py), so "auto" compiles only long runs on a GPU.
    return steps >= 3000 and device.type == "cuda"


def _make_step(model: nn.Module, optimizers: dict, use_labels: bool, compiled: bool) -> Callable:
    if hasattr(model, "training_step"):
        return lambda x, y: model.training_step(x, y, optimizers)
    fused = getattr(model, "fused_step", None)
    if fused is not None and len(optimizers) == 1 and not os.environ.get("LATENTFORGE_NO_FUSED"):
        step = fused(next(iter(optimizers.values())))
        if step is not None:
            return step
    loss_fn = model.loss
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # same random numbers compiled or not: resume stays exact
        loss_fn = torch.compile(model.loss, dynamic=False)
    (opt,) = optimizers.values()

    def step(x: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out = loss_fn(x, y) if use_labels else loss_fn(x)
        opt.zero_grad(set_to_none=False)  # reuse gradient buffers: no per-step allocation
        out["loss"].backward()
        opt.step()
        return out

    return step


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
    use_labels = getattr(model, "uses_labels", False)
    sums: dict[str, float] = {}
    n = 0
    for xb, yb in Batcher(data.tensor(), _labels(data), batch_size=batch_size, scale=data.scale, shuffle=False, device=device):
        out = model.loss(xb, yb) if use_labels else model.loss(xb)
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


def write_history(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def fit(
    model: nn.Module,
    train: Dataset,
    test: Dataset | None,
    cfg: TrainConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    validation: Dataset | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``; with a ``run_dir``, checkpoint every epoch and allow resume.

    With ``validation`` (held out from the training data), its loss is logged as ``val_loss`` each
    epoch and, unless the model names its own ``monitor``, decides the kept weights and early stopping.
    """
    cfg.validate()
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    batch_gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    use_labels = getattr(model, "uses_labels", False)
    if use_labels and train.y is None:
        raise UserError(f"model {model.registry_name!r} needs labels, but {train.name} has none")
    x_all = train.tensor(device)
    y_all = _labels(train)
    if y_all is not None:
        y_all = y_all.to(device)
    make_opt = getattr(model, "configure_optimizers", None)
    optimizers = make_opt(cfg.lr) if make_opt else default_optimizers(model, cfg.lr)
    result = TrainResult()
    start_epoch = 0
    if resume:
        if run_dir is None:
            raise UserError("--resume needs the run directory (--out RUN_DIR)")
        state, rng = load_training_state(run_dir, model, optimizers)
        start_epoch = state["epoch"]
        result.history = state["history"]
        result.train_seconds = state.get("train_seconds", 0.0)
        result.samples_seen = state.get("samples_seen", 0)
        _set_rng_state(rng, batch_gen, device)
        if start_epoch >= cfg.epochs:
            raise UserError(f"{run_dir} already has {start_epoch} epochs; ask for more with --epochs N (N > {start_epoch})")
    elif hasattr(model, "prepare"):
        model.prepare(train)
    validate = getattr(model, "validate", None)
    after_epoch = getattr(model, "after_epoch", None)
    monitor = getattr(model, "monitor", None)
    lower_better = monitor is None and validation is not None
    best = KeepBest("val_loss" if lower_better else monitor, result.history,
                    load_training_extra(run_dir, "best") if resume else None, lower_is_better=lower_better)
    batcher = Batcher(x_all, y_all, batch_size=cfg.batch_size, scale=train.scale, generator=batch_gen,
                      binarize="dynamic" if cfg.binarize == "dynamic" else None, device=device)
    steps_left = len(batcher) * (cfg.epochs - start_epoch)
    step = _make_step(model, optimizers, use_labels, _should_compile(cfg, steps_left, device))
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    from tqdm.auto import tqdm

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            bar = tqdm(batcher, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False, unit="batch",
                       dynamic_ncols=True)
            for i, (xb, yb) in enumerate(bar):
                out = step(xb, yb)
                for k, v in out.items():
                    v = v.detach()
                    sums[k] = sums[k] + v * len(xb) if k in sums else v * len(xb)
                if i % 25 == 24:  # one host sync per 25 steps, for the guard and the bar
                    now = {k: float(v.detach()) for k, v in out.items()}
                    if not all(map(math.isfinite, now.values())):
                        raise TrainingDiverged(_diverged_message(epoch, i, run_dir))
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(now.items())[:3]})
            bar.close()
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, **{f"train_{k}": float(v) / len(train) for k, v in sums.items()}}
            if not all(math.isfinite(v) for v in row.values()):
                raise TrainingDiverged(_diverged_message(epoch, len(batcher), run_dir))
            result.train_seconds += seconds
            result.samples_seen += len(train)
            if test is not None:
                row.update({f"test_{k}": v for k, v in evaluate_loss(model, test, batch_size=cfg.eval_batch_size, device=device).items()})
            if validation is not None:
                row["val_loss"] = evaluate_loss(model, validation, batch_size=cfg.eval_batch_size, device=device)["loss"]
            if after_epoch is not None:
                row.update(after_epoch(train))
            if validate is not None:
                row.update(validate(train))
            row["seconds"] = round(seconds, 4)
            result.history.append(row)
            best.update(row, model)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, model)
            if run_dir is not None:
                write_history(Path(run_dir) / "history.csv", result.history)
                save_training_state(run_dir, model, optimizers,
                                    {"epoch": epoch + 1, "history": result.history, "train_seconds": result.train_seconds,
                                     "samples_seen": result.samples_seen, "config": asdict(cfg)},
                                    _rng_state(batch_gen, device), extra={"best": best.state} if best.state else None)
            if show:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k in ("train_loss", "test_loss", best.key))
                print(f"epoch {epoch + 1}/{cfg.epochs}: {shown} ({seconds:.1f}s)", file=sys.stderr)
            if cfg.patience is not None and best.epoch is not None and epoch + 1 - best.epoch >= cfg.patience:
                if show:
                    print(f"early stop: {best.key} has not improved since epoch {best.epoch}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        # The checkpoint of the last finished epoch is already on disk; say how to continue.
        result.interrupted = True
        where = f"; continue with --resume --out {run_dir}" if run_dir is not None else ""
        print(f"\ninterrupted in epoch {epoch + 1}: kept the checkpoint of epoch {epoch}{where}", file=sys.stderr)
    result.best_epoch = best.restore(model)
    model.eval()
    return result


class KeepBest:
    """The weights of the epoch where ``key`` (a history value, higher = better unless
    ``lower_is_better``) peaked."""

    def __init__(self, key: str | None, history: list[dict], state: dict[str, torch.Tensor] | None, *,
                 lower_is_better: bool = False) -> None:
        self.key, self.state, self.epoch, self.score = key, state, None, -math.inf
        self.sign = -1.0 if lower_is_better else 1.0
        scored = [(self.sign * r[key], r["epoch"]) for r in history if key and math.isfinite(r.get(key, math.nan))]
        if scored and state is not None:  # resumed: the best so far is in the checkpoint
            self.score, self.epoch = max(scored, key=lambda t: (t[0], -t[1]))

    def update(self, row: dict, model: nn.Module) -> None:
        value = self.sign * row.get(self.key, math.nan) if self.key else math.nan
        if math.isfinite(value) and value > self.score:
            self.score, self.epoch = value, row["epoch"]
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> int | None:
        if self.state is not None and self.epoch is not None:
            model.load_state_dict(self.state)
        return self.epoch


def _diverged_message(epoch: int, step: int, run_dir: Path | None) -> str:
    kept = f"the checkpoint of epoch {epoch} in {run_dir} is kept" if run_dir is not None and epoch > 0 else "nothing was saved"
    return (f"training diverged: the loss became NaN/Inf in epoch {epoch + 1} near step {step + 1}; {kept}. "
            "Lower --lr, or check the data for extreme values")
