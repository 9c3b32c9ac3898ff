"""Recommend with a trained Mult-VAE/DAE: fold in a user's items (a known user's saved history or a new
user's list), rank every item and never return one the user already has. Also the two baselines a
recommender is measured against: popularity and EASE (Steck 2019, "Embarrassingly Shallow
Autoencoders for Sparse Data", arXiv:1905.03375).
"""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..checkpoint import load_model, read_config
from ..data import Dataset, Splits
from ..data.histories import (Histories, find_key, histories_for, id_key, read_histories, read_item_names,
                              text_id_key, write_histories, write_item_names)
from ..data.interactions import RankingData, load_interaction_splits
from ..errors import UserError
from ..io import read_json, write_json
from ..metrics.ranking import evaluate_ranking, top_k
from ..models.base import Ranker
from ..train import evaluate_loss
from ..train_records import Monitor, TrainResult
from .base import Figure, Metric, RunOptions, Task, register_task

RANKING_METRICS = {
    "loss": Metric("test loss (the training objective), per user", "lower"),
    "recall@20": Metric("share of a test user's held-out items in the top 20 (of at most 20), seen items excluded",
                        "higher"),
    "recall@50": Metric("share of a test user's held-out items in the top 50 (of at most 50), seen items excluded",
                        "higher"),
    "ndcg@100": Metric("normalised discounted cumulative gain of the top 100 (1 = held-out items ranked first)",
                       "higher"),
    "eval_users": Metric("test users whose held-out items were ranked"),
}
EXAMPLES = "examples.json"


class RecommendTask(Task):
    """Collaborative filtering (Mult-VAE/DAE): users split into train / validation / test (strong
    generalisation); the epoch with the best validation NDCG@100 is kept; test users' held-out items are
    ranked from their fold-in items. The run keeps the known users' histories and the items' names."""

    name = "recommend"
    metrics = RANKING_METRICS
    figures = (Figure("curves.png", "Training curves", "Loss per user on the training and test users after each "
                      "epoch; NDCG@100 on the validation users (right axis) and the epoch kept."),)
    data_options = ("min_rating", "user_col", "item_col", "rating_col")
    data_example = "movielens-100k, user,item[,rating] tables"

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        return load_interaction_splits(data, **{k: v for k, v in options.items() if v is not None})

    def model_settings(self, model_cls: type, splits: Splits, given: dict, run: RunOptions) -> dict:
        return {**given, "item_ids": splits.extras.item_ids}

    def monitor(self, splits: Splits) -> Monitor | None:
        r: RankingData = splits.extras
        return validation_monitor(r.val_fold_in, r.val_holdout) if r.val_fold_in is not None else None

    def evaluate(self, model: nn.Module, test: Dataset, splits: Splits | None, *, k: int, device,
                 max_iwae: int | None = None, progress: bool = False, features=None) -> dict:
        if splits is None or not isinstance(splits.extras, RankingData):
            raise UserError("a recommender is evaluated on its own data's test users; drop --data")
        out = {"loss": evaluate_loss(model, test, device=device)["loss"]}
        return {**out, **evaluate_ranking(model_scores(model), test.x, splits.extras.test_holdout)}

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        r: RankingData = splits.extras
        write_histories(run_dir, histories_for(r.raw, r.positives, np.asarray(r.item_ids)))
        write_item_names(run_dir, r.raw.item_names, r.item_ids)
        model = model.cpu().eval()
        write_json(run_dir / EXAMPLES, example_recommendations(model, splits.test, r, read_item_names(run_dir)))
        self.write_pictures(run_dir, model, splits.test, result.history)
        return {}

    def write_pictures(self, run_dir: Path, model: nn.Module, test: Dataset, history: list[dict]) -> None:
        from .. import plots

        if history:
            plots.save_curves(history, Path(run_dir) / "curves.png",
                              monitor="val_ndcg@100" if any("val_ndcg@100" in r for r in history) else None)

    def report_sections(self, run_dir: Path) -> list[str]:
        path = Path(run_dir) / EXAMPLES
        return examples_html(read_json(path)) if path.exists() else []


