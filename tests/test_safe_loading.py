"""Safe loading: a planted pickle is never executed, config.json is checked before anything is built, and a
checkpoint from a newer latentforge is refused."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from latentforge.checkpoint import CONFIG, FORMAT_VERSION, TRAIN_STATE, WEIGHTS, load_model, save_model
from latentforge.cli import main
from latentforge.errors import UserError
from latentforge.models import build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "latentforge"


class Payload:
    """Unpickling this creates ``marker``: the proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant(path: Path, marker: Path, how: str) -> None:
    if how == "pickle":
        path.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    else:  # torch.save's zip container, what a .pt/.bin checkpoint holds
        torch.save({"weight": Payload(marker)}, path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run directory (one epoch of a small VAE on digits) with its checkpoint."""
    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_planted_weights_are_never_unpickled(run: Path, tmp_path: Path, how: str, capsys) -> None:
    marker = tmp_path / "pwned"
    plant(run / WEIGHTS, marker, how)
    with pytest.raises(UserError, match="not a safetensors file"):
        load_model(run)
    err = one_error_line(capsys, main(["evaluate", str(run), "--k", "0"]))
    assert "not a safetensors file" in err
    assert not marker.exists()


@pytest.mark.parametrize("name", [WEIGHTS, "train_state.safetensors"])
def test_planted_checkpoint_is_never_unpickled_on_resume(run: Path, tmp_path: Path, name: str, capsys) -> None:
    marker = tmp_path / "pwned"
    plant(run / TRAIN_STATE / name, marker, "pickle")
    err = one_error_line(capsys, main(["train", "--resume", "--out", str(run), "--epochs", "2"]))
    assert "not a safetensors file" in err and not marker.exists()
    assert (run / TRAIN_STATE / name).exists()  # nothing was overwritten by the failed command


def test_the_package_has_no_unpickling_calls() -> None:
    """Nothing under src/ can unpickle: no torch.load, pickle.load(s), np.load(allow_pickle=True)."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False|"
                         r"^\s*import pickle|^\s*import dill|joblib\.load")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_config"].update(latent_dim=-3), "latent_dim must be at least 1"),
    (lambda c: c["model_config"].update(hidden="many"), "model_config does not fit"),
    (lambda c: c["model_config"].update(surprise=1), "model_config does not fit"),
    (lambda c: c.update(model="evil"), "unknown model 'evil'"),
    (lambda c: c.update(model_config=[1, 2]), "no valid 'model'/'model_config'"),
])
def test_config_is_checked_before_anything_is_built(run: Path, edit, message: str, monkeypatch) -> None:
    config = json.loads((run / CONFIG).read_text())
    edit(config)
    (run / CONFIG).write_text(json.dumps(config))

    def built(*a, **k):
        raise AssertionError("a network was built from a config.json that does not fit")

    monkeypatch.setattr(torch.nn.Linear, "__init__", built)
    with pytest.raises(UserError, match=re.escape(message)):
        load_model(run)


def test_format_version_is_written(run: Path) -> None:
    assert json.loads((run / CONFIG).read_text())["format_version"] == FORMAT_VERSION
    assert json.loads((run / TRAIN_STATE / "state.json").read_text())["format_version"] == FORMAT_VERSION


def test_files_without_a_format_version_are_version_1(tmp_path: Path) -> None:
    model = build_model("ae", input_shape=[5], latent_dim=2, hidden=[4])
    save_model(model, tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    del config["format_version"]
    (tmp_path / CONFIG).write_text(json.dumps(config))
    assert torch.equal(load_model(tmp_path).to_code.weight, model.to_code.weight)


def test_a_newer_format_is_refused(run: Path, capsys) -> None:
    state = json.loads((run / TRAIN_STATE / "state.json").read_text())
    (run / TRAIN_STATE / "state.json").write_text(json.dumps({**state, "format_version": FORMAT_VERSION + 1}))
    err = one_error_line(capsys, main(["train", "--resume", "--out", str(run), "--epochs", "2"]))
    assert f"saved by a newer latentforge (format {FORMAT_VERSION + 1}" in err and "upgrade latentforge" in err

    config = json.loads((run / CONFIG).read_text())
    (run / CONFIG).write_text(json.dumps({**config, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(UserError, match=r"saved by a newer latentforge .*; upgrade latentforge"):
        load_model(run)
    err = one_error_line(capsys, main(["evaluate", str(run)]))
    assert "upgrade latentforge" in err


@pytest.mark.parametrize("bad", ["2", 0, 1.5, None, True])
def test_a_damaged_format_version_is_refused(run: Path, bad) -> None:
    config = json.loads((run / CONFIG).read_text())
    (run / CONFIG).write_text(json.dumps({**config, "format_version": bad}))
    with pytest.raises(UserError, match="format_version"):
        load_model(run)
