"""Rows on disk, read a block at a time: a memory-mapped ``.npy``, a folder of ``.npy``/``.npz`` shards, and
Parquet row groups. :mod:`.stream` builds data sets larger than memory from these.

A :class:`Source` is a list of parts (files), each cut into blocks: runs of about ``BLOCK_BYTES`` of a
``.npy`` (memory-mapped, so any rows can be read without the rest), the whole of an ``.npz`` shard (its
members are compressed: a shard is decoded at once) and one row group of a Parquet file. Rows are
converted as the in-memory readers convert a whole array (:func:`.files.array_dataset`): uint8 images stay
uint8 (scale 255), ``(n, H, W)`` and ``(n, H, W, C)`` images become ``(n, C, H, W)``, everything else float32.

After each read from a memory map its pages are handed back (``madvise(MADV_DONTNEED)``): the file stays in
the kernel's page cache, where a second epoch finds it, but not in this process's resident memory, which a
map would otherwise grow by every page it ever touched.
"""

from __future__ import annotations

import math
import mmap
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .dataset import COMPLEX, LABEL_COLUMNS

BLOCK_BYTES = 4 << 20  # rows of a .npy read at once (a block); also what one read hands back to the kernel
SHARD_SUFFIXES = (".npy", ".npz")
NPZ_KEYS = (("x", "y"), ("X", "y"), ("data", "labels"), ("train_images", "train_labels"))


class Layout:
    """How samples as stored (shape, dtype) become samples as models read them (shape, compact dtype, scale)."""

    def __init__(self, raw_shape: tuple[int, ...], raw_dtype: np.dtype, where: str, n: int | None = None) -> None:
        raw_dtype = np.dtype(raw_dtype)
        s = self.raw_shape = tuple(int(d) for d in raw_shape)
        self.raw_dtype, self.where = raw_dtype, where
        ndim = 1 + len(self.raw_shape)
        if np.issubdtype(raw_dtype, np.complexfloating):
            raise UserError(COMPLEX.format(name=where))
        if not (np.issubdtype(raw_dtype, np.number) or raw_dtype == np.bool_):
            raise UserError(f"{where}: values must be numeric, got dtype {raw_dtype}")
        if ndim not in (2, 3, 4):
            shape = "samples of shape " + str(self.raw_shape) if n is None else "an array of shape " + str((n, *s))
            raise UserError(f"{where}: samples must be vectors (n, features) or images (n, H, W), (n, C, H, W) or "
                            f"(n, H, W, C); got {shape}")
        if math.prod(self.raw_shape) == 0:
            raise UserError(f"{where}: 0 feature(s) (samples of shape {self.raw_shape}); give samples with at least "
                            "one feature")
        self.transpose = ndim == 4 and s[-1] in (1, 3, 4) and s[0] not in (1, 3, 4)  # (H, W, C) → (C, H, W)
        self.sample_shape = (1, *s) if ndim == 3 else (s[2], s[0], s[1]) if self.transpose else s
        image = ndim >= 3
        if raw_dtype == np.bool_:
            self.dtype, self.scale = np.dtype(np.uint8), 1.0
        elif raw_dtype == np.uint8 and image:
            self.dtype, self.scale = np.dtype(np.uint8), 255.0
        else:
            self.dtype, self.scale = np.dtype(np.float32), 1.0
        self.wide_floats = np.issubdtype(raw_dtype, np.floating) and raw_dtype.itemsize > 4

    @property
    def row_bytes(self) -> int:
        """Bytes of one converted sample."""
        return math.prod(self.sample_shape) * self.dtype.itemsize

    def same_as(self, other: Layout) -> bool:
        return self.raw_shape == other.raw_shape and self.raw_dtype == other.raw_dtype

    def describe(self) -> str:
        return f"samples of shape {self.raw_shape}, dtype {self.raw_dtype}"

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """Stored rows → a new array of model-ready rows (always a copy: never a view into a memory map)."""
        if self.wide_floats:
            big = np.isfinite(raw) & (np.abs(raw) > np.finfo(np.float32).max)
            if big.any():
                raise UserError(f"{self.where}: {int(big.sum())} values are beyond float32's range (±3.4e38), which "
                                "models compute in; rescale or remove them")
        x = raw.transpose(0, 3, 1, 2) if self.transpose else raw.reshape(len(raw), *self.sample_shape)
        out = np.empty((len(raw), *self.sample_shape), dtype=self.dtype)
        np.copyto(out, x, casting="unsafe")
        return out


