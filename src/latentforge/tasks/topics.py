"""The topics task: neural topic models (``nvdm``, ``prodlda``) on documents as bags of words.

Evaluated by the topics' coherence on held-out text (NPMI of each topic's top 10 words by document
co-occurrence in the test documents), their diversity, perplexity from the ELBO, and how much of
the labels the document codes carry (a linear probe and k-means NMI, when documents have labels).
The run keeps ``topics.json`` (each topic's top words and NPMI), a 2-D map of the test documents
and the training curves; the report lists the topics.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import Dataset, Splits
from ..data.text import TextData, load_text_splits, read_documents
from ..errors import UserError
from ..io import read_json, write_json
from ..metrics.representation import representation_scores
from ..metrics.topics import binary_docs, npmi_per_topic, perplexity, top_words, topic_diversity
from ..train_records import Monitor, TrainResult
from .base import Figure, Metric, RunOptions, Task, register_task
from .generate import hold_out_rows

TOPIC_METRICS = {
    "npmi": Metric("NPMI coherence of each topic's top 10 words by document co-occurrence in the test documents, "
                   "mean over topics (−1 … 1; word pairs that never co-occur count −1)", "higher"),
    "diversity": Metric("share of distinct words among the top 25 words of all topics (1 = no word repeats)", "higher"),
    "perplexity": Metric("exp(−ELBO / words) on the test documents: a bound on the per-word perplexity", "lower"),
    "elbo": Metric("evidence lower bound, nats per sample (higher is better)", "higher"),
    "probe_acc": Metric("accuracy of a logistic regression on the codes (fixed 50/50 split of the test set)", "higher"),
    "kmeans_acc": Metric("k-means on the codes, clusters matched to labels (Hungarian): accuracy", "higher"),
    "nmi": Metric("normalised mutual information between k-means clusters and labels", "higher"),
    "ari": Metric("adjusted Rand index between k-means clusters and labels", "higher"),
    "n_topics": Metric("number of topics K"),
    "test_documents": Metric("test documents evaluated (those holding at least one vocabulary word)"),
    "documents_dropped": Metric("training and test documents left out: none of their words is in the vocabulary"),
}
TOPICS_FILE = "topics.json"
TOP = 10  # words per topic for NPMI, the topic lists and the report
DIVERSITY_TOP = 25
ELBO_SAMPLES = 8  # posterior samples per test document for the ELBO (fixed noise: the same number every time)


class TopicsTask(Task):
    """Topic models on documents: a validation slice of the training documents picks the kept epoch
    (lowest validation loss); the test documents are the NPMI reference corpus."""

    name = "topics"
    metrics = TOPIC_METRICS
    figures = (Figure("documents.png", "Documents", "Test documents' codes (posterior means; for prodlda the "
                      "log-ratios of their topic proportions) in 2-D, coloured by label where documents have labels."),
               Figure("curves.png", "Training curves", "Loss per document on the training and test documents after "
                      "each epoch; the validation loss (right axis) picks the kept epoch."))
    data_options = ("text_column", "encoding", "vocab_size", "min_df", "max_df")
    data_example = "20newsgroups, a folder of .txt files, a CSV with a text column"

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        self.check_options(data, options)
        splits = load_text_splits(data, vocabulary=run.vocabulary, **{k: v for k, v in options.items() if v is not None})
        return hold_out_rows(splits, seed=run.seed)

    def read_rows(self, path: str, config: dict, run: RunOptions) -> Dataset:
        """Every document, in order, counted over the model's vocabulary (raw text or another bag of words)."""
        options = config.get("data_options") or {}
        return read_documents(path, run.vocabulary or vocabulary_of_config(config),
                              text_column=options.get("text_column"), encoding=options.get("encoding"))

    def model_settings(self, model_cls: type, splits: Splits, given: dict, run: RunOptions) -> dict:
        return {**given, "vocabulary": splits.extras.vocabulary}

    def monitor(self, splits: Splits) -> Monitor | None:
        return Monitor("val_loss", higher_is_better=False) if splits.validation is not None else None

    def evaluate(self, model: nn.Module, test: Dataset, splits: Splits | None, *, k: int, device,
                 max_iwae: int | None = None, progress: bool = False, features=None) -> dict:
        return evaluate_topics(model, test, device=device)

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        model = model.cpu().eval()
        write_json(Path(run_dir) / TOPICS_FILE, topic_table(model, splits.test))
        self.write_pictures(run_dir, model, splits.test, result.history)
        extras: TextData = splits.extras
        return {"test_documents": len(splits.test), **({"documents_dropped": sum(extras.dropped.values())}
                                                       if extras.dropped and sum(extras.dropped.values()) else {})}

    def write_pictures(self, run_dir: Path, model: nn.Module, test: Dataset, history: list[dict]) -> None:
        from .. import plots

        model = model.cpu().eval()
        if history:
            plots.save_curves(history, Path(run_dir) / "curves.png",
                              monitor="val_loss" if any("val_loss" in r for r in history) else None,
                              higher_is_better=False)
        if len(test) >= 2:
            n = min(len(test), 1000)
            codes = document_codes(model, test.subset(np.arange(n)))
            labels = None if test.y is None else np.asarray(test.y[:n])
            plots.save_latent_map(codes, labels, Path(run_dir) / "documents.png", label_names=test.label_names,
                                  what="test documents")

    def report_sections(self, run_dir: Path) -> list[str]:
        path = Path(run_dir) / TOPICS_FILE
        return topics_html(read_json(path)) if path.exists() else []


register_task(TopicsTask())


# ---------------------------------------------------------------- what the task, the CLI and the estimator share


