"""Saving and loading: safetensors + JSON only, exact round trips, clear errors on bad files."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from latentforge.checkpoint import (CONFIG, TRAIN_STATE, WEIGHTS, load_model, load_training_state, save_model,
                                    save_training_state)
from latentforge.data import load_data
from latentforge.errors import UserError
from latentforge.models import build_model
from latentforge.models.base import Batch


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def trained(likelihood: str, digits, steps: int = 5, seed: int = 0, **kw) -> tuple[torch.nn.Module, torch.optim.Adam]:
    """A VAE after a few Adam steps (so weights and optimiser state are not at their defaults)."""
    torch.manual_seed(seed)
    model = build_model("vae", input_shape=[1, 8, 8], latent_dim=kw.get("latent_dim", 4), hidden=kw.get("hidden", [32]),
                        likelihood=likelihood)
    model.prepare(digits.train)  # Gaussian decoders store the data's mean and scale as buffers
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.from_numpy(digits.train.floats()[:64])
    for _ in range(steps):
        opt.zero_grad()
        model.loss(Batch(x))["loss"].backward()
        opt.step()
    return model.eval(), opt


def no_unpickling(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("something was unpickled")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.parametrize("likelihood", ["bernoulli", "cb", "gaussian"])
def test_save_load_model_roundtrip(tmp_path: Path, digits, likelihood: str, monkeypatch) -> None:
    model, _ = trained(likelihood, digits)
    save_model(model, tmp_path, extra={"note": "kept"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, WEIGHTS]
    no_unpickling(monkeypatch)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    assert json.loads((tmp_path / CONFIG).read_text())["note"] == "kept"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.from_numpy(digits.test.floats()[:50])
    with torch.no_grad():
        for a, b in zip(model.encode(x), loaded.encode(x)):
            assert torch.equal(a, b)
        assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
        assert torch.equal(model.sample(16, seed=7), loaded.sample(16, seed=7))
        assert not torch.equal(model.sample(16, seed=7), model.sample(16, seed=8))


def test_training_state_roundtrip(tmp_path: Path, digits, monkeypatch) -> None:
    model, opt = trained("bernoulli", digits)
    rng = {"torch": torch.get_rng_state(), "batches": torch.Generator().manual_seed(5).get_state()}
    history = [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": 1.25}]
    save_training_state(tmp_path, model, {"main": opt}, {"epoch": 2, "history": history}, rng)
    save_training_state(tmp_path, model, {"main": opt}, {"epoch": 2, "history": history}, rng)  # replace it
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAIN_STATE]  # no temporary or old folders left
    files = sorted(p.name for p in (tmp_path / TRAIN_STATE).iterdir())
    assert files == ["model.safetensors", "state.json", "train_state.safetensors"]  # no .pt / .pkl

    no_unpickling(monkeypatch)
    torch.manual_seed(99)
    model2 = build_model("vae", **model.config)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    state, rng2 = load_training_state(tmp_path, model2, {"main": opt2})
    assert state["epoch"] == 2 and state["history"] == history
    assert all(torch.equal(rng[k], rng2[k]) for k in rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["state"].keys() == sd2["state"].keys()
    for pid, st in sd["state"].items():
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(sd2["state"][pid][key])), (pid, key)
    g, g2 = sd["param_groups"][0], sd2["param_groups"][0]
    assert (g["lr"], tuple(g["betas"]), g["eps"], g["params"]) == (g2["lr"], tuple(g2["betas"]), g2["eps"], g2["params"])

    # the decisive check: one more step from either copy lands on the same weights
    x = torch.from_numpy(digits.train.floats()[64:128])
    for m, o in ((model, opt), (model2, opt2)):
        m.train()
        torch.manual_seed(0)
        o.zero_grad()
        m.loss(Batch(x))["loss"].backward()
        o.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k


# ---------------------------------------------------------------- missing, corrupt, mismatched


@pytest.fixture
def saved(tmp_path: Path, digits) -> Path:
    model, _ = trained("bernoulli", digits, steps=1)
    save_model(model, tmp_path / "run")
    return tmp_path / "run"


def test_missing_files(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(UserError, match="no such run directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "empty")
    (saved / WEIGHTS).unlink()
    with pytest.raises(UserError, match="missing"):
        load_model(saved)


@pytest.mark.parametrize("how", ["empty", "garbage", "truncated", "header only"])
def test_corrupt_weights(saved: Path, how: str) -> None:
    raw = (saved / WEIGHTS).read_bytes()
    bad = {"empty": b"", "garbage": b"not a safetensors file" * 10, "truncated": raw[: len(raw) // 2],
           "header only": raw[:60]}[how]
    (saved / WEIGHTS).write_bytes(bad)
    with pytest.raises(UserError, match="corrupt or not a safetensors file"):
        load_model(saved)


def test_corrupt_config(saved: Path) -> None:
    (saved / CONFIG).write_text('{"model": "vae", "model_config": ')
    with pytest.raises(UserError, match="corrupt"):
        load_model(saved)
    (saved / CONFIG).write_text('{"something": 1}')
    with pytest.raises(UserError, match="model_config"):
        load_model(saved)
    (saved / CONFIG).write_text('{"model": "no-such-model", "model_config": {}}')
    with pytest.raises(UserError, match="unknown model"):
        load_model(saved)


def test_mismatched_weights_and_config(saved: Path, tmp_path: Path, digits) -> None:
    other, _ = trained("bernoulli", digits, steps=1, hidden=[16])
    save_model(other, tmp_path / "other")
    shutil.copy(tmp_path / "other" / WEIGHTS, saved / WEIGHTS)  # weights of another run
    with pytest.raises(UserError, match="does not match"):
        load_model(saved)
    cfg = json.loads((saved / CONFIG).read_text())
    cfg["model_config"]["no_such_argument"] = 1
    (saved / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not fit"):
        load_model(saved)



def test_invalid_config_value_is_user_error(saved: Path) -> None:
    cfg = json.loads((saved / CONFIG).read_text())
    cfg["model_config"]["likelihood"] = "foo"
    (saved / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(UserError):
        load_model(saved)


def test_training_state_errors(tmp_path: Path, digits) -> None:
    model, opt = trained("bernoulli", digits, steps=1)
    with pytest.raises(UserError, match="nothing to resume"):
        load_training_state(tmp_path, model, {"main": opt})
    save_training_state(tmp_path, model, {"main": opt}, {"epoch": 1, "history": []}, {"torch": torch.get_rng_state()})
    bigger, _ = trained("bernoulli", digits, steps=1, hidden=[48])
    with pytest.raises(UserError, match="does not match"):
        load_training_state(tmp_path, bigger, {"main": torch.optim.Adam(bigger.parameters())})
    (tmp_path / TRAIN_STATE / "train_state.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="corrupt"):
        load_training_state(tmp_path, model, {"main": opt})
    (tmp_path / TRAIN_STATE / "state.json").write_text("{")
    with pytest.raises(UserError, match="corrupt"):
        load_training_state(tmp_path, model, {"main": opt})
