"""Using what a model learned, on any run whose model encodes or reconstructs: embed data as codes, cluster
the codes (k-means, a Gaussian mixture, or UMAP then a Gaussian mixture as in N2D), refine clusters by
self-training the encoder (DEC/IDEC, :mod:`latentforge.models.dec`), denoise through a reconstructing model.

Everything runs a chunk of rows at a time, so memory is bounded by one chunk's activations plus the result.
The verbs ``embed``, ``cluster``, ``denoise`` and ``plot`` go through here; so do the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import UserError
from ..models.base import Encoder, Reconstructor

CHUNK = 1024  # rows encoded at a time
CLUSTER_METHODS = ("kmeans", "gmm", "umap-gmm")


def finite_rows(out: np.ndarray, what: str) -> np.ndarray:
    """``out`` when every row is finite; else an error naming the rows (values far outside what the model was
    fitted on overflow it: a NaN would hide them)."""
    bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(1)) if len(out) else []
    if len(bad):
        raise UserError(f"{what}: rows {', '.join(map(str, bad[:5]))}{' …' if len(bad) > 5 else ''} give no finite "
                        "result (values far outside the range the model was fitted on); check or remove them")
    return out


def _chunks(ds: Dataset, progress: bool, what: str):
    from tqdm.auto import tqdm

    total = -(-len(ds) // CHUNK)
    return tqdm(ds.chunks(CHUNK), total=total, desc=what, unit="chunk", disable=not progress, leave=False)


@torch.no_grad()
def embed(model: nn.Module, ds: Dataset, *, device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """Codes of every row of ``ds`` (posterior means for VAEs), shape (n, latent), float32."""
    if not isinstance(model, Encoder):
        raise UserError(f"model {model.registry_name!r} has no encoder, so it gives no codes; embed with an "
                        "autoencoder, a VAE or a topic model")
    model = model.to(device).eval()
    out = [model.encode(torch.from_numpy(x).to(device))[0].flatten(1).float().cpu().numpy()
           for x in _chunks(ds, progress, "embedding")]
    return finite_rows(np.concatenate(out), "embed")


@torch.no_grad()
def denoise(model: nn.Module, ds: Dataset, *, device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """The model's reconstruction of every row (a denoising autoencoder's clean estimate), shaped like ``ds.x``."""
    if not isinstance(model, Reconstructor):
        raise UserError(f"model {model.registry_name!r} does not reconstruct; denoise with a dae, ae or vae run")
    model = model.to(device).eval()
    out = [model.reconstruct(torch.from_numpy(x).to(device)).float().cpu().numpy()
           for x in _chunks(ds, progress, "denoising")]
    return finite_rows(np.concatenate(out).reshape(len(ds), *ds.sample_shape), "denoise")


@dataclass
class Clustering:
    """Cluster assignments of n rows, with each row's probability of its cluster where the method gives one."""

    labels: np.ndarray
    confidence: np.ndarray | None = None
    method: str = "kmeans"
    history: list[dict] = field(default_factory=list)


