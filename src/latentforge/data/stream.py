"""Data sets larger than memory: a :class:`StreamDataset` is a :class:`~.dataset.Dataset` whose samples stay on
disk (a memory-mapped ``.npy``, a folder of ``.npy``/``.npz`` shards, Parquet row groups; see :mod:`.sources`)
and are read a block at a time.

When: ``--stream on`` always, ``off`` never, ``auto`` (the default) for every shard folder and for a ``.npy`` or
Parquet file whose samples would take more than :func:`memory_budget` in memory. Subsets (the held-out test and
validation rows) are index arrays into the file, never copies. What a run computes over the data is computed by
streaming: one pass (:func:`scan`) gives the value range, the NaN/Inf check and the per-feature mean and
standard deviation that a Gaussian decoder standardises with; the loss on held-out rows is computed in chunks;
training batches come from :class:`~.stream_batcher.StreamBatcher`, whose order is documented there.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .dataset import Dataset
from .files import check_shard_folder
from .sources import Source, memmap_source, open_source, shard_files

STREAM_MODES = ("auto", "on", "off")
BUDGET_ENV = "LATENTFORGE_STREAM_BUDGET"
STREAMABLE = ".npy files, folders of .npy/.npz shards and .parquet files"


def memory_budget() -> int:
    """Bytes a data set may take in memory before ``auto`` streams it: ``$LATENTFORGE_STREAM_BUDGET`` (``2G``,
    ``500M``, bytes), else a quarter of the machine's memory (its RAM, or the container's limit when lower).
    Total rather than free memory: the same file gets the same decision on every run on a machine, which
    ``--resume`` relies on."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text.lower())
        if not m:
            raise UserError(f"{BUDGET_ENV}={text!r}: give a size like 2G, 500M or a number of bytes")
        return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total // 4


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class StreamRows:
    """The samples of a streamed data set, array-like: ``shape``, ``dtype``, ``len``; slices and integer arrays
    give numpy arrays, read from disk on demand. ``index`` (rows of the source, in this set's order) makes a
    subset without copying anything; None is every row in file order."""

    def __init__(self, source: Source, index: np.ndarray | None = None) -> None:
        self.source = source
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        n = source.n if index is None else len(self.index)
        self.shape = (n, *source.sample_shape)
        self.ndim, self.dtype = len(self.shape), source.dtype
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StreamRows({self.source.where}, shape={self.shape}, dtype={self.dtype})"

    @property
    def nbytes(self) -> int:
        return len(self) * self.source.layout.row_bytes

    def sorted_rows(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(source rows ascending, the position in this set of each: None when that is 0, 1, 2, … as for an
        index in file order), or None when this set is every row in file order."""
        if self.index is None:
            return None
        if self._sorted is None:
            if bool(np.all(self.index[1:] >= self.index[:-1])):  # held-out splits are: no copies of the index
                self._sorted = (self.index, None)
            else:
                order = np.argsort(self.index, kind="stable")
                self._sorted = (self.index[order], order)
        return self._sorted

    def __getitem__(self, key):
        if isinstance(key, tuple):  # x[rows, ...]: the rows first, then the rest on the array read
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([key]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1 and self.index is None:
                return self.source.read_range(start, stop) if stop > start else self.take(np.zeros(0, np.int64))
            return self.take(np.arange(start, stop, step))
        key = np.asarray(key)
        return self.take(np.flatnonzero(key) if key.dtype == np.bool_ else key)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The samples at ``positions`` of this set, in that order."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(pos) and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"index out of range for {n} rows")
        pos = np.where(pos < 0, pos + n, pos)
        rows = pos if self.index is None else self.index[pos]
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        out[order] = self.source.take(rows[order])
        return out

    def __array__(self, dtype=None, copy=None):
        """Every sample in memory, when they fit the memory budget (else a clear error, not an exhausted machine)."""
        need = self.nbytes if dtype is None else len(self) * math.prod(self.shape[1:]) * np.dtype(dtype).itemsize
        _check_fits(need, f"{self.source.where}: all {len(self):,} samples")
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def _check_fits(need: int, what: str) -> None:
    budget = memory_budget()
    if need > budget:
        raise UserError(f"{what} would take {_gib(need)} in memory, more than the memory budget ({_gib(budget)}: a "
                        f"quarter of this machine's memory, or ${BUDGET_ENV}); this step reads its data whole, so give "
                        "it fewer rows (or raise the budget)")


@dataclass
class Stats:
    """What one pass over a streamed set gives (model units: stored values / scale)."""

    n: int
    lo: float
    hi: float
    mean: np.ndarray  # per feature (flattened sample), float64
    std: np.ndarray


@dataclass
class StreamDataset(Dataset):
    """A :class:`Dataset` whose ``x`` is :class:`StreamRows` (on disk). It behaves as a Dataset for slices,
    ``head``, ``chunks``, ``subset`` (by index) and ``value_range`` (one streaming pass); ``tensor`` is refused (the
    trainer batches it with a :class:`~.stream_batcher.StreamBatcher`) and ``floats`` only works within the
    memory budget."""

    streamed = True

    def __post_init__(self) -> None:
        if not isinstance(self.x, StreamRows):
            raise TypeError(f"StreamDataset needs StreamRows, got {type(self.x).__name__}")
        if self.y is not None:
            self.y = np.asarray(self.y).reshape(-1)
            if len(self.y) != len(self.x):
                raise UserError(f"{self.name}: {len(self.y)} labels for {len(self.x)} samples; give one label per sample")
        self._stats: Stats | None = None

    @property
    def source(self) -> Source:
        return self.x.source

    @property
    def value_range(self) -> tuple[float, float]:
        if "value_range" not in self.meta:
            s = self.stats()
            self.meta["value_range"] = (s.lo, s.hi)
        return self.meta["value_range"]

    def stats(self) -> Stats:
        """Range, mean and standard deviation per feature, from one pass over the rows (kept)."""
        if self._stats is None:
            self._stats = scan(self)
        return self._stats

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and standard deviation (float64, flattened samples, model units)."""
        s = self.stats()
        return s.mean, s.std

    def tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        raise RuntimeError(f"{self.name} is streamed from disk: batch it with data.stream_batcher.StreamBatcher, read "
                           "it with chunks() or x[a:b], not as one tensor")

    def floats(self) -> np.ndarray:
        _check_fits(len(self) * math.prod(self.sample_shape) * 4, f"{self.name}: its {len(self):,} samples (streamed)")
        x = self.x[:].astype(np.float32, copy=False)
        return x / self.scale if self.scale != 1.0 else x

    def subset(self, idx: np.ndarray, name: str | None = None) -> StreamDataset:
        idx = np.asarray(idx)
        pos = np.flatnonzero(idx) if idx.dtype == np.bool_ else idx.astype(np.int64)
        rows = pos if self.x.index is None else self.x.index[pos]
        return StreamDataset(x=StreamRows(self.source, rows), y=None if self.y is None else self.y[pos],
                             name=name or self.name, scale=self.scale, label_names=self.label_names,
                             meta={k: v for k, v in self.meta.items() if k != "value_range"})

    def sample(self, n: int, *, seed: int = 0) -> StreamDataset:
        """A seeded subset of at most ``n`` rows, in file order (for what must see rows in memory)."""
        if len(self) <= n:
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))

    @staticmethod
    def join(parts: list[Dataset], name: str | None = None) -> StreamDataset:
        """Rows of several subsets of one source, one set after another (by index; nothing is read)."""
        first = parts[0]
        if not all(isinstance(p, StreamDataset) and p.source is first.source for p in parts):
            raise UserError("cannot join data streamed from different files, or streamed with in-memory data")
        index = np.concatenate([p.x.index if p.x.index is not None else np.arange(len(p), dtype=np.int64)
                                for p in parts])
        y = np.concatenate([p.y for p in parts]) if all(p.y is not None for p in parts) else None
        return StreamDataset(x=StreamRows(first.source, index), y=y, name=name or first.name, scale=first.scale,
                             label_names=first.label_names,
                             meta={k: v for k, v in first.meta.items() if k != "value_range"})


