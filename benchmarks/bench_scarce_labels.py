"""Scarce labels on MedMNIST (issue 20): does a generative or semi-supervised route beat a small CNN trained on the
few labels there are, with or without classic augmentation?

    python benchmarks/bench_scarce_labels.py --threads 1                       # a, b, d; both sets; 20 and 50/class
    python benchmarks/bench_scarce_labels.py --routes a,b,c,d --budgets 20,50,all --json scarce.json
    python benchmarks/bench_scarce_labels.py --quick                           # 1 seed, 2 epochs, a smoke test

Every route sees the same splits: the labelled rows are ``label_budget(train_labels, N, seed)`` (stratified,
N per class; ``all``: every training row), the official ``val_*`` split picks early-stopping epochs and
regularisation strengths, the ``test_*`` split only scores. Seed s is both the label seed and the model seed.

Routes (one FIXED small CNN for a-c: conv 3x3 32 → pool → conv 3x3 64 → pool → dropout 0.5 → linear 128 →
linear K; Adam 1e-3, batches of 32, an epoch is one pass over the labelled rows but at least 20 batches, at most
``--epochs`` epochs, the weights of the epoch with the best validation AUC, stopping after ``--patience`` epochs
without improvement):
  a    the CNN on the labelled rows; "a·logreg" is logistic regression on their pixels (C by validation AUC)
  b    a + classic augmentation drawn afresh per batch: horizontal flips, rotations within ±10°, shifts ≤ 2 px
  c    a + generated labelled samples: for each generator in ``--gen-models`` (cvae, cdcgan), ``latentforge train``
       on the labelled rows only (``--gen-steps`` mini-batches), then ``latentforge augment RUN --per-class
       --gen-per-class [--filter]``; each CNN batch is a ``--mix`` share of generated rows, the rest real ones
  d    M1 (Kingma et al. 2014): a conv VAE (latent ``--latent-dim``) trained by the one trainer on ALL training
       images without labels, logistic regression on the labelled rows' posterior means (C by validation AUC);
       the encoder does not depend on the budget, so one per data set and seed serves every budget;
       with ``--finetune`` also "d·ft": that encoder (to the posterior mean) + a linear layer, all fine-tuned on
       the labelled rows like b (augmentation, early stopping; Adam 3e-4)

The summary per data set and budget: test AUC and ACC mean ± std over seeds per route, then the paired difference
(per seed) of the best of c/d minus the better of a/b (best = highest mean test AUC) with a 95% t-interval.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py
from seed_stats import t_interval  # benchmarks/seed_stats.py
from torch import nn

from latentforge import VAE
from latentforge.data.labels import label_budget
from latentforge.metrics.classification import classification_scores, roc_auc
from latentforge.tasks.classify import classify_codes, fit_logistic, labelled_splits, select_C

DATA = ("breastmnist", "pneumoniamnist")
ROUTES = ("a", "b", "c", "d")
PUBLISHED = {"breastmnist": 0.901, "pneumoniamnist": 0.944}  # MedMNIST v2 ResNet-18 (28), test AUC; Yang et al. 2023
BATCH, MIN_BATCHES, LR = 32, 20, 1e-3
FT_LR = 3e-4  # d·ft: a pretrained encoder moves less
# c: each generator's training batch and learning rate (cdcgan: DCGAN's 2e-4, Radford et al. 2016, and the batch the
# generator's own BreastMNIST check in docs/results.md used)
GEN_TRAINING = {"cvae": (32, 1e-3), "cdcgan": (16, 2e-4)}
PIXEL_CS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)


class SmallCNN(nn.Module):
    """The one classifier every CNN route trains (28x28 grey images)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.25)


def classic_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips, rotations within ±10° and shifts of up to 2 pixels, one affine warp per image."""
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * 2 / x.shape[-1])  # 2 px in [-1, 1] grid units
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@dataclass
class Fold:
    """One data set's arrays: images as float32 (n, 1, 28, 28) in [0, 1], labels int64."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "data"

    @property
    def n_classes(self) -> int:
        return int(max(self.y.max(), self.y_val.max(), self.y_test.max())) + 1


