"""Generative augmentation: exactly N samples per class in the data's layout, and filters that drop planted
off-manifold or wrong-class samples (a stub conditional model that plants them, so the test is about the filters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentforge.checkpoint import save_model
from latentforge.data import Dataset
from latentforge.errors import UserError
from latentforge.models import model_class
from latentforge.tasks.augment import Augmented, augment_model, check_conditional, stored

from conftest import lf


def bars(n: int, vertical: bool, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) black images with one white bar 3 px wide at a random place (a stand-in for a real class)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.float32)
    for i, p in enumerate(rng.integers(4, 21, size=n)):
        if vertical:
            x[i, 0, 4:24, p:p + 3] = 1.0
        else:
            x[i, 0, p:p + 3, 4:24] = 1.0
    return x


def real_data(n: int = 40) -> Dataset:
    x = np.concatenate([bars(n, False, 0), bars(n, True, 1)])
    return Dataset(x=(x * 255).astype(np.uint8), y=np.repeat([0, 1], n), scale=255.0, name="bars")


class Planter(torch.nn.Module):
    """A 'conditional model' whose class-c samples are copies of real class-c rows, with a share of them replaced by
    planted rows: uniform noise (``plant="noise"``) or copies of the other class (``plant="other"``)."""

    uses_labels = True
    registry_name = "planter"

    def __init__(self, real: Dataset, plant: str, share: float = 0.5) -> None:
        super().__init__()
        self.real, self.plant, self.share, self.n_classes = real, plant, share, 2
        self.config = {"input_shape": [1, 28, 28]}
        self.planted = 0  # how many planted rows were handed out

    def sample(self, n: int, *, label: int | None = None, seed: int | None = None) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        pool = self.real.floats()[self.real.y == label]
        x = pool[rng.integers(0, len(pool), size=n)]
        bad = rng.random(n) < self.share
        if self.plant == "noise":
            x[bad] = rng.random((int(bad.sum()), 1, 28, 28), dtype=np.float32)
        else:
            other = self.real.floats()[self.real.y != label]
            x[bad] = other[rng.integers(0, len(other), size=int(bad.sum()))]
        self.planted += int(bad.sum())
        return torch.from_numpy(x)


def is_noise(x: np.ndarray) -> np.ndarray:
    """Bar images are black and white; uniform noise is mostly grey."""
    grey = (x > 20) & (x < 235)
    return grey.reshape(len(x), -1).mean(1) > 0.5


def test_exactly_n_per_class_with_labels_in_the_data_layout() -> None:
    real = real_data()
    out = augment_model(Planter(real, "noise", share=0.0), None, per_class=7, scale=255.0, value_range=[0.0, 1.0])
    assert out.images.shape == (14, 28, 28) and out.images.dtype == np.uint8
    assert out.labels.shape == (14, 1) and out.labels.dtype == np.int64
    assert np.bincount(out.labels[:, 0]).tolist() == [7, 7]
    assert out.drawn == {0: 7, 1: 7} and out.dropped == {0: 0, 1: 0}
    # the label is what was asked for: class 0 rows hold horizontal bars, class 1 rows vertical ones
    rows_lit = (out.images > 128).any(2).sum(1)  # lit rows per image: 3 for horizontal bars, 20 for vertical ones
    assert (rows_lit[out.labels[:, 0] == 0] == 3).all() and (rows_lit[out.labels[:, 0] == 1] == 20).all()


def test_same_seed_same_samples() -> None:
    real = real_data()
    a = augment_model(Planter(real, "noise"), real, per_class=5, filter="realism", seed=3, scale=255.0)
    b = augment_model(Planter(real, "noise"), real, per_class=5, filter="realism", seed=3, scale=255.0)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_realism_filter_drops_planted_noise() -> None:
    real = real_data()
    model = Planter(real, "noise", share=0.5)
    out = augment_model(model, real, per_class=20, filter="realism", scale=255.0)
    assert np.bincount(out.labels[:, 0]).tolist() == [20, 20]
    assert not is_noise(out.images).any()
    # every planted row was dropped, and nothing else (copies of real rows lie on the manifold)
    assert sum(out.dropped.values()) == model.planted > 0


def test_realism_filter_drops_the_other_class() -> None:
    real = real_data()
    model = Planter(real, "other", share=0.3)
    out = augment_model(model, real, per_class=20, filter="realism", scale=255.0)
    rows_lit = (out.images > 128).any(2).sum(1)
    assert (rows_lit == np.where(out.labels[:, 0] == 0, 3, 20)).all()
    assert sum(out.dropped.values()) == model.planted > 0


def test_confidence_filter_drops_wrong_class_samples() -> None:
    real = real_data()
    model = Planter(real, "other", share=0.3)
    out = augment_model(model, real, per_class=20, filter="confidence", scale=255.0)
    rows_lit = (out.images > 128).any(2).sum(1)
    assert (rows_lit == np.where(out.labels[:, 0] == 0, 3, 20)).all()
    assert sum(out.dropped.values()) == model.planted > 0


def test_a_filter_nothing_passes_stops_with_a_clear_error() -> None:
    real = real_data()
    with pytest.raises(UserError, match=r"class 0: only 0 of 5 samples passed the realism filter in \d+ drawn"):
        augment_model(Planter(real, "noise", share=1.0), real, per_class=5, filter="realism", max_draws=3)


def test_bad_requests_are_refused() -> None:
    real = real_data()
    with pytest.raises(UserError, match="--filter must be one of realism, confidence"):
        augment_model(Planter(real, "noise"), real, per_class=5, filter="sharpness")
    with pytest.raises(UserError, match="--per-class must be"):
        augment_model(Planter(real, "noise"), real, per_class=0)
    small = real.subset(np.r_[0:3, 40:80])
    with pytest.raises(UserError, match="more than 3 real rows per class; class 0 has 3"):
        augment_model(Planter(real, "noise"), small, per_class=5, filter="realism")


def test_unconditional_models_are_refused() -> None:
    vae = model_class("vae")(input_shape=(1, 28, 28))
    with pytest.raises(UserError, match="augment needs a conditional model.*holds a vae"):
        check_conditional(vae, "runs/x")


def test_stored_units_and_layouts() -> None:
    x = np.linspace(-0.2, 1.2, 2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    rgb = stored(x, 255.0, [0.0, 1.0])
    assert rgb.shape == (2, 2, 2, 3) and rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255
    table = stored(np.array([[-3.0, 0.5], [9.0, 1.0]], np.float32), 1.0, [-1.0, 2.0])
    assert table.dtype == np.float32 and table.min() == -1.0 and table.max() == 2.0


def test_augmented_saves_an_npz(tmp_path) -> None:
    out = Augmented(images=np.zeros((4, 28, 28), np.uint8), labels=np.array([[0], [0], [1], [1]]))
    z = np.load(out.save(tmp_path / "aug.npz"))
    assert sorted(z.files) == ["images", "labels"] and z["labels"].tolist() == [[0], [0], [1], [1]]


def test_cli_augment_on_a_cvae_run(tmp_path) -> None:
    run = tmp_path / "run"
    r = lf("train", "cvae", "--data", "digits", "--epochs", "1", "--eval-k", "0", "--out", str(run))
    assert r.returncode == 0, r.stderr
    r = lf("augment", str(run), "--per-class", "6", "--out", str(tmp_path / "bad.npz"), "--filter", "sharp")
    assert r.returncode == 2 and "--filter must be one of realism, confidence" in r.stderr
    r = lf("augment", str(run), "--per-class", "3", "--out", str(tmp_path / "plain.npz"))
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / "plain.npz")
    # digits are stored as 0–16 floats (scale 16): samples come back in those units, as float32 (n, 8, 8)
    assert z["images"].shape == (30, 8, 8) and z["images"].dtype == np.float32
    assert 0.0 <= z["images"].min() and z["images"].max() <= 16.0
    assert np.bincount(z["labels"][:, 0]).tolist() == [3] * 10


def test_cli_refuses_an_unconditional_run(tmp_path) -> None:
    run = tmp_path / "run"
    save_model(model_class("ae")(input_shape=(1, 8, 8)), run)
    r = lf("augment", str(run), "--per-class", "3", "--out", str(tmp_path / "a.npz"))
    assert r.returncode == 2 and "augment needs a conditional model" in r.stderr and "Traceback" not in r.stderr
