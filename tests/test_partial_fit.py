"""Online learning: ``partial_fit`` on a stream of chunks with the one trainer, and the estimators inside
scikit-learn's own tools (Pipeline, GridSearchCV). Real data: scikit-learn's digits (1797 8×8 images, grey
levels 0..16 scaled to [0, 1])."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimators_partial_fit_n_features

from latentforge import CVAE, VAE, AEDetector, AutoEncoder, BetaVAE, DeepSVDD, DenoisingAutoEncoder, UserError

SMALL = dict(latent_dim=8, hidden=(64,), batch_size=50, lr=3e-3, random_state=0, device="cpu")
INCREMENTAL = [AutoEncoder, DenoisingAutoEncoder, VAE, BetaVAE]
TOLERANCE = 0.05  # relative gap allowed between the held-out losses of chunked and one-shot training


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return (load_digits().data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]: a Bernoulli decoder


@pytest.fixture(scope="module")
def split(digits) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(0).permutation(len(digits))
    return digits[perm[:1500]], digits[perm[1500:]]  # 1500 rows to train on, 297 held out


def _stream(est, chunks, passes: int = 1):
    for _ in range(passes):
        for c in chunks:
            assert est.partial_fit(c) is est  # scikit-learn's convention: partial_fit returns self
    return est


def _weights(est) -> dict[str, torch.Tensor]:
    return est.model_.state_dict()


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _adam_steps(est) -> int:
    (opt,) = est._optimizers.values()
    return int(next(iter(opt.state.values()))["step"])


@pytest.mark.parametrize("cls", [AutoEncoder, VAE], ids=lambda c: c.__name__)
def test_chunked_training_reaches_the_loss_of_one_shot_training(cls, split) -> None:
    """10 chunks of 150 rows × 10 passes, batch 50: the same 300 Adam steps as fit with 10 epochs on 1500 rows.
    Observed (2-core CPU): AutoEncoder held-out −recon NLL −18.53 chunked vs −18.63 one-shot, VAE ELBO −25.59 vs
    −25.49 (gaps under 1 %); an untrained model scores about −44 nats."""
    train, held = split
    epochs = 10
    one_shot = cls(**SMALL, epochs=epochs).fit(train)
    chunked = _stream(cls(**SMALL), np.array_split(train, 10), passes=epochs)
    untrained = cls(**SMALL).partial_fit(train[:1])  # built, and one step on one row

    assert len(chunked.history_) == 100 and chunked.n_partial_fit_calls_ == 100
    assert [r["epoch"] for r in chunked.history_] == list(range(1, 101))
    assert all(r["n_samples"] == 150 for r in chunked.history_)
    loss = {name: -m.score(held) for name, m in
            (("chunked", chunked), ("one_shot", one_shot), ("untrained", untrained))}  # nats per sample
    assert abs(loss["chunked"] - loss["one_shot"]) <= TOLERANCE * loss["one_shot"], loss
    assert loss["untrained"] > 1.5 * loss["one_shot"], loss  # training did something the test can see
    mse = {name: float(((m.reconstruct(held) - held) ** 2).mean()) for name, m in
           (("chunked", chunked), ("one_shot", one_shot), ("untrained", untrained))}
    assert abs(mse["chunked"] - mse["one_shot"]) <= 0.15 * mse["one_shot"], mse
    assert mse["untrained"] > 3 * mse["one_shot"], mse


def test_the_optimiser_state_carries_over_between_calls(split) -> None:
    train, _ = split
    est = AutoEncoder(**SMALL).partial_fit(train[:150])
    opt = est._optimizers["main"]
    assert _adam_steps(est) == 3  # 150 rows in batches of 50
    est.partial_fit(train[150:300]).partial_fit(train[300:400])
    assert est._optimizers["main"] is opt and _adam_steps(est) == 3 + 3 + 2  # the same Adam, its steps counted on
    moments = next(iter(opt.state.values()))["exp_avg_sq"]
    assert moments.device.type == "cpu" and float(moments.abs().sum()) > 0  # kept, on the CPU between calls
    assert next(est.model_.parameters()).device.type == "cpu"


@pytest.mark.parametrize("cls", INCREMENTAL, ids=lambda c: c.__name__)
def test_the_same_random_state_and_chunks_give_the_same_weights(cls, split) -> None:
    chunks = np.array_split(split[0][:600], 4)
    params = {**SMALL, "hidden": (32,)}
    a = _stream(cls(**params), chunks)
    torch.randn(10)  # whatever the global RNG did in between
    b = _stream(cls(**params), chunks)
    c = _stream(cls(**{**params, "random_state": 1}), chunks)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    d = _stream(cls(**params), chunks[::-1])  # another order is another stream
    assert not _same_weights(a, d)


def test_each_call_shuffles_its_chunk_differently(split) -> None:
    """The seed of each call comes from random_state and the call number: feeding one chunk twice is not the
    same batches twice (the batch order of a one-chunk stream is not frozen)."""
    chunk = split[0][:200]
    est = AutoEncoder(**SMALL).partial_fit(chunk).partial_fit(chunk)
    assert est.history_[0]["train_loss"] != est.history_[1]["train_loss"]


@pytest.mark.parametrize("cls", INCREMENTAL, ids=lambda c: c.__name__)
def test_bad_chunks_are_refused_and_leave_the_model_as_it_was(cls, split) -> None:
    train, _ = split
    est = cls(**{**SMALL, "hidden": (16,)}).partial_fit(train[:200])
    before = {k: v.clone() for k, v in _weights(est).items()}
    name = cls.__name__
    nan = train[:10].copy()
    nan[3, 5] = np.nan
    cases = [
        (train[:50, :60], f"X has 60 features, but {name} is expecting 64 features as input"),  # scikit-learn's words
        (nan, "NaN"),
        (train[:50] * 2.0, r"bernoulli likelihood reads values in \[0, 1\]"),
        (np.empty((0, 64), np.float32), "at least one sample"),
        (train[:50].reshape(50, 8, 8), r"samples of shape \(1, 8, 8\), but the model was fitted on \(64,\)"),
    ]
    for bad, words in cases:
        with pytest.raises(UserError, match=words):  # a UserError is a ValueError, as scikit-learn expects
            est.partial_fit(bad)
    assert est.n_partial_fit_calls_ == 1 and len(est.history_) == 1
    assert all(torch.equal(before[k], v) for k, v in _weights(est).items())
    with pytest.raises(UserError, match="at least one sample"):
        cls(**SMALL).partial_fit(np.empty((0, 64), np.float32))  # the first chunk, too


def test_a_diverging_chunk_is_refused_and_the_previous_state_kept(digits) -> None:
    table = load_digits().data.astype(np.float32)  # 0..16: a Gaussian decoder
    est = AutoEncoder(**{**SMALL, "hidden": (16,)}).partial_fit(table[:300])
    before = {k: v.clone() for k, v in _weights(est).items()}
    steps = _adam_steps(est)
    with pytest.raises(UserError, match="diverged"):
        est.partial_fit(table[300:400] * 1e30)  # finite in float32, but no loss survives it
    assert all(torch.equal(before[k], v) for k, v in _weights(est).items()) and _adam_steps(est) == steps
    est.partial_fit(table[300:400])  # the stream goes on
    assert np.isfinite(est.transform(table[:5])).all() and est.n_partial_fit_calls_ == 2


def test_statistics_come_from_the_first_chunk(split) -> None:
    table = load_digits().data.astype(np.float32)
    est = AutoEncoder(**{**SMALL, "hidden": (16,)}).partial_fit(table[:300])
    assert est.model_.likelihood == "gaussian"
    shift = est.model_.x_shift.clone()
    np.testing.assert_allclose(shift.numpy(), table[:300].mean(0), rtol=1e-5, atol=1e-5)
    est.partial_fit(table[300:600] + 5.0)
    assert torch.equal(est.model_.x_shift, shift)  # later chunks train the networks only
    assert est.value_range_ == (0.0, 21.0)  # the range fitted on grows with the chunks
    unit = VAE(**SMALL).partial_fit(split[0][:100])
    assert unit.model_.likelihood == "bernoulli"  # the first chunk was in [0, 1]


def test_uint8_images_stream_in_their_grey_levels(split) -> None:
    images = (split[0][:300].reshape(-1, 8, 8) * 255).round().astype(np.uint8)
    est = VAE(**SMALL).partial_fit(images[:150])
    assert est.scale_ == 255.0 and est.input_shape_ == (1, 8, 8)
    est.partial_fit(images[150:])  # integer grey levels again: divided by the first chunk's scale
    assert est.transform(images[:4]).shape == (4, 8) and est.reconstruct(images[:4]).shape == (4, 8, 8)


def test_fit_after_partial_fit_starts_afresh(split) -> None:
    train, _ = split
    est = _stream(AutoEncoder(**SMALL, epochs=2), np.array_split(train[:400], 2))
    est.fit(train[:400])
    fresh = AutoEncoder(**SMALL, epochs=2).fit(train[:400])
    assert _same_weights(est, fresh)
    assert len(est.history_) == 2 and not hasattr(est, "n_partial_fit_calls_") and not hasattr(est, "_optimizers")


def test_partial_fit_after_fit_continues_with_a_new_optimiser(split) -> None:
    train, held = split
    est = AutoEncoder(**SMALL, epochs=3).fit(train)
    fitted = {k: v.clone() for k, v in _weights(est).items()}
    before = est.score(held)
    est.partial_fit(train[:150])
    assert est.n_partial_fit_calls_ == 1 and _adam_steps(est) == 3  # fit keeps no optimiser: a new Adam
    assert [r["epoch"] for r in est.history_] == [1, 2, 3, 4] and est.history_[-1]["n_samples"] == 150
    assert not all(torch.equal(fitted[k], v) for k, v in _weights(est).items())
    assert abs(est.score(held) - before) < 0.1 * abs(before)  # continued from the fitted weights, not restarted


def test_save_and_load_after_partial_fit_then_continue(split, tmp_path: Path) -> None:
    train, held = split
    est = _stream(VAE(**SMALL), np.array_split(train[:600], 4))
    est.save_pretrained(tmp_path / "m")
    back = VAE.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(back.transform(held), est.transform(held), rtol=1e-6, atol=1e-6)
    assert back.value_range_ == est.value_range_ and back.scale_ == est.scale_
    back.partial_fit(train[600:750])  # continues from the saved weights, with a new optimiser (none is saved)
    assert back.n_partial_fit_calls_ == 1 and len(back.history_) == 1 and _adam_steps(back) == 3
    assert abs(back.score(held) - est.score(held)) < 0.1 * abs(est.score(held))
    with pytest.raises(UserError, match="expecting 64 features"):
        back.partial_fit(train[:10, :8])


def test_a_pickled_stream_continues_exactly(split) -> None:
    """Pickling (joblib, multiprocessing) keeps the optimiser with the model it updates."""
    chunks = np.array_split(split[0][:600], 4)
    est = _stream(AutoEncoder(**SMALL), chunks[:2])
    copy = pickle.loads(pickle.dumps(est))
    _stream(est, chunks[2:])
    _stream(copy, chunks[2:])
    assert _same_weights(est, copy)


def test_estimators_that_cannot_learn_online_have_no_partial_fit() -> None:
    for est in (CVAE(), AEDetector(), DeepSVDD()):
        assert not hasattr(est, "partial_fit")  # so scikit-learn tools (and its checks) do not call it
        with pytest.raises(AttributeError) as info:
            est.partial_fit(np.zeros((4, 3)))
        assert "fit(X) with all the data" in str(info.value.__cause__)  # the reason travels as the cause
    for cls in INCREMENTAL:
        assert hasattr(cls(), "partial_fit")


@pytest.mark.parametrize("cls", INCREMENTAL, ids=lambda c: c.__name__)
def test_scikit_learns_partial_fit_check(cls) -> None:
    """Not among the checks parametrize_with_checks yields for transformers; run here directly."""
    check_estimators_partial_fit_n_features(cls.__name__, cls(latent_dim=2, hidden=(8,), random_state=0, device="cpu"))


@pytest.mark.parametrize("cls", [AutoEncoder, DenoisingAutoEncoder], ids=lambda c: c.__name__)
def test_random_state_makes_fits_reproducible(cls, split) -> None:
    """(VAE's is in tests/test_estimators.py.) The denoising noise is drawn from random_state, too."""
    train, held = split
    params = {**SMALL, "hidden": (32,), "epochs": 2}
    a = cls(**params).fit(train[:500])
    torch.randn(10)
    b = cls(**params).fit(train[:500])
    c = cls(**{**params, "random_state": 1}).fit(train[:500])
    np.testing.assert_array_equal(a.transform(held), b.transform(held))
    assert not np.array_equal(a.transform(held), c.transform(held))


def test_pipeline_with_a_scaler(split) -> None:
    raw = load_digits().data  # 0..16, standardised by the scaler: the autoencoder sees a Gaussian table
    pipe = Pipeline([("scale", StandardScaler()), ("ae", AutoEncoder(**{**SMALL, "latent_dim": 4}, epochs=15))])
    z = pipe.fit(raw[:1500]).transform(raw[1500:])
    assert z.shape == (297, 4) and pipe["ae"].model_.likelihood == "gaussian"
    assert pipe.score(raw[1500:]) == pytest.approx(pipe["ae"].score(pipe["scale"].transform(raw[1500:])))
    back = pipe.inverse_transform(z)  # decoder, then the scaler undone: the data's own units
    err = float(((back - raw[1500:]) ** 2).mean())
    assert err < 0.5 * float(raw[1500:].var(0).mean()), err  # 4 codes explain most of the variance


def test_grid_search_picks_by_score(split) -> None:
    train, _ = split
    search = GridSearchCV(AutoEncoder(hidden=(32,), epochs=15, batch_size=50, lr=3e-3, random_state=0, device="cpu"),
                          {"latent_dim": [2, 4]}, cv=3).fit(train)
    means = search.cv_results_["mean_test_score"]
    assert search.best_params_["latent_dim"] in (2, 4)
    assert search.best_index_ == int(np.argmax(means)) and search.best_score_ == pytest.approx(means.max())
    # more codes reconstruct held-out rows better: observed −24.3 vs −21.7 nats (folds' std ≈ 0.1)
    assert search.best_params_ == {"latent_dim": 4} and means[1] - means[0] > 1.0, means
    best = search.best_estimator_
    assert best.transform(train[:10]).shape == (10, 4) and best.model_.latent_dim == 4
    assert search.score(train[:100]) == pytest.approx(best.score(train[:100]))
    assert clone(best).get_params()["latent_dim"] == 4
