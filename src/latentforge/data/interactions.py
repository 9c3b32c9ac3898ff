"""User–item interactions for recommendation: readers, binarisation, the strong-generalisation
split of Liang et al. 2018 (arXiv:1802.05814, §4.1) and stable id↔index maps. What a trained
recommender keeps next to its weights (known users' histories, item names) is in ``histories``.

Inputs: CSV/TSV/Parquet with ``user,item[,rating][,timestamp]`` columns (names configurable), a
``scipy.sparse`` ``.npz`` (rows = users, columns = items, values = ratings or 1s) and the named
set ``movielens-100k`` (``ml-100k/u.data`` under ``LATENTFORGE_DATA_DIR``; never downloaded).
Ids keep their type (integers stay integers) and are sorted, so the index maps are stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import UserError
from .dataset import Dataset, Splits
from .histories import id_key

MOVIELENS_100K = "movielens-100k"


@dataclass
class Interactions:
    """A users × items CSR matrix (one stored value per interaction: its rating, or 1) and the ids."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "interactions"
    explicit: bool = False  # values are ratings, to binarise with ``min_rating``
    item_names: dict[str, str] | None = None  # id_key(item) → display name (titles), when the data has them


# ---------------------------------------------------------------- reading


def ids_of(values, what: str, where: str) -> np.ndarray:
    """Raw ids as int64 when they are whole numbers, else as strings; missing ids are an error."""
    import pandas as pd

    s = pd.Series(values)
    if s.isna().any():
        row = int(np.flatnonzero(s.isna().to_numpy())[0])
        raise UserError(f"{where}: {int(s.isna().sum())} rows have no {what} id (first at data row {row + 1}); "
                        "fill or drop them")
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(np.int64)
    if pd.api.types.is_float_dtype(s) and np.all(np.mod(s.to_numpy(), 1) == 0):
        v = s.to_numpy()
        if np.all(np.abs(v) < 2**53):  # exact as a float and as an int64; larger ids would collide
            return v.astype(np.int64)
        big = int(np.flatnonzero(np.abs(v) >= 2**53)[0])
        raise UserError(f"{where}: {what} id {v[big]:g} at data row {big + 1} is too large to be read exactly as a "
                        "number; store ids as text (quoted) or as integers below 2**53")
    return s.astype(str).str.strip().to_numpy(dtype=object)


def from_frame(df, *, user_col: str = "user", item_col: str = "item", rating_col: str | None = "rating",
               name: str = "interactions") -> Interactions:
    """A table of interactions → :class:`Interactions`, rejecting what would silently mislead training."""
    import pandas as pd

    missing = [c for c in (user_col, item_col) if c not in df.columns]
    if missing:
        raise UserError(f"{name}: no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))}); "
                        "name the user and item columns 'user' and 'item', or pass --user-col/--item-col")
    if len(df) == 0:
        raise UserError(f"{name}: no interactions (the table has a header but no rows)")
    users = ids_of(df[user_col].to_numpy(), "user", name)
    items = ids_of(df[item_col].to_numpy(), "item", name)
    explicit = rating_col is not None and rating_col in df.columns
    if explicit:
        r = pd.to_numeric(df[rating_col], errors="coerce")
        bad = r.isna() | ~np.isfinite(r.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{name}: column {rating_col!r} has {int(bad.sum())} non-numeric or missing ratings "
                            f"(first at data row {row + 1}: {df[rating_col].iloc[row]!r}); ratings must be numbers")
        if (r < 0).any():
            row = int(np.flatnonzero((r < 0).to_numpy())[0])
            raise UserError(f"{name}: negative rating {r.iloc[row]} at data row {row + 1}; ratings must be 0 or more")
        values = r.to_numpy(np.float32)
    else:
        values = np.ones(len(df), np.float32)
    return build(users, items, values, name=name, explicit=explicit)