class _Moments:
    """Per-feature count, mean and sum of squared deviations, merged block by block (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None
        self.lo, self.hi = math.inf, -math.inf

    def add(self, block: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(block.min())), max(self.hi, float(block.max()))
        flat = block.reshape(len(block), -1)
        for i in range(0, len(flat), 4096):  # float32 sums over at most 4096 rows, merged in float64: fast and exact enough
            self._merge(flat[i : i + 4096].astype(np.float32))

    def _merge(self, f: np.ndarray) -> None:
        nb = len(f)
        mb = f.sum(0) / np.float32(nb)
        f -= mb
        f *= f
        mb, m2b = mb.astype(np.float64), f.sum(0).astype(np.float64)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n


def scan(ds: StreamDataset) -> Stats:
    """One pass over ``ds``'s rows: min, max, per-feature mean and standard deviation. The first pass over a
    source reads every one of its rows and refuses NaN/Inf (as the in-memory readers refuse them on loading);
    later passes (the test rows, say) read only their own rows."""
    src = ds.source
    full = not src.checked
    srt = ds.x.sorted_rows()
    acc = _Moments()
    floats = np.issubdtype(src.dtype, np.floating)
    for b in range(src.n_blocks):
        lo, hi = int(src.bounds[b]), int(src.bounds[b + 1])
        mine = None if srt is None else srt[0][np.searchsorted(srt[0], lo):np.searchsorted(srt[0], hi)]
        if mine is not None and len(mine) == 0 and not full:
            continue
        if full:
            block = src.read_block(b)
            if floats:
                bad = ~np.isfinite(block.reshape(len(block), -1)).all(1)
                if bad.any():
                    row = lo + int(np.flatnonzero(bad)[0])
                    raise UserError(f"{src.where}: NaN/Inf (or missing) values in sample {row:,} (counted from 0 across "
                                    f"{'the shards' if len(src.parts) > 1 else 'the file'}), the first found; remove or "
                                    "impute them first")
            rows = block if mine is None else block[mine - lo]
        else:
            rows = src.read_block(b, mine)
        if len(rows):
            acc.add(rows)
    src.checked = True
    if acc.mean is None:
        raise UserError(f"{ds.name}: the data set is empty: 0 samples; give at least one sample")
    std = np.sqrt(np.maximum(acc.m2 / acc.n, 0.0))
    return Stats(acc.n, acc.lo / ds.scale, acc.hi / ds.scale, acc.mean / ds.scale, std / ds.scale)


def stream_kind(path: Path) -> str | None:
    """"npy", "parquet" or "shards" (a folder of .npy/.npz files) for what can be streamed, else None."""
    if path.is_dir():
        return "shards" if shard_files(path) else None
    name = path.name.lower()
    return "npy" if name.endswith(".npy") else "parquet" if name.endswith(".parquet") else None


def check_stream_mode(mode: str) -> None:
    if mode not in STREAM_MODES:
        raise UserError(f"--stream must be one of {', '.join(STREAM_MODES)}, got {mode!r}")


def open_stream(path: Path, mode: str = "auto") -> StreamDataset | None:
    """``path`` as a :class:`StreamDataset` when it is to be streamed, else None (read it into memory)."""
    check_stream_mode(mode)
    if mode == "off" or not path.exists():
        return None
    kind = stream_kind(path)
    if kind is None:
        if mode == "on" and path.is_dir():
            open_source(path)  # says what a shard folder must hold
        if mode == "on":
            raise UserError(f"--stream on: {path} cannot be streamed (streaming reads {STREAMABLE}); drop --stream on "
                            "to read it into memory")
        return None
    if path.is_file() and path.stat().st_size == 0:
        return None  # the in-memory reader says it is empty
    if kind == "shards":
        check_shard_folder(path)
    if mode == "auto" and kind != "shards":
        try:
            source = open_source(path)
        except UserError:
            return None  # the in-memory reader says what is wrong, in its own words
        if source.nbytes <= memory_budget():
            return None
    else:
        source = open_source(path)
    return source_dataset(source, path.name)


def source_dataset(source: Source, name: str) -> StreamDataset:
    ds = StreamDataset(x=StreamRows(source), y=source.y, name=name, scale=source.scale)
    if source.columns is not None:
        ds.meta["columns"] = list(source.columns)
    return ds


def stream_memmap(x: np.memmap, y, name: str) -> StreamDataset | None:
    """A caller's ``np.memmap`` larger than the memory budget, streamed (None: it fits; read it as an array)."""
    try:
        source = memmap_source(x, name)
    except UserError:
        return None  # the in-memory checks say what is wrong
    if source.nbytes <= memory_budget():
        return None
    ds = source_dataset(source, name)
    if y is not None:
        ds = StreamDataset(x=ds.x, y=y, name=name, scale=ds.scale)
    return ds
