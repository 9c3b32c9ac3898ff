"""Same results in bf16 as in fp32: each conv family trained both ways on MNIST, same seeds.

* conv VAE: test −ELBO (evaluated in fp32, one fixed posterior draw per image) after ``--vae-epochs`` epochs,
  per seed; tolerance 0.5 nats (issue: "within 0.5 nats, 3 seeds"). Also the IWAE NLL (k = 1,000) of one fp32-
  trained model on the same 1,000 test images and importance draws, computed in fp32 and in bf16: if they differ
  by more than 0.1 nat, ``evaluate`` keeps the NLL in fp32.
* conv AE: test reconstruction PSNR; tolerance 0.1 dB.
* DCGAN: FID in the shipped MNIST feature space after ``--gan-epochs`` epochs; tolerance: the fp32 seed spread.
* Deep SVDD (one-class, conv): AUROC of digit 0 (normal, trained on) against the other test digits; tolerance 0.005.
* VQ-VAE (``--families vqvae``): test loss, scored in fp32; tolerance: the fp32 seed spread.

Training runs with ``--threads`` (default 1: results do not depend on speed, so this can run beside other work).

Usage: python benchmarks/bench_precision_quality.py [--seeds 3] [--vae-epochs 10] [--gan-epochs 5]
       [--svdd-epochs 10] [--families vae,ae,dcgan,svdd] [--subset N]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import time
import warnings

import numpy as np
import torch
from machine import cpu_model  # benchmarks/machine.py

from latentforge.data import from_array, load_data
from latentforge.metrics.evaluate import sample_quality_of
from latentforge.models import build_model
from latentforge.precision import autocast
from latentforge.train import TrainConfig, evaluate_loss, fit

PRECISIONS = ("fp32", "bf16")


def train(name: str, data, epochs: int, seed: int, precision: str, **settings):
    model = build_model(name, input_shape=[1, 28, 28], **{"arch": "conv", **settings})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit(model, data, None, TrainConfig(epochs=epochs, seed=seed, precision=precision, progress=False))
    return model, res


def trained_elbo(train_ds, test_ds, epochs: int, seed: int, precision: str, **settings):
    """(test −ELBO, model) of a VAE trained in ``precision``; scored in fp32 with one fixed posterior draw per image,
    whatever it was trained in."""
    model, _ = train("vae", train_ds, epochs, seed, precision, **settings)
    model.precision = "fp32"
    torch.manual_seed(1234)
    return evaluate_loss(model, test_ds)["loss"], model


def vae_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    nll_model = None
    for seed in range(args.seeds):
        (a, fp32_model), (b, _) = (trained_elbo(train_ds, test_ds, args.vae_epochs, seed, p) for p in PRECISIONS)
        if nll_model is None:  # the first fp32 model serves the NLL comparison
            nll_model = fp32_model
        yield ("conv VAE test −ELBO (nats)", seed, a, b)
    x = torch.from_numpy(test_ds.x[:1000].astype(np.float32) / 255)
    noise = torch.randn(1000, nll_model.latent_dim, generator=torch.Generator().manual_seed(0))
    nll = {}
    for p in PRECISIONS:
        nll_model.precision = p
        with torch.no_grad(), autocast(nll_model):
            nll[p] = float(torch.cat([nll_model.iwae_nll(b, k=1000, noise=noise) for b in x.split(100)]).mean())
    yield ("conv VAE IWAE NLL k=1000, 1,000 images, one model", "-", nll["fp32"], nll["bf16"])


def mlp_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    """The seed's MLP VAE (784-400-20): fp32 trains with the hand-fused step, bf16 with autocast."""
    for seed in range(args.seeds):
        (a, _), (b, _) = (trained_elbo(train_ds, test_ds, args.vae_epochs, seed, p, arch="mlp") for p in PRECISIONS)
        yield ("MLP VAE (seed) test −ELBO (nats)", seed, a, b)


