"""The VAE's objective, its IWAE bound, the continuous Bernoulli normaliser, and the fused step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from latentforge.data import load_data
from latentforge.models import build_model
from latentforge.models.likelihoods import cb_log_norm, cb_mean, cb_nll
from latentforge.models.vae_step import FusedVAEStep, supports_fused_step
from latentforge.train import TrainConfig, fit
from latentforge.models.base import Batch


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def vae(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("vae", input_shape=[1, 8, 8], **{"latent_dim": 8, "hidden": [64], **kw})


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_loss_terms_match_an_independent_computation(digits, beta: float) -> None:
    model = vae(beta=beta)
    x = torch.from_numpy(digits.train.floats()[:100])
    torch.manual_seed(3)
    out = model.loss(Batch(x))
    assert set(out) >= {"loss", "recon", "kl"}
    torch.testing.assert_close(out["loss"], out["recon"] + beta * out["kl"])
    with torch.no_grad():  # the same ELBO with torch.distributions and the same ε
        mu, logvar = model.encode(x)
        q = Normal(mu, torch.exp(0.5 * logvar))
        torch.manual_seed(3)
        z = mu + torch.randn_like(mu) * q.scale
        recon = -Bernoulli(logits=model.decoder(z), validate_args=False).log_prob(x.flatten(1)).sum(-1).mean()
        kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1).mean()
    torch.testing.assert_close(out["recon"], recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out["kl"], kl, rtol=1e-5, atol=1e-5)
    assert out["kl"] > 0


@pytest.fixture(scope="module")
def trained_vae(digits) -> torch.nn.Module:
    model = vae()
    fit(model, digits.train, None, TrainConfig(epochs=5, device="cpu", compile="off", progress=False))
    return model.eval()


def test_iwae_bound_is_tighter_than_the_elbo(trained_vae, digits) -> None:
    x = torch.from_numpy(digits.test.floats())
    torch.manual_seed(0)
    neg_elbo = float(torch.stack([-trained_vae.elbo(x) for _ in range(20)]).mean())  # low-noise −ELBO
    nll = {}
    for k in (1, 10, 100, 1000):
        torch.manual_seed(1)
        nll[k] = float(trained_vae.iwae_nll(x, k=k).mean())
    assert nll[1] == pytest.approx(neg_elbo, abs=0.3)  # k = 1 is the ELBO itself
    assert nll[10] < neg_elbo and nll[100] < neg_elbo
    assert nll[1] > nll[10] > nll[100] - 0.02 > nll[1000] - 0.04  # weakly decreasing in k (Burda et al. thm 1)
    assert nll[1] - nll[1000] > 0.1  # and not trivially equal


def test_iwae_nll_is_per_sample_and_chunked_consistently(trained_vae, digits) -> None:
    x = torch.from_numpy(digits.test.floats()[:20])
    torch.manual_seed(5)
    a = trained_vae.iwae_nll(x, k=40, chunk=40)
    torch.manual_seed(5)
    b = trained_vae.iwae_nll(x, k=40, chunk=7)  # same random numbers, different chunking
    assert a.shape == (20,)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- continuous Bernoulli


def test_cb_log_norm_closed_form() -> None:
    lam = torch.cat([torch.linspace(0.001, 0.49, 200), torch.linspace(0.51, 0.999, 200)]).double()
    logits = torch.log(lam) - torch.log1p(-lam)
    closed = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    torch.testing.assert_close(cb_log_norm(logits), closed, rtol=1e-9, atol=1e-9)
    half = cb_log_norm(torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(half, torch.full((3,), math.log(2.0), dtype=torch.float64))
    # across the switch to the Taylor form (|logit| < 1e-2) it stays on the closed form
    lam = 0.5 + torch.tensor([1e-6, 1e-4, 2.4e-3, 2.6e-3, -1e-4, -2.6e-3], dtype=torch.float64)
    logits = torch.log(lam) - torch.log1p(-lam)
    closed = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    torch.testing.assert_close(cb_log_norm(logits), closed, rtol=1e-10, atol=1e-10)


def test_cb_is_a_normalised_density_with_finite_gradients() -> None:
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for logit in (-6.0, -1.0, -1e-3, 0.0, 0.5, 4.0):
        l = torch.full_like(x, logit)
        density = torch.exp(-cb_nll(l[:, None], x[:, None]))
        assert float(torch.trapezoid(density, x)) == pytest.approx(1.0, abs=1e-6), logit
        mean = float(torch.trapezoid(x * density, x))
        assert float(cb_mean(torch.tensor([logit], dtype=torch.float64))) == pytest.approx(mean, abs=1e-6), logit
    logits = torch.tensor([0.0, 1e-3, -5e-3, 0.02, -30.0, 30.0], requires_grad=True)
    cb_log_norm(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- the fused training step


@pytest.mark.parametrize("hidden", [[400], [64, 32]])
@pytest.mark.parametrize("beta", [1.0, 3.0])
@pytest.mark.parametrize("batch", [128, 37])
def test_fused_step_matches_autograd(digits, hidden, beta, batch) -> None:
    ref = vae(latent_dim=20, hidden=hidden, beta=beta)
    assert supports_fused_step(ref)
    fused_model = copy.deepcopy(ref)
    step = FusedVAEStep(fused_model, torch.optim.Adam(fused_model.parameters(), lr=1e-3))
    x = torch.from_numpy(digits.train.floats()[:batch])
    torch.manual_seed(11)
    out = ref.loss(Batch(x))
    out["loss"].backward()
    torch.manual_seed(11)
    got = step(x)
    for key in ("loss", "recon", "kl"):
        torch.testing.assert_close(got[key], out[key].detach(), rtol=1e-5, atol=1e-5)
    params = dict(fused_model.named_parameters())
    for name, p in ref.named_parameters():
        assert params[name].grad is not None, name
        torch.testing.assert_close(params[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("hidden", [[400], [64, 32]])
def test_fused_bf16_step_matches_autocast(digits, hidden) -> None:
    """Under --precision bf16 the fused step computes as the generic autocast step does: same loss and gradients
    up to bf16 rounding (both round the same matmuls, in a different order of operations)."""
    ref = vae(latent_dim=20, hidden=hidden)
    ref.precision = "bf16"
    fused_model = copy.deepcopy(ref)
    assert supports_fused_step(fused_model)
    step = FusedVAEStep(fused_model, torch.optim.Adam(fused_model.parameters(), lr=1e-3))
    assert step.dtype == torch.bfloat16 and step.flat.dtype == torch.float32  # master weights stay fp32
    x = torch.from_numpy(digits.train.floats()[:128])
    torch.manual_seed(11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ref.loss(Batch(x))
    out["loss"].backward()
    torch.manual_seed(11)
    got = step(x)
    for key in ("loss", "recon", "kl"):
        torch.testing.assert_close(got[key], out[key].detach().float(), rtol=0.02, atol=0.05)
    params = dict(fused_model.named_parameters())
    for name, p in ref.named_parameters():
        a, b = params[name].grad.flatten(), p.grad.flatten()
        assert params[name].grad.dtype == torch.float32
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        assert cos > 0.99 and float(a.norm() / b.norm()) == pytest.approx(1.0, abs=0.03), (name, cos)
    # and it is not the fp32 step: the gradients carry bf16 rounding
    exact = copy.deepcopy(ref)
    exact.precision = "fp32"
    torch.manual_seed(11)
    exact_grads = [g.clone() for g in torch.autograd.grad(exact.loss(Batch(x))["loss"], list(exact.parameters()))]
    assert any(not torch.allclose(params[n].grad, g, rtol=1e-4, atol=1e-6)
               for (n, _), g in zip(exact.named_parameters(), exact_grads))


def same_step_both_ways(ref, opt, step, xb, *, seed: int, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of ``ref`` by autograd and ``opt`` (under bf16 autocast if asked) and one of the fused ``step``,
    from the same random draws; their losses (fused, autograd)."""
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = ref.loss(Batch(xb))
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    torch.manual_seed(seed)
    return step(xb)["loss"], out["loss"].detach().float()


