"""Reconstruction quality and samples of the autoencoder-family models on MNIST.

Trains each model with the settings below through the same path as ``latentforge train``
(run.train_run), then prints one row per model: test reconstruction MSE, PSNR, SSIM, the test
loss, the sample quality (FID, precision, recall in the shipped MNIST feature space) and the wall time; copies each run's sample grid to docs/images/zoo-<model>.png.

Usage: python benchmarks/bench_zoo.py [--epochs 5] [--models ae,dae,vae,vae-mlp,beta-vae,cvae,iwae,vqvae]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from latentforge.run import train_run
from latentforge.train import TrainConfig

SETTINGS = {  # name: (registered model, model flags) — documented in docs/results.md
    "ae": ("ae", {}),
    "dae": ("dae", {"noise": "mask:0.3"}),
    "vae": ("vae", {}),  # arch auto: conv on 28x28
    "vae-mlp": ("vae", {"arch": "mlp"}),  # the seed's 784-400-20 VAE
    "beta-vae": ("beta-vae", {"latent_dim": 10, "beta": 4.0}),
    "cvae": ("cvae", {}),  # conditioned on the labels: samples.png has one row per digit
    "iwae": ("iwae", {"k": 5}),
    "vqvae": ("vqvae", {"n_codes": 128}),
}

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", default=",".join(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    DOCS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, flags = SETTINGS[name]
            t0 = time.perf_counter()
            run = train_run(model, "mnist", TrainConfig(epochs=args.epochs, progress=False), model_kwargs=flags,
                            out=Path(tmp) / name, eval_k=0)
            wall = time.perf_counter() - t0
            m = json.loads((run / "metrics.json").read_text())
            t = m["test"]
            rows.append((name, model, flags, t.get("recon_mse"), t.get("psnr"), t.get("ssim"), t.get("loss"),
                         t.get("fid"), t.get("precision"), t.get("recall"), m["train_seconds"], wall))
            for pic in ("samples.png", "reconstructions.png"):
                if (run / pic).exists():
                    shutil.copy(run / pic, DOCS / f"zoo-{name}-{pic}")
    print(f"MNIST, {args.epochs} epochs, batch 128, Adam 1e-3, seed 0, {args.threads} threads")
    print("| model | flags | recon MSE | PSNR dB | SSIM | test loss | FID | precision | recall | train s | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    num = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for name, model, flags, mse, psnr, ssim, loss, fid, prec, rec, tr, wall in rows:
        f = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items()) or "—"
        print(f"| {name} | `{f}` | {mse:.4f} | {psnr:.2f} | {ssim:.3f} | {loss:.2f} | {num(fid, '.1f')} | "
              f"{num(prec, '.3f')} | {num(rec, '.3f')} | {tr:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
