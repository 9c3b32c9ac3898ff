"""Training on data larger than memory: a synthetic 4 GB ``.npy`` (uint8 28×28 images) streamed from disk,
next to the in-memory path on a subset that fits (the first 500 MB of the same rows), in the same run.

Each training is a child process running ``latentforge train vae --arch mlp --epochs 1 --stream on|off`` (the
CLI's whole path: the statistics pass over the file, the held-out split by index, the test loss over every
held-out row, the evaluation, the pictures and report). A full epoch of the 4 GB file (5.5 million images)
takes too long for a benchmark on two cores, so the child stops each epoch after ``--max-steps`` training steps
(a shim in this script around the batchers; the library has no step cap): the statistics pass still reads every
row of the file, training reads ``--max-steps`` batches of it. The peak resident memory is the child's
``ru_maxrss`` (from ``os.wait4``); samples/s is the steps' rows over the epoch's seconds (history.csv), which
also has the seconds the steps waited for the disk reader. The files are written in 64 MB chunks into a
temporary folder and deleted afterwards.

    python benchmarks/bench_stream.py              # 4 GB
    python benchmarks/bench_stream.py --gb 0.6     # a quick check

Samples/s of separate processes on a shared machine vary by ±40 % from run to run; ``--interleave R`` instead
measures the two paths' step speed in one process, alternating R times on the subset file (``--max-steps`` each).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

SIDE = 28
CHUNK_ROWS = 1 << 16  # 51 MB of images per chunk written


def images(chunk: int, rows: int) -> np.ndarray:
    """Synthetic grey-level images with structure a VAE can learn: 7×7 random patterns enlarged 4×; chunk ``i``
    is the same in every file (so the subset holds the big file's first rows)."""
    rng = np.random.default_rng(1000 + chunk)
    low = rng.integers(0, 256, size=(rows, 7, 7), dtype=np.uint8)
    low[low < 128] = 0  # mostly dark, like digits
    return np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)


def write_npy(path: Path, n: int) -> float:
    """``n`` images into ``path``, a chunk at a time; returns the seconds it took."""
    t0 = time.perf_counter()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (n, SIDE, SIDE)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for i, start in enumerate(range(0, n, CHUNK_ROWS)):
            f.write(images(i, min(CHUNK_ROWS, n - start)).tobytes())
    return time.perf_counter() - t0


def child(max_steps: int, argv: list[str]) -> None:
    """``latentforge train`` with every training epoch stopped after ``max_steps`` steps (evaluation untouched)."""
    from latentforge.cli import main as cli

    cap_steps(max_steps)
    sys.exit(cli(argv))


def cap_steps(max_steps: int) -> None:
    """Stop every training epoch (not evaluation passes) after ``max_steps`` batches."""
    import itertools

    from latentforge.data.batcher import Batcher
    from latentforge.data.stream_batcher import StreamBatcher

    for cls in (Batcher, StreamBatcher):
        whole_iter, whole_len = cls.__iter__, cls.__len__
        cls.__iter__ = lambda self, it=whole_iter: (itertools.islice(it(self), max_steps)
                                                    if getattr(self, "shuffle", True) else it(self))
        cls.__len__ = lambda self, ln=whole_len: min(ln(self), max_steps) if getattr(self, "shuffle", True) else ln(self)


def interleave(data: Path, args) -> None:
    """The in-memory and the streaming path's samples/s in one process, alternating ``args.interleave`` times."""
    import torch

    from latentforge.data import load_data
    from latentforge.models import build_model
    from latentforge.train import TrainConfig, fit

    cap_steps(args.max_steps)
    splits = {mode: load_data(str(data), stream=mode) for mode in ("off", "on")}
    speed: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.interleave):
        for mode in ("off", "on"):
            torch.manual_seed(0)
            model = build_model("vae", input_shape=[1, SIDE, SIDE], arch="mlp")
            cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device="cpu", compile="off", progress=False)
            seconds = fit(model, splits[mode].train, None, cfg).history[-1]["seconds"]
            speed[mode].append(args.max_steps * args.batch_size / seconds)
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} logical CPUs; PyTorch {torch.__version__}; one process, {args.interleave} "
          f"alternations of {args.max_steps} steps (batch {args.batch_size}) on {len(splits['on'].train):,} rows\n")
    print("| path | samples/s, each alternation | median |")
    print("|---|---|---:|")
    for mode, name in (("off", "in memory"), ("on", "streamed")):
        print(f"| {name} | {', '.join(f'{v:,.0f}' for v in speed[mode])} | {float(np.median(speed[mode])):,.0f} |")


