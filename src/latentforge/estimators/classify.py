"""``SemiSupervisedClassifier``: Kingma et al. 2014's M1 (https://arxiv.org/abs/1406.5298) as a scikit-learn
classifier. ``fit(X, y)`` takes every image, labelled or not (``y == -1`` marks an unlabelled row, scikit-learn's
convention for semi-supervised estimators); the encoder learns from all of them without labels, a logistic
regression from the labelled rows' codes.

    y_semi = np.full(len(y), -1); y_semi[label_budget(y, 20)] = y[label_budget(y, 20)]
    clf = SemiSupervisedClassifier(VAE(latent_dim=32, epochs=30)).fit(X, y_semi, X_val=X_val, y_val=y_val)
    clf.predict_proba(X_test)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from ..errors import UserError
from ..tasks.classify import C_GRID, fit_logistic, integer_labels, select_C
from .autoencoders import VAE
from .base import not_fitted

UNLABELLED = -1


class SemiSupervisedClassifier(ClassifierMixin, BaseEstimator):
    """An unsupervised encoder (default: a conv ``VAE`` with a 32-d code) fitted on every row of X, then logistic
    regression on the standardised codes of the labelled rows; C from ``Cs``, by ROC AUC on ``X_val``/``y_val``
    when given, else by stratified cross-validation on the labelled rows.

    ``encoder``: an estimator with ``fit(X)`` and ``transform(X)`` (cloned before fitting), or with
    ``prefit=True`` a fitted one used as it is. Labels are whole numbers 0..K−1; −1 marks unlabelled rows.
    Fitted: ``encoder_``, ``classifier_``, ``C_``, ``classes_``, ``n_labelled_``.
    """

    def __init__(self, encoder=None, *, prefit: bool = False, Cs: tuple[float, ...] = C_GRID,
                 random_state: int | None = None) -> None:
        self.encoder = encoder
        self.prefit = prefit
        self.Cs = Cs
        self.random_state = random_state

    def fit(self, X, y, *, X_val=None, y_val=None):
        """Fit the encoder on all rows of X, the classifier on the rows whose ``y`` is not −1; returns self."""
        if y is None:
            raise UserError("SemiSupervisedClassifier needs y: labels 0..K-1, with -1 for the unlabelled rows")
        y = np.asarray(y).reshape(-1)
        integer_labels(y[y != UNLABELLED], "y")  # whole numbers ≥ 0 apart from the -1s
        y = y.astype(np.int64)
        if len(y) != len(X):
            raise UserError(f"y has {len(y)} labels for {len(X)} rows of X; give one label (or -1) per row")
        labelled = np.flatnonzero(y != UNLABELLED)
        if len(np.unique(y[labelled])) < 2:
            raise UserError(f"y labels {len(labelled)} rows of {len(np.unique(y[labelled]))} class(es); give labels "
                            "of at least 2 classes (and -1 for unlabelled rows)")
        if (X_val is None) != (y_val is None):
            raise UserError("give both X_val and y_val, or neither")
        seed = 0 if self.random_state is None else int(self.random_state)
        if self.prefit:
            if self.encoder is None:
                raise UserError("prefit=True needs a fitted encoder: SemiSupervisedClassifier(fitted_vae, prefit=True)")
            self.encoder_ = self.encoder
        else:
            base = VAE(latent_dim=32, arch="auto", epochs=20, random_state=seed) if self.encoder is None else self.encoder
            self.encoder_ = clone(base).fit(X)
        z = self._codes(X)
        z_val = yv = None
        if X_val is not None:
            yv = integer_labels(y_val, "y_val")
            z_val = self._codes(X_val)
        self.C_ = select_C(z[labelled], y[labelled], x_val=z_val, y_val=yv, Cs=tuple(self.Cs), seed=seed)
        self.classifier_ = fit_logistic(z[labelled], y[labelled], C=self.C_, seed=seed)
        self.classes_ = self.classifier_.classes_
        self.n_labelled_ = len(labelled)
        return self

    def _codes(self, X) -> np.ndarray:
        try:
            return np.asarray(self.encoder_.transform(X), dtype=np.float64).reshape(len(X), -1)
        except AttributeError:
            raise UserError(f"the encoder {type(self.encoder_).__name__} has no transform(X) giving codes; use VAE, "
                            "AutoEncoder, DenoisingAutoEncoder or BetaVAE") from None

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        not_fitted(self, "classifier_")
        return self.classifier_.predict_proba(self._codes(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def transform(self, X) -> np.ndarray:
        """The encoder's codes of X (what the classifier sees)."""
        not_fitted(self, "encoder_")
        return self._codes(X)
