"""One precision setting for training and evaluation: ``auto``, ``fp32`` or ``bf16``.

``bf16`` runs the networks' matmuls and convolutions under ``torch.autocast`` in bfloat16; master
weights, optimiser state, losses, KL terms, log-likelihoods and log-sum-exp reductions stay float32
(each model casts its network outputs back before its objective). ``auto`` picks bf16 only where it
pays: the model family measured faster in bf16 (``Model.prefers_bf16``, see
``benchmarks/bench_conv_speed.py``) *and* the device computes bf16 natively — a CPU with AMX or
AVX-512 BF16 (read from the CPU's flags at run time), a CUDA GPU with bf16 support. Elsewhere bf16
is emulated and slower than fp32, so ``auto`` stays fp32 and an explicit ``bf16`` warns.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from pathlib import Path

import torch

from .errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) of this machine's CPU; flags empty where the OS does not list them."""
    name, flags = "", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return name or platform.processor() or "unknown CPU", flags


def cpu_bf16_kind() -> str | None:
    """How this CPU computes bf16 natively: ``"amx"``, ``"avx512_bf16"`` or None (emulated)."""
    flags = cpu_info()[1]
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


def describe_cpu() -> str:
    """One line for benchmark tables: the CPU model and what it offers for bf16."""
    name, flags = cpu_info()
    shown = [f for f in ("avx2", "avx512f", *BF16_FLAGS, "amx_tile") if f in flags]
    return f"{name} [{' '.join(shown) or 'no flags read'}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}]"


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matmuls/convolutions natively (not emulated in float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_bf16_kind() is not None
    return False


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve_precision(requested: str, model, device: torch.device | str) -> str:
    """The precision a model computes in on ``device``: ``fp32`` or ``bf16`` (see the module docstring).
    A model that cannot keep its objective in fp32 under autocast (``bf16_ready`` False) refuses ``bf16``."""
    check_precision(requested)
    ready = bool(getattr(model, "bf16_ready", False))
    if requested == "fp32":
        return "fp32"
    if requested == "auto":
        prefers = getattr(model, "prefers_bf16", None)
        return "bf16" if ready and callable(prefers) and prefers() and native_bf16(device) else "fp32"
    if not ready:
        raise UserError(f"model {getattr(model, 'registry_name', type(model).__name__)!r} does not support "
                        "--precision bf16 (its objective is not kept in fp32 under autocast); use fp32 or auto")
    if not native_bf16(device):
        warnings.warn(f"--precision bf16 on {torch.device(device).type} without native bf16 arithmetic "
                      f"({cpu_info()[0]}): it is emulated and slower than fp32; auto would pick fp32",
                      RuntimeWarning, stacklevel=2)
    return "bf16"


def set_precision(model, requested: str, device: torch.device | str) -> str:
    """Resolve ``requested`` for ``model`` on ``device`` and make the model compute in it; returns what was picked."""
    model.precision = resolve_precision(requested, model, device)
    return model.precision


def autocast(model) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device where the model computes in bf16; nothing otherwise."""
    if getattr(model, "precision", "fp32") != "bf16":
        return contextlib.nullcontext()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def full_precision():
    """No autocast inside (CPU and CUDA): for what must be fp32 whatever the model computes in, e.g. the
    feature network of FID/KID, so that sample-quality numbers do not depend on ``--precision``."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield
