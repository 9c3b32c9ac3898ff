"""The ``latentforge`` command: one verb per user task.

Errors a user causes print one ``error: …`` line on stderr and exit with code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import UserError
from .cli_common import out_file as _out_file, positive as _positive, save_array_or_png as _save_array_or_png
from .settings import SettingError

app = typer.Typer(
    name="latentforge",
    help="Deep unsupervised learning on PyTorch: train autoencoders, VAEs and GANs, then use them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEBUG = {"on": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latentforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    DEBUG["on"] = debug


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


PRECISION_HELP = ("fp32, bf16 or auto: bf16 autocast of the networks (weights, optimiser state and losses stay fp32). "
                  "auto: bf16 for conv models on a CPU with AMX or AVX-512 BF16 or a CUDA GPU, else fp32.")


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
                      binarize=binarize, patience=patience, stream=stream, precision=precision)
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


def _register_train() -> None:
    """``train`` with one flag per model setting, taken from the registered models' settings dataclasses."""
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


_register_train()


def _print_metrics(run_dir: Path) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.get("test", {}).items() if isinstance(v, float))
    typer.echo(f"{m['model']} on {m['data']}, {m['epochs']} epochs in {m['train_seconds']:.1f}s: {shown}")


MAX_SAMPLES = 1_000_000


