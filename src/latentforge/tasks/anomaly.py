"""The anomaly task: detectors (Deep SVDD) trained on unlabeled data, scored with a threshold that needs no
guessed contamination rate. Scores and thresholds are in :mod:`.scoring` (shared with the generate task,
whose models also score rows of a table)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..data import Splits
from ..train_records import TrainResult
from .base import RunOptions, register_task
from .generate import GenerateTask, hold_out_rows
from .scoring import (ANOMALY_FIGURES, ANOMALY_METRICS, SCORES, SCORES_FILE, anomaly_scores, binary_labels,  # noqa: F401
                      check_detector_input, check_score, default_score, detection_metrics, parse_threshold,
                      reference_rows, score_run, scoring_data, store_reference_scores, threshold_from,
                      write_run_anomaly)


class AnomalyTask(GenerateTask):
    """Detectors (Deep SVDD): a slice of the training data is held out from fitting; it picks the kept epoch
    (validation loss) and sets the threshold, so the test split's flagged share is an honest estimate."""

    name = "anomaly"
    metrics = ANOMALY_METRICS
    figures = ANOMALY_FIGURES
    streams = False  # Deep SVDD's pretraining and centres read the training data whole
    data_options = ()  # label budgets are for the generate task's conditional models

    def model_settings(self, model_cls: type, splits: Splits, given: dict, run: RunOptions) -> dict:
        return dict(given)  # a detector has no likelihood or classes to derive from the data

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        return hold_out_rows(super().load(data, options, run), seed=run.seed)  # images too, not only tables

    def check_training_data(self, splits: Splits) -> None:
        check_detector_input(splits.train)

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        out = write_run_anomaly(run_dir, model, splits)  # every detector run, tables and images alike
        self.write_pictures(run_dir, model, splits.test, result.history, monitor=self.monitor(splits))
        return out


register_task(AnomalyTask())
