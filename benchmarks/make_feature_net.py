"""Train the MNIST feature net shipped for sample-quality metrics and write it as safetensors.

Deterministic: seed 0, deterministic algorithms, one thread, Adam (lr 1e-3, cosine decay), 2 epochs,
batch 128.
Prints the test accuracy, the file's size and its SHA-256 (paste that into
``latentforge.metrics.sample_quality.FEATURE_NET_SHA256``). Weights are stored as float16 to keep the
file small (~0.37 MB); the accuracy printed is that of the stored float16 weights.

Usage: LATENTFORGE_DATA_DIR=/work/shared/data python benchmarks/make_feature_net.py [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from latentforge.data import load_data
from latentforge.metrics.sample_quality import FeatureNet, feature_net_path

EPOCHS, BATCH, LR = 2, 128, 1e-3


def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        pred = torch.cat([net(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=feature_net_path())
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    s = load_data("mnist")
    x = torch.from_numpy(s.train.x.astype(np.float32) / 255)
    y = torch.from_numpy(s.train.y.astype(np.int64))
    xt = torch.from_numpy(s.test.x.astype(np.float32) / 255)
    yt = torch.from_numpy(s.test.y.astype(np.int64))

    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    # Cosine decay to 0 over the 2 epochs: the last steps settle instead of bouncing (98.5% → ~99%).
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * -(-len(s.train.x) // BATCH))
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for epoch in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: last loss {loss.item():.4f}, test acc {accuracy(net.eval(), xt, yt):.4f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    blob = save({k: v.detach().half().contiguous() for k, v in net.state_dict().items()},
                # One metadata key: safetensors writes several in random order, which would change the hash.
                metadata={"about": "latentforge FeatureNet (conv32-conv64-fc128-fc10) trained on MNIST train "
                                   "by benchmarks/make_feature_net.py"})
    stored = FeatureNet()
    stored.load_state_dict({k: v.float() for k, v in load(blob).items()})
    acc = accuracy(stored.eval(), xt, yt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"test accuracy (float16 weights as stored): {acc:.4f}")
    print(f"wrote {args.out} ({len(blob)} bytes)")
    print(f"sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
