"""`latentforge train deep-svdd` and `latentforge score`: the anomaly workflow on the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import lf, require_data

from latentforge.cli import main


def _table(path, n: int = 400, n_out: int = 12, seed: int = 0, columns=("a", "b", "c", "d")) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(columns)))
    x[:n_out] += 8.0
    pd.DataFrame(x, columns=list(columns)).to_csv(path, index=False)


@pytest.fixture(scope="module")
def svdd_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("anomaly")
    _table(d / "train.csv", n_out=0)  # one-class: Deep SVDD is fitted on normal data
    _table(d / "new.csv", n=60, n_out=5, seed=1)
    r = lf("train", "deep-svdd", "--data", str(d / "train.csv"), "--epochs", "10", "--pretrain", "3", "--out", str(d / "run"))
    assert r.returncode == 0, r.stderr
    return d


def test_train_writes_threshold_histogram_and_report(svdd_run) -> None:
    run = svdd_run / "run"
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "deep-svdd" and np.isfinite(metrics["test"]["threshold"])
    assert json.loads((run / "config.json").read_text())["model_config"]["pretrain"] == 3  # --pretrain reached the model
    for name in ("model.safetensors", "config.json", "anomaly_scores.safetensors", "anomaly_scores.png", "report.html"):
        assert (run / name).exists(), name
    assert "Anomaly scores" in (run / "report.html").read_text()


def test_score_writes_csv_and_flags_the_far_rows(svdd_run, capsys) -> None:
    out = svdd_run / "scores.csv"
    assert main(["score", str(svdd_run / "run"), "--data", str(svdd_run / "new.csv"), "--out", str(out),
                 "--threshold", "quantile:0.95"]) in (0, None)
    df = pd.read_csv(out)
    assert list(df.columns) == ["index", "score", "is_anomaly"] and len(df) == 60
    assert df["score"].iloc[:5].min() > df["score"].iloc[5:].median()  # the shifted rows score highest
    assert df["is_anomaly"].iloc[:5].all()
    assert "flagged" in capsys.readouterr().out
    # a stricter contamination flags fewer, without retraining
    main(["score", str(svdd_run / "run"), "--data", str(svdd_run / "new.csv"), "--out", str(out), "--contamination", "0.01"])
    assert pd.read_csv(out)["is_anomaly"].sum() <= df["is_anomaly"].sum()


def test_score_calibrate_sets_the_fpr_threshold_on_normal_rows(svdd_run, capsys) -> None:
    """--calibrate: the threshold is the split-conformal fpr:R quantile of the given rows' scores (their
    label-0 rows when they are labelled); with labels the output states the realised false-alarm rate."""
    d, run, out = svdd_run, str(svdd_run / "run"), svdd_run / "cal.csv"
    _table(d / "normal.csv", n=300, n_out=0, seed=2)
    labelled = pd.read_csv(d / "new.csv").assign(label=[1] * 5 + [0] * 55)
    labelled.to_csv(d / "labelled.csv", index=False)
    capsys.readouterr()
    assert main(["score", run, "--data", str(d / "labelled.csv"), "--out", str(out), "--calibrate",
                 str(d / "normal.csv"), "--threshold", "fpr:0.05"]) in (0, None)
    text = capsys.readouterr().out
    assert f"threshold set on 300 rows of {d / 'normal.csv'}" in text and "false alarms" in text, text
    from latentforge.checkpoint import load_model, read_config
    from latentforge.tasks.scoring import anomaly_scores, fpr_threshold, scoring_data

    rows = scoring_data(str(d / "normal.csv"), read_config(svdd_run / "run")).floats()
    ref = anomaly_scores(load_model(svdd_run / "run"), rows)
    thr = fpr_threshold(ref, 0.05)
    scores = pd.read_csv(out)
    assert (scores["is_anomaly"] == (scores["score"] > thr)).all() and scores["is_anomaly"].iloc[:5].all()
    # labelled calibration data: only its normal rows (label 0) count
    assert main(["score", run, "--data", str(d / "new.csv"), "--out", str(out), "--calibrate",
                 str(d / "labelled.csv"), "--threshold", "fpr:0.05"]) in (0, None)
    captured = capsys.readouterr()
    assert "threshold set on 55 rows" in captured.out and "labelled normal" in captured.out
    assert "warning: fpr:0.05 needs at least 19" not in captured.err  # 55 rows are enough for 5 %
    assert main(["score", run, "--data", str(d / "new.csv"), "--out", str(out), "--calibrate",
                 str(d / "labelled.csv")]) in (0, None)  # 55 rows are too few for 1 %: one warning line
    assert captured.err == "" and capsys.readouterr().err.startswith("warning: fpr:0.01 needs at least 99")
    assert "does not go with" in _error(["score", run, "--data", str(d / "new.csv"), "--out", str(out),
                                         "--calibrate", str(d / "normal.csv"), "--contamination", "0.1"], capsys)


def _error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_exit_2(svdd_run, capsys) -> None:
    d, run = svdd_run, str(svdd_run / "run")
    _table(d / "fewer.csv", columns=("a", "b", "c"))
    _table(d / "renamed.csv", columns=("a", "b", "c", "z"))
    pd.DataFrame({"a": [1.0] * 30, "b": [2.0] * 30}).to_csv(d / "const.csv", index=False)
    (d / "one.csv").write_text("a,b,c,d\n1,2,3,4\n")
    (d / "nan.csv").write_text("a,b,c,d\n1,2,3,4\n1,,3,4\n")
    assert "3 columns" in _error(["score", run, "--data", str(d / "fewer.csv"), "--out", str(d / "s.csv")], capsys)
    assert "'z'" in _error(["score", run, "--data", str(d / "renamed.csv"), "--out", str(d / "s.csv")], capsys)
    assert "NaN" in _error(["score", run, "--data", str(d / "nan.csv"), "--out", str(d / "s.csv")], capsys)
    assert "contamination" in _error(["score", run, "--data", str(d / "new.csv"), "--out", str(d / "s.csv"),
                                      "--contamination", "0.7"], capsys)
    assert "threshold" in _error(["score", run, "--data", str(d / "new.csv"), "--out", str(d / "s.csv"),
                                  "--threshold", "top:3"], capsys)
    assert ".csv" in _error(["score", run, "--data", str(d / "new.csv"), "--out", str(d / "s.png")], capsys)
    assert "constant" in _error(["train", "deep-svdd", "--data", str(d / "const.csv"), "--out", str(d / "r2")], capsys)
    assert "at least 2" in _error(["train", "deep-svdd", "--data", str(d / "one.csv"), "--out", str(d / "r3")], capsys)
    assert not (d / "r2").exists() and not (d / "r3").exists()


def test_score_any_vae_run_on_images(digits_run, tmp_path, capsys) -> None:
    """A VAE trained by `latentforge train` scores new images (ELBO), its reference scores cached in the run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    out = tmp_path / "s.csv"
    main(["score", str(run), "--data", "digits", "--out", str(out), "--score", "elbo"])
    df = pd.read_csv(out)
    assert len(df) > 100 and np.isfinite(df["score"]).all()
    assert (run / "anomaly_scores.safetensors").exists()


