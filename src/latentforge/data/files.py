"""Readers for data a user points at: IDX, .npy/.npz, CSV/Parquet and folders of images.

Each reader returns a :class:`Dataset`; the file's extension (or a folder's contents) picks it.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .dataset import COMPLEX, LABEL_COLUMNS, Dataset, NonNumericError
from .sources import open_source, shard_files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), as in the original MNIST distribution."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read IDX file ({e}); re-download it") from None
    if len(raw) < 4:
        raise UserError(f"{path}: file is empty or truncated; re-download it")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if zero != 0 or dtype_code not in dtypes or ndim == 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: IDX header is truncated; re-download it")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(bytearray(raw), dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path}: IDX header says {dims} but the file holds {data.size} values; re-download it")
    return data.reshape(dims)


def _images_nchw(x: np.ndarray) -> np.ndarray:
    """(n,H,W) → (n,1,H,W); (n,H,W,C) with C in 1/3/4 → (n,C,H,W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def array_dataset(x: np.ndarray, y: np.ndarray | None, name: str) -> Dataset:
    """Wrap a raw array: uint8 images keep their bytes (scale 255), everything else float32."""
    x = np.asarray(x)
    if x.dtype == object:  # numbers held as Python objects (a mixed-type DataFrame, nested lists)
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise NonNumericError(f"{name}: values must be numbers ({e}); encode or drop the non-numeric "
                                  "values first") from None
    if np.iscomplexobj(x):
        raise UserError(COMPLEX.format(name=name))
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
        return Dataset(x=x.reshape(len(x), -1) if x.ndim == 2 else _images_nchw(x), y=y, name=name)
    if x.ndim in (3, 4):
        x = _images_nchw(x)
    if x.dtype == np.uint8 and x.ndim == 4:
        return Dataset(x=x, y=y, name=name, scale=255.0)
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{name}: values must be numeric, got dtype {x.dtype}")
    if x.dtype.itemsize > 4 and np.issubdtype(x.dtype, np.floating):
        big = np.isfinite(x) & (np.abs(x) > np.finfo(np.float32).max)  # NaN/Inf: the NaN/Inf check says so
        if big.any():
            rows = np.unique(np.nonzero(big.reshape(len(x), -1))[0])
            raise UserError(f"{name}: {int(big.sum())} values in {len(rows)} samples (first at row {int(rows[0])}) are "
                            "beyond float32's range (±3.4e38), which models compute in; rescale or remove them")
    return Dataset(x=x.astype(np.float32, copy=False), y=y, name=name)


def read_npy(path: Path) -> Dataset:
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{path}: cannot read .npy ({e}); save plain numeric arrays") from None
    return array_dataset(x, None, path.name)


def read_npz(path: Path, split: str | None = None) -> Dataset:
    """An .npz with ``x``/``X`` (and optional ``y``), ``images``/``labels`` (what ``latentforge augment`` writes), or
    MedMNIST-style ``<split>_images``."""
    try:
        return _read_npz(path, split)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot read .npz ({e}); is the file complete?") from None


def _read_npz(path: Path, split: str | None) -> Dataset:
    z = np.load(path, allow_pickle=False)
    keys = set(z.files)
    if split and f"{split}_images" in keys:
        y = z[f"{split}_labels"] if f"{split}_labels" in keys else None
        return array_dataset(z[f"{split}_images"], y, f"{path.stem}-{split}")
    for xk, yk in (("x", "y"), ("X", "y"), ("data", "labels"), ("images", "labels"), ("train_images", "train_labels")):
        if xk in keys:
            return array_dataset(z[xk], z[yk] if yk in keys else None, path.name)
    if len(keys) == 1:
        return array_dataset(z[next(iter(keys))], None, path.name)
    raise UserError(f"{path}: found arrays {sorted(keys)}; name the samples 'x' (and labels 'y')")


def read_table(path: Path) -> Dataset:
    """CSV or Parquet with a header row; a column named label/y/target/class becomes labels."""
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ",")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; give a header row and at least one data row") from None
    except ImportError as e:
        raise UserError(f"{path}: reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot parse the table ({str(e).splitlines()[0]})") from None
    if len(df) == 0:
        raise UserError(f"{path}: the table has a header but no rows")
    y = None
    label_cols = [c for c in df.columns if str(c).lower() in LABEL_COLUMNS]
    if label_cols:
        y = df.pop(label_cols[0]).to_numpy()
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    if bad:
        sample = df[bad[0]].dropna().astype(str).head(1).tolist()
        raise UserError(
            f"{path}: column {bad[0]!r} is not numeric (e.g. {sample[0] if sample else '?'!r}); "
            "encode or drop non-numeric columns before training"
        )
    ds = Dataset(x=df.to_numpy(dtype=np.float32), y=y, name=path.name)
    ds.meta["columns"] = [str(c) for c in df.columns]
    return ds


