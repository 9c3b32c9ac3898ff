"""Mini-batches of a data set streamed from disk (:class:`~.stream.StreamDataset`), read ahead by a thread.

The order of an epoch, exactly: one number drawn from the trainer's seeded batch generator seeds the epoch
(``--resume`` restores that generator, so a resumed run draws the same number and serves the same order).
That seed permutes the blocks (runs of ~4 MB of a ``.npy``, the shards of a folder, the row groups of a
Parquet file). Blocks are read in that order into a shuffle window of about ``WINDOW_BYTES``; the window's
rows, together with the rows the previous window left over, are shuffled and cut into batches; rows too
few for a whole batch carry over to the next window, and the last batch of the epoch is the short one.
So every row is served exactly once per epoch, batches mix rows from several blocks, and two rows farther
apart than a window share a batch only when their blocks are drawn close together. With a window of the
whole data set this is a full shuffle; the in-memory path shuffles fully (another order, same seed).

A background thread reads and shuffles the next window while the steps consume the current one, so a
step waits for the disk only when one window is read more slowly than it is trained on
(``StreamBatcher.waited``, seconds per epoch, says how long it waited).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import torch

from .stream import StreamDataset

WINDOW_BYTES = 64 << 20  # rows shuffled together; about three windows are in memory at once
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch:
    """Runs an iterator in a background thread, ``depth`` items ahead; its errors come out of the iteration."""

    def __init__(self, items: Iterator, depth: int = 1) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="latentforge-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consuming thread
            self._put(_Failed(e))

    def __iter__(self):
        while True:
            t0 = time.perf_counter()
            item = self._q.get()
            self.waited += time.perf_counter() - t0
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a reader waiting to put
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)


class StreamBatcher:
    """Yields float32 batches ``x / scale`` (and labels) of a :class:`StreamDataset`, like :class:`.batcher.Batcher`
    (``binarize="dynamic"``, ``shard=(rank, world)``: every process reads the same batches and keeps rows
    rank, rank + world, … of each) but in the windowed order described in this module's docstring."""

    def __init__(self, data: StreamDataset, y: torch.Tensor | None = None, *, batch_size: int,
                 generator: torch.Generator | None = None, binarize: str | None = None,
                 device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1),
                 window_bytes: int = WINDOW_BYTES, augment=None) -> None:
        self.data, self.y = data, y
        self.augment = augment  # as Batcher's: the whole batch, before the rank split
        self.batch_size = min(batch_size, len(data))
        self.inv_scale = 1.0 / data.scale
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.binarize, self.device = binarize, torch.device(device)
        self.rank, self.world = shard
        self.window_bytes = window_bytes
        self.waited = 0.0  # seconds the last epoch's steps waited for the reader

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def windows(self, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The epoch seeded by ``seed``: (rows, their positions in the data set) per window, shuffled; each
        holds whole batches except the last. Runs in the reader thread; a pure function of ``seed``."""
        rng = np.random.default_rng(seed)
        src = self.data.source
        srt = self.data.x.sorted_rows()
        rows_x = np.zeros((0, *self.data.sample_shape), dtype=src.dtype)
        carry: tuple[np.ndarray, np.ndarray] = (rows_x, np.zeros(0, dtype=np.int64))
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        size = 0
        for b in rng.permutation(src.n_blocks):
            lo, hi = int(src.bounds[b]), int(src.bounds[b + 1])
            if srt is None:
                x, pos = src.read_block(b), np.arange(lo, hi, dtype=np.int64)
            else:
                a, c = np.searchsorted(srt[0], lo), np.searchsorted(srt[0], hi)
                if a == c:
                    continue
                pos = np.arange(a, c, dtype=np.int64) if srt[1] is None else srt[1][a:c]
                x = src.read_block(b, srt[0][a:c])
            pending.append((x, pos))
            size += x.nbytes
            if size >= self.window_bytes:
                carry, out = self._shuffle([carry, *pending], rng, last=False)
                pending, size = [], 0
                if len(out[0]):
                    yield out
        _, out = self._shuffle([carry, *pending], rng, last=True)
        if len(out[0]):
            yield out

    def _shuffle(self, parts, rng: np.random.Generator, *, last: bool):
        x = np.concatenate([p[0] for p in parts])
        pos = np.concatenate([p[1] for p in parts])
        perm = rng.permutation(len(x))
        keep = len(x) if last else len(x) // self.batch_size * self.batch_size
        return (x[perm[keep:]], pos[perm[keep:]]), (x[perm[:keep]], pos[perm[:keep]])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))  # one draw per epoch: resumable
        reader = Prefetch(self.windows(seed), depth=1)
        bs = self.batch_size
        try:
            for x, pos in reader:
                x_t, pos_t = torch.from_numpy(x), torch.from_numpy(pos)
                for start in range(0, len(x), bs):
                    xb = x_t[start : start + bs].to(self.device, torch.float32)
                    if self.inv_scale != 1.0:
                        xb.mul_(self.inv_scale)
                    if self.binarize == "dynamic":
                        xb = torch.bernoulli(xb, generator=self.generator if xb.device.type == "cpu" else None)
                    if self.augment is not None:
                        xb = self.augment(xb, self.generator)
                    yb = None if self.y is None else self.y[pos_t[start : start + bs].to(self.y.device)]
                    if self.world > 1:  # every rank read the whole batch (and binarised it): their RNGs agree
                        if len(xb) < self.world:
                            continue
                        xb = xb[self.rank :: self.world].contiguous()
                        yb = None if yb is None else yb[self.rank :: self.world]
                    yield xb, yb
        finally:
            self.waited = reader.waited
            reader.close()


def eval_batches(data: StreamDataset, y: torch.Tensor | None = None, *, batch_size: int,
                 device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The rows of ``data`` in order, ``batch_size`` at a time, as float32 model inputs (read one chunk ahead)."""
    inv = 1.0 / data.scale

    def chunks():
        for start in range(0, len(data), batch_size):
            yield start, data.x[start : start + batch_size]

    reader = Prefetch(chunks(), depth=2)
    try:
        for start, x in reader:
            xb = torch.from_numpy(x).to(device, torch.float32)
            if inv != 1.0:
                xb.mul_(inv)
            yield xb, None if y is None else y[start : start + len(xb)].to(device)
    finally:
        reader.close()
