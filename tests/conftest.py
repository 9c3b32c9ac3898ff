"""Shared fixtures: real data from LATENTFORGE_DATA_DIR (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("LATENTFORGE_OFFLINE", "1")  # tests never download


def data_dir() -> Path | None:
    d = os.environ.get("LATENTFORGE_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


def require_data(*parts: str) -> Path:
    """Path to a file under LATENTFORGE_DATA_DIR, or skip the test saying what is missing."""
    d = data_dir()
    if d is None:
        pytest.skip("LATENTFORGE_DATA_DIR is not set to the shared data folder")
    p = d.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not present")
    return p


@pytest.fixture
def mnist_dir() -> Path:
    return require_data("mnist", "t10k-images-idx3-ubyte.gz").parent