class NpyPart:
    """Rows of a memory-mapped array (a ``.npy`` file, or a caller's ``np.memmap``)."""

    decoded = False

    def __init__(self, raw: np.ndarray, layout: Layout, *, path: Path | None = None, mm: mmap.mmap | None = None,
                 offset: int | None = 0) -> None:
        self.raw, self.layout, self.path, self.n, self.y = raw, layout, path, len(raw), None
        self._mm, self._offset = mm, offset  # the map and where the rows start in it (bytes; None: not known)
        self._raw_row = math.prod(raw.shape[1:]) * raw.dtype.itemsize
        step = max(1, BLOCK_BYTES // max(1, self._raw_row))
        self.blocks = [(lo, min(lo + step, self.n)) for lo in range(0, self.n, step)]

    @classmethod
    def open(cls, path: Path) -> NpyPart:
        shape, fortran, dtype, offset = npy_header(path)
        if len(shape) == 0:
            raise UserError(f"{path}: holds a single number, not an array of samples")
        layout = Layout(shape[1:], dtype, str(path), n=shape[0])  # before the map: an object dtype must not reach np.ndarray
        need, size = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
        if size < need:
            raise UserError(f"{path}: the file is truncated: its header says {shape[0]:,} samples of shape "
                            f"{tuple(shape[1:])} {dtype} ({need:,} bytes), but the file holds {size:,} bytes; write it "
                            "again (np.save)")
        if fortran and len(shape) > 1:
            raise UserError(f"{path}: the array is stored in Fortran (column-major) order, whose rows cannot be read "
                            "one block at a time; save it with np.save(path, np.ascontiguousarray(x))")
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        raw = np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset)
        return cls(raw, layout, path=path, mm=mm, offset=offset)

    def read(self, lo: int, hi: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows ``lo:hi`` of the part (or the sorted local ``rows`` among them), converted."""
        if rows is not None and len(rows) and (rows[-1] - rows[0] + 1 == len(rows)) and bool(np.all(np.diff(rows) == 1)):
            lo, hi, rows = int(rows[0]), int(rows[-1]) + 1, None  # consecutive rows: one slice
        if rows is None:
            out = self.layout.convert(self.raw[lo:hi])
        else:
            out = self.layout.convert(self.raw[rows])  # only the pages holding these rows are touched
            lo, hi = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (lo, lo)
        self._release(lo, hi)
        return out

    def _release(self, lo: int, hi: int) -> None:
        """Hand the pages of rows ``lo:hi`` back to the kernel (they stay in its page cache)."""
        if self._mm is None or hi <= lo:
            return
        page = mmap.PAGESIZE
        if self._offset is None:  # a caller's map, whose rows start somewhere in it: all of its pages
            start, end = 0, len(self._mm)
        else:
            start = (self._offset + lo * self._raw_row) // page * page
            end = min(self._offset + hi * self._raw_row, len(self._mm))
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (AttributeError, OSError, ValueError):  # no madvise here: the kernel reclaims the pages itself
            self._mm = None


class NpzPart:
    """An ``.npz`` shard: its samples (``x``, ``X``, ``data``, ``train_images`` or its one array) and labels."""

    decoded = True

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
                key, ykey = _npz_keys(path, names)
                with zf.open(key + ".npy") as f:
                    shape, _, dtype = _header(f, path)
            self.key = key
            self.y = None
            if ykey is not None:
                with np.load(path, allow_pickle=False) as z:
                    self.y = np.asarray(z[ykey]).reshape(-1)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, UserError):
                raise
            raise UserError(f"{path}: cannot read .npz ({e}); is the file complete?") from None
        if len(shape) == 0:
            raise UserError(f"{path}: '{key}' holds a single number, not an array of samples")
        self.layout = Layout(shape[1:], dtype, str(path), n=shape[0])
        self.n = int(shape[0])
        if self.y is not None and len(self.y) != self.n:
            raise UserError(f"{path}: {len(self.y)} labels for {self.n} samples; give one label per sample")
        self.blocks = [(0, self.n)] if self.n else []

    def decode(self, lo: int, hi: int) -> np.ndarray:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                raw = z[self.key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"{self.path}: cannot read .npz ({e}); is the file complete?") from None
        if raw.shape != (self.n, *self.layout.raw_shape):
            raise UserError(f"{self.path}: '{self.key}' changed while it was read; write the shard again")
        return self.layout.convert(raw)


class ParquetPart:
    """A Parquet file, one block per row group; a column named label/y/target/class holds labels."""

    decoded = True

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise UserError(f"{path}: reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
            schema = self._file.schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]}); is the file complete?") from None
        labels = [n for n in schema.names if n.lower() in LABEL_COLUMNS]
        self.columns = [n for n in schema.names if n not in labels[:1]]
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)
        bad = [n for n in self.columns if not any(ok(schema.field(n).type) for ok in numeric)]
        if bad:
            raise UserError(f"{path}: column {bad[0]!r} is not numeric ({schema.field(bad[0]).type}); encode or drop "
                            "non-numeric columns before training")
        if not self.columns:
            raise UserError(f"{path}: no feature columns besides the labels")
        self.layout = Layout((len(self.columns),), np.float32, str(path))
        meta = self._file.metadata
        self.n = meta.num_rows
        self.y = self._file.read(columns=labels[:1]).column(0).to_numpy(zero_copy_only=False) if labels else None
        self.blocks, self._groups, lo = [], {}, 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                self.blocks.append((lo, lo + rows))
                self._groups[lo] = g
            lo += rows

    def decode(self, lo: int, hi: int) -> np.ndarray:
        import pyarrow as pa

        try:
            table = self._file.read_row_group(self._groups[lo], columns=self.columns)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{self.path}: cannot read row group {self._groups[lo]} ({str(e).splitlines()[0]}); is the "
                            "file complete?") from None
        out = np.empty((table.num_rows, len(self.columns)), dtype=np.float32)
        for j, col in enumerate(table.columns):
            out[:, j] = col.to_numpy(zero_copy_only=False)  # nulls become NaN: the data check reports them
        return out


class Source:
    """The rows of one or more parts, numbered one after another, and their blocks.

    Block ``b`` is global rows ``bounds[b]:bounds[b + 1]``, all in one part. ``checked`` turns true once a pass
    has read every row and found them finite (:func:`.stream.scan`).
    """

    def __init__(self, parts: list, where: Path) -> None:
        self.where, self.parts = where, [p for p in parts if p.n]
        if not self.parts:
            raise UserError(f"{where}: the data set is empty: 0 samples; give at least one sample")
        first = self.parts[0]
        for p in self.parts[1:]:
            if not p.layout.same_as(first.layout):
                raise UserError(f"{where}: shard {p.path.name} holds {p.layout.describe()}, but {first.path.name} "
                                f"holds {first.layout.describe()}; every shard must hold samples of one shape and "
                                "dtype")
        self.layout = first.layout
        self.sample_shape, self.dtype, self.scale = first.layout.sample_shape, first.layout.dtype, first.layout.scale
        starts = np.cumsum([0] + [p.n for p in self.parts])
        self.n = int(starts[-1])
        blocks = [(i, int(starts[i]) + lo, int(starts[i]) + hi) for i, p in enumerate(self.parts) for lo, hi in p.blocks]
        self.block_part = np.array([b[0] for b in blocks], dtype=np.int64)
        self.bounds = np.array([b[1] for b in blocks] + [self.n], dtype=np.int64)
        self.part_start = starts[:-1].astype(np.int64)
        self.y = np.concatenate([p.y for p in self.parts]) if all(p.y is not None for p in self.parts) else None
        self.columns = getattr(first, "columns", None)
        self.checked = False
        self._cache: tuple[int, np.ndarray] | None = None  # the last decoded block (npz shard, row group)

    @property
    def n_blocks(self) -> int:
        return len(self.block_part)

    @property
    def nbytes(self) -> int:
        """Bytes of every sample as the in-memory path would hold them."""
        return self.n * self.layout.row_bytes

    def read_block(self, b: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Block ``b``'s rows (or the sorted global ``rows`` among them), converted."""
        part = self.parts[self.block_part[b]]
        start = int(self.part_start[self.block_part[b]])
        lo, hi = int(self.bounds[b]) - start, int(self.bounds[b + 1]) - start
        local = None if rows is None else np.asarray(rows, dtype=np.int64) - start
        if not part.decoded:
            return part.read(lo, hi, local)
        cached = self._cache
        block = cached[1] if cached is not None and cached[0] == b else None
        if block is None:
            block = part.decode(lo, hi)
            self._cache = (b, block)
        return block if local is None else block[local - lo]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Global ``rows`` (sorted ascending), converted, block by block."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.sample_shape), dtype=self.dtype)
        blocks = np.searchsorted(self.bounds, rows, side="right") - 1
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        for a, c in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            if c > a:
                out[a:c] = self.read_block(int(blocks[a]), rows[a:c])
        return out

    def read_range(self, lo: int, hi: int) -> np.ndarray:
        """Global rows ``lo:hi``, converted."""
        return self.take(np.arange(lo, hi, dtype=np.int64))


def npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, data offset) from a ``.npy`` header, without reading the data."""
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _header(f, path)
            return shape, fortran, dtype, f.tell()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def _header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = fmt._read_array_header(f, version)  # 3.0: utf-8 field names
    except (ValueError, EOFError, SyntaxError) as e:
        raise UserError(f"{path}: not a readable .npy ({str(e).splitlines()[0]}); is the file complete?") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _npz_keys(path: Path, names: set[str]) -> tuple[str, str | None]:
    for xk, yk in NPZ_KEYS:
        if xk in names:
            return xk, yk if yk in names else None
    if len(names) == 1:
        return next(iter(names)), None
    raise UserError(f"{path}: found arrays {sorted(names)}; name the samples 'x' (and labels 'y')")


def _natural(p: Path) -> list:
    """shard_2 before shard_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def shard_files(folder: Path) -> list[Path]:
    """The ``.npy``/``.npz`` files of a folder, in natural name order (hidden files left out)."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES
                   and not p.name.startswith(".")), key=_natural)


def open_source(path: Path) -> Source:
    """A ``.npy`` file, a folder of ``.npy``/``.npz`` shards or a ``.parquet`` file, headers read, no data."""
    if path.is_dir():
        files = shard_files(path)
        if not files:
            raise UserError(f"{path}: no .npy/.npz shards in this folder; put the samples in .npy/.npz files of one "
                            "sample shape and dtype (or give a folder of images)")
        return Source([NpyPart.open(p) if p.suffix.lower() == ".npy" else NpzPart(p) for p in files], path)
    name = path.name.lower()
    if name.endswith(".npy"):
        return Source([NpyPart.open(path)], path)
    if name.endswith(".parquet"):
        return Source([ParquetPart(path)], path)
    raise UserError(f"{path}: cannot be streamed; streaming reads .npy files, folders of .npy/.npz shards and .parquet "
                    "files")


def memmap_source(x: np.memmap, name: str) -> Source:
    """A caller's memory-mapped array as a source (its pages handed back after each read when it is read-only)."""
    mm = getattr(x, "_mmap", None) if getattr(x, "mode", None) == "r" else None
    layout = Layout(x.shape[1:], x.dtype, name, n=len(x))
    return Source([NpyPart(x, layout, path=Path(name), mm=mm, offset=None)], Path(name))