register_task(RecommendTask())


def validation_monitor(fold_in: sp.csr_matrix, holdout: sp.csr_matrix) -> Monitor:
    """NDCG@100 on the validation users (their fold-in rows and held-out items), the value whose best epoch a
    recommender keeps."""

    def compute(model: nn.Module) -> dict[str, float]:
        return {"val_ndcg@100": evaluate_ranking(model_scores(model), fold_in, holdout,
                                                 metrics=("ndcg@100",))["ndcg@100"]}

    return Monitor("val_ndcg@100", higher_is_better=True, compute=compute)


def top_items(score_fn, liked: sp.csr_matrix, seen: sp.csr_matrix, *, top: int,
              batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Best ``top`` item columns per row and their scores, seen items excluded (column −1 and score −inf
    where fewer unseen items are left)."""
    cols, vals = [], []
    for start in range(0, liked.shape[0], batch_size):
        scores = np.array(score_fn(liked[start : start + batch_size].astype(np.float32).toarray()), np.float32)
        scores[seen[start : start + batch_size].toarray() != 0] = -np.inf
        idx = top_k(scores, top)
        v = np.take_along_axis(scores, idx, 1)
        cols.append(np.where(np.isfinite(v), idx, -1))
        vals.append(v)
    return np.concatenate(cols), np.concatenate(vals)


def model_scores(model: nn.Module):
    """numpy fold-in rows → numpy item scores, for any model with ``scores(x)``."""
    return lambda x: model.scores(torch.from_numpy(x)).cpu().numpy()


class Recommender:
    """A trained recommender, its item ids, the known users' histories and the items' display names
    (each if saved with it)."""

    def __init__(self, model: nn.Module, histories: Histories | None = None, *, min_rating: float = 4.0,
                 item_names: dict[str, str] | None = None) -> None:
        self.model, self.histories, self.min_rating = model, histories, min_rating
        self.item_ids = list(model.config.get("item_ids") or range(model.n_items))
        self.index = {id_key(v): i for i, v in enumerate(self.item_ids)}
        self.item_names = item_names or {}

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """From a ``latentforge train`` run or a ``save_pretrained`` folder."""
        config = read_config(Path(directory))
        model = load_model(directory)
        if not isinstance(model, Ranker):
            raise UserError(f"{directory}: model {model.registry_name!r} does not recommend; train mult-vae or mult-dae")
        min_rating = (config.get("data_options") or {}).get("min_rating", config.get("estimator", {}).get("min_rating", 4.0))
        return cls(model, read_histories(directory), min_rating=float(min_rating), item_names=read_item_names(directory))

    def columns(self, items: Sequence, *, where: str = "history") -> np.ndarray:
        """Item ids → model columns ("100.0" finds item 100); empty lists, duplicates and unknown ids are errors."""
        keys = [find_key(v, self.index) for v in items]
        if not keys:
            raise UserError(f"{where}: no items; give at least one item the user interacted with")
        seen, dups = set(), []
        for k in keys:
            if k in seen:
                dups.append(k)
            seen.add(k)
        if dups:
            raise UserError(f"{where}: item {dups[0]} is listed {keys.count(dups[0])} times; list each item once")
        unknown = [k for k in keys if k not in self.index]
        if unknown:
            raise UserError(f"{where}: {len(unknown)} unknown item id(s) ({', '.join(unknown[:5])}): not among the "
                            f"{len(self.item_ids)} items the model was trained on; remove them")
        return np.array([self.index[k] for k in keys], dtype=np.int64)

    def _row(self, cols: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(len(cols), np.float32), (np.zeros(len(cols), int), cols)),
                             shape=(1, len(self.item_ids)))

    def _ranked(self, liked: sp.csr_matrix, seen: sp.csr_matrix, top: int) -> list[tuple[object, float]]:
        if top < 1:
            raise UserError(f"--top must be at least 1, got {top}")
        cols, vals = top_items(model_scores(self.model), liked, seen, top=top)
        return [(self.item_ids[c], float(v)) for c, v in zip(cols[0], vals[0]) if c >= 0]

    def for_user(self, user, *, top: int = 20) -> list[tuple[object, float]]:
        """Top items for a user of the training data, from their saved history."""
        if self.histories is None:
            raise UserError("this model was saved without its users' histories; pass the user's items instead (--history)")
        r = self.histories.row(user)
        liked = self.histories.liked[r]
        if liked.nnz == 0:
            raise UserError(f"user {user}: no liked items (rating ≥ {self.min_rating:g}) among the model's items to fold "
                            "in; pass items with --history")
        return self._ranked(liked, self.histories.seen[r], top)

    def for_history(self, items: Sequence, *, ratings: Sequence[float] | None = None, top: int = 20,
                    where: str = "history") -> list[tuple[object, float]]:
        """Top items for a new user: fold in their items (those rated ≥ ``min_rating`` when ratings are
        given); every listed item counts as seen."""
        cols = self.columns(items, where=where)
        liked = cols
        if ratings is not None:
            r = np.asarray(ratings, dtype=np.float64)
            liked = cols[r >= self.min_rating]
            if len(liked) == 0:
                raise UserError(f"{where}: no item is rated ≥ {self.min_rating:g}; the model folds in liked items only")
        return self._ranked(self._row(liked), self._row(cols), top)


def read_history(path: Path, *, item_col: str = "item", rating_col: str = "rating",
                 known: set[str] | None = None) -> tuple[list, list[float] | None]:
    """A new user's items from a CSV: an ``item`` column, optional ``rating``; or a bare list of ids,
    one per line (recognised when its first line is one of the ``known`` item ids)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a CSV with an '{item_col}' column")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        bare = df.shape[1] == 1 and (known is None or find_key(df.columns[0], known) in known)
        if item_col not in df.columns and bare:  # a bare list of ids, no header
            df = pd.read_csv(path, dtype=str, header=None, names=[item_col], keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the history is empty; list at least one item") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot parse the history ({str(e).splitlines()[0]})") from None
    if item_col not in df.columns:
        raise UserError(f"{path}: no column {item_col!r} (columns: {', '.join(df.columns)}); name it or use --item-col")
    items = [v.strip() for v in df[item_col]]
    if not items:
        raise UserError(f"{path}: the history is empty; list at least one item")
    if any(not v for v in items):
        raise UserError(f"{path}: an item id is blank (data row {items.index('') + 1}); remove the row")
    ratings = None
    if rating_col in df.columns:
        r = pd.to_numeric(df[rating_col], errors="coerce")
        if r.isna().any():
            row = int(np.flatnonzero(r.isna().to_numpy())[0])
            raise UserError(f"{path}: rating {df[rating_col].iloc[row]!r} at data row {row + 1} is not a number")
        if (r < 0).any():
            raise UserError(f"{path}: ratings must be 0 or more, found {r.min():g}")
        ratings = r.tolist()
    return items, ratings


def example_recommendations(model: nn.Module, test: Dataset, r: RankingData, names: dict[str, str] | None = None, *,
                            users: int = 4, top: int = 10, shown: int = 8) -> list[dict]:
    """What the report shows: ``users`` test users spread from short to long histories (those at the
    (i + ½)/users quantiles of the number of items folded in), the first ``shown`` items (by id) of
    those folded in and the ``top`` recommended, each marked when it is one of the user's held-out
    items (a hit). Items are ``{"item": id, "name": name or None}``."""
    names = names or {}
    item_ids, user_ids = r.item_ids, r.test_user_ids
    x = test.x.tocsr()
    order = np.argsort(np.diff(x.indptr), kind="stable")
    rows = order if len(order) <= users else order[((np.arange(users) + 0.5) * len(order) / users).astype(int)]
    fold_in, held = x[rows], r.test_holdout.tocsr()[rows]
    cols, _ = top_items(model_scores(model), fold_in, fold_in, top=top)
    item = lambda c: {"item": item_ids[c], "name": names.get(id_key(item_ids[c]))}  # noqa: E731
    out = []
    for u in range(fold_in.shape[0]):
        liked, hidden = fold_in[u].indices, set(held[u].indices.tolist())
        out.append({"user": user_ids[rows[u]], "folded_in": len(liked), "held_out": len(hidden),
                    "liked": [item(c) for c in liked[:shown]],
                    "recommended": [{**item(c), "hit": int(c) in hidden} for c in cols[u] if c >= 0]})
    return out


def examples_html(examples: list[dict]) -> list[str]:
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


def read_item_names_csv(path: Path, *, item_col: str = "item", known: set[str] | None = None) -> dict[str, str]:
    """Display names from a CSV or TSV with a header: the item column (``item_col``, else ``item``) and a
    ``name`` (or ``title``) column, else the first other one. With ``known`` (the model's item keys), a
    file naming none of them is an error rather than a blank column."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a CSV with '{item_col}' and 'name' columns")
    try:  # the separator (comma, tab, semicolon, |) is sniffed from the file
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python", index_col=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the item names ({str(e).splitlines()[0]}); give a CSV with a header "
                        f"row naming '{item_col}' and 'name' columns") from None
    col = item_col if item_col in df.columns else "item"
    others = [c for c in df.columns if c != col]
    if col not in df.columns or not others:
        raise UserError(f"{path}: need an {item_col!r} column and a name column, with a header row (columns: "
                        f"{', '.join(map(str, df.columns))})")
    name_col = next((c for c in ("name", "title") if c in others), others[0])
    names = {text_id_key(i): n for i, n in zip(df[col], df[name_col])}
    if known is not None and not known & names.keys():
        raise UserError(f"{path}: none of its {len(names)} item ids is one of the model's items (e.g. "
                        f"{', '.join(list(known)[:3])}); check the {col!r} column")
    return names


def render_ranked(ranked: list[tuple[object, float]], who: str, names: dict[str, str], *, as_json: bool = False) -> str:
    """The recommendation list as a tab-separated table (a name column when names are known) or JSON
    (``name`` is null where unknown)."""
    import json

    rows = [{"rank": i + 1, "item": item, "score": score, "name": names.get(id_key(item))}
            for i, (item, score) in enumerate(ranked)]
    if as_json:
        return json.dumps(rows)
    clean = lambda v: " ".join(str(v or "").split())  # noqa: E731  (a tab or newline in a name would break the table)
    lines = [f"top {len(ranked)} for {who} (items the user has are excluded)", "rank\titem\tscore" + "\tname" * bool(names)]
    lines += ["\t".join([str(r["rank"]), str(r["item"]), f"{r['score']:.4f}", *([clean(r["name"])] if names else [])])
              for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- baselines


class Popularity:
    """Every user gets the items most training users have (the floor any recommender must clear)."""

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts_ = np.asarray((train > 0).sum(0), dtype=np.float32).ravel()
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts_, (len(x), len(self.counts_)))


class EASE:
    """Item–item linear autoencoder with a zero diagonal, in closed form (Steck 2019, eq. 8):
    P = (XᵀX + λI)⁻¹, B = I − P·diag(1/diag(P)). Dense items × items: for catalogues up to ~20k items."""

    def __init__(self, lam: float = 300.0) -> None:
        self.lam = lam

    def fit(self, train: sp.csr_matrix) -> EASE:
        g = np.asarray((train.T @ train).todense(), dtype=np.float64)
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights_
