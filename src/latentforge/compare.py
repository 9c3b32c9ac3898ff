"""Several runs side by side: ``latentforge compare RUN RUN …``.

Reads only each run's ``config.json`` and ``metrics.json`` (no model is loaded), so comparing is
instant. One row per test metric, one column per run; the best run per metric is marked, where
the metric has a direction (lower loss, higher ELBO, …).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import UserError
from .io import atomic_path
from .tasks import metric_direction, metric_table

MISSING = "—"

# The picture: one panel per run, at most this many per row, each PANEL_INCHES × DPI pixels wide.
PANEL_INCHES = 3.0
DPI = 100
MAX_COLUMNS = 4


def direction(metric: str) -> str | None:
    """"higher" or "lower" (which value is better), or None for metrics that do not rank runs (threshold,
    flagged, eval_users, …: shown, never marked). From the tasks' metric table."""
    return metric_direction(metric)


def _distinct(run_dirs: list[Path]) -> list[Path]:
    """The run directories in the order given, each once (the same run twice is no second run)."""
    seen: set[Path] = set()
    out = []
    for d in map(Path, run_dirs):
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _labels(run_dirs: list[Path]) -> list[str]:
    """Short column names: the folder name, or parent/name (then a #number) where names repeat."""
    labels = [d.resolve().name or str(d) for d in run_dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{d.resolve().parent.name}/{d.resolve().name}" for d in run_dirs]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); the run is damaged") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; it was not written by latentforge")
    return data


def _check_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run directory; give folders that `latentforge train` wrote")
    if not run_dir.is_dir() or not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: not a latentforge run directory (no config.json); "
                        "give folders that `latentforge train` wrote")


def _check_run(run_dir: Path) -> None:
    _check_dir(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir}: has no metrics.json (training did not finish); "
                        f"run `latentforge evaluate {run_dir}` first")


QUALITY_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")


def _metric_order(names: set[str]) -> list[str]:
    known = [k for k in metric_table() if k in names]
    return known + sorted(names - set(known))


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _best(values: dict[str, object], way: str | None) -> str | None:
    """The label with the best value (the first one on a tie); None without a direction or a contest."""
    numbers = {label: x for label, v in values.items() if (x := _number(v)) is not None}
    if way is None or len(numbers) < 2:
        return None
    pick = max if way == "higher" else min
    return pick(numbers, key=numbers.__getitem__)


def compare_runs(run_dirs: list[Path]) -> dict:
    """Read two or more run directories into one comparison.

    Returns ``{"runs": [{label, path, model, data, epochs, train_seconds, likelihood}, …],
    "metrics": {name: {label: value or None}}, "direction": {name: "higher"|"lower"|None},
    "best": {name: label}, "warnings": [str, …]}``; metrics in the tasks' table order, then
    alphabetical. Raises :class:`UserError` for a folder that is not a run, or fewer than two runs.
    """
    dirs = _distinct(list(run_dirs))
    if len(dirs) < 2:
        raise UserError("compare needs at least two different run directories, e.g. "
                        "`latentforge compare runs/vae-digits-… runs/ae-digits-…`")
    for d in dirs:
        _check_run(d)
    runs, tests = [], []
    for d, label in zip(dirs, _labels(dirs)):
        config, metrics = _read(d / "config.json"), _read(d / "metrics.json")
        test = metrics.get("test") or {}
        if not isinstance(test, dict):
            raise UserError(f"{d / 'metrics.json'}: 'test' is not a table of metrics; the run is damaged")
        runs.append({
            "label": label, "path": str(d),
            "model": metrics.get("model", config.get("model")), "data": metrics.get("data", config.get("data")),
            "epochs": metrics.get("epochs"), "train_seconds": metrics.get("train_seconds"),
            "likelihood": metrics.get("likelihood"), "interrupted": bool(metrics.get("interrupted")),
        })
        tests.append(test)
    names = _metric_order({k for t in tests for k in t})
    table = {name: {r["label"]: t.get(name) for r, t in zip(runs, tests)} for name in names}
    ways = {name: direction(name) for name in names}
    best = {name: b for name in names if (b := _best(table[name], ways[name])) is not None}
    warnings = _warnings(runs)
    # runs from before quality_features was recorded used the shipped MNIST net
    spaces = sorted({str(t.get("quality_features", "mnist-cnn")) for t in tests if "fid" in t})
    if len(spaces) > 1:
        warnings.append(f"sample quality was measured in different feature spaces ({', '.join(spaces)}): "
                        "FID, KID, precision, recall, density and coverage are not comparable")
        for name in QUALITY_KEYS:
            best.pop(name, None)
    for key, what in (("iwae_k", "importance samples"), ("iwae_n", "test samples")):
        used = sorted({str(t[key]) for t in tests if "nll_iwae" in t and key in t})
        if len(used) > 1:
            warnings.append(f"nll_iwae was estimated with different {what} ({key} {', '.join(used)}): the NLLs are "
                            "not comparable; evaluate the runs with the same --k and --iwae-n")
            best.pop("nll_iwae", None)
    # "loss" is each model's own objective (−ELBO for a VAE, reconstruction error for an AE, …)
    if len({r["model"] for r, t in zip(runs, tests) if "loss" in t}) > 1 and best.pop("loss", None):
        warnings.append("loss is each model's own training objective: no best run is marked across different models")
    return {"runs": runs, "metrics": table, "direction": ways, "best": best, "warnings": warnings}