def build(users: np.ndarray, items: np.ndarray, values: np.ndarray, *, name: str, explicit: bool) -> Interactions:
    """Index raw ids (sorted, so the maps are stable) and assemble the CSR matrix; duplicates are an error."""
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    key = u.astype(np.int64) * len(item_ids) + i
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if len(uniq) < len(key):
        j = int(np.flatnonzero(counts > 1)[0])
        row = int(first[j])
        raise UserError(f"{name}: {len(key) - len(uniq)} duplicate (user, item) interactions, e.g. user "
                        f"{users[row]!r} and item {items[row]!r}; keep one row per pair (e.g. the latest) first")
    m = sp.csr_matrix((values, (u, i)), shape=(len(user_ids), len(item_ids)), dtype=np.float32)
    m.sort_indices()
    return Interactions(m, user_ids, item_ids, name=name, explicit=explicit)


def read_interactions(path: str | Path, *, user_col: str = "user", item_col: str = "item",
                      rating_col: str | None = "rating") -> Interactions:
    """CSV/TSV/Parquet with user and item columns (and an optional rating), or a scipy.sparse ``.npz``."""
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a CSV/Parquet of user,item[,rating] rows or a scipy.sparse .npz")
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return read_sparse_npz(path)
    try:
        if lower.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif lower.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            df = pd.read_csv(path, sep="\t" if lower.endswith((".tsv", ".txt")) else ",")
        else:
            raise UserError(f"{path}: unknown interaction file type; use .csv, .tsv, .parquet or a scipy.sparse .npz")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; give a header row (user,item[,rating]) and data rows") from None
    except ImportError as e:
        raise UserError(f"{path}: reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot parse the table ({str(e).splitlines()[0]})") from None
    return from_frame(df, user_col=user_col, item_col=item_col, rating_col=rating_col, name=path.name)


def read_sparse_npz(path: Path) -> Interactions:
    """A ``scipy.sparse.save_npz`` file: row i is user i, column j item j; values are ratings (or 1s)."""
    try:
        m = sp.load_npz(path).tocoo()
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path}: not a scipy.sparse .npz ({e}); save the matrix with scipy.sparse.save_npz") from None
    if not np.issubdtype(m.dtype, np.number) or m.dtype == np.complex128:
        raise UserError(f"{path}: values must be numeric ratings, got dtype {m.dtype}")
    if m.nnz == 0:
        raise UserError(f"{path}: the matrix has no interactions")
    if not np.isfinite(m.data).all() or (m.data < 0).any():
        raise UserError(f"{path}: ratings must be finite and 0 or more")
    inter = build(m.row.astype(np.int64), m.col.astype(np.int64), m.data.astype(np.float32), name=path.name,
                  explicit=bool((m.data != 1).any()))
    return inter


def find_movielens_100k() -> Path:
    """``ml-100k/u.data`` in the data folders; it may not be redistributed, so it is never downloaded."""
    from .store import data_dirs

    for d in data_dirs():
        if (d / "ml-100k" / "u.data").is_file():
            return d / "ml-100k" / "u.data"
    where = " or ".join(str(d / "ml-100k") for d in data_dirs())
    raise UserError(f"movielens-100k is not available locally: download ml-100k.zip from "
                    f"https://grouplens.org/datasets/movielens/100k/ (its terms forbid redistribution, so latentforge "
                    f"does not fetch it), unzip it so that {where}/u.data exists (or set LATENTFORGE_DATA_DIR)")


def read_movielens_100k() -> Interactions:
    import pandas as pd

    path = find_movielens_100k()
    df = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    inter = from_frame(df, name=MOVIELENS_100K)
    titles = path.with_name("u.item")
    if titles.is_file():  # movie id|title|release date|…, Latin-1 as GroupLens ships it
        items = pd.read_csv(titles, sep="|", header=None, usecols=[0, 1], names=["item", "title"], encoding="latin-1",
                            dtype={"item": np.int64, "title": str}, keep_default_na=False)
        inter.item_names = {id_key(i): t for i, t in zip(items["item"], items["title"])}
    return inter


