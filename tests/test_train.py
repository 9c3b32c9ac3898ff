"""The training loop: reproducibility, exact resume, the NaN guard, history.csv."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch

from latentforge.data import load_data
from latentforge.errors import UserError
from latentforge.models import build_model
from latentforge.models.vae import VAE
from latentforge.train import TrainConfig, TrainingDiverged, fit


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def small_vae(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("vae", input_shape=[1, 8, 8], **{"latent_dim": 8, "hidden": [64], **kw})


def cfg(epochs: int, seed: int = 0, **kw) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed, device="cpu", compile="off", progress=False, **kw)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_same_seed_gives_identical_weights(digits) -> None:
    a, b = small_vae(), small_vae()
    fit(a, digits.train, None, cfg(2))
    fit(b, digits.train, None, cfg(2))
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(small_vae()))  # and it did train


def test_different_seed_gives_different_weights(digits) -> None:
    a, b = small_vae(), small_vae()  # same initial weights: only the training seed differs
    fit(a, digits.train, None, cfg(2, seed=0))
    fit(b, digits.train, None, cfg(2, seed=1))
    assert not any(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in ("encoder.0.weight", "decoder.2.weight"))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, digits) -> tuple[Path, torch.nn.Module, list[dict]]:
    """4 epochs in one go, with a test set (its evaluation draws random numbers, too)."""
    run = tmp_path_factory.mktemp("straight")
    model = small_vae()
    result = fit(model, digits.train, digits.test, cfg(4), run_dir=run)
    return run, model, result.history


def test_resume_equals_uninterrupted(tmp_path: Path, digits, straight_run) -> None:
    _, straight, straight_history = straight_run
    first = small_vae()
    fit(first, digits.train, digits.test, cfg(2), run_dir=tmp_path)
    resumed = small_vae(seed=123)  # the checkpoint, not the initialisation, decides
    result = fit(resumed, digits.train, digits.test, cfg(4), run_dir=tmp_path, resume=True)
    assert same(weights(resumed), weights(straight))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert losses(result.history) == losses(straight_history)


def test_resume_with_no_more_epochs_is_a_user_error(digits, straight_run) -> None:
    run, _, _ = straight_run
    with pytest.raises(UserError, match="already has 4 epochs"):
        fit(small_vae(), digits.train, None, cfg(4), run_dir=run, resume=True)


def test_training_lowers_the_loss(straight_run) -> None:
    _, _, history = straight_run
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert history[-1]["test_loss"] < history[0]["test_loss"] - 1.0
    for row in history:  # loss = recon + kl (β = 1), averaged per sample
        assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_kl"], rel=1e-5)


def test_history_csv_has_one_row_per_epoch(straight_run) -> None:
    run, _, history = straight_run
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "test_loss", "train_kl", "train_recon", "seconds"} <= set(rows[0])
    for r, h in zip(rows, history):
        assert float(r["train_loss"]) == pytest.approx(h["train_loss"], rel=1e-12)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path: Path, digits, monkeypatch) -> None:
    fit(small_vae(), digits.train, None, cfg(1), run_dir=tmp_path)
    before = _digest(tmp_path)
    assert "checkpoint/model.safetensors" in before and "history.csv" in before

    monkeypatch.setattr(VAE, "use_fused_step", False)  # the generic step calls model.loss
    model = small_vae()
    real_loss = model.loss
    calls = {"n": 0}

    def poisoned(x):  # the 3rd step of the resumed epoch blows up
        out = real_loss(x)
        calls["n"] += 1
        if calls["n"] >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    model.loss = poisoned
    with pytest.raises(TrainingDiverged, match="epoch 2") as info:
        fit(model, digits.train, None, cfg(3), run_dir=tmp_path, resume=True)
    assert isinstance(info.value, UserError)
    assert "--lr" in str(info.value) and "epoch 1" in str(info.value)  # says what is kept and what to do
    assert _digest(tmp_path) == before  # byte for byte: the epoch-1 checkpoint and history are intact
    again = small_vae()
    monkeypatch.setattr(VAE, "use_fused_step", True)
    fit(again, digits.train, None, cfg(2), run_dir=tmp_path, resume=True)  # and it still resumes


def test_huge_learning_rate_diverges(digits) -> None:
    with pytest.raises(TrainingDiverged, match="NaN/Inf"):
        fit(small_vae(), digits.train, None, cfg(3, lr=1e6))


def test_bad_config_is_a_user_error(digits) -> None:
    for bad in (dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(lr=float("nan")), dict(compile="x"),
                dict(binarize="sometimes")):
        kw = {"epochs": 1, **bad}
        with pytest.raises(UserError):
            fit(small_vae(), digits.train, None, TrainConfig(device="cpu", **kw))
    with pytest.raises(UserError, match="resume"):
        fit(small_vae(), digits.train, None, cfg(1), resume=True)  # resume needs a run directory


def test_compile_on_reaches_every_model_whose_step_goes_through_its_loss() -> None:
    """--compile on compiles ``loss`` for models on the generic step (conv VAEs included: their step is the
    generic one) and says, in a warning, when a model's own step makes it a no-op (the fused MLP VAE, GANs)."""
    import warnings

    from latentforge.train import _make_step

    for name, kw in (("vae", {"arch": "conv"}), ("ae", {}), ("deep-svdd", {})):
        model = build_model(name, input_shape=[1, 28, 28], **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # ours: none for these models
            _make_step(model, model.configure_optimizers(1e-3), True)
        assert "compiled_loss" in model.__dict__, name
        _make_step(model, model.configure_optimizers(1e-3), False)
        assert "compiled_loss" not in model.__dict__, name
    for name, kw, why in (("vae", {"arch": "mlp"}, "the hand-fused MLP step"), ("dcgan", {}, "its own training step")):
        model = build_model(name, input_shape=[1, 28, 28], **kw)
        with pytest.warns(UserWarning, match=f"--compile: {name} trains with {why}"):
            _make_step(model, model.configure_optimizers(1e-3), True)
        assert "compiled_loss" not in model.__dict__


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(digits) -> None:
    """One epoch with the loss compiled gives the eager run's losses (fallback_random keeps the draws)."""
    runs = []
    for compile in ("off", "on"):
        torch.manual_seed(0)
        model = build_model("ae", input_shape=[1, 8, 8], latent_dim=4)
        res = fit(model, digits.train, None, TrainConfig(epochs=1, seed=0, device="cpu", compile=compile, progress=False))
        runs.append(res.history[0]["train_loss"])
        assert "compiled_loss" not in model.__dict__
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_a_model_that_meets_its_stopping_rule_ends_training(digits, capsys) -> None:
    model = small_vae()
    model.finished = lambda: len(seen) >= 2  # the model's own rule, asked after each epoch
    seen: list[int] = []
    model.on_epoch_end = lambda epoch, train, run_dir: seen.append(epoch) or {}
    result = fit(model, digits.train, None, TrainConfig(epochs=10, device="cpu", compile="off", progress=True))
    assert [row["epoch"] for row in result.history] == [1, 2] and seen == [1, 2]
    assert "stopped after epoch 2: the model met its stopping rule" in capsys.readouterr().err