def load_fold(name: str, subset: int | None = None) -> Fold:
    s = labelled_splits(name)
    parts = [s.train, s.validation, s.test]
    if subset:  # --quick: the first rows of each split
        parts = [p.subset(np.arange(min(subset, len(p)))) for p in parts]
    arrays = [(p.floats(), p.y.astype(np.int64)) for p in parts]
    return Fold(*arrays[0], *arrays[1], *arrays[2], name=name)


@torch.no_grad()
def cnn_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return torch.cat([F.softmax(model(torch.from_numpy(x[i:i + 512])), 1) for i in range(0, len(x), 512)]).numpy()


class EncoderClassifier(nn.Module):
    """Route d·ft: a VAE's encoder (to the posterior mean) with a linear layer on top, all of it trained."""

    def __init__(self, vae: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.vae = copy.deepcopy(vae).train()
        self.head = nn.Linear(self.vae.latent_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vae.encode(x)[0])


def train_cnn(f: Fold, idx: np.ndarray, *, seed: int, epochs: int, patience: int, augment: bool = False,
              gen: tuple[np.ndarray, np.ndarray] | None = None, mix: float = 0.5,
              start: nn.Module | None = None) -> tuple[nn.Module, int, float]:
    """The small CNN (or ``start``, a network to fine-tune) on rows ``idx`` of the training set (plus generated rows
    ``gen``, a ``mix`` share of every batch); the weights of its best epoch by validation AUC, that epoch and AUC."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallCNN(f.n_classes) if start is None else start
    opt = torch.optim.Adam(model.parameters(), lr=LR if start is None else FT_LR)
    x, y = torch.from_numpy(f.x[idx]), torch.from_numpy(f.y[idx])
    n_gen = 0 if gen is None else int(round(mix * BATCH))
    if gen is not None:
        xg, yg = torch.from_numpy(gen[0]), torch.from_numpy(gen[1])
    n_real = BATCH - n_gen
    best, best_state, best_epoch, waited = -np.inf, None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for _ in range(max(-(-len(x) // n_real), MIN_BATCHES)):
            pick = torch.randint(len(x), (min(n_real, len(x)),), generator=g)
            xb, yb = x[pick], y[pick]
            if n_gen:
                gpick = torch.randint(len(xg), (n_gen,), generator=g)
                xb, yb = torch.cat([xb, xg[gpick]]), torch.cat([yb, yg[gpick]])
            if augment:
                xb = classic_augment(xb, g)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = roc_auc(f.y_val, cnn_proba(model, f.x_val))
        if auc > best:
            best, best_epoch, waited = auc, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), best_epoch, float(best)


def cnn_scores(f: Fold, model: nn.Module) -> dict[str, float]:
    return classification_scores(f.y_test, cnn_proba(model, f.x_test))


def pixel_logreg(f: Fold, idx: np.ndarray, seed: int) -> dict[str, float]:
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    C = select_C(flat(f.x[idx]), f.y[idx], x_val=flat(f.x_val), y_val=f.y_val, Cs=PIXEL_CS, seed=seed)
    clf = fit_logistic(flat(f.x[idx]), f.y[idx], C=C, seed=seed)
    val_auc = roc_auc(f.y_val, clf.predict_proba(flat(f.x_val)))
    return {**classification_scores(f.y_test, clf.predict_proba(flat(f.x_test))), "C": C, "val_auc": val_auc}


def cli(*args: str) -> None:
    """Run ``latentforge ARGS`` (one thread, like this process), failing loudly."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    r = subprocess.run([sys.executable, "-m", "latentforge.cli", *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"latentforge {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")


def generated(f: Fold, idx: np.ndarray, *, model: str, seed: int, steps: int, per_class: int, filt: str | None,
              work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Train ``model`` (cvae, cdcgan) on the labelled rows through the CLI, then ``latentforge augment``."""
    tag = f"{f.name}-{model}-{len(idx)}-{seed}"  # one run per data set, generator, budget and seed
    data = work / f"labelled-{tag}.npz"
    to_u8 = lambda a: np.round(a[:, 0] * 255).astype(np.uint8)  # noqa: E731  MedMNIST's own layout
    n_val = min(128, len(f.x_val))  # the run's test split: a few validation images, for its report only
    batch, lr = GEN_TRAINING.get(model, (32, 1e-3))
    # 40 rows are not two batches: repeat them so that an epoch is ≥ 50 batches, or the trainer's per-epoch work
    # (test loss, checkpoint) outweighs the training
    reps = max(1, -(-50 * batch // len(idx)))
    rows = np.tile(idx, reps)
    np.savez(data, train_images=to_u8(f.x[rows]), train_labels=f.y[rows, None], test_images=to_u8(f.x_val[:n_val]),
             test_labels=f.y_val[:n_val, None])
    run, out = work / f"run-{tag}", work / f"aug-{tag}.npz"
    epochs = max(1, -(-steps * batch // len(rows)))
    cli("train", model, "--data", str(data), "--epochs", str(epochs), "--batch-size", str(batch), "--lr", str(lr),
        "--seed", str(seed), "--eval-k", "0", "--out", str(run))
    real = work / f"real-{tag}.npz"  # the filters compare with the labelled rows, each once
    np.savez(real, train_images=to_u8(f.x[idx]), train_labels=f.y[idx, None], test_images=to_u8(f.x_val[:n_val]),
             test_labels=f.y_val[:n_val, None])
    cli("augment", str(run), "--per-class", str(per_class), "--out", str(out), "--seed", str(seed),
        *(["--filter", filt, "--data", str(real)] if filt else []))
    with np.load(out) as z:
        images, labels = z["images"], z["labels"].reshape(-1).astype(np.int64)
    images = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    return images.reshape(len(images), 1, 28, 28).clip(0, 1), labels


def encoder_codes(f: Fold, *, seed: int, epochs: int, latent_dim: int) -> tuple[nn.Module, tuple[np.ndarray, ...]]:
    """Route d's encoder: a conv VAE on every training image (no labels); the model and its posterior means of the
    train, validation and test splits."""
    vae = VAE(latent_dim=latent_dim, arch="conv", epochs=epochs, batch_size=128, random_state=seed, device="cpu")
    vae.fit(f.x)
    return vae.model_, tuple(vae.transform(a).astype(np.float64) for a in (f.x, f.x_val, f.x_test))


def run_budget(f: Fold, budget: int | None, seed: int, routes: list[str], a: argparse.Namespace,
               codes: tuple[nn.Module, tuple[np.ndarray, ...]] | None, work: Path) -> dict[str, dict]:
    idx = np.arange(len(f.y)) if budget is None else label_budget(f.y, budget, seed=seed)
    out: dict[str, dict] = {}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        out[name] = {**fn(), "seconds": time.perf_counter() - t0}

    def cnn(**kw) -> dict:
        model, epoch, val_auc = train_cnn(f, idx, seed=seed, epochs=a.epochs, patience=a.patience, **kw)
        return {**cnn_scores(f, model), "epoch": epoch, "val_auc": val_auc}

    if "a" in routes:
        timed("a", cnn)
        timed("a·logreg", lambda: pixel_logreg(f, idx, seed))
    if "b" in routes:
        timed("b", lambda: cnn(augment=True))
    if "c" in routes:
        for gm in a.gen_models:
            def route_c(gm=gm) -> dict:
                gen = generated(f, idx, model=gm, seed=seed, steps=a.gen_steps, per_class=a.gen_per_class,
                                filt=a.filter, work=work)
                return {**cnn(gen=gen, mix=a.mix), "generated": len(gen[1])}
            timed(f"c·{gm}" + (f"+{a.filter}" if a.filter else ""), route_c)
    if "d" in routes and codes is not None:
        vae, (z, z_val, z_test) = codes
        timed("d", lambda: _m1(z, f, idx, z_val, z_test, seed))
        if a.finetune:
            timed("d·ft", lambda: cnn(augment=True, start=EncoderClassifier(vae, f.n_classes)))
    return out


def _m1(z, f: Fold, idx, z_val, z_test, seed: int) -> dict:
    r = classify_codes(z, f.y, idx, z_test, f.y_test, z_val=z_val, y_val=f.y_val, seed=seed)
    return {**r.test, "C": r.C, "val_auc": r.validation["auc"]}


def summarise(results: dict) -> tuple[str, list[dict]]:
    """The table of every (data, budget, route) and the paired differences."""
    lines = ["| data | labels/class | route | test AUC | test ACC | seconds/seed |", "|---|---|---|---|---|---|"]
    diffs = []
    for (data, budget), by_seed in results.items():
        seeds = sorted(by_seed)
        names = list(dict.fromkeys(r for s in seeds for r in by_seed[s]))
        mean = {}
        for r in names:
            auc = np.array([by_seed[s][r]["auc"] for s in seeds if r in by_seed[s]])
            acc = np.array([by_seed[s][r]["acc"] for s in seeds if r in by_seed[s]])
            sec = np.mean([by_seed[s][r]["seconds"] for s in seeds if r in by_seed[s]])
            mean[r] = auc.mean()
            lines.append(f"| {data} | {budget} | {r} | {auc.mean():.3f} ± {auc.std(ddof=1) if len(auc) > 1 else 0:.3f}"
                         f" | {acc.mean():.3f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.3f} | {sec:.1f} |")
        base = [r for r in names if r in ("a", "b")]
        new = [r for r in names if r.startswith(("c·", "d"))]
        if base and new:
            b, n = max(base, key=mean.get), max(new, key=mean.get)
            both = [s for s in seeds if b in by_seed[s] and n in by_seed[s]]
            d = np.array([by_seed[s][n]["auc"] - by_seed[s][b]["auc"] for s in both])
            m, lo, hi = t_interval(d)
            diffs.append({"data": data, "budget": budget, "best_new": n, "best_base": b, "diff": m, "lo": lo,
                          "hi": hi, "seeds": len(both), "met": bool(lo > 0)})
    lines += ["", "| data | labels/class | best of c/d − better of a/b (test AUC) | 95% t-interval | seeds | "
              "interval > 0 |", "|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d['data']} | {d['budget']} | {d['best_new']} − {d['best_base']} = {d['diff']:+.3f} | "
                     f"[{d['lo']:+.3f}, {d['hi']:+.3f}] | {d['seeds']} | {'yes' if d['met'] else 'no'} |")
    return "\n".join(lines), diffs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=",".join(DATA), help="comma-separated data names (MedMNIST .npz with val_*)")
    p.add_argument("--budgets", default="20,50", help="labels per class, comma-separated; 'all' for every row")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (label seed = model seed)")
    p.add_argument("--routes", default="a,b,d", help="comma-separated routes of a, b, c, d")
    p.add_argument("--epochs", type=int, default=60, help="CNN: most epochs (early stopping on validation AUC)")
    p.add_argument("--patience", type=int, default=10, help="CNN: epochs without a better validation AUC to stop")
    p.add_argument("--encoder-steps", type=int, default=1200, help="d: VAE mini-batches of 128 (epochs follow)")
    p.add_argument("--latent-dim", type=int, default=32, help="d: the VAE's latent size")
    p.add_argument("--finetune", action="store_true", help="d·ft: also fine-tune d's encoder + a linear layer on the "
                   "labelled rows, with b's augmentation and early stopping")
    p.add_argument("--gen-models", default="cvae", help="c: comma-separated conditional generators (cvae, cdcgan)")
    p.add_argument("--gen-steps", type=int, default=1500, help="c: generator mini-batches (epochs follow; batch "
                   "and learning rate per model: " + ", ".join(f"{k} {b}, {lr:g}" for k, (b, lr) in GEN_TRAINING.items())
                   + ")")
    p.add_argument("--gen-per-class", type=int, default=200, help="c: generated samples per class")
    p.add_argument("--mix", type=float, default=0.5, help="c: share of generated rows in each CNN batch")
    p.add_argument("--filter", default=None, choices=("realism", "confidence"), help="c: augment's --filter")
    p.add_argument("--threads", type=int, default=1, help="torch, BLAS and OpenMP threads")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 seed, 2 epochs, the first 300 rows")
    p.add_argument("--json", type=Path, default=None, help="also write every number to this file (after every cell)")
    p.add_argument("--combine", type=Path, nargs="+", default=None, help="only print the table of these --json files "
                   "together (runs of different routes on the same seeds)")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.epochs, a.patience, a.encoder_steps, a.gen_steps = "0", 2, 2, 5, 5
        a.gen_per_class = min(a.gen_per_class, 10)
    torch.set_num_threads(a.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(a.threads)
    routes = [r.strip() for r in a.routes.split(",")]
    if set(routes) - set(ROUTES):
        p.error(f"--routes: unknown {sorted(set(routes) - set(ROUTES))}; choose from {', '.join(ROUTES)}")
    if not 0 < a.mix < 1:
        p.error("--mix must be in (0, 1)")
    a.gen_models = [g.strip() for g in a.gen_models.split(",")]
    budgets = [None if b.strip() == "all" else int(b) for b in a.budgets.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    command = "python " + " ".join(["benchmarks/bench_scarce_labels.py", *(argv if argv is not None else sys.argv[1:])])
    if a.combine:
        return combine(a.combine, command, a.json)
    print(f"## scarce labels: {cpu_model()}, {torch.get_num_threads()} torch threads, seeds {seeds}\n{command}",
          flush=True)
    t_all = time.perf_counter()
    results: dict = {}
    encoders: dict = {}

    def summary() -> dict:
        return {"command": command, "cpu": cpu_model(), "wall_seconds": time.perf_counter() - t_all,
                "encoders": encoders, "diffs": summarise(results)[1], "results": flat(results)}

    with tempfile.TemporaryDirectory(prefix="scarce-") as tmp:
        for name in a.data.split(","):
            f = load_fold(name.strip(), 300 if a.quick else None)
            for seed in seeds:
                codes = None
                if "d" in routes:
                    t0 = time.perf_counter()
                    epochs = max(1, -(-a.encoder_steps * 128 // len(f.y)))
                    codes = encoder_codes(f, seed=seed, epochs=epochs, latent_dim=a.latent_dim)
                    encoders[f"{name}/{seed}"] = {"epochs": epochs, "seconds": time.perf_counter() - t0}
                    print(f"{name} seed {seed}: VAE encoder, {epochs} epochs, "
                          f"{encoders[f'{name}/{seed}']['seconds']:.0f} s", flush=True)
                for budget in budgets:
                    key = (name, "all" if budget is None else budget)
                    r = run_budget(f, budget, seed, routes, a, codes, Path(tmp))
                    results.setdefault(key, {})[seed] = r
                    print(f"{name} {key[1]}/class seed {seed}: " + ", ".join(
                        f"{k} AUC {v['auc']:.3f} ACC {v['acc']:.3f} val AUC {v['val_auc']:.3f} ({v['seconds']:.0f} s)"
                        for k, v in r.items()), flush=True)
                    if a.json:  # after every cell, so an interrupted run keeps what it measured
                        a.json.write_text(json.dumps(summary(), indent=1, default=float))
    table, _ = summarise(results)
    out = summary()
    print(f"\n{table}\n\npublished (MedMNIST v2, ResNet-18 at 28 px, all labels, test AUC): "
          + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()) + f"\ntotal wall time {out['wall_seconds']:.0f} s",
          flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=float))
    return out


def flat(results: dict) -> list[dict]:
    return [{"data": k[0], "budget": k[1], "seed": s, "route": r, **v}
            for k, by in results.items() for s, rs in by.items() for r, v in rs.items()]


def combine(files: list[Path], command: str, json_out: Path | None) -> dict:
    """One table from the --json files of several runs (e.g. routes a, b, d in one, c in another)."""
    results: dict = {}
    for path in files:
        for row in json.loads(Path(path).read_text())["results"]:
            row = dict(row)
            key = (row.pop("data"), row.pop("budget"))
            seed, route = row.pop("seed"), row.pop("route")
            results.setdefault(key, {}).setdefault(seed, {})[route] = row
    table, diffs = summarise(results)
    print(f"## scarce labels, combined from {', '.join(map(str, files))}\n{command}\n\n{table}", flush=True)
    out = {"command": command, "cpu": cpu_model(), "diffs": diffs, "results": flat(results)}
    if json_out:
        json_out.write_text(json.dumps(out, indent=1, default=float))
    return out

if __name__ == "__main__":
    main()
