"""``latentforge augment``: labelled synthetic samples from a conditional run, for scarce labelled data.

:func:`register` adds the verb to the CLI's Typer app (``cli.py`` calls it); the work is in
:mod:`latentforge.tasks.augment`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_common import out_file


def register(app: typer.Typer) -> None:
    """Add ``augment`` to ``app``."""
    app.command()(augment)


def augment(
    run: Path = typer.Argument(..., help="Run directory of a conditional model (cvae, cdcgan)."),
    per_class: int = typer.Option(..., "--per-class", help="Samples to write for every class (exactly this many)."),
    out: Path = typer.Option(..., "--out", help="Output .npz: 'images' (the data's layout and units: uint8 (n,H,W) "
                             "for MedMNIST-style grey images) and 'labels' (int64, (n,1))."),
    filter: Optional[str] = typer.Option(None, "--filter",  # noqa: A002
                                         help="realism: drop samples outside the real class's k-NN manifold in "
                                         "the evaluation feature space; confidence: drop samples a logistic "
                                         "regression on the real labelled rows assigns to another class. Samples "
                                         "are drawn until N per class pass."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same samples."),
    data: Optional[str] = typer.Option(None, "--data", help="Labelled real data the filters compare with (default: "
                                       "the run's training split, its labelled rows under --labels-per-class)."),
    features: str = typer.Option("mnist", "--features", help="Feature space of the filters: mnist (the shipped net, "
                                 "28×28 grey), inception or a TorchScript file."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", help="confidence filter: also drop samples whose "
                                         "class probability is below this."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Write N labelled synthetic samples per class from a conditional model, optionally filtered."""
    from .tasks.augment import augment as augment_run, check_request, summary

    check_request(per_class, filter, min_confidence=min_confidence)
    out_file(out, (".npz",))
    result = augment_run(run, per_class=per_class, out=out, filter=filter, seed=seed, data=data, features=features,
                         min_confidence=min_confidence, device=device, progress=sys.stderr.isatty())
    typer.echo(f"wrote {len(result.labels):,} samples ({per_class} per class, {result.images.dtype} "
               f"{list(result.images.shape[1:])}) to {out}")
    typer.echo(summary(result))