def train(data: Path, out: Path, stream: str, args) -> dict:
    """One training in a child process: peak RSS, wall time and what its run directory says."""
    cmd = [sys.executable, __file__, "--child", str(args.max_steps), "train", "vae", "--data", str(data), "--stream",
           stream, "--arch", "mlp", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--eval-k", "0",
           "--out", str(out)]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({child.returncode}):\n{output[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    wait = sum(float(r.get("read_wait_seconds") or 0.0) for r in history)
    n_train = json.loads((out / "config.json").read_text())["data_info"]["n_train"]
    steps = min(-(-n_train // args.batch_size), args.max_steps)
    rows = min(steps * args.batch_size, n_train) * len(history)
    seconds = sum(float(r["seconds"]) for r in history)
    return {"rss_mb": usage.ru_maxrss / 1024, "wall": wall, "train_s": seconds, "sps": rows / seconds, "wait": wait,
            "loss": metrics["test"]["loss"], "n_train": n_train, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0, help="size of the big file (GiB of samples)")
    ap.add_argument("--subset-mb", type=float, default=500, help="size of the subset the in-memory path trains on")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=400, help="training steps per epoch at most (each run)")
    ap.add_argument("--dir", default=None, help="where the temporary folder goes (default: the system's)")
    ap.add_argument("--interleave", type=int, default=0, help="only compare the paths' step speed in one process, "
                    "alternating this many times on the subset")
    args = ap.parse_args()
    row = SIDE * SIDE
    n_big, n_small = int(args.gb * 2**30) // row, int(args.subset_mb * 2**20) // row
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream-", dir=args.dir))
    started = time.perf_counter()
    try:
        if args.interleave:
            write_npy(tmp / "subset.npy", n_small)
            return interleave(tmp / "subset.npy", args)
        big, small = tmp / "big.npy", tmp / "subset.npy"
        t_big = write_npy(big, n_big)
        write_npy(small, n_small)
        t0 = time.perf_counter()
        os.sync()  # the files on disk before any training: no write-back competes with the first run
        t_sync = time.perf_counter() - t0
        print(f"wrote {big.stat().st_size / 2**30:.2f} GiB ({n_big:,} images) in {t_big:.0f} s and "
              f"{small.stat().st_size / 2**20:.0f} MiB ({n_small:,} images), synced in {t_sync:.0f} s", file=sys.stderr)
        runs = {}
        for name, data, stream in (("stream, big file", big, "on"), ("in memory, subset", small, "off"),
                                   ("stream, subset", small, "on")):
            print(f"training: {name}…", file=sys.stderr)
            runs[name] = train(data, tmp / name.replace(", ", "-").replace(" ", "_"), stream, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started
    import torch

    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} logical CPUs; PyTorch {torch.__version__}; vae --arch mlp (784-400-20), "
          f"batch {args.batch_size}, {args.epochs} epoch(s) of at most {args.max_steps} steps, --eval-k 0; big file {n_big * row / 2**30:.2f} GiB "
          f"({n_big:,} images), subset {n_small * row / 2**20:.0f} MiB (its first {n_small:,}); total wall {total:.0f} s\n")
    print("| run | training rows (trained on) | peak RSS (MB) | samples/s | train s | steps' wait for the disk (s) | "
          "test loss | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['n_train']:,} ({r['rows']:,}) | {r['rss_mb']:,.0f} | {r['sps']:,.0f} | {r['train_s']:.1f} | "
              f"{r['wait']:.2f} | {r['loss']:.2f} | {r['wall']:.0f} |")
    big_rss = runs["stream, big file"]["rss_mb"]
    print(f"\ntarget: peak RSS < 1,500 MB on the {n_big * row / 2**30:.1f} GiB file: "
          f"{'met' if big_rss < 1500 else 'MISSED'} ({big_rss:,.0f} MB)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3:])
    else:
        main()
