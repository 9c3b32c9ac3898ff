"""Neural topic models on 20 Newsgroups against the issue's anchors, measured in the same run.

Data: the 5,000-word bag of words of Wu et al. 2023 (``20newsgroups``: 11,314 train / 7,532 test
documents). Every method fits on the training documents; every number is on the test documents: NPMI
of each topic's top 10 words by binary co-occurrence in the test documents (pairs that never co-occur
count −1), diversity of the top 25 words, and a logistic-regression probe (fixed 50/50 split of the test
documents) and k-means NMI (k = 20 on standardised codes) of the document codes. Anchors: scikit-learn's
LatentDirichletAllocation (its defaults: batch variational Bayes, 10 passes) and TF-IDF + TruncatedSVD.
Ours runs exactly as ``latentforge train`` does (the same command is printed), with 10 % of the training
documents held out for the kept epoch; its settings were chosen on those validation documents
(``--tune``), never on the test documents.

    python benchmarks/bench_topics.py --k 20            # one K per run keeps a run under ~10 minutes
    python benchmarks/bench_topics.py --k 50
    python benchmarks/bench_topics.py --tune --k 20     # validation scores of the settings tried (~4 min each)
    python benchmarks/bench_topics.py --tune --k 50 --rows 4 7 --seed 1   # some of them, another seed
    python benchmarks/bench_topics.py --halves --k 20 50   # rankings scored on half the training documents
    python benchmarks/bench_topics.py --k 20 --seed 2 --skip-anchors --json s2.json   # one seed per process
    python benchmarks/bench_topics.py --combine s*.json  # mean and 95 % interval over seeds against the targets
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from latentforge.data.text import load_text_splits
from latentforge.metrics.representation import representation_scores
from latentforge.metrics.topics import binary_docs, npmi, top_words, topic_diversity
from latentforge.tasks.topics import DIVERSITY_TOP, TOP, present_with
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
from seed_stats import against, read_seed_runs, t_interval  # noqa: E402  (benchmarks/seed_stats.py)

# Chosen on validation documents with --tune (docs/results.md): documents weighted by 1 / their length, a sparser
# Dirichlet prior (α 0.1) without dropout (TUNE_GRID row 10), topic words ranked by FREX with exclusivity weight 0.7
# among the words in at least 0.3 / K of the training documents (of the grid FLOORS_K × FREX weights, the highest
# validation NPMI summed over K = 20 and 50 whose validation diversity is ≥ 0.80 at both K).
OURS = {"model": "prodlda", "flags": {"--lr": "0.002", "--batch-size": "200", "--epochs": "200", "--length-power": "1",
                                      "--alpha": "0.1", "--dropout": "0", "--ranking": "frex", "--frex-weight": "0.7",
                                      "--topic-min-docs-k": "0.3"}}
# the same trained model's words under another ranking (presentation only), reported beside ours
OTHER_RANKINGS = {
    "relevance λ 0.75 (prodlda's default ranking)": {"ranking": "relevance", "relevance": 0.75, "topic_min_docs_k": 0.0},
    "FREX 0.6, no floor per topic (the previous setting's words)": {"ranking": "frex", "frex_weight": 0.6,
                                                                    "topic_min_docs_k": 0.0}}
TARGETS = {20: (0.26, 0.80, 0.65, 0.51), 50: (0.21, 0.80, 0.71, 0.51)}  # NPMI, diversity, probe, NMI (issue 19)
PUBLISHED = {  # the table (same data, measured by the author)
    20: {"sklearn LDA": (0.184, 0.686, 0.597, 0.430), "ProdLDA, dropout 0.6": (0.250, 0.700, 0.473, 0.436),
         "ProdLDA in a toolkit": (0.178, 0.896, 0.631, 0.507), "TF-IDF + SVD": (None, None, 0.649, 0.414)},
    50: {"sklearn LDA": (0.154, 0.618, 0.631, 0.410), "ProdLDA, dropout 0.6": (0.201, 0.577, 0.541, 0.434),
         "ProdLDA in a toolkit": (0.096, 0.813, 0.677, 0.501), "TF-IDF + SVD": (None, None, 0.712, 0.409)},
}


def word_scores(topic_word: np.ndarray, reference) -> tuple[float, float]:
    """NPMI of each topic's first TOP words on ``reference`` (a ``binary_docs`` matrix) and the diversity of their
    first DIVERSITY_TOP words: what ``latentforge evaluate`` reports, for any (K, V) word-score matrix."""
    top = top_words(topic_word, DIVERSITY_TOP)
    return npmi(top, reference, n=TOP), topic_diversity(top, n=DIVERSITY_TOP)


def topic_scores(topic_word: np.ndarray, codes: np.ndarray, test) -> dict:
    return {**dict(zip(("npmi", "diversity"), word_scores(topic_word, binary_docs(test.x)))),
            **representation_scores(codes, np.asarray(test.y))}


def sklearn_lda(splits, k: int, seed: int) -> dict:
    from sklearn.decomposition import LatentDirichletAllocation

    t0 = time.perf_counter()
    lda = LatentDirichletAllocation(n_components=k, random_state=seed).fit(splits.train.x)
    theta = lda.transform(splits.test.x)
    return {**topic_scores(lda.components_, theta, splits.test), "seconds": time.perf_counter() - t0}


def tfidf_svd(splits, k: int, seed: int) -> dict:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    t0 = time.perf_counter()
    tfidf = TfidfTransformer().fit(splits.train.x)
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(tfidf.transform(splits.train.x))
    codes = svd.transform(tfidf.transform(splits.test.x))
    return {**representation_scores(codes, np.asarray(splits.test.y)), "seconds": time.perf_counter() - t0}


def ours(k: int, seed: int, flags: dict, out: Path) -> dict:
    """``latentforge train`` itself, timed from the command to its metrics.json (training and evaluation)."""
    from latentforge.cli import main

    args = ["train", OURS["model"], "--data", "20newsgroups", "--latent-dim", str(k), "--seed", str(seed),
            "--eval-k", "0", "--device", "cpu", "--out", str(out)]
    for f, v in flags.items():
        args += [f, v]
    print("latentforge " + " ".join(a if a != str(out) else f"runs/{OURS['model']}-{k}" for a in args), flush=True)
    t0 = time.perf_counter()
    if main(args) != 0:
        raise SystemExit("training failed")
    seconds = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return {**m["test"], "seconds": seconds, "train_seconds": m["train_seconds"], "best_epoch": m.get("best_epoch")}


def ranked_scores(model, reference, **presentation) -> tuple[float, float]:
    """NPMI of the model's topics on ``reference`` (a ``binary_docs`` matrix, built once by the caller) and their
    diversity, with its words listed by ``presentation`` (tasks.topics.present_with's settings; same weights)."""
    present_with(model, **presentation)
    return word_scores(model.topic_word().numpy(), reference)


def train_setting(setting: dict, k: int, seed: int, data, **fit_kw):
    """(model, seconds): OURS' model with ``setting`` fitted as every --tune / --halves row is (Adam 2e-3, batch 200,
    200 epochs, seeded)."""
    import torch

    from latentforge.models import build_model
    from latentforge.train import TrainConfig, fit

    torch.manual_seed(seed)
    model = build_model(OURS["model"], input_shape=[data.x.shape[1]], latent_dim=k, **setting)
    t0 = time.perf_counter()
    fit(model, data, None, TrainConfig(epochs=200, lr=2e-3, batch_size=200, seed=seed, device="cpu", progress=False),
        **fit_kw)
    return model, round(time.perf_counter() - t0)


def other_rankings(out: Path, test) -> dict[str, dict]:
    """Test NPMI and diversity of the trained run's topics under each of OTHER_RANKINGS (same weights)."""
    from latentforge.run import load_run

    model, _ = load_run(out)
    reference = binary_docs(test.x)
    rows = {}
    for name, attrs in OTHER_RANKINGS.items():
        rows[name] = dict(zip(("npmi", "diversity"), ranked_scores(model, reference, **attrs)))
    return rows


TUNE_GRID = [  # every setting with Adam 2e-3, batch 200, 200 epochs; unnamed settings at prodlda's defaults
    {"hidden": [100, 100], "dropout": 0.6, "log_counts": False},  # 0: the authors' setting
    {"hidden": [200, 200], "dropout": 0.4, "log_counts": False},
    {"hidden": [200, 200], "dropout": 0.2, "log_counts": False},
    {"hidden": [200, 200], "dropout": 0.4, "log_counts": True},
    {"hidden": [200, 200], "dropout": 0.2, "log_counts": True},  # 4: the defaults
    {"kl_warmup": 2500},  # 5: KL weight 0 → 1 over ~50 epochs (51 updates an epoch)
    {"length_power": 0.5},  # 6: documents weighted by words^-0.5
    {"length_power": 1.0},  # 7: documents weighted by words^-1 (each document counts once, not once per word)
    {"length_power": 1.0, "kl_warmup": 2500},  # 8
    {"length_power": 1.0, "alpha": 0.1},  # 9: a sparser Dirichlet prior
    {"length_power": 1.0, "alpha": 0.1, "dropout": 0.0},  # 10: the measured setting (OURS, --halves)
    {"alpha": 0.1, "dropout": 0.0},  # 11
    {"length_power": 1.0, "alpha": 0.1, "dropout": 0.0, "kl_warmup": 2500},  # 12
    {"length_power": 1.0, "alpha": 0.1, "dropout": 0.1, "kl_warmup": 2500},  # 13
    {"length_power": 1.0, "alpha": 0.03, "dropout": 0.0, "kl_warmup": 2500},  # 14
]
# word rankings scored on every row of TUNE_GRID (presentation only: the same trained model)
RANKINGS = {**{f"relevance {lam}": {"ranking": "relevance", "relevance": lam} for lam in (0.6, 0.75, 0.9, 1.0)},
            **{f"frex {w}": {"ranking": "frex", "frex_weight": w} for w in (0.3, 0.5, 0.6, 0.7)}}
FLOORS_K = (0.0, 0.15, 0.2, 0.25, 0.3, 0.4)  # topic_min_docs_k: a topic word in at least this / K of the documents


def tune(k: int, seed: int, rows: list[int] | None = None) -> None:
    """Validation NPMI (the validation documents as reference) and diversity at three word rankings, and
    the validation documents' probe accuracy and k-means NMI, for each setting of TUNE_GRID (or its ``rows``)."""
    from latentforge.tasks import get_task
    from latentforge.tasks.base import RunOptions
    from latentforge.tasks.topics import document_codes

    task = get_task("topics")
    splits = task.load("20newsgroups", {}, RunOptions(seed=0))  # the same validation documents for every seed
    val = splits.validation
    reference = binary_docs(val.x)
    for g in TUNE_GRID if rows is None else [TUNE_GRID[i] for i in rows]:
        model, seconds = train_setting(g, k, seed, splits.train, validation=val, monitor=task.monitor(splits))
        row = {"k": k, "seed": seed, **g, "seconds": seconds}
        row.update({k_: round(v, 4) for k_, v in representation_scores(document_codes(model, val),
                                                                       np.asarray(val.y)).items()})
        row["val_loss"] = round(validation_loss(model, val), 2)
        # topic_max_docs: no ceiling, or words in at most 30 % of the training documents
        for cap, floor_k in [(1.0, f) for f in FLOORS_K] + [(0.3, 0.0)]:
            for name, r in RANKINGS.items():
                key = name + ("" if cap == 1.0 else f", max docs {cap}") + (f", min docs {floor_k}/K" if floor_k else "")
                score, diversity = ranked_scores(model, reference, **r, topic_max_docs=cap, topic_min_docs_k=floor_k)
                row[f"npmi@{key}"], row[f"diversity@{key}"] = round(score, 4), round(diversity, 4)
        print(json.dumps(row), flush=True)


TARGET_COLUMNS = ("npmi", "diversity", "probe_acc", "nmi")  # the order of TARGETS' values


def combine(files: list[Path]) -> None:
    """Our rows of earlier runs' --json files together: each target column's mean and 95 % t-interval over the
    seeds, and whether the target is met, tied (inside the interval) or missed."""
    rows = read_seed_runs(files, lambda run: [r for r in run if r.get("method", "").startswith("ours:")],
                          lambda r: (r["k"], r["seed"]), what="(K, seed)",
                          missing="no rows of ours (write it with: bench_topics.py --k K --seed S --json {f})")
    print(f"\n## ours over seeds, combined from {len(files)} runs\n")
    print("| K | seeds | " + " | ".join(TARGET_COLUMNS) + " | training s |")
    print("|---|---|" + "---|" * (len(TARGET_COLUMNS) + 1))
    for k in sorted({r["k"] for r in rows}):
        mine = sorted((r for r in rows if r["k"] == k), key=lambda r: r["seed"])
        for r in mine:
            print(f"| {k} | {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in TARGET_COLUMNS)
                  + f" | {r['train_seconds']:.0f} |")
        cells = []
        for c, target in zip(TARGET_COLUMNS, TARGETS[k]):
            m, lo, hi = t_interval([r[c] for r in mine])
            cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}] vs ≥ {target}: {against(target, lo, hi)}")
        print(f"| {k} | mean of {len(mine)} | " + " | ".join(cells) + " | |")


