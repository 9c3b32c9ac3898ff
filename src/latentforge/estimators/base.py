"""The one estimator stack: scikit-learn-style wrappers over a registered model and the one trainer.

``fit`` is one template (check the parameters, read the data, hold out what the task needs, build the
model from the data, train, keep the fitted facts); subclasses fill in small hooks. ``save_pretrained`` and
``from_pretrained`` are written once: ``config.json`` names the estimator class, so :func:`latentforge.load`
returns the class that was saved. ``__init__`` only stores parameters; fitted attributes end in ``_``.

``partial_fit`` (online learning on a stream of chunks) is the same template, one epoch per chunk, for the
estimators whose whole fitted state is the model (``partial_fit_refused = None``); the others do not have it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.metaestimators import available_if

from ..checkpoint import CONFIG, TRAIN_STATE, WEIGHTS, load_model, read_config, save_model
from ..data import Dataset, from_array
from ..errors import UserError
from ..io import atomic_folder, write_json
from ..models import model_class
from ..settings import SettingError
from ..precision import set_precision
from ..train import TrainConfig, fit, optimizer_state_to_params
from ..train_records import Monitor

TRAIN_PARAMS = ("epochs", "batch_size", "lr", "random_state", "device", "verbose", "precision")
TRAIN_NAMES = {"seed": "random_state", "progress": "verbose"}  # TrainConfig field → estimator parameter

ESTIMATOR_CLASSES: dict[str, type[ModelEstimator]] = {}


def not_fitted(est, attr: str = "model_") -> None:
    if not hasattr(est, attr):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit(X) first")


class ModelEstimator(BaseEstimator):
    """What every estimator shares. Subclasses set ``model_names`` (the registered models they wrap, the
    first being the default) and list the model's settings plus :data:`TRAIN_PARAMS` in ``__init__``."""

    model_names: ClassVar[tuple[str, ...]] = ()
    extra_params: ClassVar[tuple[str, ...]] = ()  # parameters that are neither model settings nor training ones
    # Why this estimator has no partial_fit, or None where it has one: only estimators whose whole fitted state
    # is the model (no threshold, scores or vocabulary over all training rows) can learn chunk by chunk.
    partial_fit_refused: ClassVar[str | None] = (
        "its fitted state beyond the model's weights (thresholds, training scores, vocabularies or item maps) "
        "is computed over the whole training set at once")

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        ESTIMATOR_CLASSES[cls.__name__] = cls

    # --- hooks ---------------------------------------------------------------------------------------
    def _model_name(self) -> str:
        return self.model_names[0]

    def _dataset(self, X, y=None) -> Dataset:
        return from_array(X, y, name="X")

    def _split(self, ds: Dataset) -> tuple[Dataset, Dataset | None]:
        """(rows to fit on, rows held out from fitting or None). Default: fit on every row."""
        return ds, None

    def _model_settings(self, ds: Dataset) -> dict:
        """The model's settings: this estimator's parameters that the model's config declares."""
        names = model_class(self._model_name()).Config.names()
        return {k: v for k, v in self.get_params().items() if k in names and k not in self.extra_params}

    def _monitor(self, ds: Dataset) -> Monitor | None:
        return None

    def _after_fit(self, ds: Dataset, train: Dataset, held: Dataset | None) -> None:
        """Fitted state beyond the model (scores, thresholds, histories)."""

    def _save_extra(self, directory: Path) -> dict:
        """Files beside the weights; returns what config.json keeps of them."""
        return {}

    def _load_extra(self, directory: Path, config: dict) -> None:
        """Fitted state beyond the model, from a saved directory."""

    # --- the template --------------------------------------------------------------------------------
    def _train_config(self, n: int, **given) -> TrainConfig:
        values = {"epochs": self._epochs(n), "batch_size": self.batch_size, "lr": self.lr,
                  "seed": 0 if self.random_state is None else self.random_state, "device": self.device,
                  "progress": bool(self.verbose), "patience": getattr(self, "patience", None),
                  "precision": getattr(self, "precision", "auto"), "augment": getattr(self, "augment", None), **given}
        try:
            return TrainConfig(**values)
        except SettingError as e:
            raise e.renamed(TRAIN_NAMES.get(e.param, e.param)) from None

    def _epochs(self, n: int) -> int:
        return self.epochs

    def fit(self, X, y=None):
        """Train on X (``y`` only for models that use labels); returns self. Always starts afresh, also after
        ``partial_fit``."""
        ds = self._dataset(X, y if model_class(self._model_name()).uses_labels else None)
        self._train_config(len(ds))  # bad training parameters fail before any work
        train, held = self._split(ds)
        cfg = self._train_config(len(train))  # epochs=None counts the rows actually fitted on
        model = self._new_model(ds, cfg.seed)
        if held is None:
            cfg.patience = None  # nothing held out to stop by
        result = fit(model, train, None, cfg, validation=held, monitor=self._monitor(ds))
        self.model_ = model.cpu().eval()
        self.history_ = result.history
        for stale in ("_optimizers", "n_partial_fit_calls_"):  # a partial_fit stream before this fit is over
            self.__dict__.pop(stale, None)
        self._set_facts(ds, X)
        self._after_fit(ds, train, held)
        return self

    def _new_model(self, ds: Dataset, seed: int):
        """The model built for the data in ``ds``, its initial weights drawn from ``seed``."""
        torch.manual_seed(seed)  # initial weights come from random_state, too
        cls = model_class(self._model_name())
        settings = self._model_settings(ds)
        try:
            return cls(input_shape=list(ds.sample_shape), **settings)
        except SettingError as e:
            raise UserError(str(e)) from None
        except (RuntimeError, MemoryError) as e:  # sizes that cannot be allocated
            raise UserError(f"cannot build {cls.registry_name} with these sizes ({str(e).splitlines()[0]}); "
                            "use smaller latent_dim/hidden") from None

    def _learns_incrementally(self) -> bool:
        if self.partial_fit_refused is not None:
            raise AttributeError(f"{type(self).__name__} has no partial_fit: {self.partial_fit_refused}. Call "
                                 "fit(X) with all the data instead")
        return True

    @available_if(_learns_incrementally)
    def partial_fit(self, X, y=None):
        """Online learning: one pass (one epoch, in mini-batches of ``batch_size``) over the chunk X with the one
        trainer, continuing the model and its optimiser state (Adam's moments) from the previous call; returns self.

        The first call on an unfitted estimator builds the model from this chunk, as ``fit`` does from all the
        data: the sample shape, the value scale (uint8 images: 255), the likelihood (``"auto"``: Bernoulli when the
        chunk is in [0, 1]) and data statistics such as the Gaussian decoder's standardisation all come from the
        **first chunk**, so make it representative. Later chunks are read exactly like ``transform``'s input (the
        same sample shape, integer grey levels divided by the first chunk's scale, values in [0, 1] for a
        Bernoulli model) and change none of these. ``epochs`` is not used (one pass per call); each call's
        shuffling and noise come from a generator seeded by ``random_state`` and the call number, so the same
        ``random_state`` and chunks in the same order give the same weights. ``history_`` grows by a row per call,
        ``n_partial_fit_calls_`` counts the calls since the model was built (or fitted, or loaded). ``y`` is
        ignored (scikit-learn's signature).

        After ``fit`` or ``from_pretrained`` it continues from those weights and statistics with a new optimiser
        (``lr``): neither keeps the optimiser's state, so Adam's moments start again. ``fit`` after
        ``partial_fit`` starts afresh. Between calls the model and the optimiser's state are kept on the CPU.
        """
        calls = getattr(self, "n_partial_fit_calls_", 0) + 1
        first = not hasattr(self, "model_")
        if first:
            chunk = self._dataset(X)
            cfg = self._train_config(len(chunk), epochs=1, patience=None)  # bad parameters fail before any work
            model, optimizers, undo = self._new_model(chunk, cfg.seed), None, None
        else:  # a later chunk: read as transform reads X, against what the model was built for
            chunk = Dataset(x=self._tensor(X).numpy(), name="X")
            cfg = self._train_config(len(chunk), epochs=1, patience=None)
            model, optimizers = self.model_, getattr(self, "_optimizers", None)
            undo = _snapshot(model, optimizers)
        cfg.seed = _call_seed(cfg.seed, calls)
        try:
            result = fit(model, chunk, None, cfg, optimizers=optimizers, prepare=first)
        except BaseException:  # a diverged or interrupted pass leaves the model as the previous call left it
            if undo is not None:
                undo()
            raise
        self.model_ = model.cpu().eval()
        optimizer_state_to_params(result.optimizers)  # off the GPU between calls, like the model
        self._optimizers = result.optimizers
        if first:
            self.history_ = []
            self._set_facts(chunk, X)
        elif self.value_range_ is not None:  # the range fitted on: over every chunk so far
            lo, hi = chunk.value_range
            self.value_range_ = (min(self.value_range_[0], lo), max(self.value_range_[1], hi))
        self.history_.append({**result.history[-1], "epoch": len(self.history_) + 1, "n_samples": len(chunk)})
        self.n_partial_fit_calls_ = calls
        return self

    def _set_facts(self, ds: Dataset, X) -> None:
        """What later calls are checked against: the sample shape (model's and the caller's), the value
        scale, the range the model was fitted on."""
        self.input_shape_ = tuple(ds.sample_shape)
        self.scale_ = float(ds.scale)
        self.n_features_in_ = int(np.prod(ds.sample_shape))
        shape = getattr(X, "shape", None)
        self.sample_shape_in_ = tuple(int(s) for s in shape[1:]) if shape is not None and len(shape) > 1 else None
        self.value_range_ = tuple(float(v) for v in ds.value_range) if not ds.is_sparse else None

    # --- checked inputs ------------------------------------------------------------------------------
    def _tensor(self, X) -> torch.Tensor:
        """X as model inputs, read exactly as at fit: the same shape, integer grey levels divided by the
        scale stored at fit (floats are taken as model inputs), the value range the likelihood needs."""
        not_fitted(self)
        ds = self._dataset(X)
        if ds.sample_shape != tuple(self.input_shape_):
            if len(ds.sample_shape) == 1 and len(self.input_shape_) == 1:  # tables: scikit-learn's wording
                width = self.input_shape_[0]
                raise UserError(f"X has {ds.sample_shape[0]} features, but {type(self).__name__} is expecting "
                                f"{width} features as input; give X of shape (n, {width}), the columns fitted on")
            raise UserError(f"X has samples of shape {ds.sample_shape}, but the model was fitted on "
                            f"{tuple(self.input_shape_)}")
        x = np.asarray(ds.x, dtype=np.float32)
        integral = _integer_input(X)
        if integral and self.scale_ != 1.0:
            x = x / self.scale_
        elif ds.scale != 1.0:
            x = x / ds.scale
        like = getattr(self.model_, "likelihood", None)
        if like in ("bernoulli", "cb") and (x.min() < 0 or x.max() > 1):
            raise UserError(f"X ranges over [{x.min():g}, {x.max():g}], but the model's {like} likelihood reads "
                            f"values in [0, 1]: give floats in [0, 1], or integer grey levels as at fit "
                            f"(0..{self.scale_:g})")
        return torch.from_numpy(np.require(x, requirements="W"))  # a writable copy only when it is not

    def _as_input_shape(self, arr: np.ndarray) -> np.ndarray:
        """Model outputs shaped like the caller's samples ((n, 8, 8) in → (n, 8, 8) out)."""
        shape = getattr(self, "sample_shape_in_", None)
        if shape is not None and int(np.prod(shape)) == int(np.prod(arr.shape[1:])):
            return arr.reshape(len(arr), *shape)
        return arr

    # --- saving and loading --------------------------------------------------------------------------
    def _params_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """``model.safetensors`` + ``config.json`` (+ the estimator's own files), written completely or not at
        all. A non-empty ``directory`` that holds something else (a training run, another model, other files)
        is refused unless ``overwrite=True``; replacing an earlier save of this same class is allowed."""
        not_fitted(self)
        directory = Path(directory)
        _check_save_target(directory, type(self).__name__, overwrite)
        with atomic_folder(directory, prefix=f".{directory.name}.saving-") as tmp:
            self._write(tmp)
        return directory

    def _write(self, directory: Path) -> None:
        info = {"sample_shape": list(self.input_shape_), "scale": self.scale_,
                "sample_shape_in": None if self.sample_shape_in_ is None else list(self.sample_shape_in_),
                "value_range": None if self.value_range_ is None else list(self.value_range_),
                "precision": self.model_.precision}  # what fitted state (thresholds, scores) was computed in
        save_model(self.model_, directory, {"estimator_class": type(self).__name__, "estimator": self._params_json(),
                                            "data_info": info})
        extra = self._save_extra(directory)
        if extra:
            config = read_config(directory)
            write_json(directory / CONFIG, {**config, **extra})

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu"):
        """Load a ``save_pretrained`` directory or a ``latentforge train`` run directory of this class's models."""
        directory = Path(directory)
        config = read_config(directory)
        saved = config.get("estimator_class")
        if saved is not None and saved != cls.__name__ and not issubclass(ESTIMATOR_CLASSES.get(saved, object), cls):
            raise UserError(f"{directory} holds a {saved}, not a {cls.__name__}; load it with {saved}.from_pretrained "
                            "or latentforge.load")
        if config["model"] not in cls.model_names:
            raise UserError(f"{directory} holds a {config['model']!r} model; {cls.__name__} wraps "
                            f"{', '.join(cls.model_names)}. Load it with latentforge.load")
        model = load_model(directory, device=device)
        est = cls(**_params_from(cls, config, model))
        est.model_ = model
        info = config.get("data_info") if isinstance(config.get("data_info"), dict) else {}
        try:
            est.input_shape_ = tuple(int(s) for s in info.get("sample_shape", model.config["input_shape"]))
            est.scale_ = float(info.get("scale", 1.0))
            shape_in = info.get("sample_shape_in")
            est.sample_shape_in_ = tuple(int(s) for s in shape_in) if shape_in else None
            vr = info.get("value_range")
            est.value_range_ = tuple(float(v) for v in vr) if vr else None
            set_precision(model, str(info.get("precision", "fp32")), device)  # as its thresholds were computed
        except (TypeError, ValueError) as e:
            raise UserError(f"{directory / CONFIG}: data_info is damaged ({e}); restore it or train again") from None
        if list(est.input_shape_) != list(model.config["input_shape"]) or not est.scale_ > 0:
            raise UserError(f"{directory / CONFIG}: data_info does not match the model (sample shape "
                            f"{list(est.input_shape_)} vs {model.config['input_shape']}); restore it or train again")
        est.n_features_in_ = int(np.prod(est.input_shape_))
        est.history_ = []
        est._load_extra(directory, config)
        return est


