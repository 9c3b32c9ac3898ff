"""``latentforge classify``: the semi-supervised route with few labels (M1, :mod:`latentforge.tasks.classify`).

:func:`register` adds it to the CLI's Typer app (``cli.py`` calls it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_common import out_file, positive
from .errors import UserError


def register(app: typer.Typer) -> None:
    """Add this module's command to ``app``."""
    app.command()(classify)


def classify(
    run: Path = typer.Argument(..., help="Run directory of an unconditional encoder (vae, beta-vae, iwae, ae, dae) "
                               "trained without labels on all the training images."),
    data: Optional[str] = typer.Option(None, "--data", help="Labelled data: a name (breastmnist, pneumoniamnist, "
                                       "mnist, …) or a path (.npz with MedMNIST's train/val/test arrays or x and y, "
                                       "a table with a label column, …). Default: the run's own data."),
    labels_per_class: Optional[int] = typer.Option(None, "--labels-per-class", help="Labelled training rows per "
                                                   "class, a stratified draw; the other rows' labels go unused. "
                                                   "Default: every training label."),
    label_seed: int = typer.Option(0, "--label-seed", help="Seed of the labelled rows' draw."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV of the test split's predictions: index, label, "
                                       "prediction, p0, p1, …"),
    json_out: bool = typer.Option(False, "--json", help="Print {run, data, labels_per_class, label_seed, labelled, "
                                  "C, validation, test: {acc, auc}} as JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (for encoding)."),
) -> None:
    """Classify with few labels: logistic regression on a run's codes of a labelled budget (Kingma et al. 2014's M1),
    C chosen on the validation split; prints test ACC and AUC (binary: ROC AUC; more classes: one-vs-rest, macro).
    A run trained with --binarize encodes one fixed Bernoulli sample of each split's images, as it was trained."""
    from .run import check_compatible, load_run
    from .tasks.classify import binarized_as_trained, check_encoder, classify as classify_run, labelled_splits

    if labels_per_class is not None:
        positive("--labels-per-class", labels_per_class)
    if out is not None:
        out_file(out, (".csv",))
    model, config = load_run(run, device=device)
    check_encoder(model)
    spec = data or config.get("data")
    if not spec:
        raise UserError(f"{run} does not name its data (saved from Python); give --data NAME|PATH")
    splits = labelled_splits(spec)
    for ds in (splits.train, splits.test, splits.validation):
        if ds is not None:
            check_compatible(config, ds)
    trained = config.get("train") if isinstance(config.get("train"), dict) else {}
    splits = binarized_as_trained(splits, trained.get("binarize"), int(trained.get("seed") or 0))
    result = classify_run(model, splits, labels_per_class=labels_per_class, label_seed=label_seed, device=device)
    if out is not None:
        _write_predictions(out, splits.test.y, result.proba)
    summary = {"run": str(run), "data": spec, "labels_per_class": labels_per_class, "label_seed": label_seed,
               "labelled": int(len(result.labelled)), "C": result.C, "validation": result.validation,
               "test": result.test}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    val = "no validation split: C by cross-validation on the labelled rows" if result.validation is None else \
        f"validation AUC {result.validation['auc']:.4f}"
    typer.echo(f"{len(result.labelled):,} labelled training rows, logistic regression C={result.C:g} ({val})")
    typer.echo(f"test ({len(splits.test):,} rows): ACC {result.test['acc']:.4f}, AUC {result.test['auc']:.4f}")
    if out is not None:
        typer.echo(f"wrote {out}")


def _write_predictions(out: Path, y, proba) -> None:
    import numpy as np
    import pandas as pd

    from .io import atomic_path

    cols = {"index": np.arange(len(proba)), "label": np.asarray(y).reshape(-1), "prediction": proba.argmax(1),
            **{f"p{k}": np.round(proba[:, k], 6) for k in range(proba.shape[1])}}
    with atomic_path(out) as tmp:
        pd.DataFrame(cols).to_csv(tmp, index=False)
