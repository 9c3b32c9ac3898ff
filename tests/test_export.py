"""ONNX export: onnxruntime gives PyTorch's numbers on every part a model offers; mistakes are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentforge.checkpoint import save_model
from latentforge.cli import main
from latentforge.data import load_data
from latentforge.errors import UserError
from latentforge.export import available_parts, export_onnx, export_run
from latentforge.models import MODELS, build_model
from latentforge.models.gan import GAN
from latentforge.train import TrainConfig, fit

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'latentforge[export]')")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) is not installed")

# name, model, settings, parts it offers
CASES = {
    "vae-mlp": ("vae", {"latent_dim": 4, "hidden": [32], "arch": "mlp"}, ["encoder", "decoder", "generator"]),
    "vae-conv": ("vae", {"latent_dim": 4, "hidden": [32], "arch": "conv", "channels": [8, 16]},
                 ["encoder", "decoder", "generator"]),
    "ae": ("ae", {"latent_dim": 4, "hidden": [32]}, ["encoder", "decoder", "scorer"]),
    "dcgan": ("dcgan", {"latent_dim": 8, "hidden": [32]}, ["decoder", "generator"]),
    "deep-svdd": ("deep-svdd", {"latent_dim": 4, "hidden": [16], "pretrain": 0}, ["scorer"]),
}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory) -> dict[str, Path]:
    """Each case trained for one epoch on digits and saved as save_pretrained does."""
    out = {}
    for case, (name, settings, _) in CASES.items():
        torch.manual_seed(0)
        model = build_model(name, input_shape=list(digits.train.sample_shape), **settings)
        fit(model, digits.train, None, TrainConfig(epochs=1, batch_size=128, device="cpu", compile="off", progress=False))
        out[case] = tmp_path_factory.mktemp(case)
        save_model(model, out[case])
    return out


def inputs_for(path: Path, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs of the graph's own shapes: N(0, 1) codes, images in [0, 1]."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = [batch, *i.shape[1:]]
        feeds[i.name] = (rng.standard_normal(shape) if i.name == "z" else rng.random(shape)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_equals_pytorch(case: str, runs: dict[str, Path], tmp_path: Path) -> None:
    from latentforge.checkpoint import load_model

    model = load_model(runs[case])
    parts = CASES[case][2]
    assert available_parts(model) == parts
    for part in parts:
        path = tmp_path / f"{part}.onnx"
        result = export_run(runs[case], path, part=part)
        assert result["part"] == part and result["max_abs_diff"] is not None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in (1, 7):  # not the export's batch size of 3: the batch axis is free
            feeds = inputs_for(path, batch, seed=batch)
            (got,) = session.run(None, feeds)
            x = torch.from_numpy(next(iter(feeds.values())))
            with torch.no_grad():
                want = reference(model, part, x)
            assert got.shape == tuple(want.shape)
            diff = np.abs(got - want.numpy()).max()
            # float32 sums: a score of ~40 nats is resolved to ~4e-6; scale the bound by the output's size
            assert diff <= 1e-5 * max(1.0, float(want.abs().max())), (case, part, batch, diff)


def reference(model, part: str, x: torch.Tensor) -> torch.Tensor:
    """The part in PyTorch, written out from the model's own methods."""
    if part == "encoder":
        return model.encode(x)[0]
    if part == "scorer":
        return model.anomaly_score(x)
    if isinstance(model, GAN):  # what GAN.sample returns for codes x: the averaged generator's images in [0, 1]
        return (torch.tanh(model.g_ema(x)).view(len(x), *model.input_shape) + 1) / 2
    return model.decode(x)


def test_the_file_is_replaced_only_by_a_complete_export(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(UserError, match="has no scorer"):
        export_run(runs["vae-mlp"], out, part="scorer")
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_the_default_part(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, runs["dcgan"], "--out", tmp_path / "g.onnx")
    assert code == 0, err
    assert "wrote the decoder (z ['batch', 8]" in out and "checked with onnxruntime" in out
    assert (tmp_path / "g.onnx").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--part", "scorer"], "model 'dcgan' has no scorer to export; it has: decoder, generator"),
    (["--part", "latent"], "--part must be one of encoder, decoder, generator, scorer, got 'latent'"),
    (["--format", "tflite"], "--format must be one of onnx"),
])
def test_cli_mistakes_are_one_line_errors(args: list[str], message: str, runs: dict[str, Path], tmp_path: Path,
                                          capsys) -> None:
    code, _, err = run_cli(capsys, runs["dcgan"], "--out", tmp_path / "g.onnx", *args)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "g.onnx").exists()


def test_cli_bad_paths_are_one_line_errors(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    for args, message in [([runs["ae"], "--out", tmp_path / "m.pt"], "--out must end in .onnx"),
                          ([runs["ae"], "--out", tmp_path / "no" / "m.onnx"], "folder does not exist"),
                          ([tmp_path / "no-run", "--out", tmp_path / "m.onnx"], "no such run directory"),
                          ([runs["ae"], "--out", tmp_path], "--out must end in .onnx")]:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mult-vae", "prodlda"])
def test_sparse_input_encoders_export_with_a_free_batch(name: str, tmp_path: Path) -> None:
    """Mult-VAE and the topic models read only the non-zeros of a row (embedding_bag over ``nonzero``); the
    exported graph takes the dense product, which must give PyTorch's codes on sparse count rows of any batch."""
    torch.manual_seed(0)
    model = build_model(name, input_shape=[60], latent_dim=5).eval()
    _, part = export_onnx(model, tmp_path / "enc.onnx", part="encoder")
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 4, (7, 60), generator=g).float() * (torch.rand(7, 60, generator=g) < 0.1)
    counts[2] = 0  # a row with no items/words
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": counts.numpy()})[0]
    with torch.no_grad():
        want = model.encode(counts)[0]
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_random_parts_are_not_offered(runs: dict[str, Path]) -> None:
    """A VAE's anomaly score is a one-sample ELBO: ONNX could not give PyTorch's numbers, so it is refused."""
    from latentforge.checkpoint import load_model

    with pytest.raises(UserError, match="draws random numbers"):
        export_onnx(load_model(runs["vae-mlp"]), Path("unused.onnx"), part="scorer")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_exports_what_it_offers_or_says_why(name: str, tmp_path: Path) -> None:
    """Untrained, every registered model: each offered part exports and matches PyTorch."""
    shape = {"recommend": [30], "topics": [40]}.get(MODELS[name].task, [1, 8, 8])
    model = build_model(name, input_shape=shape, **({"n_classes": 3} if MODELS[name].uses_labels else {})).eval()
    for part in available_parts(model):
        _, p = export_onnx(model, tmp_path / f"{part}.onnx", part=part)
        from latentforge.export import check_onnx

        assert check_onnx(tmp_path / f"{part}.onnx", p) <= 1e-4, (name, part)
