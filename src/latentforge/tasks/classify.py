"""Semi-supervised classification with few labels, Kingma et al. 2014's M1 (https://arxiv.org/abs/1406.5298):
an encoder trained without labels on every training image (labelled or not) maps images to codes; a small
classifier, here logistic regression on the standardised posterior means, learns from the codes of the few
labelled rows only.

The labelled rows are a stratified budget of the training set (:func:`latentforge.data.labels.label_budget`);
the regularisation strength C is chosen on the official validation split (MedMNIST's ``val_*`` arrays) by ROC AUC,
or by stratified cross-validation on the labelled rows where the data have no validation split. The test split
is used only to score the final classifier. The ``classify`` verb, the ``SemiSupervisedClassifier`` estimator
and ``benchmarks/bench_scarce_labels.py`` all go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..data import Dataset, Splits, binarize_static, load_data
from ..errors import UserError
from ..metrics.classification import classification_scores, roc_auc
from ..models.base import Encoder
from .represent import embed

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


@dataclass
class Classification:
    """A fitted code classifier and how it did: ``test`` holds ``acc`` and ``auc`` on the test split,
    ``validation`` the same on the validation split (None without one), ``proba`` the test probabilities."""

    classifier: object
    C: float
    classes: np.ndarray
    labelled: np.ndarray
    test: dict[str, float]
    proba: np.ndarray
    validation: dict[str, float] | None = None


def with_validation(spec: str, splits: Splits) -> Splits:
    """``splits`` with the official validation split of a MedMNIST-style .npz (by name or path) where it has one."""
    if splits.validation is not None:
        return splits
    from ..data.files import read_npz
    from ..data.named import MEDMNIST, MEDMNIST_URL
    from ..data.store import find_or_fetch

    if spec in MEDMNIST:
        (path,) = find_or_fetch("medmnist", (MEDMNIST[spec],), (MEDMNIST_URL,), spec)
    else:
        path = Path(spec).expanduser()
        if path.suffix.lower() != ".npz" or not path.exists():
            return splits
        with np.load(path, allow_pickle=False) as z:
            if "val_images" not in z.files:
                return splits
    val = read_npz(path, "val")
    val.name = f"{splits.name} (validation)"
    return Splits(train=splits.train, test=splits.test, name=splits.name, validation=val, extras=splits.extras)


def labelled_splits(spec: str) -> Splits:
    """A data name or path as train / validation (when it has one) / test splits, every one labelled."""
    splits = with_validation(spec, load_data(spec))
    for part, ds in (("training", splits.train), ("test", splits.test), ("validation", splits.validation)):
        if ds is not None and ds.y is None:
            raise UserError(f"{spec}: the {part} split has no labels; classification needs labelled data (an .npz "
                            "with 'y' or MedMNIST's *_labels, a table with a label column, a folder of class folders)")
    return splits


def binarized_as_trained(splits: Splits, binarize: str | None, seed: int) -> Splits:
    """The labelled splits as a run trained with ``--binarize`` saw its images: one fixed Bernoulli sample of the
    grey levels in every split (its codes of grey levels would describe inputs it never saw). ``seed``: the
    run's; None ``binarize``: the splits as they are."""
    if binarize is None:
        return splits
    for ds in (splits.train, splits.test, splits.validation):
        if ds is not None and (ds.is_sparse or not ds.in_unit_interval):
            raise UserError(f"the run was trained with --binarize {binarize} on grey levels in [0, 1]; {ds.name} "
                            f"is not such data ({ds.value_range if not ds.is_sparse else 'sparse rows'}): classify "
                            "data like the run's")
    return Splits(train=binarize_static(splits.train, seed=seed), test=binarize_static(splits.test, seed=seed + 1),
                  validation=None if splits.validation is None else binarize_static(splits.validation, seed=seed + 2),
                  name=splits.name, extras=splits.extras)


def integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) and not (np.issubdtype(y.dtype, np.floating) and
                                                       np.all(np.mod(y, 1) == 0)):
        raise UserError(f"{what}: labels must be whole numbers 0..K-1, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise UserError(f"{what}: labels must be whole numbers 0..K-1, found {int(y.min())}")
    return y.astype(np.int64)


def choose_budget(y: np.ndarray, labels_per_class: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of the labelled rows: ``labels_per_class`` of every class (a reproducible stratified
    draw with ``seed``), or every row when it is None."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise UserError(f"the training labels hold {len(classes)} class; a classifier needs at least 2")
    if labels_per_class is None:
        return np.arange(len(y), dtype=np.int64)
    if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, (int, np.integer)) or labels_per_class < 1:
        raise UserError(f"--labels-per-class must be a whole number ≥ 1, got {labels_per_class!r}")
    if labels_per_class > counts.min():
        small = classes[counts.argmin()]
        raise UserError(f"--labels-per-class {labels_per_class} is more than class {small} has ({counts.min()} "
                        f"training rows); ask for at most {counts.min()}")
    from ..data.labels import label_budget

    return np.asarray(label_budget(y, labels_per_class, seed=seed), dtype=np.int64)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, C: float, seed: int = 0):
    """Standardise, then multinomial logistic regression with L2 strength ``1/C``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed)).fit(x, y)


def select_C(x: np.ndarray, y: np.ndarray, *, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
             Cs: tuple[float, ...] = C_GRID, seed: int = 0) -> float:
    """The C of ``Cs`` with the highest validation ROC AUC (ties: the smaller C, the stronger prior). Without a
    validation split: stratified k-fold cross-validation on (x, y), k ≤ 5 and ≤ the smallest class's count."""
    if not Cs:
        raise UserError("give at least one C to choose from")

    def auc_of(C: float) -> float:
        if x_val is not None:
            return roc_auc(y_val, fit_logistic(x, y, C=C, seed=seed).predict_proba(x_val))
        from sklearn.model_selection import StratifiedKFold

        k = min(5, int(np.bincount(y)[np.unique(y)].min()))
        if k < 2:
            return float("nan")
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
        proba = np.zeros((len(y), int(y.max()) + 1))
        for tr, te in folds:
            clf = fit_logistic(x[tr], y[tr], C=C, seed=seed)
            proba[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
        return roc_auc(y, proba)

    scores = [auc_of(C) for C in sorted(Cs)]
    if not np.isfinite(scores).any():
        return 1.0
    return float(sorted(Cs)[int(np.nanargmax(scores))])


def classify_codes(z: np.ndarray, y: np.ndarray, labelled: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *,
                   z_val: np.ndarray | None = None, y_val: np.ndarray | None = None, Cs: tuple[float, ...] = C_GRID,
                   seed: int = 0) -> Classification:
    """Fit the code classifier on the ``labelled`` rows of (z, y), C chosen on (z_val, y_val); score it on the test
    codes."""
    zl, yl = z[labelled], y[labelled]
    C = select_C(zl, yl, x_val=z_val, y_val=y_val, Cs=Cs, seed=seed)
    clf = fit_logistic(zl, yl, C=C, seed=seed)
    k = int(max(y.max(), y_test.max(), -1 if y_val is None else y_val.max())) + 1

    def full(proba: np.ndarray) -> np.ndarray:  # columns for every class 0..k-1, also those not labelled
        out = np.zeros((len(proba), k))
        out[:, clf.classes_] = proba
        return out

    proba = full(clf.predict_proba(z_test))
    val = None if z_val is None else classification_scores(y_val, full(clf.predict_proba(z_val)))
    return Classification(clf, C, clf.classes_, labelled, classification_scores(y_test, proba), proba, val)


def classify(model: nn.Module, splits: Splits, *, labels_per_class: int | None = None, label_seed: int = 0,
             Cs: tuple[float, ...] = C_GRID, device: str = "cpu") -> Classification:
    """M1: codes of ``model``'s encoder for the train/validation/test splits, a logistic regression on the codes of a
    budget of ``labels_per_class`` labelled training rows per class (None: all), scored on the test split."""
    check_encoder(model)
    y = integer_labels(_labels(splits.train, "training"), splits.train.name)
    y_test = integer_labels(_labels(splits.test, "test"), splits.test.name)
    labelled = choose_budget(y, labels_per_class, label_seed)
    z, z_test = _codes(model, splits.train, device), _codes(model, splits.test, device)
    z_val = y_val = None
    if splits.validation is not None:
        y_val = integer_labels(_labels(splits.validation, "validation"), splits.validation.name)
        z_val = _codes(model, splits.validation, device)
    return classify_codes(z, y, labelled, z_test, y_test, z_val=z_val, y_val=y_val, Cs=Cs, seed=label_seed)


def check_encoder(model: nn.Module) -> None:
    """A model whose codes a classifier can learn from: it encodes, and needs no label to do so."""
    name = getattr(model, "registry_name", type(model).__name__)
    if not isinstance(model, Encoder):
        raise UserError(f"model {name!r} has no encoder; classify with a run of vae, beta-vae, iwae, ae or dae "
                        "trained on all the training images")
    if getattr(model, "uses_labels", False):
        raise UserError(f"model {name!r} is conditional (its encoder needs the label it should predict); classify "
                        "with an unconditional encoder: vae, beta-vae, ae or dae")


def _labels(ds: Dataset, what: str) -> np.ndarray:
    if ds.y is None:
        raise UserError(f"{ds.name}: the {what} split has no labels; classification needs labelled data")
    return ds.y


def _codes(model: nn.Module, ds: Dataset, device: str) -> np.ndarray:
    return embed(model, ds, device=device).astype(np.float64)
