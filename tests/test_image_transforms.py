"""Random image changes while training (``--augment``): the spec, the changes themselves, and the trainer's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentforge.data import load_data
from latentforge.data import Batcher
from latentforge.data.image_transforms import ImageAugment, parse_image_augment
from latentforge.errors import UserError
from latentforge.models import build_model
from latentforge.settings import SettingError
from latentforge.train import TrainConfig, fit


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 9, 11, generator=torch.Generator().manual_seed(seed))


def test_spec_is_parsed_into_its_changes() -> None:
    assert parse_image_augment(None) is None and parse_image_augment("none") is None
    assert parse_image_augment("shift:2, rotate:10,flip") == ImageAugment(shift=2.0, rotate=10.0, flip=True)
    assert parse_image_augment("scale:0.1") == ImageAugment(scale=0.1)


@pytest.mark.parametrize("spec, message", [
    ("twist:3", "unknown change 'twist'"),
    ("shift:x", "shift needs a number, e.g. shift:2"),
    ("shift", "shift needs a number"),
    ("rotate:200", "rotate must be between 0 and 180"),
    ("shift:-1", "shift must be between 0 and 64"),
    ("scale:nan", "scale must be between"),
    ("flip:1", "flip takes no value"),
    ("shift:1,shift:2", "shift is given twice"),
])
def test_bad_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_image_augment(spec)
    with pytest.raises(SettingError, match=message):  # and at the training settings, before any work
        TrainConfig(augment=spec)


def test_no_change_leaves_images_as_they_are() -> None:
    x = images()
    assert torch.allclose(ImageAugment()(x), x, atol=1e-6)


def test_flip_mirrors_about_half_the_images_exactly() -> None:
    x = images(400)
    out = ImageAugment(flip=True)(x, torch.Generator().manual_seed(0))
    mirrored = torch.isclose(out, x.flip(-1), atol=1e-6).flatten(1).all(1)
    unchanged = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    assert bool((mirrored | unchanged).all())
    assert 150 < int(mirrored.sum()) < 250


def test_shift_moves_a_dot_by_at_most_the_shift() -> None:
    x = torch.zeros(500, 1, 15, 15)
    x[:, :, 7, 7] = 1.0
    out = ImageAugment(shift=2)(x, torch.Generator().manual_seed(1))
    ys, xs = torch.meshgrid(torch.arange(15.0), torch.arange(15.0), indexing="ij")
    mass = out.sum((1, 2, 3))
    assert torch.allclose(mass, torch.ones(500), atol=1e-4)  # bilinear moves the dot, keeps its grey level
    cy, cx = (out[:, 0] * ys).sum((1, 2)) / mass, (out[:, 0] * xs).sum((1, 2)) / mass
    assert float((cy - 7).abs().max()) <= 2 + 1e-4 and float((cx - 7).abs().max()) <= 2 + 1e-4
    assert float((cx - 7).abs().max()) > 1.5  # and it does use the range


def test_rotation_keeps_a_centred_disc_and_turns_a_bar() -> None:
    ys, xs = torch.meshgrid(torch.arange(21.0) - 10, torch.arange(21.0) - 10, indexing="ij")
    bar = ((ys.abs() <= 1) & (xs.abs() <= 8)).float().expand(200, 1, 21, 21).clone()
    out = ImageAugment(rotate=45)(bar, torch.Generator().manual_seed(2))
    # the bar's angle, from its second moments, lies within ±45° and spreads over the range
    m = out[:, 0]
    cxx, cyy, cxy = (m * xs * xs).sum((1, 2)), (m * ys * ys).sum((1, 2)), (m * xs * ys).sum((1, 2))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy))
    assert float(angle.abs().max()) <= 46 and float(angle.abs().max()) > 35


def test_same_generator_state_gives_the_same_changes() -> None:
    aug, x = ImageAugment(shift=2, rotate=10, scale=0.1, flip=True), images()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_processes_change_the_whole_batch_alike_and_keep_one_order() -> None:
    x, y = images(11), torch.arange(11)
    aug = ImageAugment(shift=1, rotate=10)

    def epochs(shard):  # odd batches: the processes' shares differ in size
        b = Batcher(x, y, batch_size=5, generator=torch.Generator().manual_seed(3), augment=aug, shard=shard)
        return [list(b) for _ in range(3)]

    whole, rank0, rank1 = epochs((0, 1)), epochs((0, 2)), epochs((1, 2))
    for e in range(3):
        for (xb, yb), (x0, y0), (x1, y1) in zip(whole[e], rank0[e], rank1[e]):
            assert torch.equal(x0, xb[0::2]) and torch.equal(x1, xb[1::2])  # each keeps its rows of one change
            assert torch.equal(y0, yb[0::2]) and torch.equal(y1, yb[1::2])
        served = torch.cat([yb for _, yb in whole[e]])
        assert sorted(served.tolist()) == list(range(11))  # every row once an epoch


def test_non_square_images_turn_without_shearing() -> None:
    h, w = 21, 41
    ys, xs = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    bar = ((ys.abs() <= 1) & (xs.abs() <= 8)).float()[None, None].expand(300, 1, h, w).clone()
    out = ImageAugment(rotate=60)(bar, torch.Generator().manual_seed(4))[:, 0]
    mass = out.sum((1, 2))
    cxx, cyy, cxy = ((out * a * b).sum((1, 2)) / mass for a, b in ((xs, xs), (ys, ys), (xs, ys)))
    longest = (cxx + cyy) / 2 + (((cxx - cyy) / 2) ** 2 + cxy**2).sqrt()  # the bar's length², whatever its angle
    assert float(longest.max() / longest.min()) < 1.1


def test_low_precision_batches_keep_their_dtype() -> None:
    x = images().bfloat16()
    assert ImageAugment(shift=1)(x, torch.Generator().manual_seed(0)).dtype == torch.bfloat16
    assert parse_image_augment("shift:0,rotate:0") is None  # nothing to change


def test_training_with_augment_is_reproducible_and_differs_from_without(digits) -> None:
    def trained(augment):
        torch.manual_seed(0)
        model = build_model("ae", input_shape=[1, 8, 8], latent_dim=4, hidden=[32])
        fit(model, digits.train, None, TrainConfig(epochs=2, seed=0, device="cpu", compile="off", progress=False,
                                                   augment=augment))
        return model.state_dict()

    a, b, plain = trained("shift:1,rotate:10"), trained("shift:1,rotate:10"), trained(None)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)


def test_augment_is_refused_for_tables_and_with_binarize() -> None:
    table = load_data("digits").train
    rows = table.subset(np.arange(200))
    rows.x = rows.floats().reshape(200, -1)
    model = build_model("ae", input_shape=[64], latent_dim=2, hidden=[8])
    with pytest.raises(UserError, match="not \\(channels, height, width\\) images"):
        fit(model, rows, None, TrainConfig(epochs=1, device="cpu", progress=False, augment="shift:1"))
    with pytest.raises(SettingError, match="drop --augment or --binarize"):
        TrainConfig(augment="shift:1", binarize="dynamic")


def test_estimators_take_augment(digits) -> None:
    from latentforge.estimators import AutoEncoder, VAE

    x = digits.train.floats()[:300]
    est = AutoEncoder(latent_dim=2, hidden=(16,), epochs=1, augment="rotate:10", random_state=0, device="cpu").fit(x)
    assert est.get_params()["augment"] == "rotate:10" and est.transform(x).shape == (300, 2)
    with pytest.raises(UserError, match="augment unknown change 'wobble'"):
        VAE(epochs=1, augment="wobble", device="cpu").fit(x)


def test_resume_with_augment_equals_uninterrupted(digits, tmp_path) -> None:
    def model():
        torch.manual_seed(0)
        return build_model("ae", input_shape=[1, 8, 8], latent_dim=4, hidden=[32])

    def cfg(epochs):
        return TrainConfig(epochs=epochs, seed=0, device="cpu", compile="off", progress=False, augment="shift:1,flip")

    straight = model()
    fit(straight, digits.train, None, cfg(3))
    first = model()
    fit(first, digits.train, None, cfg(2), run_dir=tmp_path)
    resumed = model()
    fit(resumed, digits.train, None, cfg(3), run_dir=tmp_path, resume=True)  # the changes' random state, too
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_trained_with_augment_shows_the_changes(tmp_path, capsys) -> None:
    from PIL import Image

    from latentforge.cli import main

    out = tmp_path / "run"
    assert main(["train", "ae", "--data", "digits", "--epochs", "1", "--augment", "shift:1,rotate:15",
                 "--out", str(out)]) == 0
    picture = Image.open(out / "augmentation.png")
    assert picture.size[0] > 8 * 28 and picture.size[1] > 8 * 28  # 8 rows of 8 cells, each ≥ 28 px
    assert "Training images changed" in (out / "report.html").read_text()
    # --resume compares the changes, not how they were written
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--augment", "rotate:15, shift:1"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--augment", "shift:2,rotate:15"]) == 2
    assert "--augment shift:2,rotate:15 (the run has shift:1,rotate:15)" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["train", "ae", "--data", "digits", "--epochs", "1", "--out", str(plain)]) == 0
    assert not (plain / "augmentation.png").exists()


def test_preview_puts_each_image_first_in_its_row() -> None:
    from latentforge.data.image_transforms import preview

    x = images(3)
    out = preview(x, ImageAugment(rotate=20), changes=4, seed=0)
    assert out.shape == (15, 1, 9, 11)
    assert torch.equal(out[0], x[0]) and torch.equal(out[5], x[1]) and torch.equal(out[10], x[2])
    assert not torch.allclose(out[1], x[0])
