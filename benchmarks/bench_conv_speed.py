"""Speed of the conv defaults on the CPU against a plain eager fp32 PyTorch loop of the same shape.

Prints tables; every number is from this one run on this machine (CPU model and flags in the header).

Speed (``--steps``/``--rounds``): training steps of MNIST batches (128 images) of each variant are timed in
interleaved rounds, so that every variant meets the same machine load; a variant's time is its best round
(this machine is shared and noisy), s/epoch is that time × 469 steps.

* plain fp32        — the reference: today's default conv VAE shape (conv 1→32→64, stride 2, 4×4; Linear
                      3136→400→2·20; decoder Linear 20→3136, transposed conv 64→32→1) written out by hand,
                      the data set as one tensor in memory, random permutation, tensor indexing, torch.optim.Adam
* plain + …         — one change each: channels_last, a sub-pixel decoder (3×3 conv to 4× channels +
                      PixelShuffle), bf16 autocast, fused Adam
* latentforge fp32 / auto — the model's own ``training_step`` on the trainer's batches, as
                      ``latentforge train vae --data mnist --precision fp32|auto`` runs it

The same for DCGAN (one discriminator and one generator update per batch). FLOPs per step are counted with
``torch.utils.flop_counter`` on one step of the plain loop.

Cost growth (``--scaling``): ``latentforge.train.fit`` for one epoch (precision auto) on 10k, 30k, 60k and 240k
images (MNIST repeated with 1–3 pixel shifts) and at 2× and 4× channel widths (10k images), each in a fresh
process: s/epoch and peak resident memory.

Usage: python benchmarks/bench_conv_speed.py [--threads 2] [--steps 40] [--rounds 5] [--family vae,dcgan]
       [--scaling]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentforge.data import load_data
from latentforge.data.batcher import Batcher
from latentforge.models import build_model
from latentforge.models.base import Batch
from latentforge.precision import describe_cpu, set_precision

BATCH = 128
STEPS_PER_EPOCH = -(-60000 // BATCH)


def plain_vae(upsample: str = "transpose") -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder of the default conv VAE shape, written out (decoder: transposed convs or sub-pixel)."""
    enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 7 * 7, 400), nn.ReLU(), nn.Linear(400, 40))
    if upsample == "transpose":
        up = [nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1)]
    else:
        up = [nn.Conv2d(64, 4 * 32, 3, 1, 1), nn.PixelShuffle(2), nn.ReLU(), nn.Conv2d(32, 4, 3, 1, 1),
              nn.PixelShuffle(2)]
    dec = nn.Sequential(nn.Linear(20, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), *up, nn.Flatten())
    return enc, dec


class PlainVAE:
    """One eager step of the plain loop, with optional single changes (for what each contributes)."""

    def __init__(self, x: torch.Tensor, *, upsample: str = "transpose", channels_last: bool = False,
                 bf16: bool = False, fused: bool = False, compile: bool = False) -> None:
        torch.manual_seed(0)
        self.enc, self.dec = plain_vae(upsample)
        self.loss = torch.compile(self._loss, dynamic=False) if compile else self._loss
        if channels_last:
            self.enc.to(memory_format=torch.channels_last)
            self.dec.to(memory_format=torch.channels_last)
        self.channels_last, self.bf16 = channels_last, bf16
        self.opt = torch.optim.Adam([*self.enc.parameters(), *self.dec.parameters()], lr=1e-3,
                                    **({"fused": True} if fused else {}))
        self.x = x
        self.perm = torch.randperm(len(x))
        self.i = 0

    def batch(self) -> torch.Tensor:
        if self.i + BATCH > len(self.x):
            self.perm, self.i = torch.randperm(len(self.x)), 0
        xb = self.x[self.perm[self.i : self.i + BATCH]]
        self.i += BATCH
        return xb

    def _loss(self, xb: torch.Tensor) -> torch.Tensor:
        inp = xb.contiguous(memory_format=torch.channels_last) if self.channels_last else xb
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            mu, logvar = self.enc(inp).float().chunk(2, dim=1)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            logits = self.dec(z).float()
        rec = F.binary_cross_entropy_with_logits(logits, xb.flatten(1), reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp())
        return (rec + kl) / len(xb)

    def step(self) -> None:
        loss = self.loss(self.batch())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def plain_dcgan() -> tuple[nn.Module, nn.Module]:
    """Generator and discriminator of the default DCGAN shape (latent 64, channels 32/64), written out."""
    g = nn.Sequential(nn.Linear(64, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                      nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Flatten(), nn.Linear(64 * 7 * 7, 1))
    return g, d


class PlainDCGAN(PlainVAE):
    """One eager DCGAN step: a discriminator update on a real batch and fresh fakes, then a generator update."""

    def __init__(self, x: torch.Tensor, *, bf16: bool = False) -> None:
        torch.manual_seed(0)
        self.g, self.d = plain_dcgan()
        self.bf16, self.x = bf16, x * 2 - 1
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.perm, self.i = torch.randperm(len(x)), 0

    def step(self) -> None:
        real = self.batch()
        ac = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)  # noqa: E731
        with torch.no_grad(), ac():
            fake = self.g(torch.randn(len(real), 64)).float()
        with ac():
            d_real, d_fake = self.d(real).float(), self.d(fake).float()
        d_loss = (F.softplus(-d_real) + F.softplus(d_fake)).mean()
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        self.d.requires_grad_(False)
        with ac():
            g_loss = F.softplus(-self.d(self.g(torch.randn(len(real), 64)).float()).float()).mean()
        self.opt_g.zero_grad()
        g_loss.backward()
        self.d.requires_grad_(True)
        self.opt_g.step()


