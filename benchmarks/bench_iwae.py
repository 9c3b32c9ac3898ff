"""Test log-likelihood on dynamically binarised MNIST: VAE vs IWAE objective (Burda et al. 2015).

The paper's one-stochastic-layer setting (arXiv:1509.00519, Table 1): encoder 784-200-200-50
with tanh, mirrored Bernoulli decoder, dynamic binarisation, Adam (β1 0.9, β2 0.999, ε 1e-4; here PyTorch's default ε),
learning rate 1e-3·10^(-i/7) for 3^i epochs, i = 0…7 (3,280 epochs), batch 20, −log p(x) on the
test set with k = 5,000 importance samples. Published: VAE 86.76, IWAE (k = 50) 84.78 nats.

What fits this machine: the same network, likelihood, binarisation and evaluation; the paper's
eight learning-rate stages kept in proportion but compressed to ``--epochs`` in total (each stage
at least one epoch); batch 100, so every learning rate × √5 (``--lr-scale``, Adam's square-root rule
for 5× the paper's batch of 20); the IWAE trained with ``--k-train`` samples (k = 50 costs ~7× the
time of k = 5 per epoch). Every model sees the same epochs; the test set is one fixed Bernoulli
sample of the MNIST test images (seed + 1, as ``latentforge train --binarize dynamic`` does).

    python benchmarks/bench_iwae.py --models vae --epochs 300 --threads 1
    python benchmarks/bench_iwae.py --models iwae --epochs 300 --threads 1   # in parallel
    python benchmarks/bench_iwae.py --models vae-seed --epochs 300 --threads 1

Each model writes runs/bench-iwae/<model>.json (settings, history per stage, test ELBO and
IWAE NLL, times) and its weights (<model>.safetensors), so an interrupted run loses at most a stage.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from latentforge.data import load_data
from latentforge.metrics.likelihood import iwae_nll, mean_elbo
from latentforge.models import build_model
from latentforge.tasks.base import prepare_splits
from latentforge.train import TrainConfig, evaluate_loss, fit

PUBLISHED = {"vae": 86.76, "iwae": 84.78}  # Burda et al. 2015, Table 1, one stochastic layer (IWAE: k = 50)
BURDA = {"arch": "mlp", "hidden": [200, 200], "latent_dim": 50, "activation": "tanh", "likelihood": "bernoulli"}
SETTINGS = {
    "vae": ("vae", BURDA),
    "iwae": ("iwae", BURDA),  # k from --k-train
    "vae-seed": ("vae", {"arch": "mlp", "hidden": [400], "latent_dim": 20, "activation": "relu",
                         "likelihood": "bernoulli"}),  # the seed's 784-400-20 VAE
}
OUT = Path("runs/bench-iwae")


def stages(total: int, lr_scale: float = 1.0) -> list[tuple[int, float]]:
    """The paper's schedule (3^i epochs at 1e-3·10^(-i/7), i = 0…7) scaled to ``total`` epochs, every
    learning rate multiplied by ``lr_scale``."""
    raw = [3**i for i in range(8)]
    scale = total / sum(raw)
    epochs = [max(1, round(r * scale)) for r in raw]
    epochs[-1] = max(1, total - sum(epochs[:-1]))
    return [(e, lr_scale * 1e-3 * 10 ** (-i / 7)) for i, e in enumerate(epochs)]


def run_model(name: str, args: argparse.Namespace) -> dict:
    model_name, params = SETTINGS[name]
    params = dict(params, **({"k": args.k_train} if model_name == "iwae" else {}))
    splits = prepare_splits(load_data("mnist"), "dynamic", args.seed)
    torch.manual_seed(args.seed)
    model = build_model(model_name, input_shape=list(splits.train.sample_shape), **params)
    record: dict = {"model": name, "registered": model_name, "params": params, "epochs": args.epochs,
                    "batch_size": args.batch_size, "lr_scale": args.lr_scale, "seed": args.seed, "threads": args.threads, "stages": []}
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, (n, lr) in enumerate(stages(args.epochs, args.lr_scale)):
        cfg = TrainConfig(epochs=n, batch_size=args.batch_size, lr=lr, seed=args.seed * 100 + i,
                          binarize="dynamic", progress=False)
        # the test loss once per stage, not per epoch (a quarter of the VAE's epoch time)
        result = fit(model, splits.train, None, cfg)
        test_loss = evaluate_loss(model, splits.test)["loss"]
        last = result.history[-1]
        record["stages"].append({"stage": i, "epochs": n, "lr": lr, "train_loss": last.get("train_loss"),
                                 "test_loss": test_loss, "seconds": result.train_seconds})
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / f"{name}.safetensors")
        print(f"{name} stage {i}: {n} epochs at lr {lr:.2e}, test loss {test_loss:.2f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    record["train_seconds"] = time.perf_counter() - t0
    model.eval()
    x = splits.test.to_float(splits.test.tensor())
    t1 = time.perf_counter()
    record["test_elbo"] = mean_elbo(model, x)
    nll = iwae_nll(model, x, k=args.eval_k, progress=True)
    record["test_nll"] = float(nll.mean())
    record["test_nll_se"] = float(nll.std() / math.sqrt(len(nll)))
    record["eval_k"] = args.eval_k
    record["eval_seconds"] = time.perf_counter() - t1
    record["active_units"] = active_units(model, x)
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record


@torch.no_grad()
def active_units(model: torch.nn.Module, x: torch.Tensor, threshold: float = 1e-2) -> int:
    """Latent dimensions whose posterior mean varies across the test set (Burda et al. 2015, §5.2)."""
    mu = torch.cat([model.encode(b)[0] for b in x.split(1000)])
    return int((mu.var(0) > threshold).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vae,iwae")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    # Adam's square-root rule for batch 100 instead of the paper's 20: every rate × √5
    ap.add_argument("--lr-scale", type=float, default=5 ** 0.5)
    ap.add_argument("--k-train", type=int, default=5)
    ap.add_argument("--eval-k", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("schedule (epochs, lr):", stages(args.epochs, args.lr_scale), flush=True)
    rows = [run_model(name, args) for name in args.models.split(",")]
    print("\n| model | epochs | test ELBO | test NLL (k) | published | active units | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        pub = PUBLISHED.get(r["model"], "—")
        print(f"| {r['model']} {r['params']} | {r['epochs']} | {-r['test_elbo']:.2f} | {r['test_nll']:.2f} ± "
              f"{r['test_nll_se']:.2f} (k={r['eval_k']}) | {pub} | {r['active_units']} | {r['train_seconds']:.0f} | "
              f"{r['eval_seconds']:.0f} |")


if __name__ == "__main__":
    main()
