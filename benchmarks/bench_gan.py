"""DCGAN and WGAN-GP on MNIST with settings that fit a 2-core CPU in a few minutes each.

Trains each model through ``latentforge.run.train_run`` (what ``latentforge train`` runs), copies its
sample grid and fixed-noise progress strip to ``docs/images/`` and prints one markdown table: wall
time, steps, the test discriminator loss, and the sample diversity (mean pairwise distance of 512
samples per √pixel) next to the same measure on 512 test images. Diversity is a collapse check, not a
quality score (FID comes later).

Usage: python benchmarks/bench_gan.py [--epochs 2] [--threads 2] [--only dcgan|wgan-gp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from latentforge.data import load_data
from latentforge.run import load_run, train_run
from latentforge.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

# model → (TrainConfig fields, model flags): the settings docs/results.md states
SETTINGS = {
    "dcgan": ({"batch_size": 64, "lr": 1e-3}, {"channels": [32, 64], "latent_dim": 64, "ema": 0.999}),
    "wgan-gp": ({"batch_size": 64, "lr": 1e-3}, {"channels": [32, 64], "latent_dim": 64, "ema": 0.999,
                                                 "d_steps": 5, "gp_weight": 10.0}),
}


def diversity(x: torch.Tensor) -> float:
    flat = x.flatten(1)
    return float(torch.pdist(flat).mean() / flat.shape[1] ** 0.5)


def command(model: str, epochs: int) -> str:
    cfg, flags = SETTINGS[model]
    parts = [f"latentforge train {model} --data mnist --epochs {epochs} --batch-size {cfg['batch_size']} --lr {cfg['lr']:g}"]
    for k, v in flags.items():
        parts.append(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(SETTINGS))
    ap.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.images.mkdir(parents=True, exist_ok=True)
    real = torch.from_numpy(load_data("mnist").test.floats()[:512])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in [args.only] if args.only else SETTINGS:
            cfg, flags = SETTINGS[model]
            out = Path(tmp) / model
            t0 = time.perf_counter()
            train_run(model, "mnist", TrainConfig(epochs=args.epochs, seed=0, progress=False, **cfg),
                      model_kwargs=flags, out=out, eval_k=0)
            wall = time.perf_counter() - t0
            m = json.loads((out / "metrics.json").read_text())
            net, _ = load_run(out)
            with torch.no_grad():
                div = diversity(net.sample(512, seed=0))
            for name in ("samples.png", "gan_progress.png"):
                shutil.copy(out / name, args.images / f"{model}_mnist_{name.replace('gan_', '')}")
            hist = (out / "history.csv").read_text().splitlines()
            rows.append((model, args.epochs, m["train_seconds"], wall, net.steps, net.g_steps, m["test"]["loss"], div,
                         hist[-1].split(",")[hist[0].split(",").index("train_collapse")], command(model, args.epochs),
                         m["test"].get("fid", float("nan")), m["test"].get("precision", float("nan")),
                         m["test"].get("recall", float("nan"))))
    print(f"torch {torch.__version__}, {args.threads} threads; data diversity (512 test images): {diversity(real):.3f}\n")
    print("| model | epochs | train s | wall s | D steps | G steps | test D loss | sample diversity | collapse (last epoch) "
          "| FID | precision | recall | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]} | {r[5]} | {r[6]:.3f} | {r[7]:.3f} | {float(r[8]):.2f} | {r[10]:.1f} | {r[11]:.3f} | {r[12]:.3f} | `{r[9]}` |")


if __name__ == "__main__":
    main()
