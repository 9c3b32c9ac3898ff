"""``latentforge`` verbs that use what a trained model learned: embed, cluster, plot, denoise, upscale.

:func:`register` adds them to the CLI's Typer app (``cli.py`` calls it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import out_file, positive, save_array_or_png  # noqa: F401
from .errors import UserError  # noqa: F401


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for command in COMMANDS:
        app.command()(command)


COMMANDS: list = []  # filled below, in the order `latentforge --help` lists them

RUN_ARG = typer.Argument(..., help="Run directory (or a save_pretrained folder).")
DATA_OPT = "Data name or path (default: the run's own data). A file is read whole, in its order."
SPLIT_OPT = "Of a data name (or the run's own data): test (default), train or all."
DEVICE_OPT = "cpu, cuda or cuda:N."


def _model_and_data(run: Path, data: Optional[str], split: Optional[str], device: str):
    from .run import load_run, use_data

    model, config = load_run(run, device=device)
    return model, config, use_data(config, data, split)


def embed(
    run: Path = RUN_ARG,
    data: Optional[str] = typer.Option(None, "--data", help=DATA_OPT),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_OPT),
    out: Path = typer.Option(..., "--out", help="Output file: .npy (the codes), .csv or .parquet (columns z0, z1, …)."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_OPT),
) -> None:
    """Latent codes (posterior means for VAEs) of every row of the data, a chunk at a time."""
    import sys

    from .tasks.represent import CODE_FILES, embed as embed_rows, write_codes

    out_file(out, CODE_FILES)
    model, _, ds = _model_and_data(run, data, split, device)
    z = embed_rows(model, ds, device=device, progress=sys.stderr.isatty())
    write_codes(z, out)
    typer.echo(f"wrote {len(z):,} codes of dimension {z.shape[1]} to {out}")


def cluster(
    run: Path = RUN_ARG,
    data: Optional[str] = typer.Option(None, "--data", help=DATA_OPT),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_OPT),
    k: int = typer.Option(..., "--k", help="Number of clusters."),
    method: str = typer.Option("kmeans", "--method", help="kmeans or gmm on the standardised codes, or umap-gmm "
                               "(UMAP to --umap-dim dimensions, then a Gaussian mixture; needs umap-learn)."),
    umap_dim: int = typer.Option(10, "--umap-dim", help="umap-gmm: dimensions of the UMAP map."),
    refine: bool = typer.Option(False, "--refine", help="Then self-train the encoder on its own clusters (IDEC; "
                                "--gamma 0 for DEC), starting from the clusters found."),
    refine_epochs: int = typer.Option(10, "--refine-epochs", help="--refine: epochs of self-training."),
    gamma: float = typer.Option(0.1, "--gamma", help="--refine: weight of the model's own loss (IDEC); 0 is DEC."),
    refine_lr: float = typer.Option(1e-3, "--refine-lr", help="--refine: Adam learning rate."),
    refine_tol: float = typer.Option(0.001, "--refine-tol", help="--refine: stop early once fewer than this share of "
                                     "rows change cluster in an epoch (DEC's rule; 0: run every epoch)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="--refine on images: train the encoder on randomly "
                                          "changed images, e.g. shift:2,rotate:10 (DEC-DA; targets from the images "
                                          "as they are)."),
    recluster: bool = typer.Option(False, "--recluster", help="--refine: then cluster the refined encoder's codes "
                                   "again with --method (on MNIST with DEC-DA and umap-gmm: +0.002 ACC)."),
    save: Optional[Path] = typer.Option(None, "--save", help="--refine: also save the refined model as a new run "
                                        "folder, which embed, cluster and plot take like any run."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV of assignments: index, cluster, confidence, label."),
    map_png: Optional[Path] = typer.Option(None, "--map", help="Also draw the codes in 2-D coloured by cluster (.png)."),
    json_out: bool = typer.Option(False, "--json", help="Print the scores as JSON on stdout."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_OPT),
) -> None:
    """Cluster the data by its latent codes; with labels, score the clusters (ACC, NMI, ARI)."""
    import json
    import sys

    import numpy as np

    from .metrics.representation import clustering_scores
    from .data.image_transforms import check_images, parse_image_augment
    from .tasks.represent import (REFINE_BATCH, Clustering, check_refine, check_request, check_save_dir, cluster_codes,
                                  embed as embed_rows, refine as refine_clusters, save_refined)

    check_request(k, method)
    positive("--umap-dim", umap_dim)
    check_refine(epochs=refine_epochs, gamma=gamma, lr=refine_lr, tol=refine_tol)
    changes = parse_image_augment(augment)
    if changes is not None and not refine:
        raise UserError("--augment changes the images the encoder is refined on; add --refine (or drop --augment)")
    if recluster and not refine:
        raise UserError("--recluster clusters the codes of the refined encoder; add --refine (or drop --recluster)")
    if save is not None:
        if not refine:
            raise UserError("--save keeps the refined model; add --refine (or drop --save)")
        check_save_dir(save, run, others=(out, map_png))
    if out is not None:
        out_file(out, (".csv",))
    if map_png is not None:
        out_file(map_png, (".png",))
    model, _, ds = _model_and_data(run, data, split, device)
    check_images(changes, ds)
    z = embed_rows(model, ds, device=device, progress=sys.stderr.isatty())
    found = cluster_codes(z, k, method=method, seed=seed, umap_dim=umap_dim)
    if refine:
        found = refine_clusters(model, ds, found, epochs=refine_epochs, gamma=gamma, lr=refine_lr, seed=seed,
                                device=device, codes=z, augment=augment, tol=refine_tol)
        if save is not None:
            save_refined(model, run, save, {"data": ds.name, "k": k, "method": found.method,
                                            "umap_dim": umap_dim if method == "umap-gmm" else None,
                                            "epochs": len(found.history), "gamma": gamma, "lr": refine_lr,
                                            "batch_size": REFINE_BATCH, "tol": refine_tol, "augment": augment, "seed": seed})
        if map_png is not None or recluster:  # the refined encoder's codes
            z = embed_rows(model, ds, device=device)
        if recluster:
            again = cluster_codes(z, k, method=method, seed=seed, umap_dim=umap_dim)
            found = Clustering(again.labels, again.confidence, f"{found.method}+{method}", found.history)
    labels = None if ds.y is None else np.asarray(ds.y)
    result = {"n": len(ds), "k": k, "method": found.method,
              "sizes": np.bincount(found.labels, minlength=k).tolist()}
    if labels is not None and np.issubdtype(labels.dtype, np.number):
        result.update(clustering_scores(labels, found.labels))
    if out is not None:
        _write_assignments(out, found, labels)
    if map_png is not None:
        from .plots import save_latent_map

        save_latent_map(z, found.labels, map_png, seed=seed, what="rows, coloured by cluster")
    if save is not None:
        result["saved"] = str(save)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    scores = ", ".join(f"{m.upper()} {result[m]:.4f}" for m in ("acc", "nmi", "ari") if m in result)
    typer.echo(f"{len(ds):,} rows in {k} clusters ({found.method}); sizes {result['sizes']}"
               + (f"; against the labels: {scores}" if scores else ""))
    for f in (out, map_png):
        if f is not None:
            typer.echo(f"wrote {f}")
    if save is not None:
        typer.echo(f"saved the refined model in {save} (use it as a run: latentforge embed {save} …)")


def _write_assignments(out: Path, found, labels) -> None:
    import numpy as np
    import pandas as pd

    from .io import atomic_path

    cols = {"index": np.arange(len(found.labels)), "cluster": found.labels}
    if found.confidence is not None:
        cols["confidence"] = np.round(found.confidence, 6)
    if labels is not None:
        cols["label"] = labels
    with atomic_path(out) as tmp:
        pd.DataFrame(cols).to_csv(tmp, index=False)


def denoise(
    run: Path = RUN_ARG,
    data: str = typer.Option(..., "--data", help="The noisy data: a path (read whole, in its order) or a data name."),
    out: Path = typer.Option(..., "--out", help="Output: .npy (the cleaned data, model units) or .png (noisy above "
                             "cleaned, the first -n)."),
    clean: Optional[str] = typer.Option(None, "--clean", help="The clean originals (a path, same rows): print PSNR "
                                        "and SSIM of the noisy and the cleaned data against them."),
    n: int = typer.Option(32, "-n", "--n", help=".png: how many to show."),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_OPT),
    device: str = typer.Option("cpu", "--device", help=DEVICE_OPT),
) -> None:
    """Clean noisy data with a denoising autoencoder (or any model that reconstructs)."""
    import sys

    from .plots import save_reconstructions
    from .tasks.represent import denoise as denoise_rows

    out_file(out, (".npy", ".png"))
    positive("-n", n)
    model, config, ds = _model_and_data(run, data, split, device)
    cleaned = denoise_rows(model, ds, device=device, progress=sys.stderr.isatty())
    if out.suffix.lower() == ".npy":
        save_array_or_png(cleaned, out)
    else:
        if not ds.is_image:
            raise UserError(f"{ds.name} is not image data; write --out FILE.npy instead of a picture")
        save_reconstructions(ds.head(n), cleaned[:n], out)
    typer.echo(f"wrote {len(cleaned):,} denoised samples to {out}")
    if clean is not None:
        _compare_to_clean(config, clean, ds, cleaned)


def _compare_to_clean(config: dict, clean: str, noisy, cleaned) -> None:
    from .metrics.reconstruction import psnr, ssim
    from .tasks.base import scoring_data

    ref = scoring_data(clean, config)
    if len(ref) != len(noisy):
        raise UserError(f"--clean has {len(ref):,} rows but --data has {len(noisy):,}; give the originals of the "
                        "same rows in the same order")
    x = ref.floats()
    parts = [("noisy", noisy.floats()), ("denoised", cleaned)]
    for name, arr in parts:
        line = f"{name}: PSNR {psnr(arr, x):.2f} dB"
        if noisy.is_image:
            line += f", SSIM {ssim(arr, x):.4f}"
        typer.echo(line)


PLOT_KINDS = ("latent-map", "traversals", "interpolations", "manifold")


def plot(
    run: Path = RUN_ARG,
    kind: str = typer.Argument(..., help=f"What to draw: {', '.join(PLOT_KINDS)}."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_OPT),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_OPT),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .png (default: RUN/<kind>.png, which the report "
                                       "shows)."),
    color: str = typer.Option("label", "--color", help="latent-map: colour by label or by cluster (k-means, --k)."),
    k: int = typer.Option(10, "--k", help="--color cluster: number of clusters."),
    projection: str = typer.Option("auto", "--projection", help="latent-map of codes wider than 2: auto, pca, "
                                   "umap or tsne."),
    n: int = typer.Option(2000, "-n", "--n", help="latent-map: at most this many rows (the first); interpolations: "
                          "pairs (the first 2n rows)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the projection and the clustering."),
) -> None:
    """Draw a picture of what the model learned: its latent map, traversals, interpolations or 2-D manifold."""
    import numpy as np
    import torch

    from . import plots
    from .models.base import Decoder, Likelihood
    from .tasks.represent import cluster_codes, embed as embed_rows

    if kind not in PLOT_KINDS:
        raise UserError(f"unknown picture {kind!r}; choose one of {', '.join(PLOT_KINDS)}")
    if color not in ("label", "cluster"):
        raise UserError(f"--color must be label or cluster, got {color!r}")
    if projection not in plots.PROJECTIONS:
        raise UserError(f"--projection must be one of {', '.join(plots.PROJECTIONS)}, got {projection!r}")
    positive("-n", n)
    out = out_file(out, (".png",)) if out is not None else Path(run) / f"{kind.replace('-', '_')}.png"
    model, _, ds = _model_and_data(run, data, split, "cpu")
    if kind != "latent-map" and (not ds.is_image or not isinstance(model, Decoder) or model.uses_labels):
        raise UserError(f"{kind} draws decoded images: it needs an unconditional model that decodes, on image data")
    with torch.no_grad():
        if kind == "latent-map":
            part = ds.subset(np.arange(min(n, len(ds))))
            z = embed_rows(model, part)
            if color == "cluster":
                labels, what = cluster_codes(z, k, seed=seed).labels, "rows, coloured by k-means cluster"
            else:
                labels, what = (None if part.y is None else np.asarray(part.y)), "rows"
            plots.save_latent_map(z, labels, out, label_names=part.label_names if color == "label" else None,
                                  seed=seed, projection=projection, what=what)
        elif kind == "traversals":
            if not isinstance(model, Likelihood):
                raise UserError("traversals rank latent dimensions by their KL: they need a VAE")
            from .tasks.generate import write_traversals

            write_traversals(model, *model.encode(torch.from_numpy(ds.head(min(len(ds), 1000)))), out)
        elif kind == "interpolations":
            pairs = min(n, len(ds) // 2)
            if pairs < 1:
                raise UserError("interpolations need at least 2 rows")
            x = torch.from_numpy(ds.head(2 * pairs))
            plots.save_interpolations(model, x[:pairs], x[pairs:], out)
        else:
            z = embed_rows(model, ds.subset(np.arange(min(len(ds), 5000))))
            if z.shape[1] != 2:
                raise UserError(f"a manifold grid needs a 2-D latent space; this model's has {z.shape[1]} "
                                "(train with --latent-dim 2)")
            plots.save_manifold(model, out, codes=None if isinstance(model, Likelihood) else z)
    typer.echo(f"wrote {out}")


COMMANDS += [embed, cluster, plot, denoise]

# upscale command: kept at the end of this file


def upscale(
    run: Path = typer.Argument(..., help="Run directory of an sr-ae model."),
    data: str = typer.Option(..., "--data", help="Low-resolution images: a path (.npy, .npz, IDX, folder of images; "
                             "read whole) or a data name (its test set; with --from-high). Floats in [0, 1] or "
                             "integer grey levels 0-255."),
    out: Path = typer.Option(..., "--out", help="Output file: .npy (the upscaled images) or .png (inputs above, "
                             "upscaled images below)."),
    n: Optional[int] = typer.Option(None, "-n", "--n", help="Upscale the first N images (default: all for .npy, "
                                    "32 for .png)."),
    from_high: bool = typer.Option(False, "--from-high", help="The data are high-resolution images: average each "
                                   "scale x scale block first, as in training (for demos and checks)."),
) -> None:
    """Upscale low-resolution images with a trained super-resolution model (sr-ae)."""
    from .tasks.superres import upscale_run

    if n is not None:
        positive("-n", n)
    out_file(out, (".png", ".npy"))
    if n is None and out.suffix.lower() == ".png":
        n = 32
    written = upscale_run(run, data, out, n=n, from_high=from_high)
    typer.echo(f"wrote {written} upscaled images to {out}")


COMMANDS.append(upscale)
