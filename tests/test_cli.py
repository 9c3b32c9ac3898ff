"""End to end through the `latentforge` command on the bundled digits (offline, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import lf  # noqa: F401  (kept importable as test_cli.lf)

RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "history.csv", "samples.png",
             "reconstructions.png", "report.html", "checkpoint")


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
