"""Interaction data: readers, bad input, binarisation, the strong-generalisation split, sparse batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import interactions_frame, require_data

from latentforge.data import Batcher, load_data
from latentforge.data.dataset import Dataset
from latentforge.data.interactions import (Interactions, binarize, from_frame, ranking_splits, read_interactions,
                                           read_movielens_100k, strong_generalization)
from latentforge.errors import UserError


def test_ids_are_sorted_and_keep_their_type() -> None:
    df = pd.DataFrame({"user": ["b", "a", "b"], "item": [30, 10, 20], "rating": [5, 4, 3]})
    inter = from_frame(df)
    assert inter.user_ids.tolist() == ["a", "b"] and inter.item_ids.tolist() == [10, 20, 30]
    assert isinstance(inter.item_ids.tolist()[0], int) and inter.explicit
    assert inter.matrix.toarray().tolist() == [[4, 0, 0], [0, 3, 5]]


@pytest.mark.parametrize("df, message", [
    (pd.DataFrame({"user": [1, 1], "item": [2, 2]}), "duplicate"),
    (pd.DataFrame({"user": [1, 2], "item": [2, 2], "rating": [5, -1]}), "negative rating"),
    (pd.DataFrame({"user": [1, 2], "item": [2, 2], "rating": ["5", "good"]}), "non-numeric"),
    (pd.DataFrame({"user": [1, 2], "product": [2, 2]}), "no column 'item'"),
    (pd.DataFrame({"customer": [1, 2], "item": [2, 2]}), "no column 'user'"),
    (pd.DataFrame({"user": [1, None], "item": [2, 3]}), "no user id"),
    (pd.DataFrame({"user": [], "item": []}), "no interactions"),
])
def test_bad_tables_say_what_to_fix(df: pd.DataFrame, message: str) -> None:
    with pytest.raises(UserError, match=message):
        from_frame(df)


def test_readers_csv_tsv_npz_and_column_names(tmp_path: Path) -> None:
    df = interactions_frame()
    df.rename(columns={"user": "uid", "item": "movie", "rating": "stars"}).to_csv(tmp_path / "r.csv", index=False)
    a = read_interactions(tmp_path / "r.csv", user_col="uid", item_col="movie", rating_col="stars")
    df.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    b = read_interactions(tmp_path / "r.tsv")
    assert (a.matrix != b.matrix).nnz == 0 and a.item_ids.tolist() == b.item_ids.tolist()
    sp.save_npz(tmp_path / "m.npz", a.matrix)
    c = read_interactions(tmp_path / "m.npz")
    assert (c.matrix != a.matrix).nnz == 0 and c.explicit
    with pytest.raises(UserError, match="no column 'uid'"):
        read_interactions(tmp_path / "r.tsv", user_col="uid")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_interactions(tmp_path / "empty.csv")
    np.savez(tmp_path / "dense.npz", x=np.ones(3))
    with pytest.raises(UserError, match="scipy.sparse"):
        read_interactions(tmp_path / "dense.npz")


def test_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    interactions_frame().to_parquet(tmp_path / "r.parquet")
    assert read_interactions(tmp_path / "r.parquet").matrix.nnz == len(interactions_frame())


def test_binarize_explicit_and_implicit() -> None:
    m = sp.csr_matrix(np.array([[5, 3, 0], [4, 0, 1]], np.float32))
    pos = binarize(Interactions(m, np.arange(2), np.arange(3), explicit=True), 4)
    assert pos.matrix.toarray().tolist() == [[1, 0, 0], [1, 0, 0]]
    assert binarize(Interactions(m, np.arange(2), np.arange(3)), 4).matrix.nnz == 4  # implicit: all positives


def test_strong_generalization_protocol() -> None:
    pos = binarize(from_frame(interactions_frame(200)), 1)
    s = strong_generalization(pos, heldout_users=0.1, seed=3)
    users = [set(v.tolist()) for v in s.users.values()]
    assert len(users[1]) == len(users[2]) == 20 and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert s.train.shape[1] == len(s.item_ids) and (np.diff(s.train.tocsc().indptr) > 0).all()  # train users' items
    n_in, n_out = np.diff(s.test_in.indptr), np.diff(s.test_out.indptr)
    assert (n_out == np.maximum(1, np.floor(0.2 * (n_in + n_out) + 1e-9))).all()
    assert (s.test_in.multiply(s.test_out)).nnz == 0  # fold-in and held-out items are disjoint
    again = strong_generalization(pos, heldout_users=0.1, seed=3)
    assert (again.test_out != s.test_out).nnz == 0  # the seed fixes the split


def test_ranking_splits_feed_the_trainer_as_sparse_data() -> None:
    splits = ranking_splits(from_frame(interactions_frame(200)), min_rating=1)
    assert splits.train.is_sparse and splits.test.is_sparse and splits.extras.test_holdout.shape == splits.test.x.shape
    assert splits.extras.item_ids == sorted(splits.extras.item_ids)
    with pytest.raises(UserError, match="at least 3"):
        ranking_splits(from_frame(interactions_frame(2)), min_rating=1)


def test_sparse_batches_densify_exactly() -> None:
    x = sp.random(37, 23, density=0.2, format="csr", random_state=0, dtype=np.float32)
    ds = Dataset(x=x)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    got = torch.cat([xb.clone() for xb, _ in Batcher(ds.tensor(), batch_size=8, generator=g)])  # buffers are reused
    np.testing.assert_array_equal(got.numpy(), x.toarray()[order.numpy()])
    assert ds.head(5).shape == (5, 23) and len(ds) == 37 and ds.sample_shape == (23,)


def test_movielens_100k_protocol_counts() -> None:
    require_data("ml-100k", "u.data")
    raw = read_movielens_100k()
    assert raw.matrix.shape == (943, 1682) and raw.matrix.nnz == 100_000
    splits = load_data("movielens-100k")
    assert splits.extras.users == {"train": 750, "validation": 94, "test": 94}