def _snapshot(model, optimizers: dict | None):
    """A function that puts back the model's weights and the optimisers' state as they are now (on the CPU)."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = {k: copy.deepcopy(opt.state_dict()) for k, opt in (optimizers or {}).items()}

    def undo() -> None:
        model.load_state_dict(weights)
        model.cpu().eval()
        for k, opt in (optimizers or {}).items():
            opt.load_state_dict(states[k])

    return undo


def _call_seed(random_state: int, call: int) -> int:
    """The seed of partial_fit's ``call``-th call (from 1): the chunks' orders and noise differ from call to call
    and are the same for the same ``random_state``."""
    state = np.random.SeedSequence([int(random_state), call]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(3))  # below 2**61: a valid TrainConfig seed


def _integer_input(X) -> bool:
    """Whether X holds integer grey levels by its type (numpy or torch integers), never by its values: a
    sample is read the same way whichever samples share its call."""
    if hasattr(X, "detach"):
        return not (X.dtype.is_floating_point or X.dtype.is_complex) and X.dtype != torch.bool
    return np.issubdtype(np.asarray(X).dtype, np.integer)


def _params_from(cls: type[ModelEstimator], config: dict, model) -> dict:
    """The estimator parameters a saved directory describes (its own, else the run's settings)."""
    names = cls._get_param_names()
    if isinstance(config.get("estimator"), dict):
        params = {k: v for k, v in config["estimator"].items() if k in names}
    else:  # a CLI run: the model's settings and the run's training settings
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        params = {k: v for k, v in {**config.get("model_config", {}), **train}.items() if k in names}
        if "seed" in train and "random_state" in names:
            params["random_state"] = train["seed"]
        if "kind" in names:
            params["kind"] = config["model"]
    # A setting saved before it existed (scaling, trim, n_nets, …) is the loaded model's own, not
    # today's default: the model rebuilt from the old config knows what it is.
    for key in names:
        if key not in params and key in model.config:
            params[key] = model.config[key]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _check_save_target(directory: Path, cls_name: str, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file; save_pretrained writes a folder, choose another path")
    if not directory.exists() or not any(directory.iterdir()) or overwrite:
        return
    what = "files that are not a saved model"
    if (directory / CONFIG).exists():
        try:
            config = read_config(directory)
        except UserError:
            config = {}
        if config.get("estimator_class") == cls_name and not (directory / TRAIN_STATE).exists():
            return  # an earlier save of this same estimator class: replaced as a whole
        what = ("a training run" if (directory / TRAIN_STATE).exists() or "train" in config
                else f"a saved {config.get('estimator_class') or config.get('model', 'model')}")
    raise UserError(f"{directory} is not empty: it holds {what}. Choose another folder, or pass overwrite=True to "
                    "replace it")


__all__ = ["ESTIMATOR_CLASSES", "ModelEstimator", "TRAIN_PARAMS", "not_fitted", "WEIGHTS"]