def check_request(k: int, method: str) -> None:
    """A clustering request that can be carried out: k ≥ 2 whole clusters by a known method (checked before any
    data is read or encoded)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise UserError(f"--k must be a whole number of clusters ≥ 2, got {k!r}")
    if method not in CLUSTER_METHODS:
        raise UserError(f"--method must be one of {', '.join(CLUSTER_METHODS)}, got {method!r}")


def check_codes(z: np.ndarray, k: int) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 2 or len(z) == 0 or not np.issubdtype(z.dtype, np.number):
        raise UserError(f"codes must be a non-empty numeric (n, d) array, got shape {z.shape} dtype {z.dtype}")
    if not np.isfinite(z).all():
        raise UserError("codes hold NaN/Inf; embed finite data first")
    if k > len(z):
        raise UserError(f"--k {k} is more clusters than rows ({len(z)}); ask for fewer")
    return z.astype(np.float64)


def cluster_codes(z: np.ndarray, k: int, *, method: str = "kmeans", seed: int = 0, umap_dim: int = 10,
                  n_neighbors: int = 20, standardise: bool = True) -> Clustering:
    """Cluster codes into ``k`` groups. ``kmeans`` and ``gmm`` work on standardised codes; ``umap-gmm`` first maps
    them to ``umap_dim`` dimensions with UMAP (``min_dist=0``, which packs clusters tightly) and fits a full-covariance
    Gaussian mixture there (McConville et al. 2020, N2D). ``standardise=False`` clusters the values as given: for
    inputs in common units such as raw pixels, where scaling each feature by its standard deviation turns the
    almost-always-blank border pixels into the largest coordinates (MNIST: k-means ACC 0.49 instead of 0.53,
    UMAP + GMM 0.76 instead of 0.97)."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    check_request(k, method)
    z = check_codes(z, k)
    zs = (z - z.mean(0)) / (z.std(0) + 1e-8) if standardise else z
    if method == "kmeans":
        return Clustering(KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(zs), None, method)
    if method == "umap-gmm":
        zs = umap_map(zs, dim=umap_dim, n_neighbors=n_neighbors, seed=seed)
    gmm = GaussianMixture(n_components=k, covariance_type="full", n_init=3, random_state=seed, reg_covar=1e-5)
    proba = gmm.fit(zs).predict_proba(zs)
    return Clustering(proba.argmax(1), proba.max(1), method)


def umap_map(z: np.ndarray, *, dim: int, n_neighbors: int, seed: int) -> np.ndarray:
    """UMAP of the rows to ``dim`` dimensions (seeded: the same codes give the same map)."""
    try:
        import umap
    except ImportError:
        raise UserError("this needs umap-learn: pip install umap-learn (or use --method kmeans|gmm)") from None
    if len(z) <= max(dim + 1, 3):
        raise UserError(f"UMAP needs more than {max(dim + 1, 3)} rows, got {len(z)}; use --method kmeans or gmm")
    import warnings

    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded UMAP runs on one thread
        warnings.simplefilter("ignore", UserWarning)
        reducer = umap.UMAP(n_components=dim, n_neighbors=min(n_neighbors, len(z) - 1), min_dist=0.0,
                            random_state=seed)
        return reducer.fit_transform(z).astype(np.float64)