@app.command()
def sample(
    run: Path = typer.Argument(..., help="Run directory."),
    n: int = typer.Option(64, "-n", "--n", help="Number of samples."),
    label: Optional[int] = typer.Option(None, "--label", help="Class to sample (conditional models only)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible samples."),
    out: Path = typer.Option(..., "--out", help="Output file: .png (a grid) or .npy (the arrays)."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Generate new samples from a trained model (no data needed)."""
    from .models.base import Sampler
    from .run import load_run

    _positive("-n", n)
    if n > MAX_SAMPLES:
        raise UserError(f"-n {n} is more than {MAX_SAMPLES:,} samples at once; ask for fewer")
    if seed is not None and not 0 <= seed < 2**63:
        raise UserError(f"--seed must be in [0, 2**63), got {seed}")
    _out_file(out, (".png", ".npy"))
    model, _ = load_run(run, precision=precision)
    if not isinstance(model, Sampler):
        raise UserError(f"{run}: model {model.registry_name!r} cannot generate samples")
    if label is not None and not model.uses_labels:
        raise UserError(f"--label needs a conditional model (cvae, cdcgan); {run} holds a {model.registry_name}")
    if model.uses_labels and (label is None or not 0 <= label < model.n_classes):
        raise UserError(f"{run} holds a conditional model: give --label L with L in 0..{model.n_classes - 1}")
    if out.suffix.lower() == ".png" and len(model.config["input_shape"]) != 3:
        raise UserError(f"{run}: the model draws table rows, not images; write --out FILE.npy")
    import torch

    from .precision import autocast

    with torch.no_grad(), autocast(model):
        x = model.sample(n, seed=seed) if label is None else model.sample(n, label=label, seed=seed)
    _save_array_or_png(x.float().numpy(), out)
    typer.echo(f"wrote {n} samples to {out}")


@app.command()
def reconstruct(
    run: Path = typer.Argument(..., help="Run directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Data name (its test set) or path (its first rows, in "
                                       "order); default: the run's test set."),
    n: int = typer.Option(32, "-n", "--n", help="How many inputs to reconstruct (.png shows them above their reconstructions)."),
    out: Path = typer.Option(..., "--out", help="Output file: .png (inputs and reconstructions) or .npy (reconstructions)."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Reconstruct inputs through the model (encode, then decode)."""
    import numpy as np
    import torch

    from .plots import save_reconstructions
    from .run import load_run, use_data

    _positive("-n", n)
    _out_file(out, (".png", ".npy"))
    from .models.base import Reconstructor

    from .precision import autocast

    model, config = load_run(run, precision=precision)
    if not isinstance(model, Reconstructor):
        raise UserError(f"{run}: model {model.registry_name!r} does not reconstruct")
    ds = use_data(config, data)  # a file: its own first rows; a data name: its test split
    x = torch.from_numpy(ds.head(n))
    with torch.no_grad(), autocast(model):
        rec = model.reconstruct(x).float().numpy()
    if out.suffix.lower() == ".npy":
        _save_array_or_png(rec, out)
    else:
        if not ds.is_image:
            raise UserError(f"{ds.name} is not image data; write --out FILE.npy instead of a picture")
        save_reconstructions(x.numpy(), np.asarray(rec), out)
    typer.echo(f"wrote {len(x)} reconstructions to {out}")


MAX_K = 100_000
IWAE_N = 1000


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Data name or path (default: the run's test set)."),
    k: int = typer.Option(1000, "--k", help=f"Importance samples for the IWAE NLL (0: skip it; at most {MAX_K:,})."),
    iwae_n: Optional[int] = typer.Option(IWAE_N, "--iwae-n", help="IWAE NLL on the first N test samples: the default "
                                         "keeps a conv MNIST run's evaluation near 45 s (bf16) / 70 s (fp32) on 2 CPU "
                                         "cores; metrics.json states N and the standard error. Give the test set's "
                                         "size for all."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json's shape as JSON on stdout."),
    features: str = typer.Option("mnist", "--features", help="Feature space of FID/KID/P/R: mnist (the shipped "
                                 "net, 28×28 grey), inception (your local inception-2015-12-05.pt) or a TorchScript file."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Evaluate a run on its test set (or --data): loss, ELBO, IWAE NLL, reconstruction, sample quality.
    The run's metrics.json is updated (with the settings used, under "evaluation") only for its own test set."""
    from .metrics.evaluate import quality_skip_reason
    from .metrics.extractors import resolve_features
    from .models import model_class
    from .run import load_run, update_metrics
    from .tasks import get_task, run_splits

    if not 0 <= k <= MAX_K:
        raise UserError(f"--k must be between 0 and {MAX_K:,}, got {k}")
    if iwae_n is not None and iwae_n < 1:
        raise UserError(f"--iwae-n must be at least 1, got {iwae_n}")
    extractor = resolve_features(features)
    model, config = load_run(run, precision=precision)
    splits = run_splits(config, data)
    from .run import check_compatible

    check_compatible(config, splits.test)
    ds = splits.test
    if features != "mnist" and (reason := quality_skip_reason(model, ds, extractor)):
        raise UserError(f"--features {features}: no sample quality for this run, {reason}")
    task = get_task(model_class(config["model"]).task)
    own = data is None or data == config.get("data")
    if own and (run / "metrics.json").exists():
        from .io import read_json_object

        read_json_object(run / "metrics.json")  # a damaged file fails now, not after the evaluation
    print(f"evaluating {config['model']} on {len(ds):,} test samples…", file=sys.stderr)
    test = task.evaluate(model, ds, splits, k=k, device="cpu", max_iwae=iwae_n, progress=sys.stderr.isatty(),
                         features=extractor)
    if own:
        metrics = update_metrics(run, test, {"iwae_k": k, "iwae_n": test.get("iwae_n"), "features": features,
                                             "precision": model.precision})
    else:
        metrics = {"model": config["model"], "data": data, "test": test}
    if json_out:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(f"{config['model']} on {metrics.get('data')} ({len(ds)} test samples)")
        for key, v in test.items():
            typer.echo(f"  {key:<10} {v:.6g}" if isinstance(v, float) else f"  {key:<10} {v}")


@app.command()
def report(run: Path = typer.Argument(..., help="Run directory.")) -> None:
    """(Re)write the run's report.html (and any picture that is missing)."""
    from .io import read_json_object
    from .models import model_class
    from .report import write_report
    from .run import load_run, run_test_data
    from .tasks import get_task

    model, config = load_run(run)
    if "data" not in config:
        raise UserError(f"{run} was saved from Python (save_pretrained): it has no metrics or training history to "
                        "report; train it with `latentforge train` for a report, or use evaluate --data")
    task = get_task(model_class(config["model"]).task)
    if any(not (run / f.file).exists() for f in task.figures if f.file in ("samples.png", "curves.png")):
        history = []
        if (run / "checkpoint" / "state.json").exists():
            history = read_json_object(run / "checkpoint" / "state.json").get("history", [])
        task.write_pictures(run, model, run_test_data(config, None), history)
    typer.echo(f"wrote {write_report(run)}")


@app.command()
def score(
    run: Path = typer.Argument(..., help="Run directory (deep-svdd, ae, dae, vae, …)."),
    data: str = typer.Option(..., "--data", help="Data to score: a path (.csv, .npz, .npy, images) or a data name (its test set)."),
    out: Path = typer.Option(..., "--out", help="Output CSV: index, score (higher = more anomalous), is_anomaly (0/1)."),
    threshold: Optional[str] = typer.Option(None, "--threshold", help="quantile:Q of the training scores, or fpr:R "
                                            "(flags a share R of held-out training data). Default fpr:0.01."),
    contamination: Optional[float] = typer.Option(None, "--contamination", help="Expected share of anomalies in (0, 0.5] "
                                                  "(PyOD's rule: flags that share of the training data) instead of --threshold."),
    score_kind: str = typer.Option("auto", "--score", help="auto, recon, elbo, iwae (VAEs) or distance (deep-svdd)."),
    k: int = typer.Option(16, "--k", help="Posterior samples for elbo / importance samples for iwae scores."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Anomaly scores for new data, with a threshold that needs no guessed contamination rate."""
    from .tasks.anomaly import score_run

    _positive("--k", k)
    r = score_run(run, data, out, threshold=threshold, contamination=contamination, score=score_kind, k=k,
                  precision=precision)
    typer.echo(f"scored {r['n']} samples ({r['score']} score): {r['flagged']} flagged as anomalies "
               f"(score > {r['threshold']:.6g}, rule {r['rule'] or 'fpr:0.01'}); wrote {out}")
    if "auroc" in r:
        typer.echo(f"labels found: AUROC {r['auroc']:.4f}, average precision {r['average_precision']:.4f}")


@app.command()
def recommend(
    run: Path = typer.Argument(..., help="Run directory of mult-vae / mult-dae (or a save_pretrained folder)."),
    user: Optional[str] = typer.Option(None, "--user", help="Id of a user in the training data."),
    history: Optional[Path] = typer.Option(None, "--history", help="CSV of a new user's items (an 'item' column, "
                                           "optional 'rating'); folded in, no retraining."),
    top: int = typer.Option(20, "--top", help="How many items to recommend."),
    item_col: str = typer.Option("item", "--item-col", help="Item column of the --history file (and of --names, which may also use 'item')."),
    names: Optional[Path] = typer.Option(None, "--names", help="CSV of item names (item + name columns) to show; "
                                         "movielens-100k runs have the titles already."),
    json_out: bool = typer.Option(False, "--json", help="Print [{rank, item, score, name}, …] as JSON (name: null if unknown)."),
) -> None:
    """Top items for a known user (--user) or a new user's history (--history), never items they already have."""
    from .tasks.recommend import Recommender, read_history, read_item_names_csv, render_ranked

    _positive("--top", top)
    if (user is None) == (history is None):
        raise UserError("give exactly one of --user ID (a known user) or --history FILE.csv (a new user's items)")
    rec = Recommender.load(run)
    item_names = rec.item_names if names is None else read_item_names_csv(names, item_col=item_col, known=set(rec.index))
    if user is not None:
        ranked, who = rec.for_user(user, top=top), f"user {user}"
    else:
        items, ratings = read_history(history, item_col=item_col, known=set(rec.index))
        ranked, who = rec.for_history(items, ratings=ratings, top=top, where=str(history)), f"{history.name} ({len(items)} items)"
    typer.echo(render_ranked(ranked, who, item_names, as_json=json_out))


@app.command()
def topics(
    run: Path = typer.Argument(..., help="Run directory of prodlda / nvdm (or a save_pretrained folder)."),
    top: int = typer.Option(10, "--top", help="Words per topic."),
    json_out: bool = typer.Option(False, "--json", help="Print {reference, topics: [{topic, words, npmi}]} as JSON."),
) -> None:
    """Each topic's most characteristic words, with their NPMI coherence on the run's test documents."""
    from .run import load_run
    from .tasks import run_splits
    from .tasks.topics import render_topics, topic_table

    _positive("--top", top)
    model, config = load_run(run)
    if not hasattr(model, "topic_word"):
        raise UserError(f"{run}: model {model.registry_name!r} is not a topic model; train prodlda or nvdm")
    if top > model.n_words:
        raise UserError(f"--top {top} is more than the model's {model.n_words} words; ask for fewer")
    reference = None
    if "data" in config:  # a save_pretrained folder names no data: words without NPMI
        reference = run_splits(config).test
    table = topic_table(model, reference, top=top)
    typer.echo(json.dumps(table) if json_out else render_topics(table))


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories."),
    json_out: bool = typer.Option(False, "--json", help="Print {runs, metrics, direction, best, warnings} as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (best values in bold)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the runs' samples (or reconstructions) side "
                                       "by side to FILE.png."),
) -> None:
    """Compare runs side by side: one row per test metric, the best run per metric marked."""
    from .compare import compare_runs, render_json, render_markdown, render_table, save_comparison_picture

    if json_out and markdown:
        raise UserError("--json and --markdown cannot be used together; give one of them")
    if out is not None:
        _out_file(out, (".png",))
    result = compare_runs(runs)
    typer.echo(render_json(result) if json_out else render_markdown(result) if markdown else render_table(result))
    if out is not None:
        save_comparison_picture(runs, out)
        typer.echo(f"wrote {out}", err=json_out)  # stdout stays pure JSON


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory (or a save_pretrained folder)."),
    fmt: str = typer.Option("onnx", "--format", help="Output format: onnx."),
    part: Optional[str] = typer.Option(None, "--part", help="encoder (x → code), decoder (z → x), generator "
                                       "(z ~ N(0, I) → x) or scorer (x → anomaly score); default: the first the model has."),
    out: Path = typer.Option(..., "--out", help="Output file, FILE.onnx (one self-contained file, batch axis free)."),
) -> None:
    """Export a part of a trained model to ONNX, checked against PyTorch with onnxruntime when it is installed."""
    from .export import export_run

    _out_file(out, (".onnx",))
    r = export_run(run, out, part=part, fmt=fmt)
    ins = ", ".join(f"{n} {r['inputs'][n]}" for n in r["inputs"])
    typer.echo(f"wrote the {r['part']} ({ins} → {r['output']}) to {out}")
    if r["max_abs_diff"] is not None:
        typer.echo(f"checked with onnxruntime: max abs difference from PyTorch {r['max_abs_diff']:.3g}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors → one line on stderr, exit code 2; Ctrl-C → exit 130."""
    import warnings

    from . import distributed

    ARGV[:] = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in ARGV
    try:
        distributed.init()  # under torchrun: join the other processes
        with warnings.catch_warnings():
            if not debug:  # numpy's RuntimeWarnings must not print above the one error line
                warnings.simplefilter("ignore", RuntimeWarning)
            code = app(args=argv, standalone_mode=False)  # Typer returns an Exit's code (130 for Ctrl-C)
    except SettingError as e:
        if debug:
            raise UserError(_flag_message(e)) from e
        print(f"error: {_flag_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if debug:
            raise
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return code if isinstance(code, int) else 0


ARGV: list[str] = []  # the arguments main() was called with (``--nproc`` relaunches them under torchrun)


def _flag_message(e: SettingError) -> str:
    """A setting's complaint in the command line's words (``--latent-dim must be …``)."""
    from .cli_options import flag_name, model_flags
    from .train import TrainConfig

    if e.param in model_flags() or e.param in TrainConfig.names():
        return str(e.renamed(flag_name(e.param)))
    return str(e)


from .cli_use import register as _register_use  # noqa: E402

_register_use(app)  # embed, cluster, plot, denoise, upscale

from .cli_augment import register as _register_augment  # noqa: E402

_register_augment(app)  # augment

from .cli_classify import register as _register_classify  # noqa: E402

_register_classify(app)  # classify

if __name__ == "__main__":
    sys.exit(main())
