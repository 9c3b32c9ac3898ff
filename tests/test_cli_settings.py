"""Every flag reaches the model or is refused; ``--resume`` refuses settings that contradict its run; new data
is held to the rules of training; an interrupt stops at once and leaves a run that resumes; a saved model
is a run to every command or the command says what it needs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentforge import VAE
from latentforge.cli import main
from latentforge.train import TrainConfig


def _err(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--eval-k", "0", "--out", str(out)]) == 0
    return out


def test_vqvae_flags_reach_the_model(tmp_path: Path, mnist_dir) -> None:
    imgs = (np.random.default_rng(0).random((64, 1, 16, 16)) < 0.3).astype(np.float32)
    np.save(tmp_path / "imgs.npy", imgs)
    out = tmp_path / "vq"
    assert main(["train", "vqvae", "--data", str(tmp_path / "imgs.npy"), "--n-codes", "7", "--code-dim", "3",
                 "--commitment", "0.5", "--epochs", "1", "--eval-k", "0", "--out", str(out)]) == 0
    mc = json.loads((out / "config.json").read_text())["model_config"]
    assert (mc["n_codes"], mc["code_dim"], mc["commitment"]) == (7, 3, 0.5)


@pytest.mark.parametrize("argv,flag", [
    (["train", "vqvae", "--n-codes", "0"], "--n-codes"),
    (["train", "vqvae", "--commitment", "-1"], "--commitment"),
    (["train", "vae", "--beta", "-1"], "--beta"),
    (["train", "vae", "--n-codes", "5"], "--n-codes does not apply"),
    (["train", "vae", "--trim", "1.5"], "--trim"),
    (["train", "dae", "--noise", "gaussian:-1"], "--noise"),
    (["train", "vae", "--seed", str(2**70)], "--seed"),
    (["train", "vae", "--device", "cuda:99"], "cuda:99"),
])
def test_bad_settings_are_refused_with_the_flag_name(argv, flag, capsys, tmp_path: Path) -> None:
    out = tmp_path / "never"
    assert flag in _err([*argv, "--epochs", "1", "--out", str(out)], capsys)
    assert not out.exists()


def test_resume_refuses_settings_that_contradict_the_run(run: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    err = _err(["train", "ae", "--data", "other.npy", "--latent-dim", "3", "--resume", "--out", str(copy),
                "--epochs", "3"], capsys)
    assert "model 'ae'" in err and "--data other.npy" in err and "--latent-dim 3" in err
    err = _err(["train", "--resume", "--out", str(copy), "--epochs", "3", "--batch-size", "7"], capsys)
    assert "--batch-size 7" in err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert main(["train", "--resume", "--out", str(copy), "--epochs", "2", "--eval-k", "0"]) == 0  # its own settings


def test_new_data_outside_the_likelihoods_range_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "big.npy", np.full((20, 1, 8, 8), 200.0, np.float32))
    for cmd in (["evaluate", str(run)], ["reconstruct", str(run), "--out", str(tmp_path / "r.npy")]):
        assert "[0, 1]" in _err([*cmd, "--data", str(tmp_path / "big.npy")], capsys)


def test_an_interrupt_in_the_first_epoch_leaves_nothing_half_made(tmp_path: Path, monkeypatch, capsys) -> None:
    from latentforge.models.vae import VAE as VAEModel

    def interrupted(self, batch, optimizers):
        raise KeyboardInterrupt

    monkeypatch.setattr(VAEModel, "training_step", interrupted)
    out = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "2", "--out", str(out)]) == 130
    assert "before any epoch finished" in capsys.readouterr().err and not out.exists()  # a plain rerun works


def test_an_interrupt_later_keeps_a_run_that_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    from latentforge.models.vae import VAE as VAEModel

    real, calls = VAEModel.training_step, {"n": 0}

    def later(self, batch, optimizers):
        calls["n"] += 1
        if calls["n"] > 4:  # digits: 3 batches of 512 per epoch, so this is the second epoch
            raise KeyboardInterrupt
        return real(self, batch, optimizers)

    monkeypatch.setattr(VAEModel, "training_step", later)
    out = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "3", "--batch-size", "512", "--out", str(out)]) == 130
    assert "continue with --resume" in capsys.readouterr().err
    monkeypatch.setattr(VAEModel, "training_step", real)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--eval-k", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


def test_commands_on_a_save_pretrained_folder_say_what_they_need(tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    x = (load_digits().images[:200] / 16).astype(np.float32)
    VAE(latent_dim=4, hidden=(32,), epochs=1, random_state=0, device="cpu").fit(x).save_pretrained(tmp_path / "m")
    assert "--data" in _err(["evaluate", str(tmp_path / "m")], capsys)
    assert "--data" in _err(["reconstruct", str(tmp_path / "m"), "--out", str(tmp_path / "r.png")], capsys)
    assert "report" in _err(["report", str(tmp_path / "m")], capsys)
    assert main(["sample", str(tmp_path / "m"), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_a_conditional_sample_needs_a_label_in_range(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cvae"
    assert main(["train", "cvae", "--epochs", "1", "--eval-k", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert "--label" in _err(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png")], capsys)
    assert "--label" in _err(["sample", str(out), "-n", "4", "--label", "10", "--out", str(tmp_path / "s.png")], capsys)
    (tmp_path / "dir.png").mkdir()
    assert "folder" in _err(["sample", str(out), "-n", "4", "--label", "1", "--out", str(tmp_path / "dir.png")], capsys)


def test_train_config_names_its_settings() -> None:
    with pytest.raises(Exception, match="epochs"):
        TrainConfig(epochs=0)


def test_fashion_mnist_error_says_which_files_were_found(capsys) -> None:
    from conftest import require_data

    folder = require_data("fashion-mnist")
    if (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the Fashion-MNIST images are present here")
    err = _err(["train", "--data", "fashion-mnist", "--epochs", "1"], capsys)
    assert "found" in err and "labels" in err and "train-images-idx3-ubyte.gz" in err


def test_report_shows_only_the_settings_that_apply(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    assert main(["train", "vae", "--arch", "mlp", "--epochs", "1", "--eval-k", "0", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    config = html[html.index("Configuration"):]
    assert "channels" not in config and "None" not in config and "latent_dim" in config


def test_a_run_killed_before_its_first_checkpoint_is_reused(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(run / "config.json", out / "config.json")  # what a kill -9 in the first epoch leaves
    assert "without --resume" in _err(["train", "--resume", "--out", str(out), "--epochs", "2"], capsys)
    assert main(["train", "vae", "--epochs", "1", "--eval-k", "0", "--out", str(out)]) == 0
    assert (out / "checkpoint").is_dir() and (out / "metrics.json").exists()


def test_a_run_killed_while_being_finished_is_finished_by_resume(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "unfinished"
    shutil.copytree(run, out)
    (out / "metrics.json").unlink()  # killed after the last checkpoint, before the evaluation was written
    (out / "report.html").unlink()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "1", "--eval-k", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1 and (out / "report.html").exists()