def read_image_folder(path: Path) -> Dataset:
    """A folder of images; images in sub-folders get the sub-folder name as their label."""
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{path}: no images (.png/.jpg/…) and no .npy/.npz shards in this folder")
    classes = sorted({p.parent.relative_to(path).as_posix() for p in files})
    labelled = classes != ["."]
    arrays, sizes, modes = [], {}, set()
    for p in files:
        try:
            with Image.open(p) as im:
                modes.add("L" if im.mode in ("1", "L", "I;16", "I") else "RGB")
                arrays.append((p, im.convert("RGB") if im.mode not in ("1", "L") else im.convert("L")))
                sizes.setdefault(im.size, p)
        except OSError as e:
            raise UserError(f"{p}: cannot read image ({e})") from None
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise UserError(
            f"{path}: images have different sizes ({p1.name} is {s1[0]}x{s1[1]}, {p2.name} is "
            f"{s2[0]}x{s2[1]}); resize them to one size first"
        )
    mode = "L" if modes == {"L"} else "RGB"
    x = np.stack([np.asarray(im.convert(mode)) for _, im in arrays])
    y = None
    names = None
    if labelled:
        names = classes
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[p.parent.relative_to(path).as_posix()] for p, _ in arrays])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # PIL gives (H, W) or (H, W, C)
    ds = Dataset(x=np.ascontiguousarray(x.astype(np.uint8)), y=y, name=path.name, scale=255.0, label_names=names)
    return ds


def read_path(path: Path, split: str | None = None) -> Dataset:
    """Pick a reader by extension (or, for a folder, by what it holds)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; check the path or use a data name like 'digits'")
    if path.is_dir():
        return read_shards(path) if shard_files(path) else read_image_folder(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    name = path.name.lower()
    if name.endswith(".npy"):
        return read_npy(path)
    if name.endswith(".npz"):
        return read_npz(path, split)
    if name.endswith((".csv", ".tsv", ".txt", ".parquet", ".csv.gz")):
        return read_table(path)
    if "idx" in name or name.endswith(("-ubyte", "-ubyte.gz")):
        x = read_idx(path)
        labels = _sibling_labels(path)
        return array_dataset(x, labels, path.name)
    raise UserError(f"{path}: unknown file type; use .npy, .npz, .csv, .parquet, IDX or a folder of images")


def read_shards(path: Path) -> Dataset:
    """A folder of ``.npy``/``.npz`` shards (one sample shape and dtype), joined in memory in natural name order."""
    check_shard_folder(path)
    source = open_source(path)
    x = source.read_range(0, source.n)
    return Dataset(x=x, y=source.y, name=path.name, scale=source.scale)


def check_shard_folder(path: Path) -> None:
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        raise UserError(f"{path}: holds both images and .npy/.npz shards; keep one kind of data in the folder")


def _sibling_labels(images: Path) -> np.ndarray | None:
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if a in images.name:
            cand = images.with_name(images.name.replace(a, b))
            if cand.exists():
                return read_idx(cand)
    return None
