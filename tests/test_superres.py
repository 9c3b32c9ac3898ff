"""Super-resolution (sr-ae, the superres task, `latentforge upscale`): it learns to beat bicubic interpolation on
real digits, keeps its shapes, refuses what it cannot upscale with one clear line, and a trained run upscales
files from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from latentforge.cli import main
from latentforge.data import Dataset
from latentforge.errors import UserError
from latentforge.metrics.reconstruction import psnr
from latentforge.models import build_model, capabilities
from latentforge.models.base import Batch
from latentforge.models.superres import Upscaler
from latentforge.settings import SettingError
from latentforge.tasks import get_task
from latentforge.train import TrainConfig, fit


def _err(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    return err


def digits() -> np.ndarray:
    return (load_digits().images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]


def test_training_lowers_the_loss_and_beats_bicubic_on_real_digits() -> None:
    x = digits()
    train, test = Dataset(x=x[:1500], name="digits"), x[1500:]
    torch.manual_seed(0)
    model = build_model("sr-ae", input_shape=[1, 8, 8], scale=2, width=16, depth=2)
    result = fit(model, train, None, TrainConfig(epochs=6, batch_size=64, lr=5e-3, device="cpu", progress=False))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.7 * losses[0]
    with torch.no_grad():
        low = model.downsample(torch.from_numpy(test))
        ours, bicubic = model.upscale(low).numpy(), model.bicubic(low).numpy()
    assert psnr(ours, test) > psnr(bicubic, test) + 2.0, (psnr(ours, test), psnr(bicubic, test))  # 17.4 vs 13.7 dB


def test_mnist_14_to_28_beats_bicubic_after_a_short_fit(mnist_dir) -> None:
    from latentforge.data import load_data

    splits = load_data("mnist")
    train = splits.train.subset(np.arange(3000))
    test = splits.test.head(500)
    torch.manual_seed(0)
    model = build_model("sr-ae", input_shape=[1, 28, 28], width=16, depth=2)
    fit(model, train, None, TrainConfig(epochs=1, batch_size=64, lr=3e-3, device="cpu", progress=False))
    with torch.no_grad():
        low = model.downsample(torch.from_numpy(test))
        ours, bicubic = model.upscale(low).numpy(), model.bicubic(low).numpy()
    assert psnr(ours, test) > psnr(bicubic, test) + 2.0, (psnr(ours, test), psnr(bicubic, test))


@pytest.mark.parametrize("scale,side", [(2, 8), (3, 12), (4, 16)])
def test_shapes_range_and_the_untrained_model_is_bicubic(scale: int, side: int) -> None:
    model = build_model("sr-ae", input_shape=[3, side, side], scale=scale, width=4, depth=1)
    x = torch.rand(5, 3, side, side)
    low = model.downsample(x)
    assert low.shape == (5, 3, side // scale, side // scale)
    assert torch.allclose(low[:, :, 0, 0], x[:, :, :scale, :scale].mean((-1, -2)))  # block averages
    with torch.no_grad():
        up = model.upscale(low)
        assert up.shape == x.shape and up.min() >= 0 and up.max() <= 1
        assert torch.allclose(up, model.bicubic(low))  # the last layer starts at zero: a correction of bicubic
    assert model.loss(Batch(x))["loss"].shape == ()
    assert isinstance(model, Upscaler) and "reconstruct" not in capabilities(model)
    assert get_task(model.task).name == "superres"


def test_bad_shapes_are_refused_clearly() -> None:
    with pytest.raises(SettingError, match="scale 2 must divide .* 9x9"):
        build_model("sr-ae", input_shape=[1, 9, 9])
    with pytest.raises(SettingError, match="scale 3 must divide"):
        build_model("sr-ae", input_shape=[1, 8, 8], scale=3)
    with pytest.raises(SettingError, match="table cannot be upscaled"):
        build_model("sr-ae", input_shape=[30])
    with pytest.raises(SettingError, match="scale must be one of 2, 3, 4"):
        build_model("sr-ae", input_shape=[1, 8, 8], scale=5)
    model = build_model("sr-ae", input_shape=[1, 8, 8])
    with pytest.raises(UserError, match=r"must have shape \[1, 4, 4\]"):
        model.upscale(torch.rand(2, 1, 8, 8))


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sr") / "run"
    assert main(["train", "sr-ae", "--data", "digits", "--scale", "2", "--width", "8", "--depth", "1", "--epochs", "2",
                 "--out", str(out)]) == 0
    return out


def test_a_run_keeps_its_metrics_pictures_and_report(sr_run: Path, capsys) -> None:
    m = json.loads((sr_run / "metrics.json").read_text())
    assert m["task"] == "superres" and m["best_epoch"] in (1, 2)
    assert {"loss", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic"} <= set(m["test"])
    assert (sr_run / "superres.png").exists() and (sr_run / "curves.png").exists()
    assert json.loads((sr_run / "config.json").read_text())["model_config"]["scale"] == 2
    assert main(["evaluate", str(sr_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["psnr_bicubic"] == pytest.approx(m["test"]["psnr_bicubic"])
    for picture in ("superres.png", "curves.png"):  # `report` redraws a run's pictures when its curves are missing
        (sr_run / picture).unlink()
    assert main(["report", str(sr_run)]) == 0
    assert (sr_run / "superres.png").exists()
    html = (sr_run / "report.html").read_text()
    assert "Super-resolution" in html and "psnr_bicubic" in html


def test_upscale_round_trip_to_npy_and_png(sr_run: Path, tmp_path: Path) -> None:
    x = digits()[:10]
    low = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2).numpy()
    np.save(tmp_path / "low.npy", low)
    assert main(["upscale", str(sr_run), "--data", str(tmp_path / "low.npy"), "--out", str(tmp_path / "up.npy")]) == 0
    up = np.load(tmp_path / "up.npy")
    assert up.shape == (10, 1, 8, 8) and up.min() >= 0 and up.max() <= 1
    # integer grey levels 0–255 (as int16, not uint8) are divided by 255; 3-D arrays are one channel
    np.save(tmp_path / "low_int.npy", np.round(low[:, 0] * 255).astype(np.int16))
    assert main(["upscale", str(sr_run), "--data", str(tmp_path / "low_int.npy"), "--out",
                 str(tmp_path / "up_int.npy")]) == 0
    assert np.abs(np.load(tmp_path / "up_int.npy") - up).max() < 0.02
    assert main(["upscale", str(sr_run), "--data", "digits", "--from-high", "-n", "5", "--out",
                 str(tmp_path / "demo.npy")]) == 0
    assert np.load(tmp_path / "demo.npy").shape == (5, 1, 8, 8)
    assert main(["upscale", str(sr_run), "--data", str(tmp_path / "low.npy"), "--out", str(tmp_path / "up.png")]) == 0
    assert (tmp_path / "up.png").stat().st_size > 0


def test_upscale_refuses_bad_inputs_with_one_line(sr_run: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "high.npy", digits()[:4])
    out = tmp_path / "never.npy"
    assert "--from-high" in _err(["upscale", str(sr_run), "--data", str(tmp_path / "high.npy"), "--out", str(out)],
                                 capsys)
    np.save(tmp_path / "odd.npy", np.random.rand(4, 1, 5, 5).astype(np.float32))
    assert "[1, 4, 4]" in _err(["upscale", str(sr_run), "--data", str(tmp_path / "odd.npy"), "--out", str(out)], capsys)
    np.save(tmp_path / "neg.npy", np.full((4, 1, 4, 4), -0.5, np.float32))
    assert "[0, 1]" in _err(["upscale", str(sr_run), "--data", str(tmp_path / "neg.npy"), "--out", str(out)], capsys)
    np.save(tmp_path / "table.npy", np.random.rand(20, 16).astype(np.float32))
    assert "not images" in _err(["upscale", str(sr_run), "--data", str(tmp_path / "table.npy"), "--out", str(out)],
                                capsys)
    assert ".png or .npy" in _err(["upscale", str(sr_run), "--data", "digits", "--out", str(tmp_path / "x.csv")],
                                  capsys)
    assert not out.exists()


def test_train_refuses_tables_values_outside_the_unit_interval_and_odd_sizes(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "table.npy", rng.random((300, 16)).astype(np.float32))
    np.save(tmp_path / "big.npy", (rng.random((300, 1, 8, 8)) * 4).astype(np.float32))
    np.save(tmp_path / "odd.npy", rng.random((300, 1, 9, 9)).astype(np.float32))
    out = tmp_path / "never"
    base = ["train", "sr-ae", "--epochs", "1", "--out", str(out)]
    assert "table cannot be upscaled" in _err([*base, "--data", str(tmp_path / "table.npy")], capsys)
    assert "[0, 1]" in _err([*base, "--data", str(tmp_path / "big.npy")], capsys)
    assert "--scale 2 must divide" in _err([*base, "--data", str(tmp_path / "odd.npy")], capsys)
    assert "--binarize" in _err([*base, "--data", "digits", "--binarize", "static"], capsys)
    assert not out.exists()
