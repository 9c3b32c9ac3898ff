"""Named data sets: ``digits`` (bundled with scikit-learn), ``mnist``, ``fashion-mnist``, MedMNIST,
``movielens-100k`` (interactions) and ``20newsgroups`` (bags of words).

Files are looked up in ``$LATENTFORGE_DATA_DIR`` first, then in the user cache
(``$XDG_CACHE_HOME/latentforge``); when missing they are downloaded from the usual mirrors and
checked against their published hashes. Offline, the error says which files to put where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import Dataset, Splits, holdout_split
from .files import array_dataset, read_idx, read_npz
from .store import RemoteFile, find_or_fetch


@dataclass(frozen=True)
class IdxSet:
    folder: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]  # train images, train labels, test images, test labels
    label_names: tuple[str, ...]


IDX_SETS = {
    "mnist": IdxSet(
        folder="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            RemoteFile("train-labels-idx1-ubyte.gz", "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
        label_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": IdxSet(
        folder="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        label_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}

MEDMNIST = {
    "breastmnist": RemoteFile("breastmnist.npz", "md5:750601b1f35ba3300ea97c75c52ff8f6"),
    "pneumoniamnist": RemoteFile("pneumoniamnist.npz", "md5:28209eda62fecd6e6a2d98b1501bb15f"),
}
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/"

NAMES = ("digits", *IDX_SETS, *MEDMNIST, "movielens-100k", "20newsgroups")


def load_digits_splits() -> Splits:
    """scikit-learn's bundled 8×8 digits (1,797 images, grey levels 0–16): no network needed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # (n, 1, 8, 8), values 0..16
    ds = Dataset(x=x, y=d.target, name="digits", scale=16.0, label_names=[str(i) for i in range(10)])
    return holdout_split(ds, fraction=0.2, seed=0)


def load_idx_splits(name: str) -> Splits:
    spec = IDX_SETS[name]
    tr_x, tr_y, te_x, te_y = find_or_fetch(spec.folder, spec.files, spec.mirrors, name)
    train = array_dataset(read_idx(tr_x), read_idx(tr_y), name)
    test = array_dataset(read_idx(te_x), read_idx(te_y), name)
    for ds in (train, test):
        ds.label_names = list(spec.label_names)
    return Splits(train=train, test=test, name=name)


def load_medmnist_splits(name: str) -> Splits:
    (path,) = find_or_fetch("medmnist", (MEDMNIST[name],), (MEDMNIST_URL,), name)
    train, test = read_npz(path, "train"), read_npz(path, "test")
    train.name = test.name = name
    return Splits(train=train, test=test, name=name)


def load_named(name: str) -> Splits:
    if name == "digits":
        return load_digits_splits()
    if name in IDX_SETS:
        return load_idx_splits(name)
    if name in MEDMNIST:
        return load_medmnist_splits(name)
    if name == "movielens-100k":  # user–item interactions (see interactions.py)
        from .interactions import load_interaction_splits

        return load_interaction_splits(name)
    if name == "20newsgroups":  # documents as bags of words (see text.py)
        from .text import load_text_splits

        return load_text_splits(name)
    raise KeyError(name)
