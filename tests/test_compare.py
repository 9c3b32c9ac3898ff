"""``latentforge compare RUN RUN …``: a real VAE run and a real AE run side by side.

Both runs are made once by the real command line; every comparison then runs through
``latentforge.cli.main`` in this process (milliseconds each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import lf
from PIL import Image

from latentforge.cli import main
from latentforge.compare import DPI, PANEL_INCHES, compare_runs


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ae-digits"
    r = lf("train", "ae", "--data", "digits", "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _test_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["test"]


def _edit_metrics(run: Path, **changes) -> None:
    path = run / "metrics.json"
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "data":
            m["data"] = value
        else:
            m["test"][key] = value
    path.write_text(json.dumps(m))


def test_table_shows_both_runs_and_shared_metrics(digits_run, ae_run, capsys):
    assert main(["compare", str(digits_run), str(ae_run)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert digits_run.name in header and ae_run.name in header
    for metric in ("recon_mse", "psnr", "ssim", "probe_acc", "elbo"):
        assert metric in out
    elbo_row = next(line for line in out.splitlines() if line.startswith("elbo"))
    assert elbo_row.rstrip().endswith("—")  # the AE has no ELBO
    psnr_row = next(line for line in out.splitlines() if line.startswith("psnr"))
    assert psnr_row.count("*") == 1
    assert "warning: the runs were evaluated on different data sets" not in out


def test_json_picks_the_best_run_in_each_metric_direction(digits_run, ae_run, capsys):
    assert main(["compare", str(digits_run), str(ae_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    labels = [r["label"] for r in result["runs"]]
    assert labels == [digits_run.name, ae_run.name]
    vae, ae = _test_metrics(digits_run), _test_metrics(ae_run)
    assert result["metrics"]["elbo"] == {digits_run.name: vae["elbo"], ae_run.name: None}
    for metric, better in (("recon_mse", min), ("psnr", max), ("ssim", max), ("probe_acc", max), ("nmi", max)):
        want = better((vae[metric], digits_run.name), (ae[metric], ae_run.name))[1]
        assert result["best"][metric] == want, metric
    assert result["direction"]["recon_mse"] == "lower" and result["direction"]["psnr"] == "higher"
    assert "elbo" not in result["best"]  # only one run has it: no contest
    # "loss" is each model's own objective: not ranked between a VAE and an AE
    assert "loss" not in result["best"]
    assert any("loss" in w for w in result["warnings"])


def test_lower_loss_wins_between_runs_of_the_same_model(digits_run, tmp_path, capsys):
    better = tmp_path / "vae-better"
    shutil.copytree(digits_run, better)
    loss = _test_metrics(digits_run)["loss"]
    _edit_metrics(better, loss=loss - 1.0, nll_iwae=None, fid=3.0)
    assert main(["compare", str(digits_run), str(better), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["best"]["loss"] == "vae-better"
    assert "nll_iwae" not in result["best"]  # the copy's null is no number: one value, no contest
    assert result["metrics"]["fid"] == {digits_run.name: None, "vae-better": 3.0}
    assert result["warnings"] == []


def test_markdown_table(digits_run, ae_run, capsys):
    assert main(["compare", str(digits_run), str(ae_run), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"| metric | {digits_run.name} | {ae_run.name} |"
    assert lines[1] == "|---|---:|---:|"
    psnr = next(line for line in lines if line.startswith("| psnr"))
    assert psnr.count("**") == 2 and psnr.endswith("|")


def test_different_data_sets_are_warned_about(digits_run, ae_run, tmp_path, capsys):
    other = tmp_path / "ae-mnist"
    shutil.copytree(ae_run, other)
    _edit_metrics(other, data="mnist")
    assert main(["compare", str(digits_run), str(other)]) == 0
    out = capsys.readouterr().out
    assert "warning: the runs were evaluated on different data sets (digits, mnist)" in out


def test_out_writes_the_panels_side_by_side(digits_run, ae_run, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", str(digits_run), str(ae_run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.width == round(2 * PANEL_INCHES * DPI)  # two panels
    # --json keeps stdout pure JSON; a run with no pictures gets a "no samples" panel
    bare = tmp_path / "bare"
    shutil.copytree(ae_run, bare)
    (bare / "reconstructions.png").unlink()
    assert main(["compare", str(digits_run), str(ae_run), str(bare), "--json", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert f"wrote {out}" in captured.err
    with Image.open(out) as im:
        assert im.width == round(3 * PANEL_INCHES * DPI)


def test_same_folder_names_get_distinct_labels(ae_run, tmp_path):
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(ae_run, a)
    shutil.copytree(ae_run, b)
    result = compare_runs([a, b])
    assert [r["label"] for r in result["runs"]] == ["a/run", "b/run"]


@pytest.mark.parametrize("case", ["one run", "same run twice", "not a run", "missing", "json and markdown", "jpg"])
def test_bad_input_is_one_error_line(case, digits_run, tmp_path, capsys):
    (tmp_path / "notrun").mkdir()
    argv = {
        "one run": [str(digits_run)],
        "same run twice": [str(digits_run), str(digits_run)],
        "not a run": [str(digits_run), str(tmp_path / "notrun")],
        "missing": [str(digits_run), str(tmp_path / "nothere")],
        "json and markdown": [str(digits_run), str(digits_run), "--json", "--markdown"],
        "jpg": [str(digits_run), str(digits_run), "--out", str(tmp_path / "x.jpg")],
    }[case]
    assert main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert not (tmp_path / "x.jpg").exists()


def test_fids_from_different_feature_spaces_are_not_ranked(digits_run, ae_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(digits_run, a)
    shutil.copytree(ae_run, b)
    _edit_metrics(a, fid=10.0, quality_features="mnist-cnn")
    _edit_metrics(b, fid=20.0, quality_features="mnist-cnn")
    same = compare_runs([a, b])
    assert same["best"]["fid"] == "a" and not any("feature spaces" in w for w in same["warnings"])
    _edit_metrics(b, quality_features="inception")
    mixed = compare_runs([a, b])
    assert "fid" not in mixed["best"]
    assert any("different feature spaces (inception, mnist-cnn)" in w for w in mixed["warnings"])


def test_runs_from_before_feature_spaces_count_as_the_mnist_net(digits_run, ae_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(digits_run, a)
    shutil.copytree(ae_run, b)
    _edit_metrics(a, fid=10.0)  # an older run: FID without quality_features
    _edit_metrics(b, fid=20.0, quality_features="inception")
    result = compare_runs([a, b])
    assert "fid" not in result["best"]
    assert any("different feature spaces (inception, mnist-cnn)" in w for w in result["warnings"])
