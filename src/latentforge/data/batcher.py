"""Mini-batches from a tensor already in memory: a shuffled permutation and tensor indexing.

No Dataset/DataLoader and no per-sample Python on the hot path; batches are gathered into
preallocated buffers so a training step allocates nothing for its input.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class Batcher:
    """Yields float32 batches ``x / scale`` (and labels) from compactly stored samples.

    ``binarize="dynamic"`` draws a fresh Bernoulli sample of every grey level each time a
    batch is served (the standard for likelihoods on binarised MNIST).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        batch_size: int,
        scale: float = 1.0,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        binarize: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self.inv_scale = 1.0 / scale
        self.shuffle = shuffle
        self.generator = generator
        self.binarize = binarize
        self.device = torch.device(device)
        shape = (self.batch_size, *x.shape[1:])
        self._raw = torch.empty(shape, dtype=x.dtype, device=x.device)
        self._buf = torch.empty(shape, dtype=torch.float32, device=self.device)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n, bs = len(self.x), self.batch_size
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            if len(idx) == bs:
                raw = torch.index_select(self.x, 0, idx, out=self._raw)
                xb = self._buf.copy_(raw, non_blocking=True)
            else:  # the last, short batch: allocate once per epoch
                xb = self.x.index_select(0, idx).to(self.device, torch.float32)
            if self.inv_scale != 1.0:
                xb.mul_(self.inv_scale)
            if self.binarize == "dynamic":
                xb = torch.bernoulli(xb, generator=self.generator if xb.device.type == "cpu" else None)
            yb = None if self.y is None else self.y.index_select(0, idx).to(self.device)
            yield xb, yb
