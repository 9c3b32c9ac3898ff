"""Mini-batches from a tensor already in memory: a shuffled permutation and tensor indexing.

No Dataset/DataLoader and no per-sample Python on the hot path; batches are gathered into
preallocated buffers so a training step allocates nothing for its input. Sparse rows (CSR, e.g.
users × items) stay sparse in memory and only each batch is densified.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class SparseRows:
    """CSR rows as tensors (row pointers, column indices, values) that densify a batch at a time.

    Densifying is vectorised: the stored entries of the chosen rows are gathered with one
    ``repeat_interleave`` and scattered into a zeroed dense buffer with one ``index_put_``.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n_cols: int) -> None:
        self.indptr, self.indices, self.values = indptr, indices, values
        self.shape = (len(indptr) - 1, int(n_cols))
        self.dtype = torch.float32
        self.device = values.device

    @classmethod
    def from_scipy(cls, m, device: str | torch.device = "cpu") -> SparseRows:
        m = m.tocsr()
        as_t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a, dtype=dt)).to(device)  # noqa: E731
        return cls(as_t(m.indptr, np.int64), as_t(m.indices, np.int64), as_t(m.data, np.float32), m.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def densify(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``idx`` as a dense float32 ``(len(idx), n_cols)`` tensor (into ``out`` when given)."""
        idx = idx.to(self.indptr.device)
        start = self.indptr[idx]
        counts = self.indptr[idx + 1] - start
        if out is None:
            out = torch.zeros(len(idx), self.shape[1], dtype=torch.float32, device=self.device)
        else:
            out.zero_()
        total = int(counts.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(len(idx), device=self.device), counts, output_size=total)
            # position of each entry in indices/values: its row's start + its rank inside the row
            shift = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts, output_size=total)
            pos = torch.arange(total, device=self.device) + shift
            out.index_put_((rows, self.indices[pos]), self.values[pos])
        return out


class Batcher:
    """Yields float32 batches ``x / scale`` (and labels) from compactly stored samples.

    ``binarize="dynamic"`` draws a fresh Bernoulli sample of every grey level each time a
    batch is served (the standard for likelihoods on binarised MNIST). ``augment(x, generator)`` changes each
    whole batch (e.g. :class:`~.image_transforms.ImageAugment`) before it is split between processes, so every
    process draws the same random numbers and the batch order stays the same on all of them.
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
        shard: tuple[int, int] = (0, 1),
        augment=None,
    ) -> None:
        self.x, self.y = x, y
        self.augment = augment
        self.batch_size = min(batch_size, len(x))
        self.inv_scale = 1.0 / scale
        self.shuffle = shuffle
        self.generator = generator
        self.binarize = binarize
        self.device = torch.device(device)
        self.rank, self.world = shard  # serve rows rank, rank + world, … of every batch (several processes)
        self.sparse = isinstance(x, SparseRows)
        shape = (self.batch_size, *x.shape[1:])
        if self.sparse:  # densified straight into the float buffer; no compact-dtype staging
            self._buf = torch.empty(shape, dtype=torch.float32, device=x.device)
            return
        self._raw = torch.empty(shape, dtype=x.dtype, device=x.device)
        self._buf = torch.empty(shape, dtype=torch.float32, device=self.device)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n, bs = len(self.x), self.batch_size
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            if self.sparse:
                xb = self.x.densify(idx, self._buf if len(idx) == bs else None).to(self.device)
            elif len(idx) == bs:
                raw = torch.index_select(self.x, 0, idx, out=self._raw)
                xb = self._buf.copy_(raw, non_blocking=True)
            else:  # the last, short batch: allocate once per epoch
                xb = self.x.index_select(0, idx).to(self.device, torch.float32)
            if self.inv_scale != 1.0:
                xb.mul_(self.inv_scale)
            if self.binarize == "dynamic":
                xb = torch.bernoulli(xb, generator=self.generator if xb.device.type == "cpu" else None)
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            yb = None if self.y is None else self.y.index_select(0, idx).to(self.device)
            if self.world > 1:  # the whole batch is gathered (and binarised) on every rank, so their RNGs agree
                if len(idx) < self.world:
                    continue  # a last batch too short to give every rank a row: skipped by all alike
                xb = xb[self.rank :: self.world].contiguous()
                yb = None if yb is None else yb[self.rank :: self.world]
            yield xb, yb