def test_odds_table_with_labels_reports_auroc(tmp_path) -> None:
    path = require_data("odds", "42_WBC.npz")
    r = lf("train", "deep-svdd", "--data", str(path), "--epochs", "30", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    import json

    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert 0.5 < test["auroc"] <= 1.0 and 0 < test["average_precision"] <= 1.0


def test_cli_run_loads_as_a_detector(svdd_run) -> None:
    import latentforge

    det = latentforge.load(svdd_run / "run")
    assert type(det).__name__ == "DeepSVDD"
    x = pd.read_csv(svdd_run / "new.csv").to_numpy(dtype=np.float32)
    s = det.decision_function(x)
    assert s[:5].min() > np.median(s[5:]) and np.isfinite(det.threshold_)


def test_vae_detector_with_robust_scaling_and_trimming_from_the_cli(tmp_path, capsys) -> None:
    """`train vae --scaling robust --trim 0.2` on a table that holds its own anomalies, then `score`."""
    _table(tmp_path / "train.csv", n=400, n_out=20)  # 5 % of the training rows are the shifted ones
    _table(tmp_path / "new.csv", n=60, n_out=5, seed=1)
    run = tmp_path / "run"
    r = lf("train", "vae", "--data", str(tmp_path / "train.csv"), "--epochs", "30", "--likelihood", "gaussian",
           "--latent-dim", "2", "--hidden", "16", "--scaling", "robust", "--trim", "0.2", "--out", str(run))
    assert r.returncode == 0, r.stderr
    import json

    config = json.loads((run / "config.json").read_text())["model_config"]
    assert config["scaling"] == "robust" and config["trim"] == 0.2
    # a scoring model trained on a table gets the detector's histogram and threshold, too
    assert (run / "anomaly_scores.png").exists() and "Anomaly scores" in (run / "report.html").read_text()
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["test"]["threshold"])
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), "--data", str(tmp_path / "new.csv"), "--out", str(out)]) in (0, None)
    df = pd.read_csv(out)
    assert df["score"].iloc[:5].min() > df["score"].iloc[5:].max()  # the five shifted rows score highest
    assert "scaling" in _error(["train", "vae", "--data", str(tmp_path / "train.csv"), "--scaling", "minmax",
                                "--out", str(tmp_path / "bad")], capsys)
    assert "trim" in _error(["train", "deep-svdd", "--data", str(tmp_path / "train.csv"), "--trim", "0.1",
                             "--out", str(tmp_path / "bad2")], capsys)


def test_conditional_model_on_a_labelled_table_trains_without_a_score_histogram(tmp_path) -> None:
    """A cvae on a table with a label column: no anomaly scores (they would need labels), but a full run."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    df["label"] = rng.integers(0, 2, 200)
    df.to_csv(tmp_path / "t.csv", index=False)
    r = lf("train", "cvae", "--data", str(tmp_path / "t.csv"), "--epochs", "1", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "report.html").exists() and not (tmp_path / "run" / "anomaly_scores.png").exists()
