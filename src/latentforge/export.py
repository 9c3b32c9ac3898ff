"""Export a trained model's parts to ONNX, for serving without latentforge or PyTorch.

Which parts a model offers follows its capabilities (:mod:`latentforge.models.base`), never its name:

- ``encoder``: an :class:`Encoder`'s code (a VAE's posterior mean), ``x → code``;
- ``decoder``: a :class:`Decoder`'s mean in data units, ``z → x``; a GAN's generator;
- ``generator``: what ``sample`` draws from, ``z ~ N(0, I) → x`` (a VAE's decoder, a GAN's averaged generator);
- ``scorer``: an :class:`AnomalyScorer`'s score, ``x → score`` (higher = more anomalous).

Conditional models (``uses_labels``) take a second input, ``label`` (int64). Every graph has a dynamic batch
axis. A part that draws random numbers (a VAE's one-sample ELBO score) is not offered: ONNX would give other
numbers than PyTorch on every call.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_model
from .errors import UserError
from .io import atomic_path
from .models.base import AnomalyScorer, Decoder, Encoder, Sampler
from .models.gan import GAN

PARTS = ("encoder", "decoder", "generator", "scorer")
FORMATS = ("onnx",)
OPSET = 18


@dataclass
class Part:
    """One exportable function of a model: its module, example inputs and the names ONNX gives them."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_name: str


class _Fn(nn.Module):
    """A model method as a module (so ``torch.onnx.export`` sees one ``forward``)."""

    def __init__(self, model: nn.Module, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


def _gan_generator(model: GAN, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    out = model.g_ema(z) if y is None else model.g_ema(z, y)  # a conditional GAN's generator takes the label too
    return (torch.tanh(out).view(-1, *model.input_shape) + 1) / 2  # as GAN.sample (len() would fix the batch)


def _builders(model: nn.Module) -> dict[str, Callable[..., torch.Tensor]]:
    """Each part the model's capabilities give, as a function of its inputs."""
    cond = bool(getattr(model, "uses_labels", False))
    out: dict[str, Callable[..., torch.Tensor]] = {}
    if isinstance(model, Encoder):
        out["encoder"] = (lambda x, y: model.encode(x, y)[0]) if cond else (lambda x: model.encode(x)[0])
    if isinstance(model, GAN):
        out["decoder"] = out["generator"] = ((lambda z, y: _gan_generator(model, z, y)) if cond
                                             else (lambda z: _gan_generator(model, z)))
    elif isinstance(model, Decoder) and hasattr(model, "latent_dim"):
        out["decoder"] = (lambda z, y: model.decode(z, y)) if cond else (lambda z: model.decode(z))
        if isinstance(model, Sampler):  # sample() decodes z ~ N(0, I)
            out["generator"] = out["decoder"]
    if isinstance(model, AnomalyScorer) and not cond:
        out["scorer"] = lambda x: model.anomaly_score(x)
    return out


def _example(model: nn.Module, part: str, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if part in ("decoder", "generator"):
        first = torch.randn(batch, model.latent_dim, generator=g)
    else:
        first = torch.rand(batch, *model.config["input_shape"], generator=g)
    if getattr(model, "uses_labels", False):
        return first, torch.randint(0, model.n_classes, (batch,), generator=g)
    return (first,)


def _deterministic(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> bool:
    """Same output under two different seeds (the caller's random state is left as it was)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        a = fn(*inputs)
        torch.manual_seed(2)
        return torch.equal(a, fn(*inputs))


def available_parts(model: nn.Module) -> list[str]:
    """The parts ``model`` can export, in :data:`PARTS` order (random ones left out); puts it in eval mode."""
    model.eval()
    found = _builders(model)
    return [p for p in PARTS if p in found and _deterministic(found[p], _example(model, p))]


def model_part(model: nn.Module, part: str) -> Part:
    """The module and example inputs of one part; a part the model lacks is a UserError naming those it has."""
    if part not in PARTS:
        raise UserError(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
    has = available_parts(model)
    if part not in has:
        name = getattr(model, "registry_name", type(model).__name__)
        why = " that ONNX could reproduce (it draws random numbers)" if part in _builders(model) else ""
        raise UserError(f"model {name!r} has no {part}{why} to export; it has: {', '.join(has) or 'none'}")
    inputs = _example(model, part)
    names = ("z" if part in ("decoder", "generator") else "x",) + (("label",) if len(inputs) > 1 else ())
    return Part(_Fn(model, _builders(model)[part]).eval(), inputs, names,
                {"encoder": "code", "scorer": "score"}.get(part, "x"))


def export_onnx(model: nn.Module, out: str | Path, *, part: str | None = None) -> tuple[str, Part]:
    """Write ``part`` of ``model`` (default: the first it has) to ``out`` as one self-contained ONNX file,
    atomically; returns the part's name and :class:`Part`."""
    _require("onnx", "onnxscript")
    part = part or next(iter(available_parts(model)), "encoder")
    p = model_part(model, part)
    batch = torch.export.Dim("batch", min=1, max=2**20)
    shapes = {"args": tuple({0: batch} for _ in p.inputs)}
    out = Path(out)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporter's notes on torchvision ops it skips
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), atomic_path(out) as tmp:
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(p.module, p.inputs, str(tmp), input_names=list(p.input_names),
                                  output_names=[p.output_name], dynamic_shapes=shapes, opset_version=OPSET,
                                  dynamo=True, external_data=False, verbose=False)
            except Exception as e:  # noqa: BLE001 -- the exporter's own errors (an operator ONNX lacks): a clear line, not a trace
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(f"the {part} of {getattr(model, 'registry_name', '')!r} cannot be exported to ONNX "
                                f"with torch {torch.__version__}: {first[:300]}") from None
            if not _batch_is_dynamic(tmp):
                raise UserError(f"the {part} of {getattr(model, 'registry_name', '')!r} cannot be exported to ONNX "
                                "with a free batch size (its code fixes the batch while tracing)")
    finally:
        quiet.setLevel(level)
    return part, p


def _batch_is_dynamic(path: Path) -> bool:
    """Every input and output of the graph keeps a named (free) first axis."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return all(v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output])


def check_onnx(path: str | Path, p: Part, *, batch: int = 5, seed: int = 1) -> float | None:
    """Max abs difference between onnxruntime and PyTorch on fresh random inputs (another batch size than the
    export's); None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for t in p.inputs:
        shape = (batch, *t.shape[1:])
        inputs.append(torch.randint(0, int(t.max()) + 1, shape, generator=g) if not t.is_floating_point()
                      else torch.randn(shape, generator=g) if p.input_names[0] == "z" else torch.rand(shape, generator=g))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(p.input_names, inputs)})[0]
    with torch.no_grad():
        want = p.module(*inputs)
    diff = (torch.from_numpy(got) - want).abs().max()
    return float(diff) if math.isfinite(float(diff)) else math.inf


def export_run(run: str | Path, out: str | Path, *, part: str | None = None, fmt: str = "onnx") -> dict:
    """``latentforge export``: a run's (or saved model's) part as ``out``; returns what was written and checked."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = load_model(Path(run))
    part, p = export_onnx(model, out, part=part)
    shapes = {n: ["batch", *t.shape[1:]] for n, t in zip(p.input_names, p.inputs)}
    return {"part": part, "inputs": shapes, "output": p.output_name, "max_abs_diff": check_onnx(out, p),
            "parts": available_parts(model)}


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: pip install 'latentforge[export]'")
