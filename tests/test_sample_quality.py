"""Sample-quality metrics against hand computations, limiting cases, and the shipped feature net."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import lf, require_data
from latentforge.errors import UserError
from latentforge.metrics.extractors import resolve_features
from latentforge.metrics.sample_quality import (FEATURE_NET_SHA256, density_coverage, feature_net_path,
                                                frechet_distance, image_features, kernel_inception_distance,
                                                load_feature_net, precision_recall, reference_floors,
                                                sample_quality)


def gaussian(n: int, d: int = 16, *, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """n draws from one correlated, well-conditioned Gaussian (the same for every seed), plus shift."""
    mix = np.random.default_rng(123).normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix + shift


def test_fid_zero_on_itself_and_grows_with_noise() -> None:
    a = gaussian(1000)
    assert frechet_distance(a, a) < 1e-3
    noise = np.random.default_rng(1).normal(size=a.shape)
    fids = [frechet_distance(a, a + s * noise) for s in (0.05, 0.1, 0.3, 1.0, 3.0)]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids
    assert fids[0] > 0


def test_fid_1d_gaussians_by_hand() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 500), rng.normal(-0.5, 0.7, 300)
    want = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a[:, None], b[:, None]) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)  # 1-D arrays are one feature


def test_kid_by_hand_on_a_tiny_set() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 0.5
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=100)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    # several subsets of sets no larger than subset_size: half-size subsets, so the error bar is not a false 0
    _, std = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    assert std > 0.01


def test_kid_zero_for_one_distribution_and_positive_for_two() -> None:
    a, b = gaussian(600, seed=1), gaussian(600, seed=2)
    mean, se = kernel_inception_distance(a, b, subsets=50, subset_size=200)
    assert se > 0
    assert abs(mean) < 2 * se, (mean, se)
    mean, se = kernel_inception_distance(a, gaussian(600, seed=3, shift=1.0), subsets=50, subset_size=200)
    assert mean > 5 * se > 0, (mean, se)


def test_precision_recall_density_coverage_limits() -> None:
    a = gaussian(400)
    assert precision_recall(a, a, k=3) == (1.0, 1.0)
    density, coverage = density_coverage(a, a, k=5)
    # Each real ball holds its centre and its 5 neighbours (the 5th on the boundary, up to round-off).
    assert 1.15 < density <= 6 / 5
    assert coverage == 1.0
    far = a + 100.0
    assert precision_recall(a, far) == (0.0, 0.0)
    assert density_coverage(a, far) == (0.0, 0.0)


def test_mode_dropping_lowers_recall_and_coverage_not_precision() -> None:
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + 20])
    fake = rng.normal(size=(300, 4))  # only the first mode
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    assert precision > 0.9 and 0.3 < recall < 0.55
    assert density > 0.7 and 0.3 < coverage < 0.55


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(UserError, match="width"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UserError, match="k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(UserError, match="28×28 grey.*Inception"):
        sample_quality(np.zeros((4, 32, 32)), np.zeros((4, 32, 32)))
    with pytest.raises(UserError, match="28×28 grey"):
        sample_quality(np.zeros((4, 3, 28, 28)), np.zeros((4, 3, 28, 28)))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        image_features(np.full((4, 28, 28), -1.0))


def test_shipped_net_loads_and_hash_is_checked(tmp_path) -> None:
    path = feature_net_path()
    assert path.stat().st_size < 500_000
    net = load_feature_net()
    assert load_feature_net() is net  # cached
    assert len(FEATURE_NET_SHA256) == 64
    copy = tmp_path / "net.safetensors"
    shutil.copyfile(path, copy)
    assert load_feature_net(copy) is not net  # an explicit path is loaded (and checked) afresh
    blob = bytearray(copy.read_bytes())
    blob[-1] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="SHA-256"):
        load_feature_net(copy)
    with pytest.raises(UserError, match="cannot read"):
        load_feature_net(tmp_path / "missing.safetensors")
    f = image_features(np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    assert f.shape == (3, 128) and np.isfinite(f).all()


@pytest.fixture(scope="module")
def mnist():
    require_data("mnist", "t10k-images-idx3-ubyte.gz")
    from latentforge.data import load_data

    return load_data("mnist")


def test_mnist_test_images_score_far_better_than_noise(mnist) -> None:
    rng = np.random.default_rng(0)
    train = mnist.train.x[rng.choice(len(mnist.train.x), 1000, replace=False)]  # uint8 is accepted
    test = mnist.test.x[:500]
    noise = rng.random((500, 28, 28), dtype=np.float32)
    real, fake = sample_quality(train, test), sample_quality(train, noise)
    assert set(real) == {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert real["fid"] * 20 < fake["fid"], (real, fake)
    assert real["kid"] * 20 < fake["kid"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6 and real["coverage"] > 0.6
    assert fake["precision"] < 0.1 and fake["coverage"] < 0.1
    # Noisier digits score worse, step by step.
    f_train = image_features(train)
    x = test.astype(np.float32) / 255
    fids = [frechet_distance(f_train, image_features(np.clip(x + s * rng.normal(size=x.shape), 0, 1)))
            for s in (0.1, 0.3, 0.6)]
    assert real["fid"] < fids[0] < fids[1] < fids[2] < fake["fid"], fids


def test_reference_floors(mnist) -> None:
    floors = reference_floors(mnist.train.x, mnist.test.x, n=500)
    assert 0 < floors["fid_floor"] * 20 < floors["fid_noise"], floors


class TinyFeatures(torch.nn.Module):
    """Stands in for Inception: same call contract (uint8 (N, 3, H, W), return_features=True)."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise ValueError("expected uint8 RGB")
        x = img.float() / 255
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([x.mean((2, 3)), x.std((2, 3)), pooled], 1)


