"""How good a topic model's topics are, from its top words and a reference corpus: NPMI coherence
(Lau, Newman & Baldwin 2014, "Machine Reading Tea Leaves", with binary document co-occurrence),
topic diversity (Dieng, Ruiz & Blei 2020, "Topic Modeling in Embedding Spaces", §5) and perplexity
from the ELBO. Pure numpy/scipy: a model only supplies its word ranking and its bound."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp


def top_words(topic_word: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the ``n`` highest scores of each topic row, best first (ties: lower index first)."""
    scores = np.asarray(topic_word, dtype=np.float64)
    n = min(n, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]


def binary_docs(counts) -> sp.csc_matrix:
    """Which documents hold which words (1/0), column-major so a topic's word columns are cheap to take."""
    m = sp.csr_matrix(counts, dtype=np.float64)
    m.data = (m.data > 0).astype(np.float64)
    m.eliminate_zeros()
    return m.tocsc()


def npmi_per_topic(top: np.ndarray, reference, *, n: int = 10) -> np.ndarray:
    """Mean NPMI over the pairs of each topic's first ``n`` words, by binary document co-occurrence in
    ``reference`` (documents × words counts). NPMI(i, j) = log(P(i,j) / (P(i) P(j))) / −log P(i,j), with
    P the share of documents holding the word(s); a pair that never co-occurs scores −1, a pair in every
    document 1."""
    docs = reference if sp.isspmatrix_csc(reference) and reference.dtype == np.float64 else binary_docs(reference)
    n_docs = docs.shape[0]
    if n_docs == 0:
        raise ValueError("the reference corpus has no documents")
    out = np.empty(len(top))
    for t, words in enumerate(np.asarray(top)[:, :n]):
        sub = docs[:, words]
        co = np.asarray((sub.T @ sub).todense()) / n_docs  # P(i, j); the diagonal is P(i)
        p = np.diag(co)
        i, j = np.triu_indices(len(words), k=1)
        pij, pi, pj = co[i, j], p[i], p[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(pij / (pi * pj)) / -np.log(pij)
        v = np.where(pij <= 0, -1.0, np.where(pij >= 1, 1.0, v))
        out[t] = float(v.mean()) if len(v) else math.nan
    return out


def npmi(top: np.ndarray, reference, *, n: int = 10) -> float:
    """Mean over topics of :func:`npmi_per_topic`."""
    return float(np.mean(npmi_per_topic(top, reference, n=n)))


def topic_diversity(top: np.ndarray, *, n: int = 25) -> float:
    """Share of distinct words among the first ``n`` words of all topics (1 = no word repeats across topics)."""
    words = np.asarray(top)[:, :n]
    return float(len(np.unique(words)) / words.size)


def perplexity(elbo_per_doc: np.ndarray, words_per_doc: np.ndarray) -> float:
    """exp(−Σ ELBO / Σ words): an upper bound on the per-word perplexity, since the ELBO bounds log p(x)."""
    words = float(np.sum(words_per_doc))
    if words <= 0:
        raise ValueError("the documents hold no words")
    return float(math.exp(min(-float(np.sum(elbo_per_doc)) / words, 700.0)))
