"""A scikit-learn-style neural topic model, shaped like ``sklearn.decomposition.LatentDirichletAllocation``
so it drops into the same pipelines:

    tm = TopicModel(n_components=20, epochs=100).fit(texts)     # raw strings, a path, or a count matrix
    theta = tm.transform(texts)                                 # (n, 20) topic proportions, rows sum to 1
    tm.top_words(10); tm.components_; tm.get_feature_names_out()
    tm.save_pretrained("my-topics"); TopicModel.from_pretrained("my-topics")

Raw text is counted with the vocabulary fitted here (``vocab_size``, ``min_df``, ``max_df``, English stop
words); count matrices (e.g. from a ``CountVectorizer``) are taken as they are. The vocabulary is saved in
the model's config (JSON) and counts new text the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..data.dataset import Dataset
from ..data.text import count_words, fit_vocabulary, is_bag_of_words, load_text_splits
from ..errors import UserError
from ..metrics.topics import perplexity
from ..tasks.topics import ELBO_SAMPLES, batched, document_codes, ranked_words, vocabulary_of
from .base import ModelEstimator, not_fitted

KINDS = ("prodlda", "nvdm")


class TopicModel(ModelEstimator):
    """ProdLDA (``kind="prodlda"``, the default) or NVDM over documents; see the module docstring.
    ``transform`` gives topic proportions θ for ProdLDA, posterior means for NVDM. ``components_`` orders each
    topic's words as ``top_words`` does (``ranking``: relevance or frex); under frex its rows are nearly flat,
    an order rather than word probabilities."""

    model_names = KINDS
    extra_params = ("kind", "n_components", "vocab_size", "min_df", "max_df", "text_column")

    def __init__(self, n_components: int = 20, kind: str = "prodlda", hidden: Sequence[int] = (200, 200),
                 dropout: float = 0.2, log_counts: bool = True, alpha: float = 1.0, relevance: float = 0.75,
                 topic_min_docs: float = 0.005, kl_warmup: int = 0, length_power: float = 0.0,
                 ranking: str = "relevance", frex_weight: float = 0.5, topic_max_docs: float = 1.0,
                 vocab_size: int = 5000, min_df: float = 2, max_df: float = 0.5,
                 text_column: str = "text", epochs: int = 200, batch_size: int = 200, lr: float = 2e-3, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False, precision: str = "auto",
                 topic_min_docs_k: float = 0.0) -> None:
        self.n_components = n_components
        self.kind = kind
        self.hidden = hidden
        self.dropout = dropout
        self.log_counts = log_counts
        self.alpha = alpha
        self.relevance = relevance
        self.topic_min_docs = topic_min_docs
        self.topic_min_docs_k = topic_min_docs_k
        self.kl_warmup = kl_warmup
        self.length_power = length_power
        self.ranking = ranking
        self.frex_weight = frex_weight
        self.topic_max_docs = topic_max_docs
        self.vocab_size = vocab_size
        self.min_df = min_df
        self.max_df = max_df
        self.text_column = text_column
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision

    def _model_name(self) -> str:
        if self.kind not in KINDS:
            raise UserError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        return self.kind

    # --- reading documents ---------------------------------------------------------------------------
    def _dataset(self, X, y=None) -> Dataset:
        """Counts to fit on; raw text fixes the vocabulary here."""
        if isinstance(X, (str, Path)):
            vec = {} if is_bag_of_words(X) else {"vocab_size": self.vocab_size, "min_df": self.min_df,
                                                 "max_df": self.max_df, "text_column": self.text_column}
            s = load_text_splits(str(X), **vec)
            self._vocabulary = s.extras.vocabulary
            return Dataset(x=sp.vstack([s.train.x, s.test.x]).tocsr(), name=Path(str(X)).name)
        if _is_text(X):
            texts = _texts(X)
            self._vocabulary = fit_vocabulary(texts, vocab_size=self.vocab_size, min_df=self.min_df,
                                              max_df=self.max_df, where="X")
            return Dataset(x=count_words(texts, self._vocabulary), name="X")
        self._vocabulary = None
        return Dataset(x=_counts(X), name="X")

    def _model_settings(self, ds: Dataset) -> dict:
        return {**super()._model_settings(ds), "latent_dim": self.n_components, "vocabulary": self._vocabulary}

    def _counts(self, X) -> sp.csr_matrix:
        """New documents as counts over the fitted vocabulary (or columns, for count input)."""
        not_fitted(self)
        words = self.model_.config.get("vocabulary")
        if _is_text(X):
            if not words:
                raise UserError("this TopicModel was fitted on a count matrix; give counts with the same "
                                f"{self.n_features_in_} columns, not text")
            return count_words(_texts(X), words)
        m = _counts(X)
        if m.shape[1] != self.n_features_in_:
            raise UserError(f"X has {m.shape[1]} features, but TopicModel is expecting {self.n_features_in_} "
                            "features as input; give counts over the words fitted on (or raw text)")
        return m

    def _set_facts(self, ds: Dataset, X) -> None:
        self.input_shape_ = tuple(ds.sample_shape)
        self.scale_, self.sample_shape_in_, self.value_range_ = 1.0, None, None
        self.n_features_in_ = int(ds.sample_shape[0])

    def _after_fit(self, ds: Dataset, train: Dataset, held: Dataset | None) -> None:
        self._set_fitted()
        del self._vocabulary

    def _load_extra(self, directory: Path, config: dict) -> None:
        self.n_components = int(self.model_.latent_dim)
        self._set_fitted()

    def _set_fitted(self) -> None:
        self.vocabulary_ = vocabulary_of(self.model_)
        scores = self.model_.topic_word().cpu().double()
        # each topic's words as a distribution in the order top_words ranks them (rows sum to 1): the softmax of
        # the ranking's scores. With ranking="frex" those are ranks in (0, 1], so the rows are nearly flat: read
        # them for order, and the model's topic_logits for word probabilities.
        self.components_ = torch.softmax(scores, dim=1).numpy()

    # --- using it ------------------------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Each document's code: topic proportions θ (rows sum to 1) for ProdLDA, posterior means for NVDM."""
        return document_codes(self.model_, Dataset(x=self._counts(X), name="X"), proportions=True)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        not_fitted(self)
        return np.asarray(self.vocabulary_, dtype=object)

    def top_words(self, n: int = 10) -> list[list[str]]:
        """Each topic's ``n`` most characteristic words."""
        not_fitted(self)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UserError(f"n must be a whole number ≥ 1, got {n!r}")
        return [[self.vocabulary_[i] for i in row] for row in ranked_words(self.model_, int(n))]

    def perplexity(self, X) -> float:
        """exp(−ELBO / words) of documents X: a bound on the per-word perplexity (lower is better)."""
        ds = Dataset(x=self._counts(X), name="X")
        words = np.asarray(ds.x.sum(1)).ravel()
        if words.sum() <= 0:
            raise UserError("X holds no vocabulary words; perplexity needs at least one")
        noise = torch.randn(ELBO_SAMPLES, self.model_.latent_dim, generator=torch.Generator().manual_seed(0))
        self.model_.eval()
        return perplexity(batched(self.model_, ds, lambda x: self.model_.elbo(x, noise=noise)), words)

    def score(self, X, y=None) -> float:
        """Negative perplexity (higher is better), for scikit-learn's model selection."""
        return -self.perplexity(X)


