"""Mistakes a user makes on the command line: one line ``error: …`` on stderr, exit code 2, no
traceback, and nothing already written is touched.

Every case runs through ``latentforge.cli.main`` in this process (milliseconds each), and a
representative subset also through the real ``python -m latentforge.cli`` in subprocesses (each
costs ~4 s of CPU just to import torch and scikit-learn, so they run together in a thread pool).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import lf
from PIL import Image

from latentforge.cli import main

# name → (argv with {d} for the case folder and {run} for the shared digits run, words the message must hold)
CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "unknown data name": (["train", "--data", "no-such-set"], ("unknown data set", "digits")),
    "missing path": (["train", "--data", "{d}/missing.npy"], ("no such file",)),
    "empty file": (["train", "--data", "{d}/empty.npy"], ("empty",)),
    "empty csv": (["train", "--data", "{d}/header_only.csv"], ("no rows",)),
    "1-D npy": (["train", "--data", "{d}/one_d.npy"], ("(10,)",)),
    "5-D npy": (["train", "--data", "{d}/five_d.npy"], ("(4, 1, 2, 2, 2)",)),
    "NaN in npy": (["train", "--data", "{d}/nan.npy"], ("NaN/Inf", "row 3")),
    "Inf in npy": (["train", "--data", "{d}/inf.npy"], ("NaN/Inf",)),
    "NaN in csv": (["train", "--data", "{d}/nan.csv"], ("NaN/Inf",)),
    "Inf in csv": (["train", "--data", "{d}/inf.csv"], ("NaN/Inf",)),
    "non-numeric csv": (["train", "--data", "{d}/text.csv"], ("'b'", "not numeric")),
    "mixed image sizes": (["train", "--data", "{d}/mixed"], ("different sizes",)),
    "epochs 0": (["train", "--epochs", "0"], ("--epochs",)),
    "batch-size -1": (["train", "--batch-size", "-1"], ("--batch-size",)),
    "latent-dim 0": (["train", "--latent-dim", "0"], ("--latent-dim",)),
    "hidden abc": (["train", "--hidden", "abc"], ("--hidden", "abc")),
    "hidden 0": (["train", "--hidden", "400,0"], ("--hidden",)),
    "lr negative": (["train", "--lr", "-1"], ("--lr",)),
    "epochs not a number": (["train", "--epochs", "abc"], ("--epochs",)),
    "unknown option": (["train", "--bogus"], ("--bogus",)),
    "resume a non-run": (["train", "--resume", "--out", "{d}/notrun"], ("--resume",)),
    "sample non-run": (["sample", "{d}/notrun", "-n", "4", "--out", "{d}/s.png"], ("not a latentforge run",)),
    "sample missing run": (["sample", "{d}/nothere", "-n", "4", "--out", "{d}/s.png"], ("no such run directory",)),
    "evaluate non-run": (["evaluate", "{d}/notrun"], ("not a latentforge run",)),
    "evaluate iwae-n 0": (["evaluate", "{d}/notrun", "--iwae-n", "0"], ("--iwae-n",)),
    "evaluate missing features": (["evaluate", "{d}/notrun", "--features", "{d}/none.pt"], ("none.pt", "not found")),
    "report non-run": (["report", "{d}/notrun"], ("not a latentforge run",)),
    "reconstruct non-run": (["reconstruct", "{d}/notrun", "--out", "{d}/r.png"], ("not a latentforge run",)),
    "out exists": (["train", "--epochs", "1", "--out", "{d}/full"], ("already exists", "--resume")),
    "out is a file": (["train", "--epochs", "1", "--out", "{d}/afile.txt"], ("afile.txt",)),
    "bad data leaves no run dir": (["train", "--data", "{d}/nan.npy", "--out", "{d}/new_run"], ("NaN/Inf",)),
    "corrupt weights: sample": (["sample", "{d}/corrupt", "-n", "4", "--out", "{d}/c.png"], ("model.safetensors", "corrupt")),
    "corrupt weights: evaluate": (["evaluate", "{d}/corrupt", "--k", "0"], ("model.safetensors", "corrupt")),
    "mismatched weights": (["sample", "{d}/mismatch", "-n", "4", "--out", "{d}/m.png"], ("does not match",)),
    "bad model_config value": (["sample", "{d}/badcfg", "-n", "4", "--out", "{d}/b.png"], ("config.json",)),
    "truncated npz": (["train", "--data", "{d}/cut.npz"], ("cut.npz",)),
    "truncated IDX header": (["train", "--data", "{d}/cut-idx3-ubyte"], ("cut-idx3-ubyte",)),
}

BUGS: dict[str, str] = {}  # known bugs as strict xfails; all fixed


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _make_inputs(d: Path, run: Path) -> None:
    rng = np.random.default_rng(0)
    (d / "empty.npy").write_bytes(b"")
    (d / "header_only.csv").write_text("a,b,c\n")
    np.save(d / "one_d.npy", np.arange(10.0))
    np.save(d / "five_d.npy", np.zeros((4, 1, 2, 2, 2)))
    a = rng.random((20, 5))
    a[3, 2] = np.nan
    np.save(d / "nan.npy", a)
    a = rng.random((20, 5))
    a[7, 0] = -np.inf
    np.save(d / "inf.npy", a)
    (d / "nan.csv").write_text("a,b\n1,2\n3,\n5,6\n7,8\n")
    (d / "inf.csv").write_text("a,b\n1,2\n3,inf\n5,6\n7,8\n")
    (d / "text.csv").write_text("a,b\n1,x\n3,y\n5,z\n7,w\n")
    (d / "mixed").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "mixed" / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(d / "mixed" / "b.png")
    (d / "notrun").mkdir()
    (d / "notrun" / "notes.txt").write_text("not a run")
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("precious")
    (d / "full" / "model.safetensors").write_bytes(b"\x00precious weights\xff")
    (d / "afile.txt").write_text("precious")
    np.savez(d / "ok.npz", x=rng.random((100, 10)))
    raw = (d / "ok.npz").read_bytes()
    (d / "cut.npz").write_bytes(raw[: len(raw) // 2])
    (d / "cut-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    shutil.copytree(run, d / "corrupt")
    w = d / "corrupt" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    shutil.copytree(run, d / "mismatch")
    cfg = json.loads((d / "mismatch" / "config.json").read_text())
    cfg["model_config"]["latent_dim"] = cfg["model_config"]["latent_dim"] + 1
    (d / "mismatch" / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(run, d / "badcfg")
    cfg["model_config"]["latent_dim"] -= 1
    cfg["model_config"]["likelihood"] = "no-such-likelihood"
    (d / "badcfg" / "config.json").write_text(json.dumps(cfg))


# run for real, as a separate process: one case of each kind
SUBPROCESS_CASES = ("NaN in npy", "hidden abc", "out exists", "corrupt weights: sample")
DEBUG_ARGV = ["--debug", "train", "--data", "no-such-set"]


def _argv(case: str, d: Path, run: Path) -> list[str]:
    return [a.format(d=d, run=run) for a in CASES[case][0]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_run: Path) -> dict:
    d = tmp_path_factory.mktemp("cli-errors")
    _make_inputs(d, digits_run)
    before = {name: _digest(d / name) for name in ("full", "corrupt", "mismatch", "badcfg")}
    before["afile.txt"] = hashlib.sha256((d / "afile.txt").read_bytes()).hexdigest()
    return {"dir": d, "before": before, "run_before": _digest(digits_run), "run": digits_run}


@pytest.fixture(scope="module")
def subprocess_results(setup: dict) -> dict:
    d, run = setup["dir"], setup["run"]
    argvs = [_argv(c, d, run) for c in SUBPROCESS_CASES] + [DEBUG_ARGV]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda argv: lf(*argv, cwd=d), argvs))
    return {**dict(zip(SUBPROCESS_CASES, procs)), "--debug": procs[-1]}


def _check_one_line(case: str, returncode, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]
    assert returncode == 2, (returncode, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for word in CASES[case][1]:
        assert word in lines[0], (word, lines[0])


def _params(cases):
    return [pytest.param(c, marks=pytest.mark.xfail(reason=BUGS[c], strict=True)) if c in BUGS else c for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_user_error_is_one_line_exit_2(setup: dict, case: str, capsys, monkeypatch) -> None:
    d = setup["dir"]
    monkeypatch.chdir(d)  # a default run directory would land here (and be caught below)
    capsys.readouterr()
    try:
        rc = main(_argv(case, d, setup["run"]))
    except BaseException as e:  # what would have been a traceback on the command line
        rc, err = None, f"Traceback (escaped main): {type(e).__name__}: {e}"
    else:
        err = capsys.readouterr().err
    _check_one_line(case, rc, err)


@pytest.mark.parametrize("case", _params(SUBPROCESS_CASES))
def test_real_command_one_line_exit_2(subprocess_results: dict, case: str) -> None:
    r = subprocess_results[case]
    _check_one_line(case, r.returncode, r.stderr)


def test_failed_commands_touch_nothing(setup: dict, subprocess_results: dict, capsys, monkeypatch) -> None:
    monkeypatch.chdir(setup["dir"])
    for case in CASES:  # every case once more in-process, whatever -k selected
        try:
            main(_argv(case, setup["dir"], setup["run"]))
        except BaseException:
            pass
    d, before = setup["dir"], setup["before"]
    for name in ("full", "corrupt", "mismatch", "badcfg"):
        assert _digest(d / name) == before[name], name  # byte for byte
    assert hashlib.sha256((d / "afile.txt").read_bytes()).hexdigest() == before["afile.txt"]
    assert not (d / "new_run").exists()  # a run that failed on its data leaves no half-made directory
    assert not any(d.glob("runs")), "a failed train created a default run directory"
    for name in ("s.png", "r.png", "c.png", "m.png", "b.png"):
        assert not (d / name).exists(), name
    assert _digest(setup["run"]) == setup["run_before"]  # the shared run was only copied, never changed


def test_debug_shows_the_traceback(subprocess_results: dict) -> None:
    r = subprocess_results["--debug"]
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "UserError" in r.stderr and "unknown data set" in r.stderr


def test_debug_reraises_in_process(tmp_path: Path, monkeypatch) -> None:
    from latentforge.errors import UserError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--epochs"):
        main(["--debug", "train", "--epochs", "0"])
