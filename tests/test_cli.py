"""End to end through the `latentforge` command on the bundled digits (offline, seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "history.csv", "samples.png",
             "reconstructions.png", "report.html", "checkpoint")


def lf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentforge.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    r = lf("train", "vae", "--data", "digits", "--epochs", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    return out


def test_train_writes_every_run_file(digits_run: Path) -> None:
    for name in RUN_FILES:
        assert (digits_run / name).exists(), name
    m = json.loads((digits_run / "metrics.json").read_text())
    assert m["model"] == "vae" and m["data"] == "digits" and m["epochs"] == 3
    assert m["likelihood"] == "bernoulli"
    for key in ("loss", "elbo", "nll_iwae", "recon_mse", "psnr", "ssim"):
        assert key in m["test"], key
    # the IWAE bound is tighter than the ELBO: −elbo ≥ nll_iwae (up to Monte Carlo noise)
    assert m["test"]["nll_iwae"] <= -m["test"]["elbo"] + 0.5
    assert m["train_seconds"] > 0 and m["samples_per_second"] > 0
    html = (digits_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
