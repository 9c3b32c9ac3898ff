"""scikit-learn-style recommenders: ``MultVAE`` and ``MultDAE`` (Liang et al. 2018, arXiv:1802.05814).

    rec = MultVAE(epochs=100).fit("ratings.csv")        # or a DataFrame, a scipy.sparse matrix
    rec.recommend(196, top=10)                          # a user of the training data
    rec.recommend(history=[50, 172, 181], top=10)       # a new user, folded in: no retraining
    rec.save_pretrained("my-rec"); MultVAE.from_pretrained("my-rec")

``fit`` binarises (ratings ≥ ``min_rating``), holds out ``validation_users`` (their items split 80/20)
to keep the epoch with the best validation NDCG@100, and trains on the other users. Every user in
the data stays known for ``recommend(user)``; recommended items are never ones the user already has.
Weights go to safetensors, id maps and histories to JSON/safetensors; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..data.histories import histories_for, names_of, write_histories, write_item_names
from ..data.interactions import Interactions, binarize, build, from_frame, read_any, strong_generalization
from ..errors import UserError
from ..tasks.recommend import Recommender, validation_monitor
from ..train_records import Monitor
from .base import ModelEstimator, not_fitted


class MultVAE(ModelEstimator):
    """Mult-VAE recommender; see the module docstring. Defaults were tuned on MovieLens-100K validation
    users (docs/results.md); the paper's ML-20M setting is ``hidden=(600,), latent_dim=200, dropout=0.5,
    batch_size=500, anneal_steps=40000, l2=0``."""

    model_names = ("mult-vae",)
    extra_params = ("min_rating", "min_items", "validation_users", "user_col", "item_col", "rating_col")

    def __init__(self, hidden: Sequence[int] = (), latent_dim: int = 600, dropout: float = 0.1,
                 beta_cap: float = 0.2, anneal_steps: int = 300, l2: float = 1e-3, epochs: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, min_rating: float = 4.0, min_items: int = 5,
                 validation_users: int | float = 0.1, user_col: str = "user", item_col: str = "item",
                 rating_col: str = "rating", random_state: int | None = None, device: str = "auto",
                 verbose: bool = False, precision: str = "auto") -> None:
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.beta_cap = beta_cap
        self.anneal_steps = anneal_steps
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.min_rating = min_rating
        self.min_items = min_items
        self.validation_users = validation_users
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision

    def _interactions(self, data) -> Interactions:
        if isinstance(data, Interactions):
            return data
        if isinstance(data, (str, Path)):
            return read_any(str(data), user_col=self.user_col, item_col=self.item_col, rating_col=self.rating_col)
        if sp.issparse(data):
            m = data.tocoo()
            return build(m.row.astype(np.int64), m.col.astype(np.int64), m.data.astype(np.float32), name="matrix",
                         explicit=bool((m.data != 1).any()))
        if hasattr(data, "columns"):
            return from_frame(data, user_col=self.user_col, item_col=self.item_col, rating_col=self.rating_col,
                              name="DataFrame")
        raise UserError(f"fit takes a path, a DataFrame of {self.user_col},{self.item_col}[,{self.rating_col}] rows or a "
                        f"scipy.sparse users × items matrix, got {type(data).__name__}")

    def _dataset(self, X, y=None) -> Dataset:
        """The training users' rows; the split (validation users, ids) is kept for the monitor and histories."""
        raw = self._interactions(X)
        positives = binarize(raw, self.min_rating)
        seed = 0 if self.random_state is None else int(self.random_state)
        split = strong_generalization(positives, heldout_users=self.validation_users, test_users=0,
                                      min_items=self.min_items, seed=seed)
        self._raw, self._positives, self._split_rows = raw, positives, split
        return Dataset(x=split.train, name=raw.name)

    def _model_settings(self, ds: Dataset) -> dict:
        return {**super()._model_settings(ds), "item_ids": self._split_rows.item_ids.tolist()}

    def _monitor(self, ds: Dataset) -> Monitor | None:
        s = self._split_rows
        return validation_monitor(s.val_in, s.val_out) if s.val_in.shape[0] else None

    def _set_facts(self, ds: Dataset, X) -> None:
        self.input_shape_ = tuple(ds.sample_shape)
        self.scale_, self.sample_shape_in_, self.value_range_ = 1.0, None, None
        self.n_features_in_ = int(ds.sample_shape[0])

    def _after_fit(self, ds: Dataset, train: Dataset, held: Dataset | None) -> None:
        item_ids = self._split_rows.item_ids
        self.best_epoch_ = _best_epoch(self.history_)
        self.recommender_ = Recommender(self.model_, histories_for(self._raw, self._positives, item_ids),
                                        min_rating=self.min_rating,
                                        item_names=names_of(self._raw.item_names, item_ids.tolist()))
        self.item_ids_ = self.recommender_.item_ids
        self.item_names_ = self.recommender_.item_names  # id (as a string) → title, when the data has names
        del self._raw, self._positives, self._split_rows

    def _fitted(self) -> Recommender:
        not_fitted(self, "recommender_")
        return self.recommender_

    def recommend(self, user=None, *, history: Sequence | None = None, ratings: Sequence[float] | None = None,
                  top: int = 10, return_scores: bool = False) -> list:
        """The ``top`` items for a known ``user`` or for a new user's ``history`` (item ids, optionally with
        ``ratings``), best first, excluding items the user has; with ``return_scores``, (item, score) pairs."""
        rec = self._fitted()
        if (user is None) == (history is None):
            raise UserError("give either a user id or a history of item ids, not both")
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise UserError(f"top must be a whole number ≥ 1, got {top!r}")
        if history is not None and ratings is not None and len(ratings) != len(history):
            raise UserError(f"ratings has {len(ratings)} values for {len(history)} history items; give one rating "
                            "per item")
        ranked = rec.for_user(user, top=top) if history is None else rec.for_history(history, ratings=ratings, top=top)
        return ranked if return_scores else [item for item, _ in ranked]

    def _write(self, directory: Path) -> None:
        rec = self._fitted()
        super()._write(directory)
        if rec.histories is not None:
            write_histories(directory, rec.histories)
        write_item_names(directory, rec.item_names, rec.item_ids)

    def _load_extra(self, directory: Path, config: dict) -> None:
        rec = Recommender.load(directory)
        rec.model = self.model_
        self.recommender_ = rec
        self.item_ids_, self.item_names_ = rec.item_ids, rec.item_names
        self.best_epoch_ = None


def _best_epoch(history: list[dict]) -> int | None:
    scored = [(r["val_ndcg@100"], -r["epoch"]) for r in history if "val_ndcg@100" in r]
    return -max(scored)[1] if scored else None


class MultDAE(MultVAE):
    """Mult-DAE recommender: the same network without latent noise or KL, with L2 on the weights."""

    model_names = ("mult-dae",)

    def __init__(self, hidden: Sequence[int] = (), latent_dim: int = 600, dropout: float = 0.5, l2: float = 2e-5,
                 epochs: int = 150, batch_size: int = 128, lr: float = 1e-3, min_rating: float = 4.0,
                 min_items: int = 5, validation_users: int | float = 0.1, user_col: str = "user",
                 item_col: str = "item", rating_col: str = "rating", random_state: int | None = None,
                 device: str = "auto", verbose: bool = False, precision: str = "auto") -> None:
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.min_rating = min_rating
        self.min_items = min_items
        self.validation_users = validation_users
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.precision = precision
