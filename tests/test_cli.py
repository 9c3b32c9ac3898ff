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


def test_reconstruct_a_file_reconstructs_its_own_first_rows_in_order(digits_run: Path, tmp_path: Path) -> None:
    """`reconstruct --data FILE` reads the file whole, in order: the n reconstructions are of its first n rows
    (not of a held-out slice), so row i of the output belongs to row i of the input."""
    import numpy as np
    import torch

    from latentforge.run import load_run

    x = np.load(_digits_npy(tmp_path))
    r = lf("reconstruct", str(digits_run), "--data", str(tmp_path / "d.npy"), "-n", "5", "--out", str(tmp_path / "r.npy"))
    assert r.returncode == 0, r.stderr
    model, _ = load_run(digits_run)
    with torch.no_grad():
        want = model.reconstruct(torch.from_numpy(x[:5])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "r.npy").reshape(5, -1), want.reshape(5, -1), atol=1e-5)


def _digits_npy(tmp_path: Path) -> Path:
    from sklearn.datasets import load_digits

    x = load_digits().data.reshape(-1, 8, 8)[::-1].copy()  # reversed: the file's order differs from the data set's
    np_path = tmp_path / "d.npy"
    import numpy as np

    np.save(np_path, (x / 16).astype(np.float32))  # grey levels in [0, 1], as the model's likelihood reads them
    return np_path
