"""Shared fixtures: real data from LATENTFORGE_DATA_DIR (skipped with a reason when absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One thread: the test models are tiny, and on a busy 2-core machine a second OpenMP thread spins
# instead of helping (a 2-epoch digits fit: 0.05 CPU-s on one thread, 4 CPU-s on two).
torch.set_num_threads(1)
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


def interactions_frame(n_users: int = 40, n_items: int = 30, seed: int = 0):
    """Random explicit ratings (1–5) of string users on integer items, 8–15 per user."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", 100 + i, float(rng.integers(1, 6))) for u in range(n_users)
            for i in rng.choice(n_items, size=int(rng.integers(8, 16)), replace=False)]
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


def lf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line, ``python -m latentforge.cli ARGS``, capturing its output.

    One OpenMP thread per process: with several processes on a 2-core machine, OpenMP threads
    spin against each other (scikit-learn's t-SNE for the latent map went from ~3 to ~45 CPU-s)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "latentforge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One run directory made by ``latentforge train vae --data digits --epochs 3`` for the whole session.

    Tests that change a run must copy it first (``shutil.copytree``)."""
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    r = lf("train", "vae", "--data", "digits", "--epochs", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    return out
