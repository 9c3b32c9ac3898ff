"""Statistics over seeds shared by the benchmarks: a mean with its Student-t interval, and how it stands against a
target (met, tied within the interval, or missed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def t_interval(d) -> tuple[float, float, float]:
    """Mean of ``d`` and its 95% Student-t interval (NaN bounds for one value)."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    m = float(np.mean(d))
    if len(d) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return m, m - h, m + h


def against(target: float, lo: float, hi: float) -> str:
    """A 95% interval [lo, hi] of a higher-is-better score against ``target``: met (the whole interval at or above
    it), missed (the whole interval below) or tied (the target inside the interval: the seeds cannot tell)."""
    if np.isnan(lo):
        return "one seed: no interval"
    return "met" if lo >= target else "missed" if hi < target else "tied"


def read_seed_runs(files: list[Path], rows_of: Callable[[object], list[dict]], key: Callable[[dict], tuple], *,
                   missing: str, what: str) -> list[dict]:
    """The rows ``rows_of`` takes from each run's --json file, put together; a file without any is refused (``missing``
    says how to write one, ``{f}`` its name), and so is a ``key`` (``what``, e.g. "(K, seed)") that two rows share:
    each seed should come from one run."""
    rows = []
    for f in files:
        got = rows_of(json.loads(Path(f).read_text()))
        if not got:
            raise SystemExit(f"{f}: " + missing.format(f=f))
        rows += got
    seen = [key(r) for r in rows]
    if len(seen) != len(set(seen)):
        raise SystemExit(f"the files repeat a {what}: each seed should come from one run")
    return rows
