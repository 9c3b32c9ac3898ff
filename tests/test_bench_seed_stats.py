"""Statistics over seeds for the benchmarks (benchmarks/seed_stats.py) and bench_represent's --combine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_represent  # noqa: E402
from seed_stats import against, t_interval  # noqa: E402


def test_t_interval_and_where_it_stands_against_a_target() -> None:
    m, lo, hi = t_interval([0.97, 0.98, 0.99])  # sd 0.01, t(0.975, 2) = 4.303: half-width 0.0248
    assert m == pytest.approx(0.98) and hi - m == pytest.approx(4.3027 * 0.01 / 3**0.5, rel=1e-4)
    assert against(0.98, lo, hi) == "tied"
    assert against(0.95, *t_interval([0.97, 0.971, 0.972])[1:]) == "met"
    assert against(0.98, *t_interval([0.97, 0.971, 0.972])[1:]) == "missed"
    assert against(0.98, *t_interval([0.99])[1:]) == "one seed: no interval"


def test_combine_puts_seed_runs_together_and_refuses_a_repeated_seed(tmp_path: Path, capsys) -> None:
    rows = lambda seed, acc: [{"method": "ours", "seed": seed, "acc": acc, "nmi": acc - 0.03, "ari": acc - 0.02,
                               "seconds": 10.0}]
    files = []
    for seed, acc in ((0, 0.982), (1, 0.971), (2, 0.978)):
        files.append(tmp_path / f"s{seed}.json")
        files[-1].write_text(json.dumps({"cluster": rows(seed, acc)}))
    bench_represent.combine(files)
    out = capsys.readouterr().out
    assert "| ours | 0.977 ± 0.005 |" in out  # mean ± sd (population) over the three seeds
    assert "| ours | 0,1,2 | 0.9770 [" in out and "tied" in out
    with pytest.raises(SystemExit, match="repeat"):
        bench_represent.combine(files + [files[0]])
    (tmp_path / "other.json").write_text(json.dumps({"probe": []}))
    with pytest.raises(SystemExit, match="no cluster rows"):
        bench_represent.combine([tmp_path / "other.json"])


def test_topics_combine_states_each_target_over_seeds(tmp_path: Path, capsys) -> None:
    import bench_topics

    files = []
    for seed, npmi in ((0, 0.249), (1, 0.236), (2, 0.244)):
        ours = {"k": 20, "seed": seed, "method": "ours: prodlda", "npmi": npmi, "diversity": 0.90, "probe_acc": 0.68,
                "nmi": 0.55, "train_seconds": 180.0}
        files.append(tmp_path / f"s{seed}.json")
        files[-1].write_text(json.dumps([ours, {"k": 20, "seed": seed, "method": "scikit-learn LDA", "npmi": 0.17}]))
    bench_topics.combine(files)
    out = capsys.readouterr().out
    # NPMI: mean 0.243, sd 0.00656, half-width 4.303 * 0.00656 / √3 = 0.0163: [0.227, 0.259], below 0.26
    assert "0.243 [0.227, 0.259] vs ≥ 0.26: missed" in out
    assert "0.900 [0.900, 0.900] vs ≥ 0.8: met" in out and "scikit-learn" not in out
    with pytest.raises(SystemExit, match="repeat"):
        bench_topics.combine(files + [files[0]])
    (tmp_path / "anchors.json").write_text(json.dumps([{"k": 20, "seed": 0, "method": "scikit-learn LDA"}]))
    with pytest.raises(SystemExit, match="no rows of ours"):
        bench_topics.combine([tmp_path / "anchors.json"])
