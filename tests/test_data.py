"""Data layer: IDX, named sets, files (.npy/.npz/CSV/image folders), the batcher, binarisation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_data
from PIL import Image

from latentforge.data import Batcher, binarize_static, from_array, load_data
from latentforge.data.dataset import Dataset, holdout_split
from latentforge.data.files import read_idx, read_path
from latentforge.errors import UserError

# ---------------------------------------------------------------- IDX and MNIST (real files)


def test_read_idx_real_mnist_files(mnist_dir: Path) -> None:
    x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    y = read_idx(require_data("mnist", "train-labels-idx1-ubyte.gz"))
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))
    assert x.min() == 0 and x.max() == 255
    xt = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    yt = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    # the well-known first labels of each file
    assert list(y[:5]) == [5, 0, 4, 1, 9] and list(yt[:5]) == [7, 2, 1, 0, 4]


def test_load_mnist_splits(mnist_dir: Path) -> None:
    s = load_data("mnist")
    assert s.train.x.shape == (60000, 1, 28, 28) and s.train.x.dtype == np.uint8
    assert s.test.x.shape == (10000, 1, 28, 28)
    assert s.train.y.shape == (60000,) and s.test.y.shape == (10000,)
    assert s.train.scale == 255.0 and s.train.is_image
    assert s.train.value_range == (0.0, 1.0) and s.train.in_unit_interval
    assert s.train.label_names == [str(i) for i in range(10)]


def _write_idx(path: Path, arr: np.ndarray, code: int, dtype: str, gz: bool = False) -> None:
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip_other_dtypes(tmp_path: Path, gz: bool) -> None:
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 2, 2)
    p = tmp_path / ("a-idx3-ubyte" + (".gz" if gz else ""))
    _write_idx(p, a, 0x0C, ">i4", gz)
    np.testing.assert_array_equal(read_idx(p), a)
    f = np.linspace(0, 1, 6).reshape(2, 3)
    _write_idx(tmp_path / "f.idx", f, 0x0E, ">f8")
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), f)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 20)
    with pytest.raises(UserError, match="magic"):
        read_idx(p)
    _write_idx(p, np.zeros((4, 2, 2)), 0x08, "u1")
    p.write_bytes(p.read_bytes()[:-3])  # fewer values than the header promises
    with pytest.raises(UserError, match="header says"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="empty or truncated"):
        read_idx(p)



def test_read_idx_truncated_header_is_user_error(tmp_path: Path) -> None:
    p = tmp_path / "cut-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # says 3 dims, holds half of one
    with pytest.raises(UserError):
        read_idx(p)


# ---------------------------------------------------------------- digits (bundled)


def test_load_digits_shape_scale_range() -> None:
    s = load_data("digits")
    assert len(s.train) + len(s.test) == 1797
    assert len(s.test) == 359  # 20% held out
    assert s.train.sample_shape == (1, 8, 8) and s.train.x.dtype == np.uint8
    assert s.train.scale == 16.0 and s.train.x.max() == 16
    assert s.train.value_range == (0.0, 1.0)
    f = s.train.floats()
    assert f.dtype == np.float32 and f.min() == 0.0 and f.max() == 1.0
    assert set(np.unique(s.train.y)) == set(range(10))
    again = load_data("digits")  # deterministic split
    np.testing.assert_array_equal(again.test.x, s.test.x)
    np.testing.assert_array_equal(again.test.y, s.test.y)


def test_unknown_name_and_missing_path() -> None:
    with pytest.raises(UserError, match="unknown data set"):
        load_data("not-a-data-set")
    with pytest.raises(UserError, match="no such file"):
        load_data("/definitely/missing/file.npy")


# ---------------------------------------------------------------- .npy / .npz


def test_npy_images_and_tables(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (50, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", imgs)
    s = load_data(str(tmp_path / "imgs.npy"))
    assert s.train.sample_shape == (1, 6, 5) and s.train.scale == 255.0 and s.train.x.dtype == np.uint8
    assert len(s.train) == 45 and len(s.test) == 5
    both = np.concatenate([s.train.x, s.test.x])[:, 0]
    assert sorted(map(bytes, both)) == sorted(map(bytes, imgs))  # a partition of the samples

    table = np.random.default_rng(1).normal(size=(40, 7))
    np.save(tmp_path / "t.npy", table)
    s = load_data(str(tmp_path / "t.npy"))
    assert s.train.sample_shape == (7,) and s.train.x.dtype == np.float32 and s.train.scale == 1.0
    assert not s.train.in_unit_interval

    hwc = np.random.default_rng(2).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", hwc)
    ds = read_path(tmp_path / "hwc.npy")
    assert ds.sample_shape == (3, 6, 5)
    np.testing.assert_array_equal(ds.x, hwc.transpose(0, 3, 1, 2))


def test_npz_x_y_keys(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_data(str(tmp_path / "d.npz"))
    assert len(s.train) == 27 and len(s.test) == 3
    for part in (s.train, s.test):
        for row, label in zip(part.x, part.y):  # labels stay attached to their samples
            i = int(np.flatnonzero((x == row).all(1))[0])
            assert y[i] == label


def test_npz_medmnist_style(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "med.npz", train_images=tr, train_labels=np.arange(20).reshape(-1, 1) % 2,
             val_images=te[:2], val_labels=np.zeros((2, 1)), test_images=te, test_labels=np.ones((7, 1)))
    s = load_data(str(tmp_path / "med.npz"))
    assert s.train.x.shape == (20, 1, 28, 28) and s.test.x.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(s.train.x[:, 0], tr)
    np.testing.assert_array_equal(s.test.x[:, 0], te)
    assert s.train.y.shape == (20,) and list(s.train.y[:4]) == [0, 1, 0, 1]
    assert s.train.scale == 255.0



def test_truncated_npz_is_user_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", x=np.random.rand(100, 10))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError):
        load_data(str(tmp_path / "cut.npz"))


# ---------------------------------------------------------------- CSV


def test_csv_with_header_and_label(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,label,c\n" + "".join(f"{i},{i * 0.5},{i % 2},{-i}\n" for i in range(20)))
    ds = read_path(p)
    assert ds.sample_shape == (3,) and ds.x.dtype == np.float32
    assert ds.meta["columns"] == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.x[3], [3, 1.5, -3])
    np.testing.assert_array_equal(ds.y, np.arange(20) % 2)
    s = load_data(str(p))
    assert len(s.train) == 18 and len(s.test) == 2 and s.train.y is not None



def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("a\tb\n1\t2\n3\t4\n5\t6\n")
    assert read_path(p).sample_shape == (2,)


# ---------------------------------------------------------------- image folders


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_subfolders_are_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = {}
    for cls in ("cat", "dog"):
        for i in range(3):
            a = rng.integers(0, 256, (6, 5), dtype=np.uint8)  # height 6, width 5
            _png(tmp_path / "imgs" / cls / f"{i}.png", a)
            written[(cls, i)] = a
    ds = read_path(tmp_path / "imgs")
    assert ds.x.shape == (6, 1, 6, 5) and ds.x.dtype == np.uint8 and ds.scale == 255.0
    assert ds.label_names == ["cat", "dog"]
    assert sorted(ds.y.tolist()) == [0, 0, 0, 1, 1, 1]
    for img, label in zip(ds.x, ds.y):  # pixels exactly as written, under the right label
        cls = ds.label_names[label]
        assert any(np.array_equal(img[0], written[(cls, i)]) for i in range(3))


def test_image_folder_rgb_channels_first(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    _png(tmp_path / "rgb" / "a.png", a)
    _png(tmp_path / "rgb" / "b.png", a[::-1].copy())
    ds = read_path(tmp_path / "rgb")
    assert ds.x.shape == (2, 3, 9, 7) and ds.y is None
    np.testing.assert_array_equal(ds.x[0], a.transpose(2, 0, 1))



def test_image_folder_small_rgb(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    _png(tmp_path / "tiny" / "a.png", a)
    _png(tmp_path / "tiny" / "b.png", a)
    assert read_path(tmp_path / "tiny").sample_shape == (3, 4, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="no images"):
        read_path(tmp_path / "none")
    _png(tmp_path / "mixed" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(UserError, match="different sizes"):
        read_path(tmp_path / "mixed")


# ---------------------------------------------------------------- arrays and validation


def test_from_array_and_validation() -> None:
    t = torch.rand(12, 1, 4, 4)
    ds = from_array(t, torch.arange(12))
    assert ds.sample_shape == (1, 4, 4) and ds.x.dtype == np.float32 and list(ds.y) == list(range(12))
    with pytest.raises(UserError, match="1-D"):
        from_array(np.zeros(5))
    with pytest.raises(UserError, match="labels for"):
        from_array(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(UserError, match="shape"):
        from_array(np.zeros((2, 1, 2, 2, 2)))
    with pytest.raises(UserError, match="NaN/Inf"):
        from_array(np.array([[1.0, np.inf], [0.0, 1.0]]))
    with pytest.raises(UserError, match="empty"):
        from_array(np.zeros((0, 3)))
    with pytest.raises(UserError, match="at least 2 samples"):
        holdout_split(Dataset(x=np.zeros((1, 3), np.float32)))


# ---------------------------------------------------------------- Batcher


def _ids_batcher(n: int, bs: int, seed: int | None = 0, **kw) -> Batcher:
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    y = torch.arange(n) * 10
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return Batcher(x, y, batch_size=bs, generator=g, **kw)


def _epoch(b: Batcher) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # full batches share one preallocated buffer: copy before the next batch overwrites it
    return [(xb.clone(), yb.clone()) for xb, yb in b]


def test_batcher_covers_every_sample_once_per_epoch() -> None:
    b = _ids_batcher(103, 10)
    assert len(b) == 11
    for _ in range(2):
        batches = _epoch(b)
        assert [len(xb) for xb, _ in batches] == [10] * 10 + [3]  # the last, short batch
        ids = torch.cat([xb[:, 0] for xb, _ in batches]).long()
        assert sorted(ids.tolist()) == list(range(103))
        for xb, yb in batches:  # labels travel with their samples
            assert torch.equal(yb, xb[:, 0].long() * 10)


def test_batcher_order_follows_the_generator() -> None:
    def order(b: Batcher) -> list[int]:
        return torch.cat([xb[:, 0] for xb, _ in _epoch(b)]).long().tolist()

    a1, a2 = _ids_batcher(50, 8, seed=1), _ids_batcher(50, 8, seed=1)
    first = order(a1)
    assert first == order(a2)  # same seed, same order
    assert first != list(range(50))  # shuffled
    assert order(a1) != first  # a new order every epoch
    assert order(_ids_batcher(50, 8, seed=2)) != first
    assert order(_ids_batcher(50, 8, shuffle=False)) == list(range(50))


def test_batcher_scales_uint8_to_unit_interval() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(16, 1, 4, 4)
    b = Batcher(x, batch_size=5, scale=255.0, shuffle=False)
    out = torch.cat([xb.clone() for xb, _ in b])
    assert out.dtype == torch.float32 and out.shape == (16, 1, 4, 4)
    assert out.min() == 0.0 and out.max() == 1.0
    torch.testing.assert_close(out, x.float() / 255)
    big = Batcher(x, batch_size=1000, scale=255.0)  # batch larger than the data: one batch
    assert len(big) == 1 and len(next(iter(big))[0]) == 16


def test_batcher_dynamic_binarisation() -> None:
    x = torch.full((64, 10), 128, dtype=torch.uint8)
    b = Batcher(x, batch_size=64, scale=255.0, binarize="dynamic", generator=torch.Generator().manual_seed(0))
    e1 = next(iter(b))[0].clone()
    e2 = next(iter(b))[0].clone()
    assert set(e1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2)  # a fresh sample each epoch
    assert abs(float(e1.mean()) - 128 / 255) < 0.1


# ---------------------------------------------------------------- binarize_static


def test_binarize_static() -> None:
    s = load_data("digits")
    b = binarize_static(s.train, seed=0)
    assert b.x.shape == s.train.x.shape and b.x.dtype == np.uint8 and b.scale == 1.0
    assert set(np.unique(b.x).tolist()) == {0, 1}
    assert b.value_range == (0.0, 1.0)
    assert abs(b.x.mean() - s.train.floats().mean()) < 0.01  # E[Bernoulli(p)] = p
    assert np.all(b.x[s.train.x == 0] == 0) and np.all(b.x[s.train.x == 16] == 1)  # p = 0 and p = 1 are fixed
    np.testing.assert_array_equal(binarize_static(s.train, seed=0).x, b.x)
    assert not np.array_equal(binarize_static(s.train, seed=1).x, b.x)
    np.testing.assert_array_equal(b.y, s.train.y)
