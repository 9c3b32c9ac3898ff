"""Long end-to-end checks on the real data sets (``make test-all``; skipped without LATENTFORGE_DATA_DIR):
the README's commands at real sizes, with numbers that must land where a working model lands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_data

from latentforge.cli import main

pytestmark = pytest.mark.slow


def test_mnist_mlp_vae_two_epochs(tmp_path: Path) -> None:
    require_data("mnist", "train-images-idx3-ubyte.gz")
    out = tmp_path / "vae"
    assert main(["train", "vae", "--data", "mnist", "--arch", "mlp", "--epochs", "2", "--eval-k", "50",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # grey-level MNIST under a Bernoulli decoder: a working 784-400-20 VAE is near −ELBO 110 after 2 epochs
    # (an untrained one is above 540); the IWAE bound is tighter than the ELBO
    assert 90 < -m["test"]["elbo"] < 130 and m["test"]["nll_iwae"] < -m["test"]["elbo"]
    assert m["test"]["probe_acc"] > 0.85 and (out / "report.html").stat().st_size > 50_000
    assert main(["evaluate", str(out), "--k", "100", "--iwae-n", "200", "--json"]) == 0
    assert json.loads((out / "metrics.json").read_text())["evaluation"]["iwae_n"] == 200


def test_movielens_mult_vae_beats_popularity(tmp_path: Path) -> None:
    require_data("ml-100k", "u.data")
    out = tmp_path / "rec"
    assert main(["train", "mult-vae", "--data", "movielens-100k", "--epochs", "30", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["ndcg@100"] > 0.35  # popularity scores about 0.27 on these users (docs/results.md)
    assert main(["recommend", str(out), "--user", "196", "--top", "5"]) == 0
