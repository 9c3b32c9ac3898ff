"""What the autoencoder family shares: feature scaling (standard and robust), the change of variables
that keeps the robust likelihood a density in data units, and the trimmed training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentforge.data import Dataset
from latentforge.models import build_model
from latentforge.models.body import feature_scaling
from latentforge.models.base import Batch


def test_robust_scaling_uses_median_and_iqr_with_fallbacks() -> None:
    rng = np.random.default_rng(0)
    skewed = np.r_[rng.normal(0, 1, 950), np.full(50, 1e4)]  # 5 % huge values inflate the std, not the IQR
    spike = np.r_[np.zeros(900), rng.normal(0, 1, 100)]  # mostly one value: IQR 0 → std
    const = np.full(1000, 3.0)
    x = np.c_[skewed, spike, const]
    shift, scale = feature_scaling(x, robust=True)
    q1, q3 = np.percentile(skewed, [25, 75])
    np.testing.assert_allclose(shift.numpy(), [np.median(skewed), 0.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(scale.numpy(), [(q3 - q1) / 1.349, spike.std(), 1.0], rtol=1e-5)
    assert 0.8 < scale[0] < 1.3 and feature_scaling(x)[1][0] > 1000  # the standard scale is ruined by the 5 %


def _table_vae(scaling: str) -> torch.nn.Module:
    rng = np.random.default_rng(1)
    data = Dataset(np.exp(rng.normal(size=(500, 1))).astype(np.float32), name="lognormal")
    model = build_model("vae", input_shape=[1], latent_dim=1, hidden=[8], likelihood="gaussian", scaling=scaling)
    model.prepare(data)
    with torch.no_grad():
        model.log_scale.fill_(-0.3)
    return model


@pytest.mark.parametrize("scaling", ["standard", "robust"])
def test_likelihood_is_a_density_in_data_units(scaling: str) -> None:
    """∫ p(x | decoder output) dx = 1 over the original units, asinh change of variables included."""
    model = _table_vae(scaling)
    scale, shift = float(model.x_scale), float(model.x_shift)
    # A grid dense near the centre and reaching far into the asinh tails (±sinh(12) scales).
    xs = np.sinh(np.linspace(-12, 12, 400_001)) if scaling == "robust" else np.linspace(-12, 12, 400_001)
    x = torch.from_numpy(xs * scale + shift).float()[:, None]
    out = torch.full((len(x), 1), 0.4)
    with torch.no_grad():
        density = torch.exp(-model.recon_nll(out, x)).double().numpy()
    assert np.trapezoid(density, x[:, 0].double().numpy()) == pytest.approx(1.0, abs=2e-3)


def test_robust_standardise_round_trips_and_compresses_tails() -> None:
    model = _table_vae("robust")
    x = torch.tensor([[0.5], [1.0], [3.0], [1e4]])
    u = model.standardise(x)
    torch.testing.assert_close(model.unstandardise(u), x, rtol=1e-4, atol=1e-5)
    assert u[-1, 0] < 30  # 10⁴ is thousands of IQRs out; asinh keeps it at a log scale
    xs = (x - model.x_shift) / model.x_scale
    assert torch.allclose(u[:3], xs[:3], rtol=0.1, atol=0.01)  # within a few IQRs of the median it is close to plain robust scaling


def test_trimmed_mean_drops_the_worst_share() -> None:
    model = build_model("ae", input_shape=[3], latent_dim=1, hidden=[4], likelihood="gaussian", trim=0.25)
    losses = torch.tensor([1.0, 2.0, 3.0, 100.0])
    assert float(model.trimmed_mean(losses)) == pytest.approx(2.0)
    plain = build_model("ae", input_shape=[3], latent_dim=1, hidden=[4], likelihood="gaussian")
    assert float(plain.trimmed_mean(losses)) == pytest.approx(26.5)


@pytest.mark.parametrize("kwargs,match", [({"scaling": "minmax"}, "scaling"), ({"trim": 1.0}, "trim"),
                                           ({"trim": -0.1}, "trim")])
def test_bad_scaling_or_trim_is_refused(kwargs, match) -> None:
    for name in ("vae", "ae", "dae", "beta-vae", "iwae"):
        with pytest.raises(ValueError, match=match):
            build_model(name, input_shape=[3], likelihood="gaussian", **kwargs)


def test_the_objective_is_trimmed_and_the_likelihood_is_not() -> None:
    """The loss (training and held-out alike) drops the worst rows; the logged recon/KL terms do not."""
    torch.manual_seed(0)
    model = build_model("vae", input_shape=[3], latent_dim=1, hidden=[4], likelihood="gaussian", trim=0.5)
    x = torch.randn(8, 3)
    x[0] += 50.0  # one row the model finds very unlikely
    for training in (True, False):
        model.train(training)
        torch.manual_seed(1)
        rec, kl = model.terms(x)
        torch.manual_seed(1)
        out = {k: v.detach() for k, v in model.loss(Batch(x)).items()}
        per = (rec + kl).detach()
        assert float(out["loss"]) == pytest.approx(float(per.sort().values[:4].mean()), rel=1e-5)
        assert float(out["recon"]) == pytest.approx(float(rec.detach().mean()), rel=1e-5)
        assert float(out["loss"]) < float(per.mean())


def test_trimmed_vae_leaves_the_fused_fast_path() -> None:
    from latentforge.models.vae_step import supports_fused_step

    kw = dict(input_shape=[784], latent_dim=4, hidden=[32], arch="mlp")
    assert supports_fused_step(build_model("vae", **kw))
    assert not supports_fused_step(build_model("vae", trim=0.1, **kw))


def test_robust_scaling_is_for_gaussian_models_only() -> None:
    with pytest.raises(ValueError, match="tables"):
        build_model("vae", input_shape=[784], likelihood="bernoulli", scaling="robust")


def test_robust_likelihood_stays_finite_for_huge_values() -> None:
    model = _table_vae("robust")
    x = torch.tensor([[1e20], [-1e30]])
    with torch.no_grad():
        assert torch.isfinite(model.recon_nll(torch.zeros(2, 1), x)).all()
        assert torch.isfinite(model.unstandardise(torch.tensor([[100.0], [-100.0]]))).all()


def test_robust_location_scale_gives_no_weight_to_flat_scores() -> None:
    from latentforge.models.body import robust_location_scale

    scores = torch.stack([torch.arange(100.0), torch.full((100,), 7.0)], 1)
    shift, scale = robust_location_scale(scores)
    assert float(shift[0]) == pytest.approx(49.5) and float(scale[0]) == pytest.approx(49.5)
    assert float(shift[1]) == 7.0 and torch.isinf(scale[1])
    assert float(((torch.tensor([3.0, 9.0]) - shift) / scale)[1]) == 0.0
