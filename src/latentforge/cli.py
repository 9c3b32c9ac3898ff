"""The ``latentforge`` command: one verb per user task.

Errors a user causes print one ``error: …`` line on stderr and exit with code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import UserError

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


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"--hidden must be comma-separated layer sizes like 400 or 512,256; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"--hidden sizes must be positive integers, got {text!r}")
    return sizes


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


@app.command()
def train(
    model: str = typer.Argument("vae", help="Model name: vae (more to come: see `latentforge train --help`)."),
    data: str = typer.Option("digits", "--data", help="Data name (digits, mnist, fashion-mnist, breastmnist, "
                             "pneumoniamnist) or a path (.npy, .npz, .csv, .parquet, IDX, folder of images)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs to train (total, also with --resume). "
                                         "Default 10, or 50 on the small digits set."),
    batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
    latent_dim: int = typer.Option(20, "--latent-dim", help="Size of the latent code z."),
    hidden: str = typer.Option("400", "--hidden", help="Hidden layer sizes, comma-separated (encoder; the decoder mirrors it)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same weights."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<model>-<data>-<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    likelihood: str = typer.Option("auto", "--likelihood", help="Decoder likelihood: auto, bernoulli, cb (continuous "
                                   "Bernoulli) or gaussian. auto: bernoulli for values in [0, 1], else gaussian."),
    binarize: Optional[str] = typer.Option(None, "--binarize", help="dynamic or static: train and test on Bernoulli "
                                           "samples of grey levels (for likelihoods comparable with papers)."),
    beta: float = typer.Option(1.0, "--beta", help="Weight of the KL term (1 = the ELBO)."),
    eval_k: int = typer.Option(100, "--eval-k", help="Importance samples for the IWAE NLL in metrics.json (0: skip)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (auto picks CUDA when present)."),
    compile: str = typer.Option("auto", "--compile", help="torch.compile the loss: auto, on or off."),
) -> None:
    """Train a model on a data set; writes a run directory with weights, metrics, pictures and report.html."""
    from .run import train_run
    from .train import TrainConfig

    if epochs is None:
        epochs = 50 if data == "digits" else 10
    for name, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--latent-dim", latent_dim)):
        _positive(name, v)
    if eval_k < 0:
        raise UserError(f"--eval-k must be 0 or more, got {eval_k}")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, compile=compile,
                      binarize=binarize)
    kwargs = {"latent_dim": latent_dim, "hidden": _hidden(hidden), "likelihood": likelihood, "beta": beta}
    run_dir = train_run(model, data, cfg, model_kwargs=kwargs, out=out, resume=resume, eval_k=eval_k)
    _print_metrics(run_dir)
    typer.echo(f"run directory: {run_dir}")
    typer.echo(f"report: {run_dir / 'report.html'}")


def _print_metrics(run_dir: Path) -> None:
    import json

    m = json.loads((run_dir / "metrics.json").read_text())
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.get("test", {}).items() if isinstance(v, float))
    typer.echo(f"{m['model']} on {m['data']}, {m['epochs']} epochs in {m['train_seconds']:.1f}s: {shown}")


def _out_file(out: Path, allowed: tuple[str, ...]) -> Path:
    if out.suffix.lower() not in allowed:
        raise UserError(f"--out must end in {' or '.join(allowed)}, got {out.name!r}")
    if not out.parent.exists():
        raise UserError(f"{out.parent}: folder does not exist; create it first")
    return out


def _save_array_or_png(arr, out: Path) -> None:
    import numpy as np

    from .plots import save_samples

    if out.suffix.lower() == ".npy":
        tmp = out.with_name(f".{out.name}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, out)
    else:
        save_samples(arr.reshape(len(arr), -1, *arr.shape[-2:]) if arr.ndim == 4 else arr[:, None], out)


@app.command()
def sample(
    run: Path = typer.Argument(..., help="Run directory."),
    n: int = typer.Option(64, "-n", "--n", help="Number of samples."),
    label: Optional[int] = typer.Option(None, "--label", help="Class to sample (conditional models only)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible samples."),
    out: Path = typer.Option(..., "--out", help="Output file: .png (a grid) or .npy (the arrays)."),
) -> None:
    """Generate new samples from a trained model (no data needed)."""
    from .run import load_run

    _positive("-n", n)
    _out_file(out, (".png", ".npy"))
    model, _ = load_run(run)
    if not hasattr(model, "sample"):
        raise UserError(f"{run}: model {model.registry_name!r} cannot generate samples")
    if label is not None and not getattr(model, "uses_labels", False):
        raise UserError(f"--label needs a conditional model (cvae); {run} holds a {model.registry_name}")
    import torch

    with torch.no_grad():
        x = model.sample(n, seed=seed) if label is None else model.sample(n, label=label, seed=seed)
    _save_array_or_png(x.numpy(), out)
    typer.echo(f"wrote {n} samples to {out}")


@app.command()
def reconstruct(
    run: Path = typer.Argument(..., help="Run directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Data name or path (default: the run's test set)."),
    n: int = typer.Option(32, "-n", "--n", help="How many inputs to reconstruct (.png shows them above their reconstructions)."),
    out: Path = typer.Option(..., "--out", help="Output file: .png (inputs and reconstructions) or .npy (reconstructions)."),
) -> None:
    """Reconstruct inputs through the model (encode, then decode)."""
    import numpy as np
    import torch

    from .plots import save_reconstructions
    from .run import load_run, run_test_data

    _positive("-n", n)
    _out_file(out, (".png", ".npy"))
    model, config = load_run(run)
    if not hasattr(model, "reconstruct"):
        raise UserError(f"{run}: model {model.registry_name!r} does not reconstruct")
    ds = run_test_data(config, data)
    x = torch.from_numpy(ds.floats()[:n])
    with torch.no_grad():
        rec = model.reconstruct(x).numpy()
    if out.suffix.lower() == ".npy":
        _save_array_or_png(rec, out)
    else:
        if not ds.is_image:
            raise UserError(f"{ds.name} is not image data; write --out FILE.npy instead of a picture")
        save_reconstructions(x.numpy(), np.asarray(rec), out)
    typer.echo(f"wrote {len(x)} reconstructions to {out}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Data name or path (default: the run's test set)."),
    k: int = typer.Option(1000, "--k", help="Importance samples for the IWAE NLL (0: skip it)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json's shape as JSON on stdout."),
) -> None:
    """Evaluate a run on its test set (or --data): loss, ELBO, IWAE NLL, reconstruction metrics."""
    import json

    from .metrics import evaluate_model
    from .run import load_run, run_test_data, update_metrics

    if k < 0:
        raise UserError(f"--k must be 0 or more, got {k}")
    model, config = load_run(run)
    ds = run_test_data(config, data)
    test = evaluate_model(model, ds, k=k, progress=sys.stderr.isatty())
    if data is None or data == config["data"]:
        metrics = update_metrics(run, test)
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
    from .checkpoint import read_json
    from .report import write_report
    from .run import load_run, run_test_data, write_pictures

    model, config = load_run(run)
    if not all((run / f).exists() for f in ("samples.png", "curves.png")):
        history = []
        if (run / "checkpoint" / "state.json").exists():
            history = read_json(run / "checkpoint" / "state.json").get("history", [])
        write_pictures(run, model, run_test_data(config, None), history)
    typer.echo(f"wrote {write_report(run)}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors → one line on stderr, exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