def read_any(spec: str, **columns) -> Interactions:
    """The named set or a path."""
    if spec == MOVIELENS_100K:
        return read_movielens_100k()
    if "/" not in spec and "." not in spec:
        raise UserError(f"unknown interaction data {spec!r}; use {MOVIELENS_100K} or a path to a CSV/Parquet "
                        "(user,item[,rating] columns) or a scipy.sparse .npz")
    return read_interactions(spec, **columns)


# ---------------------------------------------------------------- protocol


def binarize(inter: Interactions, min_rating: float = 4.0) -> Interactions:
    """Positives only, as 1s: ratings ≥ ``min_rating`` (explicit data) or every interaction (implicit)."""
    m = inter.matrix.copy()
    if inter.explicit:
        m.data = (m.data >= min_rating).astype(np.float32)
        m.eliminate_zeros()
    else:
        m.data = np.ones_like(m.data)
    return Interactions(m, inter.user_ids, inter.item_ids, name=inter.name, explicit=False, item_names=inter.item_names)


def count(n: int | float, total: int) -> int:
    """A number of users given as a count (≥ 1) or a fraction of ``total`` (< 1)."""
    return int(n) if n >= 1 else int(round(n * total))


@dataclass
class RankingSplit:
    """Strong generalisation: disjoint train / validation / test users; held-out users are split into
    the items the model sees (``*_in``, 80 %) and the items it must rank (``*_out``, 20 %)."""

    train: sp.csr_matrix
    val_in: sp.csr_matrix
    val_out: sp.csr_matrix
    test_in: sp.csr_matrix
    test_out: sp.csr_matrix
    item_ids: np.ndarray
    users: dict[str, np.ndarray] = field(default_factory=dict)


def strong_generalization(positives: Interactions, *, heldout_users: int | float = 0.1, fold_in: float = 0.8,
                          min_items: int = 5, seed: int = 0, test_users: int | float | None = None) -> RankingSplit:
    """Liang et al.'s protocol on binary data: drop users with fewer than ``min_items`` positives, hold out
    ``heldout_users`` validation and as many test users (or ``test_users``; a count or a fraction), keep
    the items train users have, and for every held-out user hide a random ``1 − fold_in`` of their items
    (at least one)."""
    x = positives.matrix
    keep = np.flatnonzero(np.diff(x.indptr) >= min_items)
    if len(keep) < 3:
        raise UserError(f"{positives.name}: only {len(keep)} users have at least {min_items} positive interactions; "
                        "need at least 3 (train, validation, test): lower min_items or min_rating, or add data")
    rng = np.random.default_rng(seed)
    perm = keep[rng.permutation(len(keep))]
    n_val = count(heldout_users, len(keep))
    n_test = n_val if test_users is None else count(test_users, len(keep))
    if len(keep) - n_val - n_test < 1:
        raise UserError(f"{positives.name}: holding out {n_val} validation and {n_test} test users leaves no "
                        f"training users of {len(keep)}; hold out fewer")
    test_u, val_u = np.sort(perm[:n_test]), np.sort(perm[n_test:n_test + n_val])
    train_u = np.sort(perm[n_test + n_val:])
    items = np.flatnonzero(np.diff(x[train_u].tocsc().indptr) > 0)  # items seen in training only
    val_in, val_out, val_u = _fold_in_split(x[val_u][:, items], val_u, fold_in, max(min_items, 2), rng)
    test_in, test_out, test_u = _fold_in_split(x[test_u][:, items], test_u, fold_in, max(min_items, 2), rng)
    ids = positives.user_ids
    return RankingSplit(train=x[train_u][:, items].tocsr(), val_in=val_in, val_out=val_out, test_in=test_in,
                        test_out=test_out, item_ids=positives.item_ids[items],
                        users={"train": ids[train_u], "validation": ids[val_u], "test": ids[test_u]})