def _is_text(X) -> bool:
    if isinstance(X, (str, bytes, Path)) or sp.issparse(X) or hasattr(X, "detach"):
        return False
    if isinstance(X, np.ndarray):
        return X.dtype.kind in "OUS" and X.ndim == 1
    if hasattr(X, "iloc") and getattr(X, "ndim", 2) == 1:  # a pandas Series of strings
        return True
    return isinstance(X, Sequence) and len(X) > 0 and all(isinstance(t, str) for t in X)


def _texts(X) -> list[str]:
    texts = [t if isinstance(t, str) else None for t in list(X)]
    for i, t in enumerate(texts):
        if t is None:
            raise UserError(f"X[{i}] is not a string; give one document (a string) per entry")
    return texts


def _counts(X) -> sp.csr_matrix:
    """A documents × words count matrix (sparse or dense), checked: finite, not negative, not empty."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    if not sp.issparse(X):
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise UserError(f"X: give raw documents (strings) or a documents × words count matrix ({e})") from None
        if X.ndim != 2:
            raise UserError(f"X: a count matrix must be 2-D (documents × words), got shape {X.shape}")
    m = sp.csr_matrix(X, dtype=np.float32)
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise UserError(f"X: the count matrix is empty (shape {m.shape}); give at least one document and one word")
    if not np.isfinite(m.data).all() or (m.data < 0).any():
        raise UserError("X: counts must be finite and 0 or more (word counts per document)")
    m.sort_indices()
    return m
