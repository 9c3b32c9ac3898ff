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


def _hidden(text: str, flag: str = "--hidden") -> list[int]:
    try:
        sizes = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated sizes like 400 or 512,256; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"{flag} sizes must be positive integers, got {text!r}")
    return sizes


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


@app.command()
def train(
    model: str = typer.Argument("vae", help="Model name: vae, ae, dae, beta-vae, cvae, iwae (and the others "
                                "registered: an unknown name lists them)."),
    data: str = typer.Option("digits", "--data", help="Data name (digits, mnist, fashion-mnist, breastmnist, "
                             "pneumoniamnist) or a path (.npy, .npz, .csv, .parquet, IDX, folder of images)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs to train (total, also with --resume). "
                                         "Default 10, 50 on the small digits set, 200 for mult-vae, 150 for mult-dae."),
    batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="Size of the latent code z (default 20)."),
    hidden: Optional[str] = typer.Option(None, "--hidden", help="Hidden layer sizes, comma-separated (encoder; the "
                                         "decoder mirrors it). Default 400."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same weights."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<model>-<data>-<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    likelihood: Optional[str] = typer.Option(None, "--likelihood", help="Decoder likelihood: auto, bernoulli, cb (continuous "
                                   "Bernoulli) or gaussian. auto: bernoulli for values in [0, 1], else gaussian."),
    binarize: Optional[str] = typer.Option(None, "--binarize", help="dynamic or static: train and test on Bernoulli "
                                           "samples of grey levels (for likelihoods comparable with papers)."),
    beta: Optional[float] = typer.Option(None, "--beta", help="Weight of the KL term (default 1 = the ELBO; beta-vae: 4)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Network: mlp, conv or auto (conv for images of at "
                                       "least 28x28, else mlp)."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Conv channels per stride-2 stage, e.g. 32,64."),
    noise: Optional[str] = typer.Option(None, "--noise", help="dae corruption: gaussian:0.3, mask:0.5 or saltpepper:0.1."),
    k: Optional[int] = typer.Option(None, "--k", help="iwae: importance samples in the training bound (default 5)."),
    kl_warmup: Optional[int] = typer.Option(None, "--kl-warmup", help="beta-vae: steps to ramp the KL weight from 0 to beta."),
    capacity: Optional[float] = typer.Option(None, "--capacity", help="beta-vae: target KL capacity in nats "
                                             "(Burgess et al. 2018); grows linearly over --capacity-steps."),
    capacity_steps: Optional[int] = typer.Option(None, "--capacity-steps", help="beta-vae: steps to reach --capacity."),
    n_codes: Optional[int] = typer.Option(None, "--n-codes", help="vqvae: codebook size (default 128)."),
    code_dim: Optional[int] = typer.Option(None, "--code-dim", help="vqvae: size of each codeword (default 32)."),
    commitment: Optional[float] = typer.Option(None, "--commitment", help="vqvae: commitment cost (default 0.25)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="deep-svdd: one-class (default) or soft-boundary."),
    nu: Optional[float] = typer.Option(None, "--nu", help="deep-svdd soft-boundary: share allowed outside (default 0.1)."),
    pretrain: Optional[int] = typer.Option(None, "--pretrain", help="deep-svdd: epochs of autoencoder pretraining (0)."),
    n_nets: Optional[int] = typer.Option(None, "--n-nets", help="deep-svdd: networks averaged (default 5; 1: the paper's)."),
    scaling: Optional[str] = typer.Option(None, "--scaling", help="Tables: standard (mean/std) or robust (median/IQR, asinh)."),
    trim: Optional[float] = typer.Option(None, "--trim", help="AE/VAE family: leave this share of worst-fit rows out of each batch."),
    eval_k: int = typer.Option(100, "--eval-k", help="Importance samples for the IWAE NLL in metrics.json (0: skip)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (auto picks CUDA when present)."),
    compile: str = typer.Option("auto", "--compile", help="torch.compile the loss: auto, on or off."),
    d_steps: Optional[int] = typer.Option(None, "--d-steps", help="dcgan, wgan-gp: discriminator (critic) steps per "
                                          "generator step (default 1; wgan-gp 5). --lr is the generator's rate."),
    lr_d: Optional[float] = typer.Option(None, "--lr-d", help="dcgan, wgan-gp: discriminator learning rate (default: --lr)."),
    spectral_norm: Optional[bool] = typer.Option(None, "--spectral-norm/--no-spectral-norm", help="dcgan, wgan-gp: "
                                                 "spectral normalisation of the discriminator (default off)."),
    ema: Optional[float] = typer.Option(None, "--ema", help="dcgan, wgan-gp: decay of the generator's weight average "
                                        "that samples are drawn from (default 0.999; 0: no averaging)."),
    gp_weight: Optional[float] = typer.Option(None, "--gp-weight", help="wgan-gp: gradient penalty weight λ (default 10)."),
    beta_cap: Optional[float] = typer.Option(None, "--beta-cap", help="mult-vae: the KL weight is annealed from 0 up "
                                             "to this (default 0.2); the epoch best on validation users is kept."),
    anneal_steps: Optional[int] = typer.Option(None, "--anneal-steps", help="mult-vae: updates over which the KL weight "
                                               "rises to --beta-cap (0: from the start)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="mult-vae, mult-dae: input dropout (default 0.5)."),
    l2: Optional[float] = typer.Option(None, "--l2", help="mult-vae, mult-dae: L2 penalty on the weights."),
    min_rating: Optional[float] = typer.Option(None, "--min-rating", help="Interaction data: ratings at or above this "
                                               "are positives (default 4; data without ratings: every interaction)."),
    user_col: Optional[str] = typer.Option(None, "--user-col", help="Interaction data: user column (default user)."),
    item_col: Optional[str] = typer.Option(None, "--item-col", help="Interaction data: item column (default item)."),
    rating_col: Optional[str] = typer.Option(None, "--rating-col", help="Interaction data: rating column (default rating)."),
) -> None:
    """Train a model on a data set; writes a run directory with weights, metrics, pictures and report.html."""
    from .run import train_run
    from .train import TrainConfig

    if epochs is None:
        from .models import MODELS

        epochs = getattr(MODELS.get(model), "default_epochs", None) or (50 if data == "digits" else 10)
    for name, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--latent-dim", latent_dim)):
        if v is not None:
            _positive(name, v)
    if eval_k < 0:
        raise UserError(f"--eval-k must be 0 or more, got {eval_k}")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, compile=compile,
                      binarize=binarize)
    # model hyperparameters: only those the user set; run.model_arguments rejects any the model does not take
    kwargs = {"latent_dim": latent_dim, "hidden": _hidden(hidden) if hidden is not None else None,
              "likelihood": likelihood, "beta": beta, "arch": arch,
              "channels": _hidden(channels, "--channels") if channels is not None else None,
              "noise": noise, "k": k, "kl_warmup": kl_warmup, "capacity": capacity, "capacity_steps": capacity_steps,
              "d_steps": d_steps, "lr_d": lr_d, "spectral_norm": spectral_norm, "ema": ema, "gp_weight": gp_weight,
              "beta_cap": beta_cap, "anneal_steps": anneal_steps, "dropout": dropout, "l2": l2,
              "objective": objective, "nu": nu, "pretrain": pretrain, "n_nets": n_nets,
              "scaling": scaling, "trim": trim}
    data_options = {"min_rating": min_rating, "user_col": user_col, "item_col": item_col, "rating_col": rating_col}
    run_dir = train_run(model, data, cfg, model_kwargs=kwargs, out=out, resume=resume, eval_k=eval_k,
                        data_options=data_options)
    _print_metrics(run_dir)
    typer.echo(f"run directory: {run_dir}")
    typer.echo(f"report: {run_dir / 'report.html'}")

    if json.loads((run_dir / "metrics.json").read_text()).get("interrupted"):
        raise typer.Exit(130)  # Ctrl-C: everything is saved, but the run is not complete


def _print_metrics(run_dir: Path) -> None:
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
    iwae_n: Optional[int] = typer.Option(None, "--iwae-n", help="IWAE NLL on the first N test samples only."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json's shape as JSON on stdout."),
    features: str = typer.Option("mnist", "--features", help="Feature space of FID/KID/P/R: mnist (the shipped "
                                 "net, 28×28 grey), inception (your local inception-2015-12-05.pt) or a TorchScript file."),
) -> None:
    """Evaluate a run on its test set (or --data): loss, ELBO, IWAE NLL, reconstruction, sample quality."""
    from .metrics import evaluate_model
    from .metrics.evaluate import quality_skip_reason
    from .metrics.extractors import resolve_features
    from .run import load_run, run_test_data, update_metrics

    if k < 0:
        raise UserError(f"--k must be 0 or more, got {k}")
    if iwae_n is not None and iwae_n < 1:
        raise UserError(f"--iwae-n must be at least 1, got {iwae_n}")
    extractor = resolve_features(features)
    model, config = load_run(run)
    ds = run_test_data(config, data)
    if features != "mnist" and (reason := quality_skip_reason(model, ds, extractor)):
        raise UserError(f"--features {features}: no sample quality for this run, {reason}")
    test = evaluate_model(model, ds, k=k, max_iwae=iwae_n, progress=sys.stderr.isatty(), features=extractor)
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
) -> None:
    """Anomaly scores for new data, with a threshold that needs no guessed contamination rate."""
    from .tasks.anomaly import score_run

    _positive("--k", k)
    r = score_run(run, data, out, threshold=threshold, contamination=contamination, score=score_kind, k=k)
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