def _fold_in_split(x: sp.csr_matrix, users: np.ndarray, fold_in: float, min_items: int,
                   rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Hide ``max(1, floor((1 − fold_in)·n))`` random items of each user with at least ``min_items``
    (users with fewer, after dropping unseen items, cannot be evaluated and are left out). Vectorised:
    a random key per entry, sorted within rows; the lowest ranks are held out."""
    x = x.tocsr()
    n = np.diff(x.indptr)
    ok = n >= min_items
    x, users, n = x[ok], users[ok], n[ok]
    rows = np.repeat(np.arange(x.shape[0]), n)
    order = np.lexsort((rng.random(x.nnz), rows))
    rank = np.empty(x.nnz, np.int64)
    rank[order] = np.arange(x.nnz) - x.indptr[rows[order]]
    hide = rank < np.maximum(1, np.floor((1 - fold_in) * n + 1e-9)).astype(np.int64)[rows]
    coo = x.tocoo()  # same entry order as the CSR data (sorted indices)
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=x.shape)  # noqa: E731
    return part(~hide), part(hide), users


# ---------------------------------------------------------------- run data sets and known users


def load_interaction_splits(spec: str, *, min_rating: float = 4.0, min_items: int = 5,
                            heldout_users: int | float = 0.1, fold_in: float = 0.8, split_seed: int = 0,
                            user_col: str = "user", item_col: str = "item", rating_col: str | None = "rating",
                            interactions: bool = True) -> Splits:
    """The splits of :func:`ranking_splits` for interactions read from ``spec`` (a name or a file)."""
    raw = read_any(spec, user_col=user_col, item_col=item_col, rating_col=rating_col)
    return ranking_splits(raw, min_rating=min_rating, min_items=min_items, heldout_users=heldout_users,
                          fold_in=fold_in, seed=split_seed)


@dataclass
class RankingData:
    """What the recommend task needs beside the train/test matrices: the test users' held-out items, the
    validation users (fold-in and held-out rows) that pick the kept epoch, the ids, and the interactions
    the known users' histories are written from."""

    item_ids: list
    test_holdout: sp.csr_matrix
    test_user_ids: list
    val_fold_in: sp.csr_matrix | None
    val_holdout: sp.csr_matrix | None
    users: dict[str, int]
    raw: Interactions
    positives: Interactions


def ranking_splits(raw: Interactions, *, min_rating: float = 4.0, min_items: int = 5,
                   heldout_users: int | float = 0.1, fold_in: float = 0.8, seed: int = 0) -> Splits:
    """Strong generalisation: the training users' rows to train on; the test users' fold-in rows as the
    test set, their held-out items (and the validation users) in ``extras`` (:class:`RankingData`)."""
    positives = binarize(raw, min_rating)
    s = strong_generalization(positives, heldout_users=heldout_users, fold_in=fold_in, min_items=min_items, seed=seed)
    if s.test_in.shape[0] == 0:
        raise UserError(f"{raw.name}: no test user keeps {min_items} items seen in training; use more data")
    item_ids = s.item_ids.tolist()
    name = Path(raw.name).stem if "." in raw.name else raw.name
    has_val = s.val_in.shape[0] > 0
    extras = RankingData(item_ids=item_ids, test_holdout=s.test_out, test_user_ids=s.users["test"].tolist(),
                         val_fold_in=s.val_in if has_val else None, val_holdout=s.val_out if has_val else None,
                         users={k: len(v) for k, v in s.users.items()}, raw=raw, positives=positives)
    return Splits(train=Dataset(x=s.train, name=name), test=Dataset(x=s.test_in, name=name), name=name, extras=extras)


def describe(splits: Splits) -> str:
    """One line on the protocol's user counts (for logs and benchmarks)."""
    u = splits.extras.users
    return json.dumps({**u, "items": splits.train.x.shape[1], "train_interactions": int(splits.train.x.nnz)})
