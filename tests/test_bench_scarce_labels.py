"""The scarce-labels benchmark (benchmarks/bench_scarce_labels.py) end to end on a tiny budget, and its parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_scarce_labels as bench  # noqa: E402


def test_harness_runs_end_to_end_on_a_tiny_budget(tmp_path: Path, capsys) -> None:
    require_data("medmnist", "breastmnist.npz")
    out = tmp_path / "scarce.json"
    summary = bench.main(["--quick", "--data", "breastmnist", "--budgets", "5", "--routes", "a,b,d",
                          "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| breastmnist | 5 | d |" in printed and "best of c/d" in printed
    assert json.loads(out.read_text())["diffs"] == json.loads(json.dumps(summary["diffs"]))
    routes = {r["route"] for r in summary["results"]}
    assert routes == {"a", "a·logreg", "b", "d"}
    assert all(0 <= r["auc"] <= 1 and 0 <= r["acc"] <= 1 for r in summary["results"])
    (diff,) = summary["diffs"]
    assert diff["best_new"] == "d" and diff["best_base"] in ("a", "b") and diff["seeds"] == 1
    by_route = {r["route"]: r["auc"] for r in summary["results"]}
    assert diff["diff"] == pytest.approx(by_route["d"] - by_route[diff["best_base"]])
    again = bench.main(["--combine", str(out)])  # the table of saved runs, nothing retrained
    assert json.dumps(again["diffs"]) == json.dumps(summary["diffs"])  # (NaN bounds: one seed)


def test_classic_augmentation_keeps_shape_and_range_and_varies() -> None:
    x = torch.rand(16, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    a, b = bench.classic_augment(x, g), bench.classic_augment(x, g)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)  # drawn afresh per call
    assert (a - x).abs().mean() < 0.5  # small warps, not noise


def test_t_interval_of_known_differences() -> None:
    m, lo, hi = bench.t_interval(np.array([0.01, 0.02, 0.03, 0.04, 0.05]))
    assert m == pytest.approx(0.03)
    assert lo == pytest.approx(0.03 - 2.7764451 * np.std([0.01, 0.02, 0.03, 0.04, 0.05], ddof=1) / np.sqrt(5))
    assert lo > 0 and hi == pytest.approx(2 * m - lo)


def test_generated_samples_route_trains_a_generator_and_mixes_its_samples(tmp_path: Path) -> None:
    require_data("medmnist", "breastmnist.npz")
    summary = bench.main(["--quick", "--data", "breastmnist", "--budgets", "5", "--routes", "a,c",
                          "--gen-models", "cvae", "--gen-per-class", "7"])
    rows = {r["route"]: r for r in summary["results"]}
    assert set(rows) == {"a", "a·logreg", "c·cvae"}
    assert rows["c·cvae"]["generated"] == 14  # exactly --gen-per-class of each of the 2 classes
    assert 0 <= rows["c·cvae"]["auc"] <= 1
    assert summary["diffs"][0]["best_new"] == "c·cvae"
