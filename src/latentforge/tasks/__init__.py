"""What users do with a trained model; one module per task, each registered by name (:mod:`.base`
is the contract). Importing this package registers every task."""

from __future__ import annotations

from . import anomaly, generate, recommend, superres, topics  # noqa: F401  (registers them)
from .base import (TASKS, Figure, Metric, RunOptions, Task, all_figures, get_task, metric_direction, metric_help,
                   metric_table, run_splits)

__all__ = ["TASKS", "Figure", "Metric", "RunOptions", "Task", "all_figures", "get_task", "metric_direction",
           "metric_help", "metric_table", "run_splits"]
