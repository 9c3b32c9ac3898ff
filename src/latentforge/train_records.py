"""What a training run watches and leaves: the :class:`Monitor` a task chooses, the weights of the best epoch
(:class:`KeepBest`), the :class:`TrainResult` that :func:`latentforge.train.fit` returns, and ``history.csv``.
Tasks and estimators read these without the training loop itself."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .io import atomic_path


@dataclass
class Monitor:
    """A value to watch each epoch (a history key; ``val_loss`` is the loss on validation data): the trainer
    keeps the weights of its best epoch and stops early by it. ``compute(model)`` gives it (and other
    values to log) when the trainer cannot: e.g. a recommender's NDCG on validation users."""

    key: str
    higher_is_better: bool
    compute: Callable[[nn.Module], dict[str, float]] | None = None


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0
    interrupted: bool = False
    precision: str = "fp32"  # what the networks computed in (--precision resolved for this model and device)
    best_epoch: int | None = None  # set when the model has a ``monitor``: the epoch whose weights it ends with
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict, repr=False)  # fit(optimizers=) goes on

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


class KeepBest:
    """The weights of the epoch where the monitored value was best."""

    def __init__(self, monitor: Monitor | None, history: list[dict], state: dict[str, torch.Tensor] | None) -> None:
        self.key = monitor.key if monitor is not None else None
        self.state, self.epoch, self.score = state, None, -math.inf
        self.sign = 1.0 if monitor is None or monitor.higher_is_better else -1.0
        key = self.key
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


def write_history(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
