"""Throughput of `latentforge train` on 1 process vs N processes (torchrun, gloo) on this machine.

    python benchmarks/bench_distributed.py [--data mnist] [--epochs 2] [--nproc 2]

Each configuration trains the same model with the same global batch into a fresh run directory; the table
gives training seconds per epoch (from metrics.json, so start-up and evaluation are left out), samples/s
and the ratio to one process with one thread. Prints the CPU model and its thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)


def run(args: argparse.Namespace, out: Path, *, nproc: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "latentforge.cli", "train", args.model, "--data", args.data, "--epochs",
           str(args.epochs), "--batch-size", str(args.batch_size), "--eval-k", "0", "--arch", "mlp", "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    m = json.loads((out / "metrics.json").read_text())
    return {"s_per_epoch": m["train_seconds"] / m["epochs"], "samples_per_s": m["samples_per_second"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vae")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, nproc, threads in (("1 process, 1 thread", 1, 1), (f"1 process, {args.nproc} threads", 1, args.nproc),
                                     (f"{args.nproc} processes, 1 thread each", args.nproc, 1)):
            rows.append((name, run(args, Path(tmp) / name.replace(" ", "_").replace(",", ""), nproc=nproc,
                                   threads=threads)))
    base = rows[0][1]["s_per_epoch"]
    print(f"{cpu_model()}, {os.cpu_count()} logical CPUs; `latentforge train {args.model} --data {args.data} --arch mlp "
          f"--batch-size {args.batch_size}`, {args.epochs} epochs, global batch the same in every row\n")
    print("| configuration | s/epoch | samples/s | speed vs 1 process, 1 thread |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['s_per_epoch']:.2f} | {r['samples_per_s']:.0f} | {base / r['s_per_epoch']:.2f}× |")


if __name__ == "__main__":
    main()
