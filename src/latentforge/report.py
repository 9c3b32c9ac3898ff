"""The run's ``report.html``: one self-contained page (images embedded) with what a user checks first."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from . import __version__
from .checkpoint import read_config
from .io import read_json_object, write_text
from .tasks import all_figures, metric_help
from .tasks.base import TASKS

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1.2rem}
figure{margin:0;border:1px solid #e3e3e3;border-radius:8px;padding:.8rem;background:#fafafa}
figure img{max-width:100%;min-width:min(100%,360px);image-rendering:pixelated;display:block;margin:auto}
figcaption{font-size:.9rem;color:#555;margin-top:.4rem} h2{font-size:1.15rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem} td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777;font-size:.85rem}
li.hit{color:#1a7f37;font-weight:600}
"""


def _fmt(v) -> str:
    if isinstance(v, list) and len(v) > 12:  # e.g. a recommender's item ids: count, head and tail
        return html.escape(f"{len(v):,} values: {', '.join(map(str, v[:5]))}, …, {', '.join(map(str, v[-2:]))}")
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return html.escape(str(v))


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_report(run_dir: Path) -> Path:
    """(Re)write ``run_dir/report.html`` from the files in the run directory."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    metrics = read_json_object(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    rows = []
    if (run_dir / "history.csv").exists():
        with open(run_dir / "history.csv") as f:
            rows = list(csv.DictReader(f))
    title = f"{config.get('model', '?')} on {config.get('data', '?')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} — latentforge</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    train = config.get("train", {})
    epochs = metrics.get("epochs", len(rows))
    done = ([f"{_fmt(epochs)} epochs"] if epochs else []) + [
        f"batch {train.get('batch_size', '?')}", f"lr {train.get('lr', '?')}", f"seed {train.get('seed', '?')}"]
    if "train_seconds" in metrics:  # (a run evaluated without training here, e.g. a refined copy, has none)
        done.append(f"{_fmt(metrics['train_seconds'])} s training")
    done.append(f"likelihood {html.escape(str(metrics.get('likelihood') or '—'))}")
    refinement = config.get("refinement")
    refined = isinstance(refinement, dict)  # a model saved by `cluster --refine --save`
    parts.append(f"<p class='sub'>{'trained with ' if refined else ''}{' · '.join(done)}</p>")
    if refined:
        how = " · ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in refinement.items()
                         if v is not None and k != "earlier")
        parts.append(f"<p class='sub'>Encoder self-trained on its own clusters (cluster --refine) from "
                     f"{html.escape(str(config.get('refined_from', '?')))}: {how}</p>")
    test = metrics.get("test", {})
    if test:
        parts.append("<h2>Test metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>")
        for k, v in test.items():
            parts.append(f"<tr><td>{html.escape(k)}</td><td class='num'>{_fmt(v)}</td>"
                         f"<td class='muted'>{html.escape(metric_help(k))}</td></tr>")
        parts.append("</table>")
    parts.append("<div class='grid'>")
    task = TASKS.get(config.get("task") or _task_of(config.get("model")))
    figures = [*(task.figures if task else ()), *all_figures()]
    shown = set()
    for fig in figures:
        if fig.file not in shown and (run_dir / fig.file).exists():
            shown.add(fig.file)
            parts.append(f"<figure><h2>{fig.heading}</h2><img alt='{fig.heading}' src='{_img(run_dir / fig.file)}'>"
                         f"<figcaption>{fig.caption}</figcaption></figure>")
    parts.append("</div>")
    if task is not None:
        parts += task.report_sections(run_dir)
    parts.append("<h2 style='margin-top:1.5rem'>Configuration</h2><table>")
    for k, v in _settings_shown(config).items():
        parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p class='muted'>latentforge {__version__} · run directory {html.escape(str(run_dir.resolve()))}</p>")
    parts.append("</body></html>")
    out = run_dir / "report.html"
    write_text(out, "\n".join(parts))
    return out


def _task_of(model: str | None) -> str | None:
    from .models import MODELS

    cls = MODELS.get(model or "")
    return cls.task if cls is not None else None


def _settings_shown(config: dict) -> dict:
    """The settings that shaped the run: model settings that apply (no conv channels for an MLP, no unset
    options) and the training settings."""
    mc = dict(config.get("model_config") or {})
    if mc.get("arch") == "mlp":
        mc.pop("channels", None)
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    shown = {**mc, **{f"train.{k}": v for k, v in train.items()}}
    return {k: v for k, v in shown.items() if v is not None}