def test_fused_bf16_steps_track_autocast_and_adam(digits) -> None:
    """Five bf16 steps (the per-step weight copy refreshed each time, Adam on the fp32 master weights) stay with
    five generic autocast steps of torch's Adam."""
    ref = vae(latent_dim=20, hidden=[64])
    ref.precision = "bf16"
    fused_model = copy.deepcopy(ref)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    step = FusedVAEStep(fused_model, torch.optim.Adam(fused_model.parameters(), lr=1e-3))
    x = torch.from_numpy(digits.train.floats())
    start = {n: p.detach().clone() for n, p in ref.named_parameters()}
    for i in range(5):
        got, want = same_step_both_ways(ref, opt, step, x[i * 128 : i * 128 + 128], seed=i, bf16=True)
        torch.testing.assert_close(got, want, rtol=0.02, atol=0.05)
    params = dict(fused_model.named_parameters())
    for name, p in ref.named_parameters():
        moved, ours = p.detach() - start[name], params[name].detach() - start[name]
        assert float(moved.abs().max()) > 1e-3, name  # five Adam steps of lr 1e-3 moved every tensor
        cos = float(torch.nn.functional.cosine_similarity(ours.flatten(), moved.flatten(), dim=0))
        assert cos > 0.98, (name, cos)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_step_follows_the_model_when_it_moves_between_fits(digits, precision) -> None:
    """partial_fit moves the model between calls (to the CPU and back) and carries the optimiser on: the fused
    step must then update the model's new parameters, not the storage it flattened before."""
    model = vae(latent_dim=8, hidden=[32], arch="mlp")
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0, device="cpu", compile="off", progress=False,
                      precision=precision)
    first = fit(model, digits.train, None, cfg)
    assert model._fused is not None and model._fused.dtype == (torch.bfloat16 if precision == "bf16" else
                                                                torch.float32)
    model.double().float()  # new storage for every parameter, as a move to another device and back gives
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit(model, digits.train, None, cfg, optimizers=first.optimizers, prepare=False)
    assert all(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert model._fused.is_current()


@pytest.mark.parametrize("hidden", [[400], [64, 32]])
def test_fused_step_20_adam_steps_match_torch_adam(digits, hidden) -> None:
    ref = vae(latent_dim=20, hidden=hidden)
    fused_model = copy.deepcopy(ref)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    fused_opt = torch.optim.Adam(fused_model.parameters(), lr=1e-3)
    step = FusedVAEStep(fused_model, fused_opt)
    x = torch.from_numpy(digits.train.floats())
    perm = np.random.default_rng(0).permutation(len(x))
    for i in range(20):
        got, want = same_step_both_ways(ref, opt, step, x[perm[i * 64 : i * 64 + 64]], seed=i)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    params = dict(fused_model.named_parameters())
    for name, p in ref.named_parameters():
        assert (params[name] - p).abs().max() <= 1e-5, name
    # the optimiser still owns its state (so checkpoints and resume see the fused step's moments)
    st = fused_opt.state[params["decoder.0.weight"]]
    torch.testing.assert_close(st["exp_avg"], opt.state[dict(ref.named_parameters())["decoder.0.weight"]]["exp_avg"],
                               rtol=1e-3, atol=1e-7)
    assert float(st["step"]) == 20
