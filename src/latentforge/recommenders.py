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
import torch
from sklearn.base import BaseEstimator

from .checkpoint import CONFIG, read_json, save_model
from .data.dataset import Dataset
from .data.histories import histories_for, names_of, write_histories, write_item_names
from .data.interactions import Interactions, binarize, build, from_frame, read_any, strong_generalization
from .errors import UserError
from .models import build_model
from .tasks.recommend import Recommender
from .train import TrainConfig, fit


class MultVAE(BaseEstimator):
    """Mult-VAE recommender; see the module docstring. Defaults were tuned on MovieLens-100K validation
    users (docs/results.md); the paper's ML-20M setting is ``hidden=(600,), latent_dim=200, dropout=0.5,
    batch_size=500, anneal_steps=40000, l2=0``."""

    registry_name = "mult-vae"
    _model_params = ("hidden", "latent_dim", "dropout", "beta_cap", "anneal_steps", "l2")

    def __init__(self, hidden: Sequence[int] = (), latent_dim: int = 600, dropout: float = 0.1,
                 beta_cap: float = 0.2, anneal_steps: int = 300, l2: float = 1e-3, epochs: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, min_rating: float = 4.0, min_items: int = 5,
                 validation_users: int | float = 0.1, user_col: str = "user", item_col: str = "item",
                 rating_col: str = "rating", random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
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

    def fit(self, interactions, y=None) -> MultVAE:
        """Train on interactions (path, DataFrame, scipy.sparse matrix or :class:`Interactions`)."""
        raw = self._interactions(interactions)
        positives = binarize(raw, self.min_rating)
        seed = 0 if self.random_state is None else int(self.random_state)
        split = strong_generalization(positives, heldout_users=self.validation_users, test_users=0,
                                      min_items=self.min_items, seed=seed)
        val = {"fold_in": split.val_in, "holdout": split.val_out} if split.val_in.shape[0] else None
        train = Dataset(x=split.train, name=raw.name, meta={"validation": val})
        torch.manual_seed(seed)
        kwargs = {k: getattr(self, k) for k in self._model_params}
        kwargs["hidden"] = [int(h) for h in kwargs["hidden"]]
        try:
            model = build_model(self.registry_name, input_shape=[split.train.shape[1]], item_ids=split.item_ids.tolist(),
                                **kwargs)
        except ValueError as e:
            raise UserError(str(e)) from None
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed, device=self.device,
                          progress=bool(self.verbose))
        result = fit(model, train, None, cfg)
        self.model_ = model.cpu().eval()
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.recommender_ = Recommender(self.model_, histories_for(raw, positives, split.item_ids),
                                        min_rating=self.min_rating,
                                        item_names=names_of(raw.item_names, split.item_ids.tolist()))
        self.item_ids_ = self.recommender_.item_ids
        self.item_names_ = self.recommender_.item_names  # id (as a string) → title, when the data has names
        return self

    def _fitted(self) -> Recommender:
        if not hasattr(self, "recommender_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(interactions) first")
        return self.recommender_

    def recommend(self, user=None, *, history: Sequence | None = None, ratings: Sequence[float] | None = None,
                  top: int = 10, return_scores: bool = False) -> list:
        """The ``top`` items for a known ``user`` or for a new user's ``history`` (item ids, optionally with
        ``ratings``), best first, excluding items the user has; with ``return_scores``, (item, score) pairs."""
        rec = self._fitted()
        if (user is None) == (history is None):
            raise UserError("give either a user id or a history of item ids, not both")
        ranked = rec.for_user(user, top=top) if history is None else rec.for_history(history, ratings=ratings, top=top)
        return ranked if return_scores else [item for item, _ in ranked]

    def save_pretrained(self, directory: str | Path) -> Path:
        """``model.safetensors`` + ``config.json`` (parameters, item ids) + the users' histories."""
        rec = self._fitted()
        directory = Path(directory)
        params = {**self.get_params(), "hidden": [int(h) for h in self.hidden]}
        save_model(self.model_, directory, {"estimator": params})
        if rec.histories is not None:
            write_histories(directory, rec.histories)
        write_item_names(directory, rec.item_names, rec.item_ids)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu") -> MultVAE:
        """Load a ``save_pretrained`` folder or a ``latentforge train mult-vae`` run directory."""
        rec = Recommender.load(directory)
        config = read_json(Path(directory) / CONFIG)
        params = {k: v for k, v in config.get("estimator", {}).items() if k in cls._get_param_names()}
        params.update({k: v for k, v in config["model_config"].items() if k in cls._get_param_names()})
        est = cls(**params)
        est.model_ = rec.model.to(device)
        est.recommender_ = rec
        est.item_ids_, est.item_names_ = rec.item_ids, rec.item_names
        est.history_, est.best_epoch_ = [], None
        return est


class MultDAE(MultVAE):
    """Mult-DAE recommender: the same network without latent noise or KL, with L2 on the weights."""

    registry_name = "mult-dae"
    _model_params = ("hidden", "latent_dim", "dropout", "l2")

    def __init__(self, hidden: Sequence[int] = (), latent_dim: int = 600, dropout: float = 0.5, l2: float = 2e-5,
                 epochs: int = 150, batch_size: int = 128, lr: float = 1e-3, min_rating: float = 4.0,
                 min_items: int = 5, validation_users: int | float = 0.1, user_col: str = "user",
                 item_col: str = "item", rating_col: str = "rating", random_state: int | None = None,
                 device: str = "auto", verbose: bool = False) -> None:
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


def _register() -> None:
    from .estimators import ESTIMATORS

    ESTIMATORS.update({"mult-vae": MultVAE, "mult-dae": MultDAE})


_register()

__all__ = ["MultVAE", "MultDAE"]
