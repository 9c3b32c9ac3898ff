"""Faults: a full disk or a read-only run directory is a clear error that keeps the previous checkpoint, and a
training process killed with SIGKILL at random moments resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentforge import checkpoint
from latentforge.checkpoint import TRAIN_STATE, WEIGHTS, load_training_state, save_model
from latentforge.cli import main
from latentforge.data import load_data
from latentforge.errors import UserError
from latentforge.io import load_tensors
from latentforge.models import build_model
from latentforge.train import TrainConfig, fit


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def small_vae() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("vae", input_shape=[1, 8, 8], latent_dim=4, hidden=[32])


def cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, device="cpu", compile="off", progress=False)


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, digits, monkeypatch) -> None:
    fit(small_vae(), digits.train, None, cfg(1), run_dir=tmp_path)
    before = load_tensors(tmp_path / TRAIN_STATE / WEIGHTS)
    monkeypatch.setattr(checkpoint, "save_tensors", full_disk)
    with pytest.raises(UserError, match=r"No space left on device.*previous checkpoint .* is intact") as e:
        fit(small_vae(), digits.train, None, cfg(2), run_dir=tmp_path, resume=True)
    assert "\n" not in str(e.value) and "epoch 2" in str(e.value)
    monkeypatch.undo()
    model = small_vae()
    state, _ = load_training_state(tmp_path, model, model.configure_optimizers(1e-3))
    assert state["epoch"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAIN_STATE, "history.csv"]  # no half-made folder left


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_run_directory_keeps_the_previous_checkpoint(tmp_path: Path, digits) -> None:
    fit(small_vae(), digits.train, None, cfg(1), run_dir=tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"Permission denied.*previous checkpoint .* is intact"):
            fit(small_vae(), digits.train, None, cfg(2), run_dir=tmp_path, resume=True)
    finally:
        tmp_path.chmod(0o755)
    model = small_vae()
    assert load_training_state(tmp_path, model, model.configure_optimizers(1e-3))[0]["epoch"] == 1


def test_full_disk_on_the_first_checkpoint_and_on_save_model(tmp_path: Path, digits, monkeypatch, capsys) -> None:
    monkeypatch.setattr(checkpoint, "save_tensors", full_disk)
    code = main(["train", "vae", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: cannot write the checkpoint of epoch 1") and "no checkpoint had" in err[-1]
    assert not (tmp_path / "run").exists()  # nothing worth keeping was made
    with pytest.raises(UserError, match="cannot save the model in .*No space left on device"):
        save_model(small_vae(), tmp_path / "saved")


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_replace_folder_swaps_in_the_new_folder(tmp_path: Path, atomic_exchange: bool, monkeypatch) -> None:
    """Linux exchanges the folders in one step (no moment without ``final``); elsewhere two renames."""
    from latentforge import io

    if not atomic_exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "a").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    io.replace_folder(tmp_path / "new", tmp_path / "final")
    assert (tmp_path / "final" / "a").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["final"]


# --- kill -9 ------------------------------------------------------------------------------------------------

EPOCHS = 12
TRAIN = ["train", "vae", "--data", "digits", "--epochs", str(EPOCHS), "--batch-size", "16", "--hidden", "64",
         "--latent-dim", "4", "--seed", "3"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "latentforge.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / WEIGHTS)


def kill_during_training(out: Path, *, after_epoch: int, delay: float) -> int:
    """Start training, SIGKILL it ``delay`` seconds after epoch ``after_epoch`` was reported; the saved epoch."""
    proc = subprocess.Popen(cli(*TRAIN, "--out", str(out)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env())
    try:
        for line in proc.stderr:
            if line.startswith(f"epoch {after_epoch}/{EPOCHS}:"):
                time.sleep(delay)
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return int(checkpoint.read_json(out / TRAIN_STATE / "state.json")["epoch"])


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """10 seeded trials: each kill lands in a random epoch at a random point (mid-step, mid-checkpoint, …);
    ``--resume`` must always work and end with the weights of the uninterrupted run, tensor for tensor."""
    reference = tmp_path / "reference"
    subprocess.run(cli(*TRAIN, "--out", str(reference)), check=True, capture_output=True, env=env())
    epoch_seconds = [float(r["seconds"]) for r in checkpoint.read_json(reference / TRAIN_STATE / "state.json")["history"]]
    want = weights_of(reference)
    rng = random.Random(2026)
    identical, saved_epochs = 0, []
    for trial in range(10):
        out = tmp_path / f"trial{trial}"
        after = rng.randint(1, EPOCHS - 2)  # at least one epoch is left to resume
        saved = kill_during_training(out, after_epoch=after, delay=rng.uniform(0, 1.5 * max(epoch_seconds)))
        saved_epochs.append(saved)
        assert after <= saved < EPOCHS
        resumed = subprocess.run(cli("train", "--resume", "--out", str(out), "--epochs", str(EPOCHS)),
                                 check=False, capture_output=True, text=True, env=env())
        assert resumed.returncode == 0, f"trial {trial}: resume after epoch {saved} failed: {resumed.stderr[-500:]}"
        assert not list(out.glob(".checkpoint-*")), "a killed write's temporary folder was left behind"
        got = weights_of(out)
        identical += got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    print(f"kill -9 trials: {identical}/10 resumed to identical weights; checkpoints found at epochs {saved_epochs}")
    assert identical == 10
