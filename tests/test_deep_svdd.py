"""The Deep SVDD model: bias-free network, centre, and the optional autoencoder pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentforge.data import Dataset
from latentforge.models import build_model
from latentforge.models.deep_svdd import _mirror_decoder
from latentforge.models.base import Batch


def _table(n: int = 400, d: int = 6, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) @ rng.normal(size=(2, d)) + 0.05 * rng.normal(size=(n, d))
    return Dataset(x.astype(np.float32), name="blob")


@pytest.mark.parametrize("shape,channels", [((1, 28, 28), (8, 4)), ((3, 30, 30), (8, 4)), ((1, 9, 9), (4,))])
def test_mirror_decoder_gives_back_the_input_shape(shape, channels) -> None:
    model = build_model("deep-svdd", input_shape=list(shape), latent_dim=16, arch="conv", channels=list(channels))
    dec = _mirror_decoder(model.nets[0], shape, 16, "conv")
    out = dec(model.embed(torch.rand(5, *shape)))
    assert out.shape == (5, *shape) and ((out >= 0) & (out <= 1)).all()


def test_pretraining_learns_to_reconstruct_and_leaves_the_saved_state_alone() -> None:
    ds = _table()
    torch.manual_seed(0)
    plain = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=1)
    plain.prepare(ds)
    torch.manual_seed(0)
    pre = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=1, pretrain=100)
    pre.prepare(ds)
    # Rank-2 data through a 4-unit code: the reconstruction error must fall well below the variance (1).
    (losses,) = pre.pretrain_losses
    assert losses[0] > 0.5 and losses[-1] < 0.05
    assert set(pre.state_dict()) == set(plain.state_dict())  # the decoder is not part of the model
    assert not torch.allclose(pre.center, plain.center)  # c comes from the pretrained network
    assert torch.isfinite(pre.center).all() and (pre.center.abs() >= pre.eps).all()


def test_pretraining_is_reproducible_with_the_seed() -> None:
    ds = _table()
    centres = []
    for _ in range(2):
        torch.manual_seed(3)
        m = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=2, pretrain=3)
        m.prepare(ds)
        centres.append(m.center.clone())
    torch.testing.assert_close(centres[0], centres[1])


def test_negative_pretrain_is_refused() -> None:
    with pytest.raises(ValueError, match="pretrain"):
        build_model("deep-svdd", input_shape=[6], pretrain=-1)


def test_several_networks_are_scored_by_their_standardised_mean() -> None:
    from latentforge.train import TrainConfig, fit

    ds = _table()
    torch.manual_seed(0)
    model = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=3)
    fit(model, ds, None, TrainConfig(epochs=3, batch_size=64, device="cpu", progress=False))
    assert model.center.shape == (3, 4) and not torch.allclose(model.center[0], model.center[1])
    x = torch.from_numpy(ds.x)
    with torch.no_grad():
        dist = model.distances(x)  # (n, 3), one column per network
    q1, med, q3 = np.quantile(dist.numpy(), [0.25, 0.5, 0.75], axis=0)
    np.testing.assert_allclose(model.score_shift.numpy(), med, rtol=1e-4)
    np.testing.assert_allclose(model.score_scale.numpy(), q3 - q1, rtol=1e-4)
    by_hand = ((dist.numpy() - med) / (q3 - q1)).mean(1)
    np.testing.assert_allclose(model.anomaly_score(x).numpy(), by_hand, rtol=1e-4, atol=1e-5)


def test_a_single_network_is_scored_by_its_raw_distance() -> None:
    ds = _table()
    model = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=1)
    model.prepare(ds)
    model.on_epoch_end(1, ds, None)
    x = torch.from_numpy(ds.x[:10])
    torch.testing.assert_close(model.anomaly_score(x), model.distances(x)[:, 0])


def test_zero_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="n_nets"):
        build_model("deep-svdd", input_shape=[6], n_nets=0)


def test_soft_boundary_sets_one_radius_per_network() -> None:
    ds = _table()
    model = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=2,
                        objective="soft-boundary", nu=0.2)
    model.prepare(ds)
    model.on_epoch_end(1, ds, None)  # first epoch: the radius stays 0
    assert (model.radius == 0).all()
    model.on_epoch_end(1, ds, None)
    with torch.no_grad():
        dist = model.distances(torch.from_numpy(ds.x))
    expected = torch.quantile(dist.sqrt(), 0.8, dim=0)
    torch.testing.assert_close(model.radius, expected)
    with torch.no_grad():
        assert float(model.loss(Batch(torch.from_numpy(ds.x)))["loss"]) > 0


def test_runs_saved_before_several_networks_still_load(tmp_path) -> None:
    """A run written when Deep SVDD had one network (`net.*`, centre of shape (latent,), no n_nets)."""
    from latentforge.checkpoint import CONFIG, WEIGHTS, load_model, read_json, save_model, save_tensors, write_json

    ds = _table()
    torch.manual_seed(0)
    model = build_model("deep-svdd", input_shape=[6], latent_dim=4, hidden=[16, 8], n_nets=1)
    model.prepare(ds)
    save_model(model, tmp_path)
    old_state = {k.replace("nets.0.", "net."): v for k, v in model.state_dict().items()
                 if k not in ("score_shift", "score_scale")}
    old_state["center"], old_state["radius"] = model.center[0].clone(), model.radius[0].clone()
    save_tensors(tmp_path / WEIGHTS, old_state)
    config = read_json(tmp_path / CONFIG)
    del config["model_config"]["n_nets"]
    write_json(tmp_path / CONFIG, config)
    back = load_model(tmp_path)
    x = torch.from_numpy(ds.x[:20])
    torch.testing.assert_close(back.anomaly_score(x), model.anomaly_score(x))


def test_a_detector_saved_with_one_network_reports_one_after_loading(tmp_path) -> None:
    """Settings missing from an older save come from the loaded model, not from today's defaults."""
    from latentforge.checkpoint import CONFIG, read_json, write_json
    from latentforge.detectors import DeepSVDD

    det = DeepSVDD(n_nets=1, hidden=(16, 8), latent_dim=4, epochs=2, random_state=0, device="cpu").fit(_table().x)
    det.save_pretrained(tmp_path / "det")
    config = read_json(tmp_path / "det" / CONFIG)
    del config["estimator"]["n_nets"]  # as written before n_nets existed
    write_json(tmp_path / "det" / CONFIG, config)
    back = DeepSVDD.from_pretrained(tmp_path / "det")
    assert back.get_params()["n_nets"] == 1 and len(back.model_.nets) == 1
