"""One estimator stack: one fit, one save/load that returns the class that was saved, PyOD's idioms for
detectors, scores that do not depend on batch-mates, errors in Python's words, saves that never destroy a run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits

import latentforge
from latentforge import AEDetector, DeepSVDD, MultVAE, UserError, VAE
from latentforge.cli import main
from latentforge.io import load_tensors

FAST = dict(epochs=2, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return (load_digits().images[:400] / 16.0).astype(np.float32)  # floats in [0, 1], (n, 8, 8)


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_load_returns_a_saved_multvae_in_a_fresh_process(tmp_path: Path) -> None:
    from conftest import interactions_frame

    MultVAE(hidden=(), latent_dim=8, epochs=2, random_state=0, device="cpu").fit(
        interactions_frame(60)).save_pretrained(tmp_path / "rec")
    got = _fresh_python(f"import latentforge; print(type(latentforge.load({str(tmp_path / 'rec')!r})).__name__)")
    assert got == "MultVAE"


def test_a_saved_aedetector_loads_as_one(table, tmp_path: Path) -> None:
    det = AEDetector(kind="vae", **FAST).fit(table)
    det.save_pretrained(tmp_path / "det")
    back = latentforge.load(tmp_path / "det")
    assert type(back) is AEDetector and back.kind == "vae" and back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.predict(table[:50]), det.predict(table[:50]))
    got = _fresh_python(f"import latentforge; d = latentforge.load({str(tmp_path / 'det')!r}); "
                        "print(type(d).__name__, hasattr(d, 'predict'), hasattr(d, 'threshold_'))")
    assert got == "AEDetector True True"
    with pytest.raises(UserError, match="AEDetector"):
        VAE.from_pretrained(tmp_path / "det")  # the loading class must match the saved one


def test_contamination_is_pyods_alias(table) -> None:
    det = DeepSVDD(contamination=0.05, n_nets=1, **FAST).fit(table)
    assert det.threshold_rule_ == "contamination:0.05" and abs(det.labels_.mean() - 0.05) < 0.01
    with pytest.raises(UserError, match="not both"):
        DeepSVDD(contamination=0.05, threshold="quantile:0.9", n_nets=1, **FAST).fit(table)


def test_set_threshold_keeps_the_constructor_parameters(table) -> None:
    det = AEDetector(kind="ae", **FAST).fit(table)
    params = det.get_params()
    det.set_threshold("quantile:0.5")
    assert det.get_params() == params and det.threshold_rule_ == "quantile:0.5"
    assert clone(det).get_params() == params


def test_aedetector_keeps_the_likelihood_it_is_given(images, table) -> None:
    det = AEDetector(kind="ae", likelihood="cb", **FAST).fit(images)
    assert det.model_.likelihood == "cb"
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        AEDetector(kind="ae", likelihood="cb", **FAST).fit(table)  # a table is not in [0, 1]: said, not ignored


def test_score_is_a_method_and_the_old_parameter_still_works(table) -> None:
    det = AEDetector(kind="vae", **FAST).fit(table)
    assert isinstance(det.score(table[:20]), float)
    with pytest.warns(FutureWarning, match="score_kind"):
        old = AEDetector(kind="vae", score="recon", **FAST)
    assert old.score_kind == "recon" and callable(old.score)
    assert det.predict_proba(table[:7]).shape == (7, 2)
    np.testing.assert_allclose(det.predict_proba(table[:7]).sum(1), 1.0)


def test_a_samples_score_does_not_depend_on_its_batch_mates(images) -> None:
    vae = VAE(latent_dim=4, hidden=(32,), **FAST).fit(images)
    alone = np.concatenate([vae.score_samples(images[i : i + 1]) for i in range(20)])
    together = vae.score_samples(images[:20])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-4)
    det = AEDetector(kind="vae", **FAST).fit(images.reshape(len(images), -1))
    flat = images.reshape(len(images), -1)
    np.testing.assert_allclose(det.decision_function(flat[3:4]), det.decision_function(flat[:10])[3:4], rtol=1e-5)


def test_errors_from_python_name_the_python_parameter(images) -> None:
    for params, name in ((dict(epochs=0), "epochs"), (dict(random_state="abc"), "random_state"),
                         (dict(latent_dim=0), "latent_dim"), (dict(lr=-1.0), "lr"), (dict(beta=-1.0), "beta")):
        with pytest.raises(UserError) as info:
            VAE(**{**FAST, **params}).fit(images[:50])
        assert str(info.value).startswith(name) and "--" not in str(info.value), str(info.value)


def test_a_diverging_fit_raises_instead_of_returning_nans(images) -> None:
    with pytest.raises(UserError, match="diverged"):
        VAE(latent_dim=4, hidden=(32,), lr=1e9, epochs=3, random_state=0, device="cpu").fit(images)


def test_saving_over_a_run_or_another_model_is_refused(images, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--eval-k", "0", "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    vae = VAE(latent_dim=4, hidden=(32,), **FAST).fit(images)
    with pytest.raises(UserError, match="training run"):
        vae.save_pretrained(run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched
    vae.save_pretrained(tmp_path / "m")
    with pytest.raises(UserError, match="VAE"):
        AEDetector(kind="ae", **FAST).fit(images.reshape(len(images), -1)).save_pretrained(tmp_path / "m")
    vae.save_pretrained(tmp_path / "m")  # the same class again: replaced as a whole
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file"):
        vae.save_pretrained(tmp_path / "file")
    other = VAE(latent_dim=3, hidden=(16,), **FAST).fit(images)
    other.save_pretrained(run, overwrite=True)  # explicit: the run is replaced by a complete, loadable model
    assert latentforge.load(run).latent_dim == 3 and not (run / "checkpoint").exists()


def test_cli_anomaly_threshold_is_fitted_on_held_out_training_rows(table, tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame(table, columns=[f"c{i}" for i in range(6)]).to_csv(tmp_path / "t.csv", index=False)
    run = tmp_path / "svdd"
    assert main(["train", "deep-svdd", "--data", str(tmp_path / "t.csv"), "--epochs", "2", "--n-nets", "1",
                 "--out", str(run)]) == 0
    scores = load_tensors(run / "anomaly_scores.safetensors")
    config = json.loads((run / "config.json").read_text())
    n_train = config["data_info"]["n_train"]
    assert len(scores["validation"]) == round((n_train + len(scores["validation"])) * 0.1)  # rows held out of fitting
    metrics = json.loads((run / "metrics.json").read_text())
    want = float(np.quantile(scores["validation"].numpy(), 0.99, method="higher"))
    assert metrics["test"]["threshold"] == pytest.approx(want)


def test_docstrings_cite_test_files_that_exist() -> None:
    import re

    root = Path(__file__).resolve().parents[1]
    for path in (root / "src").rglob("*.py"):
        for cited in re.findall(r"tests/test_\w+\.py", path.read_text()):
            assert (root / cited).exists(), f"{path.name} cites {cited}, which does not exist"


def test_warnings_of_fit_are_not_errors(table) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        AEDetector(kind="ae", **FAST).fit(table)


def test_the_cli_scores_with_a_saved_detector(table, tmp_path: Path, capsys) -> None:
    det = AEDetector(kind="vae", **FAST).fit(table)
    det.save_pretrained(tmp_path / "det")
    np.save(tmp_path / "new.npy", table[:40])
    assert main(["score", str(tmp_path / "det"), "--data", str(tmp_path / "new.npy"), "--out",
                 str(tmp_path / "s.csv")]) == 0
    import pandas as pd

    got = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(got["score"].to_numpy(), det.decision_function(table[:40]), rtol=1e-5)
    np.testing.assert_array_equal(got["is_anomaly"].to_numpy(), det.predict(table[:40]))
