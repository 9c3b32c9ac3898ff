"""The run's ``report.html``: one self-contained page (images embedded) with what a user checks first."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from . import __version__

FIGURES = (
    ("samples.png", "Samples", "Images generated from the prior (one row per class for conditional models)."),
    ("reconstructions.png", "Reconstructions", "Test inputs (odd rows) and their reconstructions (even rows)."),
    ("curves.png", "Training curves", "Loss per sample on the training and test sets after each epoch; for a "
     "model that keeps its best epoch by a validation metric, that metric (right axis) and the kept epoch."),
    ("latent_map.png", "Latent space", "Codes (posterior means) of test samples, coloured by label where labels exist."),
    ("codebook.png", "Codebook usage", "How often each VQ-VAE codeword was assigned during training."),
    ("traversals.png", "Latent traversals", "One row per latent dimension (most informative first, by KL): "
     "a test sample's code with that dimension swept from −3 to +3."),
    ("anomaly_scores.png", "Anomaly scores", "Histogram of anomaly scores on the training and test data; the dashed "
     "line is the threshold above which a point is flagged."),
    ("anomalies.png", "Top anomalies", "The most anomalous test images, most anomalous first (rows below them: "
     "their reconstructions, where the model reconstructs)."),
    ("gan_progress.png", "Training progress", "Samples from the same fixed noise after each epoch (a selection, "
     "top to bottom), drawn by the averaged (EMA) generator: the frames of the training animation."),
)

METRIC_HELP = {
    "loss": "test loss (the training objective), per sample",
    "elbo": "evidence lower bound, nats per sample (higher is better)",
    "nll_iwae": "−log p(x) by importance sampling (IWAE bound), nats per sample (lower is better)",
    "recon_mse": "mean squared reconstruction error per value",
    "recon_bce": "binary cross-entropy of the reconstructions (decoded at the posterior mean), nats per sample",
    "psnr": "peak signal-to-noise ratio of reconstructions, dB",
    "ssim": "structural similarity of reconstructions (1 = identical)",
    "probe_acc": "accuracy of a logistic regression on the codes (fixed 50/50 split of the test set)",
    "kmeans_acc": "k-means on the codes, clusters matched to labels (Hungarian): accuracy",
    "nmi": "normalised mutual information between k-means clusters and labels",
    "ari": "adjusted Rand index between k-means clusters and labels",
    "recall@20": "share of a test user's held-out items in the top 20 (of at most 20), seen items excluded",
    "recall@50": "share of a test user's held-out items in the top 50 (of at most 50), seen items excluded",
    "ndcg@100": "normalised discounted cumulative gain of the top 100 (1 = held-out items ranked first)",
    "fid": "Fréchet distance of samples to test images in the feature space named by quality_features (lower is "
           "better; in the shipped MNIST net's: test vs training images ≈ 3, noise ≈ 3000)",
    "kid": "kernel distance (unbiased MMD², cubic kernel) in the same space, lower is better",
    "kid_std": "standard error of the KID estimate",
    "precision": "share of samples inside the test images' k-NN manifold (fidelity)",
    "recall": "share of test images inside the samples' k-NN manifold (diversity)",
    "density": "how many test-image neighbourhoods hold each sample, on average (≈ 1 for matching distributions)",
    "coverage": "share of test images whose neighbourhood holds at least one sample",
    "quality_features": "feature space of the sample-quality metrics: mnist-cnn (the shipped net) or inception",
    "quality_n": "samples (and test images) used for the sample-quality metrics",
    "auroc": "area under the ROC curve of the anomaly scores against the test labels (1 = anomalies ranked first)",
    "average_precision": "average precision of the anomaly scores against the test labels (anomalies = positives)",
    "threshold": "anomaly-score threshold: above it a point is flagged",
    "flagged": "share of test points above the threshold",
    "eval_users": "test users whose held-out items were ranked",
}

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


def _examples(examples: list[dict]) -> list[str]:
    """Example recommendations of a recommender run: per test user, items folded in and the top list,
    hits (held-out items) marked."""
    label = lambda r: html.escape(str(r.get("name") or r["item"]))  # noqa: E731
    parts = ["<h2 style='margin-top:1.5rem'>Example recommendations</h2><p class='muted'>Test users the model never "
             "trained on, from short to long histories: it sees the items they liked (the first few by id are "
             "listed) and ranks every other item; ✓ marks a recommendation that is one of the user's held-out "
             "items.</p><div class='grid'>"]
    for ex in examples:
        hits, top = sum(r["hit"] for r in ex["recommended"]), len(ex["recommended"])
        items = "".join(f"<li{' class=hit' if r['hit'] else ''}>{label(r)}{' ✓' if r['hit'] else ''}</li>"
                        for r in ex["recommended"])
        more = ex["folded_in"] - len(ex["liked"])
        liked = ", ".join(label(r) for r in ex["liked"]) + (f", … ({more} more)" if more > 0 else "")
        verdict = f"{hits} of the top {top} {'is' if hits == 1 else 'are'} among the {ex['held_out']} held-out items."
        parts.append(f"<figure><h2>User {html.escape(str(ex['user']))}</h2><p class='muted'>Liked: {liked}</p>"
                     f"<ol>{items}</ol><figcaption>{verdict}</figcaption></figure>")
    return [*parts, "</div>"]


def write_report(run_dir: Path) -> Path:
    """(Re)write ``run_dir/report.html`` from the files in the run directory."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    rows = []
    if (run_dir / "history.csv").exists():
        with open(run_dir / "history.csv") as f:
            rows = list(csv.DictReader(f))
    title = f"{config.get('model', '?')} on {config.get('data', '?')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} — latentforge</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    train = config.get("train", {})
    parts.append(
        f"<p class='sub'>{_fmt(metrics.get('epochs', len(rows)))} epochs · batch {train.get('batch_size', '?')} · "
        f"lr {train.get('lr', '?')} · seed {train.get('seed', '?')} · "
        f"{_fmt(metrics.get('train_seconds', 0.0))} s training · likelihood {html.escape(str(metrics.get('likelihood') or '—'))}</p>"
    )
    test = metrics.get("test", {})
    if test:
        parts.append("<h2>Test metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>")
        for k, v in test.items():
            parts.append(f"<tr><td>{html.escape(k)}</td><td class='num'>{_fmt(v)}</td>"
                         f"<td class='muted'>{html.escape(METRIC_HELP.get(k, ''))}</td></tr>")
        parts.append("</table>")
    parts.append("<div class='grid'>")
    for name, heading, caption in FIGURES:
        if (run_dir / name).exists():
            parts.append(f"<figure><h2>{heading}</h2><img alt='{heading}' src='{_img(run_dir / name)}'>"
                         f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    if (run_dir / "examples.json").exists():
        parts += _examples(json.loads((run_dir / "examples.json").read_text()))
    mc = config.get("model_config", {})
    parts.append("<h2 style='margin-top:1.5rem'>Configuration</h2><table>")
    for k, v in {**mc, **{f"train.{k}": v for k, v in train.items()}}.items():
        parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p class='muted'>latentforge {__version__} · run directory {html.escape(str(run_dir.resolve()))}</p>")
    parts.append("</body></html>")
    out = run_dir / "report.html"
    tmp = run_dir / ".report.html.tmp"
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out
