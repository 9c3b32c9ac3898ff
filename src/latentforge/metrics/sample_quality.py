"""Sample quality in a feature space: FID, KID, precision/recall and density/coverage.

Features come from :class:`FeatureNet`, a small MNIST classifier shipped as
``latentforge/assets/mnist_features.safetensors`` (made by ``benchmarks/make_feature_net.py``).
Its numbers are comparable between runs of this package, not with Inception-based FID/KID in papers;
for those (and for images other than 28×28 grey) pass an ``extractor`` from :mod:`.extractors`
(Inception-v3 from a local TorchScript file, never downloaded).
For scale (10k MNIST test vs 10k train images, :func:`reference_floors`): FID 2.6, against 3004 for
uniform noise; KID 11 ± 43 (noise: ~16000), precision 0.90, recall 0.88.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from ..errors import UserError

FEATURE_NET_FILE = "mnist_features.safetensors"
FEATURE_NET_SHA256 = "78325a81127ea8f8f60f4d45a5f5da39ba56a206c6c424370d2c86776cfa28ad"


# ---------------------------------------------------------------- distances between feature sets


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID; Heusel et al. 2017,
    https://arxiv.org/abs/1706.08500): ‖μa−μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½).

    As in pytorch-fid, ``eps`` is added to the diagonals when the product is singular, and
    imaginary parts from round-off are dropped.
    """
    a, b = _as_features(feat_a, "feat_a"), _as_features(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise UserError("the Fréchet distance needs at least 2 samples in each set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    singular = any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():  # regularise, as pytorch-fid does
        offset = np.eye(len(cov_a)) * eps
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        # Round-off gives tiny imaginary parts; large ones mean the result cannot be trusted.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    fid = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    return float(max(fid, 0.0))


def kernel_inception_distance(feat_a: np.ndarray, feat_b: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018, https://arxiv.org/abs/1801.01401): unbiased MMD² with the
    kernel k(x, y) = (x·y/d + 1)³, averaged over ``subsets`` random subsets of ``subset_size``
    drawn without replacement.

    Returns (mean, std): std is the spread of the per-subset estimates, i.e. the standard error of
    one KID estimate from ``subset_size`` samples (what the paper and torch-fidelity report). It is
    conservative for the mean, whose subsets overlap. Subsets hold at most half the smaller set: larger ones
    would overlap almost wholly, and the spread would shrink towards 0 (exactly 0 when both sets are drawn
    whole); then std is the error bar of that smaller estimate, larger than the mean's. ``subsets=1`` is one
    estimate on ``subset_size`` rows (the whole smaller set at most) and std 0.
    """
    a, b = _as_features(feat_a, "feat_a"), _as_features(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    smaller = min(len(a), len(b))
    if smaller < 2 or (subsets > 1 and smaller < 4):
        raise UserError(f"KID needs at least {2 if subsets == 1 else 4} samples in each set")
    m = min(subset_size, smaller) if subsets == 1 else min(subset_size, smaller // 2)
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    est = np.empty(subsets)
    for s in range(subsets):  # a hundred m×m kernel matrices: the work is in the matmuls
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = m * (m - 1)
        est[s] = ((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                  - 2 * kxy.mean())
    return float(est.mean()), float(est.std(ddof=1)) if subsets > 1 else 0.0


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour; precision = share of fake points inside the real manifold, recall = share of real
    points inside the fake manifold.
    """
    r, f = _pair(real, fake, k)
    precision = _covered(f, r, _knn_radius2(r, k)).mean()
    recall = _covered(r, f, _knn_radius2(f, k)).mean()
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, https://arxiv.org/abs/2002.09797).

    With balls around real points reaching their k-th nearest real neighbour: density = mean
    number of real balls holding a fake point, divided by k (≈1 when the sets match, can exceed 1);
    coverage = share of real balls holding at least one fake point.
    """
    r, f = _pair(real, fake, k)
    rad2 = _knn_radius2(r, k)
    count = np.zeros(len(f))  # per fake: how many real balls hold it
    nearest_fake = np.full(len(r), np.inf)  # per real: squared distance to its nearest fake
    for i, d2 in _chunked_sqdist(f, r):
        count[i:i + len(d2)] = (d2 <= rad2[None, :]).sum(1)
        np.minimum(nearest_fake, d2.min(0), out=nearest_fake)
    return float(count.mean() / k), float((nearest_fake <= rad2).mean())


def _as_features(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise UserError(f"{name}: expected features shaped (n_samples, n_features), got {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"{name}: features contain NaN or infinity")
    return x


def _pair(real, fake, k: int) -> tuple[np.ndarray, np.ndarray]:
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise UserError(f"feature sets differ in width: {r.shape[1]} vs {f.shape[1]}")
    if min(len(r), len(f)) <= k:
        raise UserError(f"k={k} nearest neighbours need more than {k} samples in each set "
                        f"(got {len(r)} real, {len(f)} fake)")
    return r, f


def _chunked_sqdist(x: np.ndarray, y: np.ndarray, chunk: int = 256):
    """Yield (start, squared distances of x[start:start+chunk] to all of y), in float64 so that a
    point's distance to its own copy is 0 up to round-off far below any k-NN radius."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    y2 = (yt * yt).sum(1)
    for i in range(0, len(x), chunk):
        xc = xt[i:i + chunk]
        d2 = (xc * xc).sum(1, keepdim=True) + y2[None, :] - 2 * xc @ yt.T
        yield i, d2.clamp_min_(0).numpy()


def _knn_radius2(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point (the point itself is the 0th)."""
    out = np.empty(len(x))
    for i, d2 in _chunked_sqdist(x, x):
        out[i:i + len(d2)] = np.partition(d2, k, axis=1)[:, k]
    return out


def _covered(points: np.ndarray, centres: np.ndarray, rad2: np.ndarray) -> np.ndarray:
    """Whether each point lies in at least one ball (centre, squared radius)."""
    inside = np.zeros(len(points), dtype=bool)
    for i, d2 in _chunked_sqdist(points, centres):
        inside[i:i + len(d2)] = (d2 <= rad2[None, :]).any(1)
    return inside


# ---------------------------------------------------------------- the feature net


class FeatureNet(nn.Module):
    """A small MNIST classifier (28×28 grey images in [0,1]) whose 128-d penultimate layer is
    the feature space for the metrics above.

    Features are that layer's pre-activations: after the ReLU about a quarter of the units are
    dead (always 0), which makes feature covariances singular and FID's matrix square root fragile.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)  # 28 → 24, pooled to 12
        self.conv2 = nn.Conv2d(32, 64, 5)  # 12 → 8, pooled to 4
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.1307) / 0.3081  # MNIST pixel mean/std: centred inputs train faster with Adam
        h = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.fc1(h.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.features(x)))


def feature_net_path() -> Path:
    return Path(str(resources.files("latentforge") / "assets" / FEATURE_NET_FILE))


def load_feature_net(path: str | Path | None = None, *, sha256: str | None = None) -> FeatureNet:
    """The shipped feature net (cached), or one from ``path`` (not cached), after checking the
    file's SHA-256 against ``sha256`` (default :data:`FEATURE_NET_SHA256`)."""
    if path is None and sha256 is None:
        return _shipped_net()
    return _load_checked(Path(path) if path is not None else feature_net_path(), sha256 or FEATURE_NET_SHA256)


@lru_cache(maxsize=1)
def _shipped_net() -> FeatureNet:
    return _load_checked(feature_net_path(), FEATURE_NET_SHA256)


def _load_checked(path: Path, expected: str) -> FeatureNet:
    from safetensors.torch import load

    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the feature net {path} ({e.strerror}); reinstall latentforge") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected:
        raise UserError(f"feature net {path} has SHA-256 {digest}, expected {expected}: the file is damaged "
                        "or was replaced; reinstall latentforge (or rebuild it with benchmarks/make_feature_net.py "
                        "and update FEATURE_NET_SHA256)")
    net = FeatureNet()
    net.load_state_dict({k: v.float() for k, v in load(blob).items()})  # stored as float16
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------- images in, numbers out


def _as_mnist_images(x, name: str) -> np.ndarray:
    """(n,1,28,28) float32 in [0,1] from (n,28,28), (n,1,28,28) or (n,784); uint8 is divided by 255."""
    x = _as_array(x)
    if x.ndim == 2 and x.shape[1] == 28 * 28:
        x = x.reshape(-1, 28, 28)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise UserError(f"{name}: images shaped {x.shape[1:]}, but the shipped feature net is for 28×28 grey "
                        "images (n,28,28) or (n,1,28,28); for other images use Inception features "
                        "(--features inception) or a TorchScript feature net of your own")
    return _unit_floats(x, name)


def _as_images(x, name: str) -> np.ndarray:
    """(n,C,H,W) float32 in [0,1] with C = 1 or 3, from (n,H,W) or (n,C,H,W); uint8 is divided by 255."""
    x = _as_array(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"{name}: expected images shaped (n,H,W) or (n,C,H,W) with 1 or 3 channels, got {x.shape}")
    return _unit_floats(x, name)


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _unit_floats(x: np.ndarray, name: str) -> np.ndarray:
    if len(x) < 2:
        raise UserError(f"{name}: need at least 2 images, got {len(x)}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{name}: images contain NaN or infinity")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise UserError(f"{name}: pixel values span [{lo:.3g}, {hi:.3g}]; scale them to [0, 1] "
                        "(e.g. (x + 1) / 2 for tanh outputs) or pass uint8 0–255")
    return np.clip(x, 0, 1)


def image_features(images, *, batch_size: int = 100, name: str = "images", extractor=None) -> np.ndarray:
    """Features of images, in float64: the shipped net's 128-d features of 28×28 grey images, or
    ``extractor``'s (a :class:`~latentforge.metrics.extractors.TorchScriptFeatures`, e.g. Inception)."""
    if extractor is not None:
        return extractor(_as_images(images, name), batch_size=batch_size)
    x = _as_mnist_images(images, name)
    net = load_feature_net()
    with torch.inference_mode():
        out = [net.features(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


def sample_quality(real_images: np.ndarray, fake_images: np.ndarray, *, batch_size: int = 100,
                   extractor=None) -> dict[str, float]:
    """FID, KID (± std), precision, recall, density and coverage of ``fake_images`` against
    ``real_images`` in the shipped MNIST feature space (28×28 grey images in [0,1] or uint8), or in
    ``extractor``'s (any 1- or 3-channel images)."""
    real = image_features(real_images, batch_size=batch_size, name="real images", extractor=extractor)
    fake = image_features(fake_images, batch_size=batch_size, name="fake images", extractor=extractor)
    kid, kid_std = kernel_inception_distance(real, fake)
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    return {"fid": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std, "precision": precision,
            "recall": recall, "density": density, "coverage": coverage}


def reference_floors(train_images: np.ndarray, test_images: np.ndarray, *, n: int = 10000,
                     seed: int = 0, extractor=None) -> dict[str, float]:
    """Yardsticks for reading an FID: ``fid_floor`` = FID(n test images vs n training images), about
    the best a model can score with n samples; ``fid_noise`` = FID(n uniform-noise images vs the same
    training images)."""
    rng = np.random.default_rng(seed)
    check = _as_mnist_images if extractor is None else _as_images
    train = check(train_images, "train images")
    test = check(test_images, "test images")
    train = train[rng.choice(len(train), min(n, len(train)), replace=False)]
    test = test[rng.choice(len(test), min(n, len(test)), replace=False)]
    noise = rng.random(train.shape, dtype=np.float32)
    f_train, f_test, f_noise = (image_features(x, extractor=extractor) for x in (train, test, noise))
    return {"fid_floor": frechet_distance(f_test, f_train), "fid_noise": frechet_distance(f_noise, f_train)}
