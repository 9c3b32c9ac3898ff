"""``latentforge train``: one flag per training option and per model setting (from the models' settings
dataclasses), then :func:`latentforge.run.train_run`.

:func:`register` adds the command to the CLI's Typer app (``cli.py`` calls it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_common import ARGV, PRECISION_HELP, positive as _positive
from .errors import UserError


def _model_help() -> str:
    from .models import MODELS

    by_task: dict[str, list[str]] = {}
    for name, cls in MODELS.items():
        by_task.setdefault(cls.task, []).append(name)
    return "Model name, by task: " + "; ".join(f"{t}: {', '.join(ns)}" for t, ns in by_task.items()) + ". Default vae."


def _epochs_help() -> str:
    from .models import MODELS

    own = ", ".join(f"{n} {c.default_epochs}" for n, c in MODELS.items() if c.default_epochs)
    return f"Epochs to train (total, also with --resume). Default 10, 50 on the small digits set; {own}."


def train(
    model: Optional[str] = typer.Argument(None, help="(see below)", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help="Data name (digits, mnist, fashion-mnist, breastmnist, "
                                       "pneumoniamnist, movielens-100k, 20newsgroups) or a path (.npy, .npz, .csv, "
                                       ".parquet, IDX, folder of images; for topic models a folder of .txt files, a "
                                       "CSV with a text column or a bag-of-words .npz with vocab.txt). Default digits."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="(see below)"),
    batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (GANs: the generator's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same weights."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<model>-<data>-<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    binarize: Optional[str] = typer.Option(None, "--binarize", help="dynamic or static: train and test on Bernoulli "
                                           "samples of grey levels (for likelihoods comparable with papers)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Images: change each training image at random, e.g. "
                                          "shift:2,rotate:10 (pixels, degrees; also scale:0.1 and flip): codes that "
                                          "do not move with small shifts, for clustering and small data sets. The "
                                          "model learns the changed images as data: a GAN's samples come out "
                                          "changed like them."),
    eval_k: int = typer.Option(100, "--eval-k", help="Importance samples for the IWAE NLL in metrics.json (0: skip)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto picks CUDA when present)."),
    compile: str = typer.Option("auto", "--compile", help="torch.compile the loss: auto, on or off."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Train on N processes (torchrun; gloo on CPU, NCCL on "
                                        "GPUs): each global batch is split between them. Several machines: "
                                        "torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT -m latentforge.cli "
                                        "train …"),
    stream: str = typer.Option("auto", "--stream", help="on, off or auto: read the data from disk a block at a time "
                               "instead of into memory (.npy, folders of .npy/.npz shards, .parquet). auto: shard "
                               "folders, and files larger than a quarter of the memory."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: stop after this many epochs "
                                           "without improvement of the value the task watches (default: off)."),
    min_rating: Optional[float] = typer.Option(None, "--min-rating", help="Interaction data: ratings at or above this "
                                               "are positives (default 4; data without ratings: every interaction)."),
    user_col: Optional[str] = typer.Option(None, "--user-col", help="Interaction data: user column (default user)."),
    item_col: Optional[str] = typer.Option(None, "--item-col", help="Interaction data: item column (default item)."),
    rating_col: Optional[str] = typer.Option(None, "--rating-col", help="Interaction data: rating column (default rating)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text data: the CSV/Parquet column holding "
                                              "the documents (default text)."),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Text data: how the files are encoded (default "
                                           "utf-8; e.g. latin-1 for 20news-bydate)."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="Text data: keep this many most frequent "
                                             "words (default 5000)."),
    min_df: Optional[float] = typer.Option(None, "--min-df", help="Text data: drop words in fewer documents than "
                                           "this (a count if ≥ 1, else a share; default 2)."),
    max_df: Optional[float] = typer.Option(None, "--max-df", help="Text data: drop words in more documents than this "
                                           "(a share if ≤ 1, else a count; default 0.5)."),
    labels_per_class: Optional[int] = typer.Option(None, "--labels-per-class", help="Label budget for conditional "
                                                   "models (cvae, cdcgan): train on N labelled rows per class drawn "
                                                   "from the training split (test and validation splits untouched)."),
    label_seed: Optional[int] = typer.Option(None, "--label-seed", help="Seed of the --labels-per-class draw "
                                             "(default 0; separate from --seed)."),
    **settings,
) -> None:
    """Train a model on a data set; writes a run directory with weights, metrics, pictures and report.html.

    Model settings (--latent-dim, --hidden, …) apply to the models that declare them; each flag's help lists
    every model's default. A flag a model does not take is an error.
    """
    from . import distributed
    from .cli_options import parse_flags
    from .models import model_class

    if nproc is not None and not distributed.launched():
        _positive("--nproc", nproc)
        raise typer.Exit(_torchrun(nproc))
    from .run import DEFAULT_DATA, DEFAULT_MODEL, train_run
    from .train import TrainConfig

    ctx = settings.pop("ctx", None)
    given = {n for n in (ctx.params if ctx is not None else {})
             if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"}
    if epochs is None:
        name, data_name = model or DEFAULT_MODEL, data or DEFAULT_DATA
        if resume and out is not None and (out / "config.json").exists():
            from .checkpoint import read_config

            saved = read_config(out)
            name, data_name = saved["model"], saved.get("data", data_name)
        cls = model_class(name)
        epochs = cls.default_epochs or (50 if data_name == "digits" else 10)
    if eval_k < 0:
        raise UserError(f"--eval-k must be 0 or more, got {eval_k}")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, compile=compile,
                      binarize=binarize, patience=patience, stream=stream, precision=precision, augment=augment)
    data_options = {"min_rating": min_rating, "user_col": user_col, "item_col": item_col, "rating_col": rating_col,
                    "text_column": text_column, "encoding": encoding, "vocab_size": vocab_size, "min_df": min_df,
                    "max_df": max_df, **_label_budget(labels_per_class, label_seed)}
    run_dir = train_run(model, data, cfg, model_kwargs=parse_flags(settings), out=out, resume=resume, eval_k=eval_k,
                        data_options=data_options, train_flags=given & set(TrainConfig.names()))
    if distributed.world().main:
        _print_metrics(run_dir)
        typer.echo(f"run directory: {run_dir}")
        typer.echo(f"report: {run_dir / 'report.html'}")


def _label_budget(per_class: int | None, seed: int | None) -> dict:
    """``--labels-per-class``/``--label-seed`` as data options (both saved in config.json; the seed 0 if not given)."""
    if per_class is None:
        if seed is not None:
            raise UserError("--label-seed draws the rows of a label budget; give --labels-per-class N too")
        return {}
    _positive("--labels-per-class", per_class)
    return {"labels_per_class": per_class, "label_seed": 0 if seed is None else seed}


def _torchrun(nproc: int) -> int:
    """Run this same ``train`` command on ``nproc`` processes under torchrun (this machine); its exit code."""
    import subprocess

    argv = list(ARGV)
    i = argv.index("--nproc") if "--nproc" in argv else next(j for j, a in enumerate(argv) if a.startswith("--nproc="))
    del argv[i : i + (1 if "=" in argv[i] else 2)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "latentforge.cli", *argv]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``, with one flag per model setting, taken from the registered models' settings
    dataclasses."""
    import inspect

    from .cli_options import flag_parameters

    sig = inspect.signature(train)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    params[0] = params[0].replace(default=typer.Argument(None, help=_model_help(), show_default=False))
    params[2] = params[2].replace(default=typer.Option(None, "--epochs", help=_epochs_help()))
    extra = flag_parameters()

    def command(ctx: typer.Context, **values):
        known = {p.name for p in params}
        return train(**{k: v for k, v in values.items() if k in known}, ctx=ctx,
                     **{k: v for k, v in values.items() if k not in known})

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    command.__signature__ = sig.replace(parameters=[context, *params, *extra])
    command.__annotations__ = {p.name: p.annotation for p in [context, *params, *extra]}
    command.__doc__ = train.__doc__
    command.__name__ = "train"
    app.command(name="train")(command)


def _print_metrics(run_dir: Path) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.get("test", {}).items() if isinstance(v, float))
    typer.echo(f"{m['model']} on {m['data']}, {m['epochs']} epochs in {m['train_seconds']:.1f}s: {shown}")