def ae_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    x = torch.from_numpy(test_ds.x.astype(np.float32) / 255)
    for seed in range(args.seeds):
        vals = {}
        for p in PRECISIONS:
            model, _ = train("ae", train_ds, args.vae_epochs, seed, p)
            with torch.no_grad(), autocast(model):
                rec = torch.cat([model.reconstruct(b).float() for b in x.split(1000)])
            mse = (rec - x).flatten(1).square().mean(1).clamp_min(1e-10)
            vals[p] = float((10 * torch.log10(1 / mse)).mean())
        yield ("conv AE test PSNR (dB)", seed, vals["fp32"], vals["bf16"])


def dcgan_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    for seed in range(args.seeds):
        vals = {}
        for p in PRECISIONS:
            model, _ = train("dcgan", train_ds, args.gan_epochs, seed, p)
            model.precision = p
            with autocast(model):
                vals[p] = sample_quality_of(model, test_ds, n=5000, seed=seed)["fid"]
        yield ("DCGAN FID (MNIST features, 5k)", seed, vals["fp32"], vals["bf16"])


def svdd_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    from sklearn.metrics import roc_auc_score

    normal = from_array(train_ds.x[np.asarray(train_ds.y) == 0])
    y_out = (np.asarray(test_ds.y) != 0).astype(int)
    x = torch.from_numpy(test_ds.x.astype(np.float32) / 255)
    for seed in range(args.seeds):
        vals = {}
        for p in PRECISIONS:
            model, _ = train("deep-svdd", normal, args.svdd_epochs, seed, p)
            with torch.no_grad(), autocast(model):
                scores = torch.cat([model.anomaly_score(b).float() for b in x.split(1000)]).numpy()
            vals[p] = float(roc_auc_score(y_out, scores))
        yield ("Deep SVDD one-class AUROC (digit 0)", seed, vals["fp32"], vals["bf16"])


def vqvae_rows(train_ds, test_ds, args) -> Iterator[tuple]:
    """VQ-VAE: test loss (reconstruction + codebook terms + the code prior's NLL, as ``evaluate_loss`` gives it),
    scored in fp32 whatever it was trained in."""
    for seed in range(args.seeds):
        vals = {}
        for p in PRECISIONS:
            model = build_model("vqvae", input_shape=[1, 28, 28])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fit(model, train_ds, None, TrainConfig(epochs=args.vae_epochs, seed=seed, precision=p, progress=False))
            model.precision = "fp32"
            torch.manual_seed(1234)
            vals[p] = evaluate_loss(model, test_ds)["loss"]
        yield ("VQ-VAE test loss", seed, vals["fp32"], vals["bf16"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--vae-epochs", type=int, default=10)
    ap.add_argument("--gan-epochs", type=int, default=5)
    ap.add_argument("--svdd-epochs", type=int, default=10)
    ap.add_argument("--families", default="vae,mlp,ae,dcgan,svdd")
    ap.add_argument("--subset", type=int, default=None, help="train on the first N training images (quick runs)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_data("mnist")
    train_ds, test_ds = splits.train, splits.test
    if args.subset:
        train_ds = train_ds.subset(np.arange(args.subset))
    runs = {"vae": vae_rows, "mlp": mlp_rows, "ae": ae_rows, "dcgan": dcgan_rows, "svdd": svdd_rows,
            "vqvae": vqvae_rows}
    print(f"CPU: {cpu_model()}; {args.threads} threads; MNIST, {len(train_ds):,} training images; seeds {args.seeds}")
    print(f"{'measure':<52}{'seed':>5}{'fp32':>10}{'bf16':>10}{'bf16−fp32':>11}")
    for fam in args.families.split(","):
        t0 = time.perf_counter()
        rows = []
        for what, seed, a, b in runs[fam](train_ds, test_ds, args):
            rows.append((what, seed, a, b))
            print(f"{what:<52}{seed!s:>5}{a:>10.3f}{b:>10.3f}{b - a:>+11.3f}", flush=True)
        per_seed = [r for r in rows if r[1] != "-"]
        if len(per_seed) > 1:
            d = np.array([r[3] - r[2] for r in per_seed])
            spread = np.array([r[2] for r in per_seed]).std(ddof=1)
            print(f"{'  mean difference ± std over seeds; fp32 seed std':<52}{'':>5}{d.mean():>+10.3f}{d.std(ddof=1):>10.3f}"
                  f"{spread:>11.3f}")
        print(f"  ({fam}: {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
