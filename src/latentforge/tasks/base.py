"""The task contract: what a run is *for* (generate, detect anomalies, recommend, …).

A task loads and splits its data (typed: :class:`~latentforge.data.Splits`, with a validation split and
``extras`` of its own type), derives model settings from the data, names the value the trainer watches
(:class:`~latentforge.train_records.Monitor`), evaluates, writes its artifacts and report sections, and declares its
metrics with help text and direction (one table, read by ``report.py`` and ``compare.py``). Each model
names its task (``@register("vae", VAEConfig, task="generate")``); ``run.py`` looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from ..data import NAMES, Dataset, Splits, binarize_static, load_data
from ..data.files import read_path
from ..errors import UserError
from ..models import model_class
from ..train_records import Monitor, TrainResult


@dataclass(frozen=True)
class Metric:
    """One metric of ``metrics.json``'s ``test`` block: what it means and which way is better
    (``"higher"``, ``"lower"``, or None for values that describe a run rather than rank it)."""

    help: str
    direction: str | None = None


@dataclass(frozen=True)
class Figure:
    """A picture a run may hold, as the report shows it."""

    file: str
    heading: str
    caption: str


@dataclass
class RunOptions:
    """How a run reads its data and is evaluated (from ``latentforge train``'s flags; saved in config.json)."""

    binarize: str | None = None
    seed: int = 0
    eval_k: int = 100
    device: str = "cpu"
    stream: str = "auto"  # on, off or auto: whether a .npy, shard folder or Parquet file stays on disk (data.stream)
    vocabulary: list[str] | None = None  # a trained text model's words: new text is counted over them


class Task:
    """Base of every task; the defaults suit a model trained on samples that evaluation compares it with."""

    name: ClassVar[str] = ""
    metrics: ClassVar[dict[str, Metric]] = {}
    figures: ClassVar[tuple[Figure, ...]] = ()
    data_options: ClassVar[tuple[str, ...]] = ()  # reader options the task accepts (e.g. min_rating)
    data_example: ClassVar[str] = ""  # the data those options are for, as error messages name it
    streams: ClassVar[bool] = False  # reads data larger than memory from disk (every step of it streams)

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        """The data's train/test (and validation) splits, as the model will see them."""
        self.check_options(data, options)
        splits = load_data(data, stream=self.stream_mode(run))
        if splits.train.is_sparse:
            raise UserError(f"{data} is sparse count data; train a recommender (mult-vae, mult-dae) on interactions, "
                            "a topic model (prodlda, nvdm) on a bag of words")
        return prepare_splits(splits, run.binarize, run.seed)

    def read_rows(self, path: str, config: dict, run: RunOptions) -> Dataset:
        """Every row of a file or folder a trained run is used on (``embed``, ``cluster``, ``denoise``), whole and
        in its order, checked against what the model was trained on. Default: read by extension."""
        return scoring_data(path, config)

    def stream_mode(self, run: RunOptions) -> str:
        """``run.stream`` where the task streams; else off (and ``on`` is refused)."""
        if self.streams:
            return run.stream
        if run.stream == "on":
            raise UserError(f"--stream on: the {self.name} task reads its data into memory; streaming from disk is for "
                            "the generate task's models (vae, ae, dae, vqvae, dcgan, …); drop --stream on")
        return "off"

    def check_options(self, data: str, options: dict) -> None:
        """Refuse reader options that belong to another task's data, naming the task that takes them."""
        unknown = [k for k, v in options.items() if v is not None and k not in self.data_options]
        if unknown:
            takers = [t for t in TASKS.values() if set(unknown) <= set(t.data_options)]
            where = (f"the {' and '.join(t.name for t in takers)} task's data (e.g. "
                     f"{'; '.join(t.data_example for t in takers)})") if takers else "no task's data"
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in unknown)} apply to {where}, not to the "
                            f"{self.name} task's; drop them for {data}")

    def model_settings(self, model_cls: type, splits: Splits, given: dict, run: RunOptions) -> dict:
        """The model's settings: what the user gave plus what the data decides. Default: as given."""
        return dict(given)

    def check_training_data(self, splits: Splits) -> None:
        """Refuse data the task cannot learn from (a clear error). Default: accept."""

    def monitor(self, splits: Splits) -> Monitor | None:
        """What the trainer watches on held-out data (None: nothing, every epoch is kept)."""
        return None

    def evaluate(self, model: nn.Module, test: Dataset, splits: Splits | None, *, k: int, device,
                 max_iwae: int | None = None, progress: bool = False, features=None) -> dict:
        """The ``test`` block of metrics.json."""
        raise NotImplementedError

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        """Files the run keeps beside the weights (pictures, scores, lists); returns metrics to add."""
        return {}

    def write_pictures(self, run_dir: Path, model: nn.Module, test: Dataset, history: list[dict]) -> None:
        """(Re)draw the run's pictures from its model, test set and history (``latentforge report``)."""

    def epoch_end(self, run_dir: Path, epoch: int, model: nn.Module) -> None:
        """After each epoch of a run (after the model's own ``on_epoch_end``): per-epoch files. Default: none."""

    def report_sections(self, run_dir: Path) -> list[str]:
        """HTML blocks the report shows after the figures (default: none)."""
        return []


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def run_options(config: dict) -> RunOptions:
    """How a saved run read its data (config.json's ``train`` block)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    seed, binarize = train.get("seed", 0), train.get("binarize")
    if isinstance(seed, bool) or not isinstance(seed, int) or binarize not in (None, "dynamic", "static"):
        raise UserError(f"config.json: its training settings are damaged (seed {seed!r}, binarize {binarize!r}); "
                        "restore the file or train again")
    words = (config.get("model_config") or {}).get("vocabulary")
    if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) for w in words)):
        raise UserError("config.json: the model's vocabulary is damaged; restore the file or train again")
    stream = train.get("stream", "auto")
    if stream not in ("auto", "on", "off"):
        raise UserError(f"config.json: its training settings are damaged (stream {stream!r}); restore the file or "
                        "train again")
    return RunOptions(binarize=binarize, seed=seed, stream=stream, vocabulary=words or None)


def run_splits(config: dict, data: str | None = None) -> Splits:
    """The splits a run was trained and evaluated on (or ``data``'s, read the same way)."""
    if "data" not in config and data is None:
        raise UserError("this model was saved from Python (save_pretrained) and does not name its data; give "
                        "--data NAME|PATH")
    if data is None and (not isinstance(config["data"], str) or not config["data"]):
        raise UserError(f"config.json: its 'data' entry is damaged ({config['data']!r}); restore it, or give --data")
    task = get_task(model_class(config["model"]).task)
    options = config.get("data_options") or {}
    if not isinstance(options, dict):
        raise UserError(f"config.json: its 'data_options' entry is damaged ({options!r}); restore the file")
    return task.load(data or config["data"], options, run_options(config))


def prepare_splits(splits: Splits, binarize: str | None, seed: int) -> Splits:
    """Apply ``--binarize``: static fixes one Bernoulli sample of every set; dynamic resamples
    training batches (in the batcher) and fixes one sample of the test set."""
    if binarize is None:
        return splits
    if splits.train.is_sparse:
        raise UserError("--binarize is for grey-level images; interaction data is binarised with --min-rating")
    if splits.train.streamed:
        raise UserError(f"--binarize makes a binarised copy of the data in memory, and {splits.name} is streamed from "
                        "disk; drop --binarize, or read the data into memory with --stream off")
    if not splits.train.in_unit_interval:
        raise UserError(f"--binarize needs grey levels in [0, 1]; {splits.name} ranges over {splits.train.value_range}")
    train = binarize_static(splits.train, seed=seed) if binarize == "static" else splits.train
    return Splits(train=train, test=binarize_static(splits.test, seed=seed + 1), name=splits.name,
                  validation=splits.validation, extras=splits.extras)


def n_classes(ds: Dataset) -> int:
    """Number of classes for conditional models: from the data's labels (integers 0..K−1)."""
    if ds.y is None:
        raise UserError(f"{ds.name} has no labels; a conditional model needs them (labels in 'y', a 'label' column, "
                        "or image sub-folders)")
    y = np.asarray(ds.y)
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{ds.name}: labels must be integers 0..K-1 for a conditional model") from None
    if not np.all(np.isfinite(yf)) or not np.all(yf == np.round(yf)):
        bad = yf[~(np.isfinite(yf) & (yf == np.round(yf)))][0]
        raise UserError(f"{ds.name}: labels must be whole numbers 0..K-1 for a conditional model, found {bad!r}")
    if yf.min() < 0:
        raise UserError(f"{ds.name}: labels must be integers 0..K-1, found {int(yf.min())}")
    if yf.max() >= 100000:
        raise UserError(f"{ds.name}: labels must be integers 0..K-1 with K at most 100000, found {yf.max():.0f}")
    return int(yf.max()) + 1


def metric_table() -> dict[str, Metric]:
    """Every metric any task declares (the first declaration of a name wins)."""
    table: dict[str, Metric] = {}
    for task in TASKS.values():
        for name, m in task.metrics.items():
            table.setdefault(name, m)
    return table


RANKING_PREFIXES = ("recall@", "ndcg@", "precision@", "hit@", "map@")


def metric_direction(name: str) -> str | None:
    """"higher" or "lower" for a metric that ranks runs, None for one that describes a run."""
    m = metric_table().get(name)
    if m is not None:
        return m.direction
    return "higher" if name.startswith(RANKING_PREFIXES) else None


def metric_help(name: str) -> str:
    m = metric_table().get(name)
    return m.help if m is not None else ""


def all_figures() -> list[Figure]:
    seen, out = set(), []
    for task in TASKS.values():
        for f in task.figures:
            if f.file not in seen:
                seen.add(f.file)
                out.append(f)
    return out


def named_or_file(spec: str) -> Dataset:
    """A data name's test split, or every row of a file or folder (read by its extension, in its order)."""
    if spec in NAMES:
        return load_data(spec).test
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder")
    return read_path(path)


def scoring_data(spec: str, config: dict):
    """The data to score: a data name (its test split) or a whole file, checked against the training columns."""
    ds = named_or_file(spec)
    info = config.get("data_info", {})
    want = config.get("model_config", {}).get("input_shape") or info.get("sample_shape")
    if want is not None and list(ds.sample_shape) != list(want):
        what = "columns" if len(want) == 1 else "values per sample"
        raise UserError(f"{ds.name}: {ds.sample_shape[0] if len(want) == 1 else list(ds.sample_shape)} {what}, but the "
                        f"model was trained on {want[0] if len(want) == 1 else want}; give data with the training columns")
    trained, given = info.get("columns"), ds.meta.get("columns")
    if trained and given and list(trained) != list(given):
        missing = [c for c in trained if c not in given]
        extra = [c for c in given if c not in trained]
        detail = (f"missing {missing[:5]}, unexpected {extra[:5]}" if missing or extra
                  else "the same names in another order")
        raise UserError(f"{ds.name}: its columns differ from the training data's ({detail}); "
                        "give the columns the model was trained on, in the same order")
    return ds
