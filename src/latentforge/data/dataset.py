"""The in-memory data set every model trains on: samples, their shape, range and labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import UserError

COMPLEX = "{name}: Complex data not supported; give real numbers (e.g. X.real or np.abs(X))"
LABEL_COLUMNS = ("label", "labels", "y", "target", "class")  # a table's column of labels, by its name


class NonNumericError(UserError, TypeError):
    """Values that are not numbers (a dict, a string in an object array): a :class:`UserError`, and the
    ``TypeError`` numpy and scikit-learn raise for them, so ``except TypeError`` code keeps working."""


@dataclass
class Dataset:
    """Samples kept compactly in memory (uint8 images stay uint8) with what models need to know.

    ``x`` has shape ``(n, *sample_shape)``; images are ``(n, C, H, W)``, tables ``(n, D)``.
    ``scale`` maps stored values to model inputs (``x / scale``): 255 for uint8 images, 1 else.
    ``x`` may also be a ``scipy.sparse`` CSR matrix (users × items interactions): it stays sparse
    and the batcher densifies one batch at a time.
    """

    x: np.ndarray | sp.csr_matrix
    y: np.ndarray | None = None
    name: str = "data"
    scale: float = 1.0
    label_names: list[str] | None = None
    meta: dict = field(default_factory=dict)
    streamed: ClassVar[bool] = False  # read from disk a block at a time (:class:`.stream.StreamDataset`)

    def __post_init__(self) -> None:
        validate_array(self.x, self.name)
        if self.y is not None:
            self.y = np.asarray(self.y).reshape(-1)
            if len(self.y) != self.x.shape[0]:
                raise UserError(
                    f"{self.name}: {len(self.y)} labels for {self.x.shape[0]} samples; "
                    "give one label per sample"
                )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of model inputs (after scaling); decides Bernoulli vs Gaussian decoders."""
        if "value_range" not in self.meta:
            lo, hi = float(self.x.min()), float(self.x.max())  # sparse: includes the implicit zeros
            self.meta["value_range"] = (lo / self.scale, hi / self.scale)
        return self.meta["value_range"]

    @property
    def in_unit_interval(self) -> bool:
        lo, hi = self.value_range
        return lo >= 0.0 and hi <= 1.0

    def tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """The stored samples as a tensor, still in their compact dtype (no copy on CPU);
        sparse data as :class:`SparseRows` (CSR on ``device``), which the batcher densifies per batch."""
        if self.is_sparse:
            from .batcher import SparseRows

            return SparseRows.from_scipy(self.x, device)
        return torch.from_numpy(np.ascontiguousarray(self.x)).to(device)

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """Stored values → model inputs in float32."""
        x = x.to(torch.float32)
        return x / self.scale if self.scale != 1.0 else x

    def subset(self, idx: np.ndarray, name: str | None = None) -> Dataset:
        return Dataset(
            x=self.x[idx],
            y=None if self.y is None else self.y[idx],
            name=name or self.name,
            scale=self.scale,
            label_names=self.label_names,
            meta={k: v for k, v in self.meta.items() if k != "value_range"},
        )

    def floats(self) -> np.ndarray:
        """All samples as float32 model inputs (for evaluation and plots, not the hot path)."""
        if self.is_sparse:
            return self.x.astype(np.float32).toarray()
        return (self.x.astype(np.float32) / self.scale) if self.scale != 1.0 else self.x.astype(np.float32)

    def chunks(self, size: int):
        """The samples as float32 model inputs, ``size`` rows at a time (sparse rows densified per chunk):
        memory bounded by one chunk, for encoding or scoring a large set."""
        for i in range(0, len(self), size):
            rows = self.x[i : i + size]
            rows = rows.toarray() if self.is_sparse else rows
            yield rows.astype(np.float32) / self.scale if self.scale != 1.0 else rows.astype(np.float32)

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` samples as float32 model inputs (densifies only those rows when sparse)."""
        if self.is_sparse:
            return self.x[:n].astype(np.float32).toarray()
        return self.x[:n].astype(np.float32) / self.scale if self.scale != 1.0 else self.x[:n].astype(np.float32)


def validate_array(x: np.ndarray | sp.csr_matrix, name: str) -> None:
    """Reject what no model can train on, with a message that says how to fix it."""
    if sp.issparse(x):
        if x.format != "csr" or x.shape[0] == 0 or x.shape[1] == 0:
            raise UserError(f"{name}: sparse data must be a non-empty CSR matrix (rows × columns), got {x.format} {x.shape}")
        if not np.isfinite(x.data).all():
            raise UserError(f"{name}: NaN/Inf values in the sparse matrix; remove them first")
        return
    if not isinstance(x, np.ndarray):
        raise UserError(f"{name}: expected an array, got {type(x).__name__}")
    if x.ndim >= 1 and len(x) == 0:
        raise UserError(f"{name}: the data set is empty: 0 sample(s) (shape={x.shape}) while a minimum of 1 is "
                        "required; give at least one sample")
    if x.size == 0:
        raise UserError(f"{name}: 0 feature(s) (shape={x.shape}) while a minimum of 1 is required; give samples with "
                        "at least one feature")
    if x.ndim not in (2, 4):
        raise UserError(
            f"{name}: samples must be vectors (n, features) or images (n, channels, height, width); "
            f"got an array of shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{name}: values must be numeric, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(COMPLEX.format(name=name))
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
            raise UserError(
                f"{name}: {int(bad.sum())} NaN/Inf values in {len(rows)} samples "
                f"(first at row {int(rows[0])}); remove or impute them first"
            )


@dataclass
class Splits:
    """A training set and the held-out set that evaluation and per-epoch test loss use; ``validation``
    (held out from training, when a task keeps some) and ``extras`` (what a task's data carries beside
    the samples, typed by the task's reader, e.g. :class:`~latentforge.data.interactions.RankingData`)."""

    train: Dataset
    test: Dataset
    name: str
    validation: Dataset | None = None
    extras: Any = None


def concat(parts: list[Dataset], name: str | None = None) -> Dataset:
    """The rows of ``parts`` one after another (labels kept only when every part has them)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.scale != first.scale or p.sample_shape != first.sample_shape for p in parts):
        raise UserError("cannot join data sets of different shapes or scales")
    if first.streamed:  # rows of one file on disk: joined by their indices, nothing read
        return first.join(parts, name)
    x = sp.vstack([p.x for p in parts], format="csr") if first.is_sparse else np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts]) if all(p.y is not None for p in parts) else None
    return Dataset(x=x, y=y, name=name or first.name, scale=first.scale, label_names=first.label_names,
                   meta={k: v for k, v in first.meta.items() if k != "value_range"})


def holdout_split(data: Dataset, *, fraction: float = 0.1, seed: int = 0) -> Splits:
    """Deterministic train/test split for data that comes without one."""
    n = len(data)
    if n < 2:
        raise UserError(f"{data.name}: need at least 2 samples to hold out a test set, got {n}")
    n_test = max(1, int(round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return Splits(
        train=data.subset(np.sort(perm[n_test:])),
        test=data.subset(np.sort(perm[:n_test])),
        name=data.name,
    )