@pytest.fixture
def tiny_net(tmp_path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.jit.script(TinyFeatures()).save(str(path))
    return path


def test_torchscript_features_follow_the_inception_contract(tiny_net) -> None:
    extractor = resolve_features(str(tiny_net))
    assert extractor.name.startswith("tiny-") and len(extractor.name) == len("tiny-") + 8  # name + content hash
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (7, 20, 20), dtype=np.uint8)
    f = image_features(grey, extractor=extractor, batch_size=3)
    by_hand = TinyFeatures()(torch.from_numpy(grey)[:, None].repeat(1, 3, 1, 1), True).double().numpy()
    np.testing.assert_allclose(f, by_hand, rtol=1e-6)
    # any image size and colour, which the shipped 28×28 net refuses
    rgb = rng.random((40, 3, 32, 32), dtype=np.float32)
    q_same = sample_quality(rgb, rgb, extractor=extractor)
    q_dark = sample_quality(rgb, rgb * 0.5, extractor=extractor)
    assert q_same["fid"] < 1e-6 < q_dark["fid"]
    assert q_same["precision"] == 1.0 and q_dark["precision"] < 0.5
    floors = reference_floors(rgb, rgb[::-1], n=40, extractor=extractor)
    assert floors["fid_floor"] < 1e-6 < floors["fid_noise"]
    with pytest.raises(UserError, match="1 or 3 channels"):
        image_features(np.zeros((4, 2, 8, 8)), extractor=extractor)


