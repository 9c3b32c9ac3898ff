"""The ``latentforge`` command: one verb per user task.

Errors a user causes print one ``error: …`` line on stderr and exit with code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import UserError
from .cli_common import (ARGV, PRECISION_HELP, out_file as _out_file, positive as _positive,
                         save_array_or_png as _save_array_or_png)
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


from .cli_train import register as _register_train  # noqa: E402

_register_train(app)  # train: first in --help


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


from .cli_tasks import register as _register_tasks  # noqa: E402

_register_tasks(app)  # score, recommend, topics


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
                warnings.simplefilter("always", UserWarning)  # ours say what to change: each one, every time
                warnings.showwarning = _show_warning
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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning: …`` line on stderr (not Python's file:line and source echo)."""
    print(f"warning: {message}", file=sys.stderr)


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