class Ours:
    """The model's own ``training_step`` on the trainer's batches (what ``fit`` runs per step)."""

    def __init__(self, name: str, train, precision: str, compile: bool = False) -> None:
        torch.manual_seed(0)
        self.model = build_model(name, input_shape=[1, 28, 28], **({} if name == "vqvae" else {"arch": "conv"}))
        self.model.train()
        self.precision = set_precision(self.model, precision, "cpu")
        self.opts = self.model.configure_optimizers(2e-4 if name == "dcgan" else 1e-3)
        self.batcher = Batcher(train.tensor(), None, batch_size=BATCH, scale=train.scale,
                               generator=torch.Generator().manual_seed(0))
        self.it = iter(self.batcher)
        self.compile = compile

    def step(self) -> None:
        try:
            xb, _ = next(self.it)
        except StopIteration:
            self.it = iter(self.batcher)
            xb, _ = next(self.it)
        if self.compile:  # what `train --compile on` runs: the default step around a compiled loss
            if not callable(self.compile):
                from latentforge.train import _make_step

                self.compile = _make_step(self.model, self.opts, True)
            self.compile(Batch(xb))
        else:
            self.model.training_step(Batch(xb), self.opts)


class UnflattenChannelsLast(nn.Unflatten):
    """``nn.Unflatten`` to (C, H, W) maps stored channels-last (what the library did until it measured no gain)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


def channels_last_layout(stepper: Ours) -> Ours:
    """The same model run channels-last instead of the library's NCHW: weights converted, the decoder's
    ``nn.Unflatten`` made channels-last, the encoder's input made channels-last (a measurement of what the
    layout gives ours, not a library option)."""
    model = stepper.model.to(memory_format=torch.channels_last)
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Unflatten:
                setattr(parent, name, UnflattenChannelsLast(child.dim, child.unflattened_size))

    def features(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if model.likelihood == "gaussian":
            x = model.standardise(x)
        return model.encoder(x.view(-1, *model.input_shape).contiguous(memory_format=torch.channels_last))

    model.features = features
    stepper.opts = model.configure_optimizers(1e-3)  # Adam's state follows the converted weights
    return stepper


def flops_per_step(stepper) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            stepper.step()
    except RuntimeError:  # the counter cannot follow a double backward (WGAN-GP's gradient penalty)
        return float("nan")
    return float(counter.get_total_flops())


def time_variants(variants: dict, steps: int, rounds: int) -> dict[str, float]:
    """Best per-step seconds of each variant over interleaved rounds."""
    for v in variants.values():  # warm-up: oneDNN primitives, allocator
        for _ in range(3):
            v.step()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, v in variants.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                v.step()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def speed_table(title: str, variants: dict, reference: str, steps: int, rounds: int, flops: float) -> list[dict]:
    best = time_variants(variants, steps, rounds)
    ref = best[reference]
    print(f"\n{title}: best of {rounds} interleaved rounds of {steps} steps, batch {BATCH}; "
          f"{flops / 1e9:.2f} GFLOP per step (forward + backward, counted on the {reference} step)")
    print(f"{'variant':<34}{'ms/step':>9}{'s/epoch':>9}{'speed-up':>10}{'GFLOP/s':>9}")
    rows = []
    for name, t in best.items():
        print(f"{name:<34}{t * 1e3:>9.1f}{t * STEPS_PER_EPOCH:>9.1f}{ref / t:>9.2f}x{flops / t / 1e9:>9.0f}")
        rows.append({"variant": name, "ms_per_step": t * 1e3, "s_per_epoch": t * STEPS_PER_EPOCH, "speedup": ref / t})
    return rows


def plot_speedups(tables: dict[str, list[dict]], path: str, machine: str) -> None:
    """One horizontal bar chart per family: each variant's speed-up over the plain fp32 loop (1.0 marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 1, figsize=(7.5, 0.5 + 0.42 * sum(len(r) for r in tables.values())),
                             gridspec_kw={"height_ratios": [len(r) for r in tables.values()]}, squeeze=False)
    for ax, (family, rows) in zip(axes[:, 0], tables.items()):
        names = [r["variant"] for r in rows][::-1]
        ups = [r["speedup"] for r in rows][::-1]
        colors = ["#4c72b0" if n.startswith("latentforge") else "#bbbbbb" for n in names]
        ax.barh(names, ups, color=colors)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.axvline(2.0, color="#c44e52", lw=0.8, ls="--")
        for i, u in enumerate(ups):
            ax.text(u + 0.02, i, f"{u:.2f}×", va="center", fontsize=8)
        ax.set_xlim(0, max(2.2, max(ups) + 0.3))
        ax.set_title(f"{family}: speed-up over the plain fp32 loop (dashed: the 2× goal)", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(machine, fontsize=8, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def epoch_table(train, x: torch.Tensor, rounds: int) -> None:
    """Whole epochs, not best steps: the plain fp32 loop against ``fit`` (fp32 and auto), interleaved."""
    from latentforge.train import TrainConfig, fit

    best = {"plain fp32 loop (reference)": float("inf"), "ours' training_step loop, fp32 (no fit)": float("inf"),
            "fit --precision fp32": float("inf"), "fit --precision auto": float("inf")}
    for _ in range(rounds):
        for name, stepper in (("plain fp32 loop (reference)", PlainVAE(x)),
                              ("ours' training_step loop, fp32 (no fit)", Ours("vae", train, "fp32"))):
            t0 = time.perf_counter()  # what fit adds around the model's own step is the gap to the fit row
            for _ in range(STEPS_PER_EPOCH):
                stepper.step()
            best[name] = min(best[name], time.perf_counter() - t0)
        for p in ("fp32", "auto"):
            model = build_model("vae", input_shape=[1, 28, 28], arch="conv")
            res = fit(model, train, None, TrainConfig(epochs=1, progress=False, precision=p))
            best[f"fit --precision {p}"] = min(best[f"fit --precision {p}"], res.history[0]["seconds"])
    ref = best["plain fp32 loop (reference)"]
    print(f"\nconv VAE, whole MNIST epochs (60,000 images), best of {rounds} interleaved rounds")
    print(f"{'loop':<34}{'s/epoch':>9}{'speed-up':>10}")
    for name, t in best.items():
        print(f"{name:<34}{t:>9.1f}{ref / t:>9.2f}x")


def one_scaling_run(n: int, width: int, threads: int) -> None:
    """Child process: one epoch of fit on ``n`` images at ``width``× channels; prints JSON."""
    from latentforge.data import from_array
    from latentforge.train import TrainConfig, fit

    torch.set_num_threads(threads)
    x = load_data("mnist").train.x
    reps = [np.roll(x, (s % 3 + 1) * (1 if s % 2 else -1), axis=-1 - s % 2) if s else x for s in range(-(-n // len(x)))]
    data = from_array(np.concatenate(reps)[:n], name=f"mnist x{len(reps)}")
    model = build_model("vae", input_shape=[1, 28, 28], arch="conv", channels=[32 * width, 64 * width])
    del x, reps
    before = resident_mb(reset_peak=True)  # the data in memory; the peak from loading it is forgotten
    res = fit(model, data, None, TrainConfig(epochs=1, progress=False, precision="auto"))
    print(json.dumps({"seconds": res.history[0]["seconds"], "precision": res.precision, "before_mb": before,
                      "peak_mb": peak_mb()}))


def resident_mb(reset_peak: bool = False) -> float:
    """This process's resident memory now (Linux); ``reset_peak`` restarts the kernel's peak (VmHWM) from here."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def _status_mb(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scaling_table(threads: int) -> None:
    print(f"\ncost growth: one epoch of `fit` (conv VAE, precision auto), {threads} threads, fresh process each; "
          "memory: resident before fit (data loaded) and the peak during it")
    print(f"{'images':>8}{'channels':>10}{'s/epoch':>9}{'µs/image':>10}{'before MB':>10}{'peak MB':>9}  precision")
    for n, width in ((10_000, 1), (30_000, 1), (60_000, 1), (240_000, 1), (10_000, 2), (10_000, 4)):
        out = subprocess.run([sys.executable, __file__, "--one", f"{n},{width}", "--threads", str(threads)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        chans = f"{32 * width}/{64 * width}"
        print(f"{n:>8}{chans:>10}{r['seconds']:>9.1f}{r['seconds'] / n * 1e6:>10.0f}{r['before_mb']:>10.0f}"
              f"{r['peak_mb']:>9.0f}  {r['precision']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--family", default="vae,dcgan,ae,wgan,svdd", help="comma-separated: vae, dcgan, ae, wgan, svdd, "
                    "vqvae")
    ap.add_argument("--epochs", type=int, default=2, help="rounds of whole-epoch timing (0: skip)")
    ap.add_argument("--scaling", action="store_true", help="also the cost-growth table (fresh processes)")
    ap.add_argument("--plot", help="write the step speed-ups as a bar chart (.png)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile variants (compiling takes a minute)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        n, width = (int(v) for v in args.one.split(","))
        return one_scaling_run(n, width, args.threads)
    torch.set_num_threads(args.threads)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {args.threads} threads")
    train = load_data("mnist").train
    x = torch.from_numpy(train.x).float().div(255)
    families = args.family.split(",")
    tables: dict[str, list[dict]] = {}
    if "vae" in families:
        variants = {
            "plain fp32 (reference)": PlainVAE(x),
            "plain + channels_last": PlainVAE(x, channels_last=True),
            "plain + sub-pixel decoder": PlainVAE(x, upsample="subpixel"),
            "plain + fused Adam": PlainVAE(x, fused=True),
            "plain + bf16 autocast": PlainVAE(x, bf16=True),
            "plain + bf16 + channels_last": PlainVAE(x, bf16=True, channels_last=True),
            **({"plain + torch.compile": PlainVAE(x, compile=True),
                "plain + bf16 + torch.compile": PlainVAE(x, bf16=True, compile=True)} if args.compile else {}),
            "latentforge --precision fp32": Ours("vae", train, "fp32"),
            f"latentforge --precision auto ({set_precision(build_model('vae', input_shape=[1, 28, 28]), 'auto', 'cpu')})":
                Ours("vae", train, "auto"),
            "latentforge fp32 + channels_last": channels_last_layout(Ours("vae", train, "fp32")),
            "latentforge auto + channels_last": channels_last_layout(Ours("vae", train, "auto")),
            **({"latentforge auto --compile on": Ours("vae", train, "auto", compile=True)} if args.compile else {}),
        }
        tables["conv VAE"] = speed_table("conv VAE (MNIST)", variants, "plain fp32 (reference)", args.steps,
                                         args.rounds, flops_per_step(PlainVAE(x)))
    if "dcgan" in families:
        variants = {
            "plain fp32 (reference)": PlainDCGAN(x),
            "plain + bf16 autocast": PlainDCGAN(x, bf16=True),
            "latentforge --precision fp32": Ours("dcgan", train, "fp32"),
            "latentforge --precision auto": Ours("dcgan", train, "auto"),
        }
        tables["DCGAN"] = speed_table("DCGAN (MNIST)", variants, "plain fp32 (reference)", args.steps, args.rounds,
                                      flops_per_step(PlainDCGAN(x)))
    for fam, name in (("ae", "ae"), ("wgan", "wgan-gp"), ("svdd", "deep-svdd"), ("vqvae", "vqvae")):
        if fam in families:  # no plain loop: what bf16 gives this family over its own fp32 step
            variants = {"latentforge --precision fp32": Ours(name, train, "fp32"),
                        "latentforge --precision bf16": Ours(name, train, "bf16")}
            speed_table(f"{name} (MNIST)", variants, "latentforge --precision fp32", args.steps, args.rounds,
                        flops_per_step(variants["latentforge --precision fp32"]))
    if args.plot and tables:
        plot_speedups(tables, args.plot, f"{describe_cpu().split(' [')[0]}, {args.threads} threads")
    if args.epochs:
        epoch_table(train, x, args.epochs)
    if args.scaling:
        scaling_table(args.threads)


if __name__ == "__main__":
    main()
