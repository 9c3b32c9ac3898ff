"""Data: named sets and files in, :class:`Dataset` splits and a fast batcher out; data larger than memory stays
on disk and is streamed (:mod:`.stream`, :mod:`.stream_batcher`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import UserError
from .batcher import Batcher
from .dataset import Dataset, Splits, holdout_split
from .files import array_dataset, read_path
from .labels import label_budget, split_by_budget
from .named import NAMES, load_named
from .stream import STREAMABLE, StreamDataset, check_stream_mode, open_stream, stream_memmap
from .stream_batcher import StreamBatcher

__all__ = ["Batcher", "Dataset", "Splits", "NAMES", "StreamBatcher", "StreamDataset", "load_data", "from_array",
           "binarize_static", "label_budget", "split_by_budget"]


def load_data(spec: str, *, test_fraction: float = 0.1, interactions: bool = False, stream: str = "auto",
              **options) -> Splits:
    """A data name (``digits``, ``mnist``, …) or a path, as train/test splits.

    Paths without their own test split get a deterministic held-out ``test_fraction``.
    ``interactions=True`` (or ``movielens-100k``) reads user–item interactions instead and splits
    them by users (see :mod:`.interactions`); ``options`` go to that reader. ``stream``: on, off or auto —
    whether a ``.npy``, a folder of shards or a Parquet file stays on disk (:func:`.stream.open_stream`; its
    splits are then index subsets of the file).
    """
    check_stream_mode(stream)
    if stream == "on" and (interactions or spec in NAMES):
        raise UserError(f"--stream on: {spec} is read into memory (streaming reads {STREAMABLE}); drop --stream on")
    if interactions or spec == "movielens-100k":
        from .interactions import load_interaction_splits

        return load_interaction_splits(spec, **options)
    if options:
        raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in options)} apply to interaction data only "
                        f"(movielens-100k, user,item[,rating] tables); drop them for {spec}")
    if spec in NAMES:
        return load_named(spec)
    path = Path(spec).expanduser()
    if not path.exists() and "/" not in spec and "." not in spec:
        raise UserError(f"unknown data set {spec!r}; use one of {', '.join(NAMES)} or a path to a file or folder")
    streamed = open_stream(path, stream)
    if streamed is not None:
        return holdout_split(streamed, fraction=test_fraction, seed=0)
    if path.suffix == ".npz" and path.exists():
        try:
            keys = set(np.load(path, allow_pickle=False).files)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: cannot read .npz ({e})") from None
        if {"train_images", "test_images"} <= keys:
            return Splits(train=read_path(path, "train"), test=read_path(path, "test"), name=path.stem)
    return holdout_split(read_path(path), fraction=test_fraction, seed=0)


def from_array(x, y=None, *, name: str = "array") -> Dataset:
    """A numpy/torch array (images ``(n,H,W)``, ``(n,C,H,W)`` or tables ``(n,D)``) as a Dataset."""
    if sp.issparse(x):
        raise UserError(f"{name}: sparse input is not supported here; give a dense array (X.toarray()); "
                        "sparse user-item interactions go to MultVAE/MultDAE")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if y is not None and hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    memmap = x if isinstance(x, np.memmap) else None  # np.asarray would drop the type
    try:
        x = np.asarray(x)
    except ValueError as e:  # nested lists of different lengths
        raise UserError(f"{name}: cannot be read as one array ({e}); give rows of equal length") from None
    if x.ndim < 2:
        raise UserError(f"{name}: got a {x.ndim}-D array of shape {x.shape}, expected (n_samples, n_features) or "
                        f"images. Reshape your data either using {name}.reshape(-1, 1) if it holds a single feature "
                        f"or {name}.reshape(1, -1) if it is a single sample")
    if memmap is not None:  # larger than the memory budget: read from its file a block at a time
        streamed = stream_memmap(memmap, y, name)
        if streamed is not None:
            return streamed
    return array_dataset(x, y, name)


def binarize_static(ds: Dataset, *, seed: int = 0) -> Dataset:
    """One fixed Bernoulli sample of each grey level (used for test sets under binarisation)."""
    rng = np.random.default_rng(seed)
    p = ds.floats()
    xb = (rng.random(p.shape, dtype=np.float32) < p).astype(np.uint8)
    out = Dataset(x=xb, y=ds.y, name=ds.name, scale=1.0, label_names=ds.label_names, meta=dict(ds.meta))
    out.meta.pop("value_range", None)
    return out