def check_refine(*, epochs: int, gamma: float, lr: float, tol: float) -> None:
    """Refinement settings that can be carried out (checked before any data is read or encoded)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"--refine-epochs must be a whole number ≥ 1, got {epochs!r}")
    if not gamma >= 0:
        raise UserError(f"--gamma must be ≥ 0, got {gamma}")
    if not 0 < lr < float("inf"):
        raise UserError(f"--refine-lr must be a finite number above 0, got {lr}")
    if not 0 <= tol < 1:
        raise UserError(f"--refine-tol must be a share of rows in [0, 1), got {tol}")


REFINE_BATCH = 256  # DEC's batch size (Xie et al. 2016)


def refine(model: nn.Module, ds: Dataset, start: Clustering, *, epochs: int = 10, gamma: float = 0.1,
           lr: float = 1e-3, batch_size: int = REFINE_BATCH, seed: int = 0, device: str = "cpu",
           progress: bool | None = None, codes: np.ndarray | None = None, augment: str | None = None,
           tol: float = 0.001) -> Clustering:
    """DEC/IDEC self-training of ``model``'s encoder from the ``start`` clusters (their code means are the first
    centres). ``gamma`` weighs the model's own loss (IDEC); 0 is plain DEC. ``codes``: ``ds``'s codes under
    ``model`` when the caller has them already (else they are computed). ``augment`` (images): the encoder is
    trained on randomly changed images while the targets come from the images as they are (DEC-DA, Guo et al.
    2018). ``tol``: stop before ``epochs`` once fewer than this share of rows change cluster in an epoch (DEC's
    rule, 0.001 in Xie et al. 2016; no labels needed). Trains ``model`` in place."""
    from ..models.dec import DeepClustering
    from ..train import TrainConfig, fit

    if not isinstance(model, Encoder):
        raise UserError(f"model {model.registry_name!r} has no encoder to refine")
    if model.uses_labels:
        raise UserError(f"model {model.registry_name!r} is conditional; --refine works on unconditional encoders")
    check_refine(epochs=epochs, gamma=gamma, lr=lr, tol=tol)
    z = embed(model, ds, device=device) if codes is None else codes
    k = int(start.labels.max()) + 1
    centres = np.stack([z[start.labels == c].mean(0) if np.any(start.labels == c) else z.mean(0) for c in range(k)])
    wrapper = DeepClustering(model, centres, gamma=gamma, tol=tol)
    indexed = Dataset(x=ds.x, y=np.arange(len(ds)), name=ds.name, scale=ds.scale)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=str(device), progress=progress,
                      augment=augment, compile="off")
    history = fit(wrapper, indexed, None, cfg).history
    proba = wrapper.predict_proba(indexed).numpy()
    model.eval()
    return Clustering(proba.argmax(1), proba.max(1), f"{start.method}+{'idec' if gamma > 0 else 'dec'}", history)


def check_save_dir(out, source, *, others: tuple = ()) -> None:
    """Refuse, before any work, a ``--save`` folder that could not be written or would overwrite something: the
    source run itself, a file, a folder with files in it, one of the command's other outputs (``others``), or a
    place under a file or a folder this process cannot write in."""
    import os
    from pathlib import Path

    out, source = Path(out), Path(source)
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise UserError(f"--save {out} is the run being refined; it keeps the model as trained. Choose a new folder")
    if any(o is not None and Path(o).resolve() == out.resolve() for o in others):
        raise UserError(f"--save {out} is also another output of this command; choose a folder of its own")
    if out.exists() and not out.is_dir():
        raise UserError(f"--save {out} is a file, not a folder; choose another")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--save {out} already exists and is not empty; choose a new folder")
    above = out.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise UserError(f"--save {out}: {above} is a file, so no folder can be made under it; choose another place")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"--save {out}: cannot write in {above}; choose a folder you can write in")


def save_refined(model: nn.Module, source, out, refinement: dict) -> None:
    """Write ``model`` (refined by :func:`refine`) as a run directory ``out``: ``source``'s config.json with the
    refinement recorded (``refined_from``, ``refinement``) and the refined weights, so that ``embed``, ``cluster``
    and ``plot`` can use the refined encoder. The folder appears complete or not at all."""
    from pathlib import Path

    from ..checkpoint import CONFIG, disk_errors, read_config, save_model, write_json
    from ..io import atomic_folder

    out, source = Path(out), Path(source)
    check_save_dir(out, source)
    config = read_config(source)
    for key in ("estimator_class", "estimator"):  # a saved estimator's own record describes the model before refining
        config.pop(key, None)
    earlier = config.get("refinement")
    refinement = {**refinement, **({"earlier": earlier} if isinstance(earlier, dict) else {})}
    with disk_errors(f"cannot save the refined model in {out}", "nothing was written there"), \
            atomic_folder(out) as tmp:  # (an empty folder already at ``out`` is replaced)
        write_json(tmp / CONFIG, config)
        save_model(model, tmp, extra={"refined_from": str(source.resolve()), "refinement": refinement}, shown_as=out)


CODE_FILES = (".npy", ".csv", ".parquet")


def write_codes(z: np.ndarray, out, *, extra: dict | None = None) -> None:
    """Codes to ``out`` (.npy: the array; .csv/.parquet: columns z0…z{d−1} after ``extra``'s columns), written
    completely or not at all."""
    from pathlib import Path

    from ..io import atomic_path

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in CODE_FILES:
        raise UserError(f"--out must end in {', '.join(CODE_FILES)}, got {out.name!r}")
    with atomic_path(out) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, z)
            return
        import pandas as pd

        frame = pd.DataFrame({**(extra or {}), **{f"z{i}": z[:, i] for i in range(z.shape[1])}})
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise UserError("writing .parquet needs pyarrow: pip install pyarrow (or write .npy/.csv)") from None
