"""The model contract: what the one trainer and the tasks may ask of any model.

A model is an ``nn.Module`` that owns its objective. It gives ``loss(batch) -> {"loss": …, …}`` (the
key ``"loss"`` is minimised, the others are logged) and may override four hooks, each with an empty
default here: ``prepare`` (fit data statistics once), ``configure_optimizers`` (several optimisers,
e.g. a GAN's), ``training_step`` (its own update order, or a faster path) and ``on_epoch_end``
(update what it fits between epochs, leave per-epoch files). What a model can do beyond training is
a small protocol each (:class:`Encoder`, :class:`Sampler`, …): tasks check those, never names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from ..precision import autocast
from ..settings import SettingError, Settings, setting


class Batch(NamedTuple):
    """One mini-batch: model inputs ``x`` (float32) and, for models that use labels, integer ``y``."""

    x: torch.Tensor
    y: torch.Tensor | None = None


@dataclass
class ModelConfig(Settings):
    """Settings every model has: the shape of one sample, set from the data."""

    input_shape: tuple[int, ...] = setting((), "shape of one sample (from the data)", min=1, cli=False)

    def check(self) -> None:
        if not self.input_shape:
            raise SettingError("input_shape", "must be given: the shape of one sample, e.g. (1, 28, 28) or (30,)")


class Model(nn.Module):
    """Base of every registered model; see the module docstring. ``registry_name``, ``task`` and
    ``Config`` are set by :func:`~latentforge.models.registry.register`."""

    registry_name: ClassVar[str] = ""
    task: ClassVar[str] = "generate"
    Config: ClassVar[type[Settings]] = ModelConfig
    uses_labels: ClassVar[bool] = False  # the trainer hands it integer labels in ``batch.y``
    default_epochs: ClassVar[int | None] = None  # `latentforge train` default when --epochs is not given
    # bf16: the objective stays fp32 under autocast (network outputs cast back before any loss, KL or likelihood)
    bf16_ready: ClassVar[bool] = False
    precision: str = "fp32"  # what it computes in: set by latentforge.precision.set_precision, never saved
    config: dict

    def prefers_bf16(self) -> bool:
        """Whether ``--precision auto`` should pick bf16 where the device has it natively: measured faster for
        this network (benchmarks/bench_conv_speed.py). Default: no."""
        return False

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prepare(self, data) -> None:
        """Called once before training on the training :class:`~latentforge.data.Dataset` (not on resume):
        fit statistics that travel with the weights (standardisation, a centre). Default: nothing."""

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """The optimisers, by name (saved and resumed by name). Default: one Adam over all parameters."""
        # fused Adam: one kernel over all parameters instead of a dozen elementwise passes
        return {"main": torch.optim.Adam(self.parameters(), lr=lr, fused=True)}

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One update on ``batch``; returns the values to log (each is guarded against NaN/Inf).
        Default: ``loss(batch)``, backward, one step of the single optimiser."""
        (opt,) = optimizers.values()
        loss_fn = self.__dict__.get("compiled_loss") or self.loss  # set by the trainer for --compile on
        with autocast(self):
            out = loss_fn(batch)
        opt.zero_grad(set_to_none=False)  # reuse gradient buffers: no per-step allocation
        out["loss"].backward()
        opt.step()
        return out

    def uncompiled_step(self, optimizers: dict[str, torch.optim.Optimizer]) -> str | None:
        """Why this model's ``training_step`` does not go through ``loss`` (so compiling ``loss`` would change
        nothing), or None when it does. Default: None unless a subclass overrides ``training_step``."""
        if type(self).training_step is Model.training_step:
            return None
        return "its own training step"

    def on_epoch_end(self, epoch: int, train, run_dir: Path | None) -> dict[str, float]:
        """After epoch ``epoch`` (counted from 1): update what the model fits between epochs and leave per-epoch files in
        ``run_dir`` (None outside a run); returns values for the history. Default: nothing."""
        return {}

    def finished(self) -> bool:
        """True once the model has met its own stopping rule; the trainer asks after each epoch's
        ``on_epoch_end`` and stops there. Default: never (the trainer's epochs and patience decide)."""
        return False

    @classmethod
    def upgrade_saved(cls, config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
        """Read what an older version of this model saved (config, weights). Default: as it is."""
        return config, state


@runtime_checkable
class Encoder(Protocol):
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(code or posterior mean, log-variance or None) of inputs ``x``."""


@runtime_checkable
class Decoder(Protocol):
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means in data units for codes ``z``."""


@runtime_checkable
class Sampler(Protocol):
    def sample(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        """``n`` new samples in data units, shaped ``(n, *input_shape)``."""


@runtime_checkable
class Reconstructor(Protocol):
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode then decode ``x``; same shape as ``x``'s samples."""


@runtime_checkable
class Denoiser(Protocol):
    def corrupted(self, x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """``x`` with the noise the model was trained to undo (its kind and level), drawn from ``seed``."""


@runtime_checkable
class AnomalyScorer(Protocol):
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """One score per sample, higher = more anomalous."""


@runtime_checkable
class Likelihood(Protocol):
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Evidence lower bound per sample, in nats."""

    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000) -> torch.Tensor:
        """−log p(x) by importance sampling, per sample, in nats."""


@runtime_checkable
class Ranker(Protocol):
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Item scores for fold-in rows (higher = recommend first)."""


@runtime_checkable
class ProgressFrames(Protocol):
    def progress_samples(self) -> torch.Tensor:
        """Images from fixed inputs, drawn after every epoch to show training progress (GANs)."""


@runtime_checkable
class Codebook(Protocol):
    def codebook_usage(self) -> torch.Tensor:
        """How often each code was assigned during training (VQ-VAE)."""


CAPABILITIES: dict[str, type] = {"encode": Encoder, "decode": Decoder, "sample": Sampler,
                                 "reconstruct": Reconstructor, "denoise": Denoiser, "anomaly_score": AnomalyScorer,
                                 "likelihood": Likelihood, "rank": Ranker, "progress": ProgressFrames,
                                 "codebook": Codebook}


def capabilities(model: nn.Module | type) -> set[str]:
    """What a model (or model class) can do beyond training, by protocol."""
    return {name for name, proto in CAPABILITIES.items()
            if all(callable(getattr(model, m, None)) for m in _protocol_methods(proto))}


def _protocol_methods(proto: type) -> list[str]:
    return [k for k, v in vars(proto).items() if callable(v) and not k.startswith("_")]