HALVES_RANKINGS = {**{f"frex {w}": {"ranking": "frex", "frex_weight": w} for w in (0.3, 0.5, 0.6, 0.7, 0.8)},
                   **{f"relevance {lam}": {"ranking": "relevance", "relevance": lam} for lam in (0.5, 0.6, 0.75, 0.9)}}
HALVES_FLOORS_K = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def halves(k: int, seed: int) -> None:
    """The word ranking scored on a larger held-out reference than the 1,131 validation documents: the training
    documents (validation ones included, none of the test documents) are split in two fixed halves; the measured
    setting is trained on one half and its topics' NPMI is taken on the other, for each fold and each ranking × floor
    (diversity is the model's own, and a half-data model's runs ~0.04 above a full one's)."""
    from latentforge.tasks import get_task
    from latentforge.tasks.base import RunOptions

    train = get_task("topics").load("20newsgroups", {}, RunOptions(seed=0)).train
    order = np.random.default_rng(123).permutation(len(train))
    parts = [np.sort(order[: len(train) // 2]), np.sort(order[len(train) // 2:])]
    for fold in (0, 1):
        model, seconds = train_setting(TUNE_GRID[10], k, seed, train.subset(parts[fold]))  # OURS' training setting
        reference = binary_docs(train.subset(parts[1 - fold]).x)
        row = {"k": k, "seed": seed, "fold": fold, "documents": [len(parts[fold]), len(parts[1 - fold])],
               "seconds": seconds}
        for name, r in HALVES_RANKINGS.items():
            for floor_k in HALVES_FLOORS_K:
                score, diversity = ranked_scores(model, reference, **r, topic_min_docs_k=floor_k)
                row[f"{name}, min docs {floor_k}/K"] = [round(score, 4), round(diversity, 4)]
        print(json.dumps(row), flush=True)


def validation_loss(model, val) -> float:
    """The plain negative ELBO per document at the posterior means, as the trainer's val_loss (eval mode)."""
    import torch

    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(val.x.toarray() if hasattr(val.x, "toarray") else np.asarray(val.x), dtype=torch.float32)
        mu, logvar = model.encode(x)
        return float((model.recon_nll(model.word_logits(mu), x) + model.kl(mu, logvar)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[20, 50])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-anchors", action="store_true")
    p.add_argument("--tune", action="store_true", help="validation scores of a small grid instead of the table")
    p.add_argument("--halves", action="store_true", help="word rankings scored with half the training documents as "
                   "reference, the model trained on the other half (both folds; ~3 min a fold)")
    p.add_argument("--rows", type=int, nargs="+", help="with --tune: only these rows of TUNE_GRID (counted from 0)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the table's rows (with K and seed) to this file")
    p.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                   help="print our rows of earlier runs' --json files with their mean and 95%% interval over seeds "
                        "against the targets (runs nothing)")
    a = p.parse_args()
    if a.combine:
        combine(a.combine)
        return
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.halves:
        for k in a.k:
            halves(k, a.seed)
        return
    if a.tune:
        for k in a.k:
            tune(k, a.seed, a.rows)
        return
    splits = load_text_splits("20newsgroups")
    print(f"20newsgroups: {len(splits.train):,} train / {len(splits.test):,} test documents, "
          f"{splits.train.x.shape[1]:,} words; {cpu_model()}, {torch.get_num_threads()} torch threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in a.k:
            if not a.skip_anchors:
                rows.append((k, "scikit-learn LDA", sklearn_lda(splits, k, a.seed)))
                rows.append((k, "TF-IDF + TruncatedSVD", tfidf_svd(splits, k, a.seed)))
            rows.append((k, f"ours: {OURS['model']}", ours(k, a.seed, OURS["flags"], Path(tmp) / f"run-{k}")))
            print(json.dumps({"k": k, **rows[-1][2]}), flush=True)
            for name, r in other_rankings(Path(tmp) / f"run-{k}", splits.test).items():
                rows.append((k, f"ours, same model, words by {name}", {**r, "seconds": 0.0}))
    if a.json:
        a.json.write_text(json.dumps([{"k": k, "seed": a.seed, "method": name, **r} for k, name, r in rows], indent=1))
    print("\n| K | method | NPMI (test) | diversity | probe acc | k-means NMI | wall s |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda r, key: f"{r[key]:.3f}" if key in r else "–"
    for k, name, r in rows:
        print(f"| {k} | {name} | {fmt(r, 'npmi')} | {fmt(r, 'diversity')} | {fmt(r, 'probe_acc')} | "
              f"{fmt(r, 'nmi')} | {r['seconds']:.0f} |")
    show = lambda v: "–" if v is None else f"{v:.3f}"
    print("\n| K | published (the issue's table) | NPMI (test) | diversity | probe acc | k-means NMI |")
    print("|---|---|---|---|---|---|")
    for k in a.k:
        for name, values in [*PUBLISHED.get(k, {}).items(), ("target", TARGETS.get(k))]:
            if values:
                print(f"| {k} | {name} | " + " | ".join(show(v) for v in values) + " |")


if __name__ == "__main__":
    main()