def vocabulary_of_config(config: dict) -> list[str]:
    """The words of a saved topic model's columns (``w<i>`` for a model fitted on bare counts)."""
    mc = config.get("model_config") or {}
    return list(mc.get("vocabulary") or [f"w{i}" for i in range(int((mc.get("input_shape") or [0])[-1]))])


def vocabulary_of(model: nn.Module) -> list[str]:
    """The model's words (its config's vocabulary), or ``w<i>`` column names for a model fitted on bare counts."""
    words = model.config.get("vocabulary")
    return list(words) if words else [f"w{i}" for i in range(model.n_words)]


def ranked_words(model: nn.Module, n: int = TOP) -> np.ndarray:
    """(K, n) column indices of each topic's best words, as the model ranks them (``topic_word``)."""
    return top_words(model.topic_word().cpu().numpy(), n)


@torch.no_grad()
def batched(model: nn.Module, data: Dataset, fn, *, batch_size: int = 1000, device="cpu") -> np.ndarray:
    """``fn(x)`` over a data set's rows in batches (sparse rows densified one batch at a time)."""
    return np.concatenate([fn(torch.from_numpy(x).to(device)).cpu().numpy() for x in data.chunks(batch_size)])


def document_codes(model: nn.Module, data: Dataset, *, device="cpu", proportions: bool = False) -> np.ndarray:
    """Each document's code: the posterior mean (for ProdLDA the log-ratio coordinates of its topic
    proportions, where Euclidean tools such as k-means and logistic regression apply), or with
    ``proportions`` what the model calls the document's topics (θ, rows summing to 1, for ProdLDA)."""
    was = model.training
    model.eval()
    fn = model.doc_topics if proportions else (lambda x: model.encode(x)[0])
    try:
        return batched(model, data, fn, device=device)
    finally:
        model.train(was)


def evaluate_topics(model: nn.Module, test: Dataset, *, device="cpu", seed: int = 0) -> dict:
    """The ``test`` block of a topic model's metrics.json."""
    model = model.to(device).eval()
    noise = torch.randn(ELBO_SAMPLES, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    elbo = batched(model, test, lambda x: model.elbo(x, noise=noise.to(x.device)), device=device)
    words = np.asarray(test.x.sum(1)).ravel()
    top = ranked_words(model, max(TOP, DIVERSITY_TOP))
    out = {"npmi": float(np.mean(npmi_per_topic(top, test.x, n=TOP))),
           "diversity": topic_diversity(top, n=DIVERSITY_TOP),
           "perplexity": perplexity(elbo, words), "elbo": float(np.mean(elbo)), "n_topics": int(model.latent_dim)}
    if test.y is not None:
        out.update(representation_scores(document_codes(model, test, device=device), np.asarray(test.y), seed=seed))
    return out


PRESENTATION = ("ranking", "relevance", "frex_weight", "topic_min_docs", "topic_min_docs_k", "topic_max_docs")


def present_with(model: nn.Module, **changes) -> None:
    """Set how ``model`` lists its topic words (the settings of PRESENTATION; ``None`` keeps the saved value),
    checked as at training: the same trained weights, other words shown."""
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(PRESENTATION)
    if unknown:
        raise UserError(f"not a presentation setting: {', '.join(sorted(unknown))}")
    if not changes:
        return
    model.Config.from_dict({**model.config, **changes}, where=f" of {model.registry_name}")  # checks every rule
    for k, v in changes.items():
        setattr(model, k, v)
    model.listed_words()  # a band no word falls in is an error here too


def topic_table(model: nn.Module, reference: Dataset | None, *, top: int = TOP) -> dict:
    """Each topic's ``top`` words and, with a ``reference`` corpus, their NPMI; topics in model order."""
    idx = ranked_words(model, top)
    words = vocabulary_of(model)
    scores = npmi_per_topic(idx, binary_docs(reference.x), n=top) if reference is not None else [None] * len(idx)
    return {"reference": None if reference is None else f"{len(reference)} test documents of {reference.name}",
            "topics": [{"topic": t + 1, "words": [words[i] for i in row], "npmi": None if s is None else float(s)}
                       for t, (row, s) in enumerate(zip(idx, scores))]}


def render_topics(table: dict) -> str:
    """The topic list as text: one line per topic, its NPMI first."""
    scores = [t["npmi"] for t in table["topics"] if t["npmi"] is not None]
    lines = [f"{len(table['topics'])} topics" + (f"; NPMI on {table['reference']}" if table["reference"] else "")
             + (f" (mean {sum(scores) / len(scores):+.3f})" if scores else "")]
    for t in table["topics"]:
        score = f"{t['npmi']:+.3f}" if t["npmi"] is not None else "   —  "
        lines.append(f"{t['topic']:>3}  {score}  {' '.join(t['words'])}")
    return "\n".join(lines)


def topics_html(table: dict) -> list[str]:
    """The report's topic list: one row per topic, most coherent first."""
    rows = sorted(table.get("topics", []), key=lambda t: -(t["npmi"] if t["npmi"] is not None else -2))
    reference = html.escape(str(table.get("reference") or "no reference corpus"))
    intro = ("<h2 style='margin-top:1.5rem'>Topics</h2><p class='muted'>Each topic's most characteristic words and "
             f"their NPMI coherence on {reference} (−1 … 1, higher = the words occur in the same documents), most "
             "coherent first.</p>")
    parts = [intro, "<table><tr><th>topic</th><th>NPMI</th><th>words</th></tr>"]
    for t in rows:
        score = f"{t['npmi']:+.3f}" if t["npmi"] is not None else "—"
        parts.append(f"<tr><td>{t['topic']}</td><td class='num'>{score}</td>"
                     f"<td>{html.escape(' '.join(t['words']))}</td></tr>")
    return [*parts, "</table>"]