def _warnings(runs: list[dict]) -> list[str]:
    out = []
    data = sorted({str(r["data"]) for r in runs})
    if len(data) > 1:
        out.append(f"the runs were evaluated on different data sets ({', '.join(data)}): "
                   "their numbers are not comparable")
    likelihoods = sorted({str(r["likelihood"]) for r in runs if r["likelihood"]})
    if len(likelihoods) > 1:
        out.append(f"the runs use different likelihoods ({', '.join(likelihoods)}): "
                   "their loss, ELBO and NLL are not comparable")
    stopped = [r["label"] for r in runs if r["interrupted"]]
    if stopped:
        out.append(f"interrupted before the last epoch: {', '.join(stopped)}")
    return out


def _fmt(v: object) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.5g}" if math.isfinite(v) and abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def _rows(result: dict) -> list[tuple[str, list[str], str | None]]:
    """(row name, cell per run, best label) for the run facts, then the metrics."""
    labels = [r["label"] for r in result["runs"]]
    rows = [(key, [_fmt(r[key]) for r in result["runs"]], None) for key in ("model", "data", "epochs", "train_seconds")]
    arrows = {"higher": " ↑", "lower": " ↓", None: ""}
    for name, values in result["metrics"].items():
        rows.append((name + arrows[result["direction"][name]], [_fmt(values[label]) for label in labels],
                     result["best"].get(name)))
    return rows


def render_table(result: dict) -> str:
    """Plain text, columns aligned, the best value per metric marked with ``*``."""
    labels = [r["label"] for r in result["runs"]]
    body = [[name] + [cell + ("*" if best == label else " ") for cell, label in zip(cells, labels)]
            for name, cells, best in _rows(result)]
    header = ["metric"] + [label + " " for label in labels]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()
             for row in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("* best run per metric (↑ higher is better, ↓ lower is better)")
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def render_markdown(result: dict) -> str:
    """A GitHub Markdown table, the best value per metric in **bold**."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    labels = [r["label"] for r in result["runs"]]
    lines = ["| metric | " + " | ".join(esc(label) for label in labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for name, cells, best in _rows(result):
        shown = [f"**{esc(c)}**" if best == label else esc(c) for c, label in zip(cells, labels)]
        lines.append(f"| {esc(name)} | " + " | ".join(shown) + " |")
    lines += ["", "Best run per metric in **bold** (↑ higher is better, ↓ lower is better)."]
    lines += [f"\n> **Warning:** {w}" for w in result["warnings"]]
    return "\n".join(lines)


def render_json(result: dict) -> str:
    """``{"runs", "metrics", "direction", "best", "warnings"}`` as indented JSON (missing values: null)."""
    def clean(v: object) -> object:  # JSON has no NaN/Infinity
        return None if isinstance(v, float) and not math.isfinite(v) else v

    metrics = {name: {label: clean(v) for label, v in values.items()} for name, values in result["metrics"].items()}
    return json.dumps({**result, "metrics": metrics}, indent=2, ensure_ascii=False)


def _shorten(text: str, n: int = 34) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n // 2 - 1):]


def save_comparison_picture(run_dirs: list[Path], out: Path) -> Path:
    """Each run's samples.png (else reconstructions.png) side by side in one PNG, labelled above.

    Panels are ``PANEL_INCHES × DPI`` pixels wide, at most ``MAX_COLUMNS`` per row; a run with
    neither picture gets a panel saying "no samples". Written atomically (nothing half-made is left).
    """
    import numpy as np
    from PIL import Image

    from .plots import _figure

    dirs = _distinct(list(run_dirs))
    if not dirs:
        raise UserError("give at least one run directory to picture")
    for d in dirs:
        _check_dir(d)
    cols = min(len(dirs), MAX_COLUMNS)
    nrows = math.ceil(len(dirs) / cols)
    plt, fig, _ = _figure((PANEL_INCHES * cols, (PANEL_INCHES + 0.45) * nrows))  # Agg backend, as plots.py
    fig.clf()
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, d, label in zip(axes, dirs, _labels(dirs)):
        model = _read(d / "config.json").get("model", "?")
        picture = next((d / f for f in ("samples.png", "reconstructions.png") if (d / f).is_file()), None)
        ax.set_title(f"{_shorten(label)}\n{model}" + (f" · {picture.stem}" if picture else ""), fontsize=9)
        if picture is None:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=12, color="#777",
                    transform=ax.transAxes)
            continue
        with Image.open(picture) as im:
            img = np.asarray(im.convert("L") if im.mode in ("L", "1", "I;16") else im.convert("RGB"))
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / ((PANEL_INCHES + 0.45) * nrows),
                        wspace=0.05, hspace=0.25)
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return out