def test_inception_is_found_locally_or_explained(tiny_net, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LATENTFORGE_INCEPTION", raising=False)
    monkeypatch.setenv("LATENTFORGE_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="inception-2015-12-05.pt.*never downloads"):
        resolve_features("inception")
    monkeypatch.setenv("LATENTFORGE_INCEPTION", str(tiny_net))
    assert resolve_features("inception").name == "inception"
    assert resolve_features("mnist") is None and resolve_features(None) is None
    with pytest.raises(UserError, match="not found"):
        resolve_features(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    with pytest.raises(UserError, match="not a TorchScript network"):
        resolve_features(str(junk))


def test_evaluate_cli_with_a_torchscript_feature_space(digits_run, tiny_net, tmp_path) -> None:
    """8×8 digits get no sample quality in the shipped net's space, but do in any TorchScript one."""
    import json

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    default = json.loads(lf("evaluate", str(run), "--k", "20", "--iwae-n", "30", "--json").stdout)["test"]
    assert "fid" not in default and "recon_bce" in default
    assert default["iwae_n"] == 30 and default["iwae_k"] == 20
    r = lf("evaluate", str(run), "--k", "0", "--json", "--features", str(tiny_net))
    assert r.returncode == 0, r.stderr
    test = json.loads(r.stdout)["test"]
    assert test["quality_features"].startswith("tiny-") and test["fid"] > 0 and 0 <= test["coverage"] <= 1
    r = lf("evaluate", str(run), "--features", str(tmp_path / "nope.pt"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


class BrokenFeatures(torch.nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.float().flatten(1) @ torch.ones(5, 2)  # wrong width for any real image


def test_a_feature_net_that_fails_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "broken.pt"
    torch.jit.script(BrokenFeatures()).save(str(path))
    extractor = resolve_features(str(path))
    with pytest.raises(UserError, match="broken.pt failed on images shaped"):
        image_features(np.zeros((3, 1, 8, 8)), extractor=extractor)


def test_nvidia_file_name_is_inception_however_reached(tiny_net, tmp_path) -> None:
    named = tmp_path / "inception-2015-12-05.pt"
    shutil.copyfile(tiny_net, named)
    assert resolve_features(str(named)).name == "inception"


def test_sample_quality_applies_only_where_it_can(tiny_net) -> None:
    from latentforge.data import load_data
    from latentforge.metrics.evaluate import quality_skip_reason
    from latentforge.models import build_model

    digits = load_data("digits").test
    vae = build_model("vae", input_shape=[1, 8, 8], latent_dim=2, hidden=[8])
    ae = build_model("ae", input_shape=[1, 8, 8], latent_dim=2, hidden=[8])
    assert "28×28" in quality_skip_reason(vae, digits)  # the shipped net
    assert quality_skip_reason(vae, digits, resolve_features(str(tiny_net))) is None
    assert "samples" in quality_skip_reason(ae, digits, resolve_features(str(tiny_net)))  # an AE draws none


def test_conditional_models_are_scored_on_samples_of_the_test_images_classes(tiny_net) -> None:
    from latentforge.data import load_data
    from latentforge.metrics.evaluate import quality_skip_reason, sample_quality_of
    from latentforge.models import build_model

    digits = load_data("digits").test
    cvae = build_model("cvae", input_shape=[1, 8, 8], latent_dim=2, hidden=[8], n_classes=10)
    features = resolve_features(str(tiny_net))
    assert quality_skip_reason(cvae, digits, features) is None
    calls = []
    draw = cvae.sample
    cvae.sample = lambda n, *, label, seed: calls.append((label, n)) or draw(n, label=label, seed=seed)
    q = sample_quality_of(cvae.eval(), digits, n=300, features=features)
    drawn = np.zeros(10, int)
    for label, n in calls:
        drawn[label] += n
    assert (drawn == np.bincount(digits.y[:300].astype(int), minlength=10)).all()  # the test images' class mix
    assert np.isfinite(q["fid"]) and q["quality_n"] == 300

    unlabelled = digits.subset(np.arange(50))
    unlabelled.y = None
    assert "no labels" in quality_skip_reason(cvae, unlabelled, features)
    wrong = digits.subset(np.arange(50))
    wrong.y = np.full(50, 12)
    assert "outside the model's classes 0..9" in quality_skip_reason(cvae, wrong, features)
    fractional = digits.subset(np.arange(50))
    fractional.y = np.full(50, 1.5)
    assert "whole-number class labels" in quality_skip_reason(cvae, fractional, features)
    late = digits.subset(np.arange(50))
    late.y = np.where(np.arange(50) < 40, 1, 12)  # beyond the rows the default check reads: still refused
    with pytest.raises(UserError, match="outside the model's classes"):
        sample_quality_of(cvae, late, n=50, features=features)


def test_kid_error_bar_does_not_vanish_just_above_the_subset_size() -> None:
    a, b = gaussian(101, seed=3), gaussian(101, seed=4)
    _, small = kernel_inception_distance(a[:100], b[:100], subsets=50, subset_size=100)
    _, just_above = kernel_inception_distance(a, b, subsets=50, subset_size=100)
    assert just_above > small / 3  # both from half-size subsets, not a near-whole set drawn 50 times
