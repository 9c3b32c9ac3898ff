"""``latentforge`` verbs of the tasks beyond generation: anomaly scores (score), recommendations (recommend) and
topic words (topics).

:func:`register` adds them to the CLI's Typer app (``cli.py`` calls it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_common import PRECISION_HELP, positive
from .errors import UserError


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``, in the order ``latentforge --help`` lists them."""
    for command in (score, recommend, topics):
        app.command()(command)


def score(
    run: Path = typer.Argument(..., help="Run directory (deep-svdd, ae, dae, vae, …)."),
    data: str = typer.Option(..., "--data", help="Data to score: a path (.csv, .npz, .npy, images) or a data name (its test set)."),
    out: Path = typer.Option(..., "--out", help="Output CSV: index, score (higher = more anomalous), is_anomaly (0/1)."),
    threshold: Optional[str] = typer.Option(None, "--threshold", help="quantile:Q of the training scores, or fpr:R "
                                            "(flags at most a share R of rows like its calibration rows: the held-out "
                                            "training rows, or --calibrate). Default fpr:0.01."),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="Data known to be normal (its label-0 rows "
                                            "when it has 0/1 labels): sets the fpr:R threshold, so about R of normal "
                                            "data is flagged even when the training data held anomalies."),
    contamination: Optional[float] = typer.Option(None, "--contamination", help="Expected share of anomalies in (0, 0.5] "
                                                  "(PyOD's rule: flags that share of the training data) instead of --threshold."),
    score_kind: str = typer.Option("auto", "--score", help="auto, recon, elbo, iwae (VAEs) or distance (deep-svdd)."),
    k: int = typer.Option(16, "--k", help="Posterior samples for elbo / importance samples for iwae scores."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Anomaly scores for new data, with a threshold that needs no guessed contamination rate."""
    from .tasks.anomaly import score_run

    positive("--k", k)
    r = score_run(run, data, out, threshold=threshold, contamination=contamination, score=score_kind, k=k,
                  precision=precision, calibrate=calibrate)
    typer.echo(f"scored {r['n']} samples ({r['score']} score): {r['flagged']} flagged as anomalies "
               f"(score > {r['threshold']:.6g}, rule {r['rule'] or 'fpr:0.01'}); wrote {out}")
    if "calibration" in r:
        c = r["calibration"]
        typer.echo(f"threshold set on {c['rows']} rows of {c['data']}"
                   f"{' labelled normal (0)' if c['labelled_normal'] else ''}")
    if "auroc" in r:
        typer.echo(f"labels found: AUROC {r['auroc']:.4f}, average precision {r['average_precision']:.4f}, "
                   f"false alarms {r['false_alarm_rate']:.2%} of the rows labelled normal")


def recommend(
    run: Path = typer.Argument(..., help="Run directory of mult-vae / mult-dae (or a save_pretrained folder)."),
    user: Optional[str] = typer.Option(None, "--user", help="Id of a user in the training data."),
    history: Optional[Path] = typer.Option(None, "--history", help="CSV of a new user's items (an 'item' column, "
                                           "optional 'rating'); folded in, no retraining."),
    top: int = typer.Option(20, "--top", help="How many items to recommend."),
    item_col: str = typer.Option("item", "--item-col", help="Item column of the --history file (and of --names, which may also use 'item')."),
    names: Optional[Path] = typer.Option(None, "--names", help="CSV of item names (item + name columns) to show; "
                                         "movielens-100k runs have the titles already."),
    json_out: bool = typer.Option(False, "--json", help="Print [{rank, item, score, name}, …] as JSON (name: null if unknown)."),
) -> None:
    """Top items for a known user (--user) or a new user's history (--history), never items they already have."""
    from .tasks.recommend import Recommender, read_history, read_item_names_csv, render_ranked

    positive("--top", top)
    if (user is None) == (history is None):
        raise UserError("give exactly one of --user ID (a known user) or --history FILE.csv (a new user's items)")
    rec = Recommender.load(run)
    item_names = rec.item_names if names is None else read_item_names_csv(names, item_col=item_col, known=set(rec.index))
    if user is not None:
        ranked, who = rec.for_user(user, top=top), f"user {user}"
    else:
        items, ratings = read_history(history, item_col=item_col, known=set(rec.index))
        ranked, who = rec.for_history(items, ratings=ratings, top=top, where=str(history)), f"{history.name} ({len(items)} items)"
    typer.echo(render_ranked(ranked, who, item_names, as_json=json_out))


def topics(
    run: Path = typer.Argument(..., help="Run directory of prodlda / nvdm (or a save_pretrained folder)."),
    top: int = typer.Option(10, "--top", help="Words per topic."),
    json_out: bool = typer.Option(False, "--json", help="Print {reference, topics: [{topic, words, npmi}]} as JSON."),
    ranking: Optional[str] = typer.Option(None, "--ranking", help="List words by relevance or frex instead of the "
                                          "run's ranking (the same weights; nothing is saved)."),
    relevance: Optional[float] = typer.Option(None, "--relevance", help="With relevance: λ, 1 = most probable."),
    frex_weight: Optional[float] = typer.Option(None, "--frex-weight", help="With frex: the weight of exclusivity."),
    topic_min_docs: Optional[float] = typer.Option(None, "--topic-min-docs", help="List only words in at least this "
                                                   "share of the training documents."),
    topic_min_docs_k: Optional[float] = typer.Option(None, "--topic-min-docs-k", help="… and in at least this / K "
                                                     "of them."),
    topic_max_docs: Optional[float] = typer.Option(None, "--topic-max-docs", help="List only words in at most this "
                                                   "share of the training documents."),
) -> None:
    """Each topic's most characteristic words, with their NPMI coherence on the run's test documents. The ranking
    options show the same model's topics by other rules, to compare them without training again."""
    from .run import load_run
    from .tasks import run_splits
    from .tasks.topics import present_with, render_topics, topic_table

    positive("--top", top)
    model, config = load_run(run)
    if not hasattr(model, "topic_word"):
        raise UserError(f"{run}: model {model.registry_name!r} is not a topic model; train prodlda or nvdm")
    present_with(model, ranking=ranking, relevance=relevance, frex_weight=frex_weight, topic_min_docs=topic_min_docs,
                 topic_min_docs_k=topic_min_docs_k, topic_max_docs=topic_max_docs)
    if top > model.n_words:
        raise UserError(f"--top {top} is more than the model's {model.n_words} words; ask for fewer")
    reference = None
    if "data" in config:  # a save_pretrained folder names no data: words without NPMI
        reference = run_splits(config).test
    table = topic_table(model, reference, top=top)
    typer.echo(json.dumps(table) if json_out else render_topics(table))
