"""Small helpers the CLI's command modules share: checked output paths and counts."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .io import atomic_path

ARGV: list[str] = []  # the arguments ``cli.main`` was called with (``train --nproc`` relaunches them under torchrun)

PRECISION_HELP = ("fp32, bf16 or auto: bf16 autocast of the networks (weights, optimiser state and losses stay fp32). "
                  "auto: bf16 for conv models on a CPU with AMX or AVX-512 BF16 or a CUDA GPU, else fp32.")


def positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


def out_file(out: Path, allowed: tuple[str, ...]) -> Path:
    if out.suffix.lower() not in allowed:
        raise UserError(f"--out must end in {' or '.join(allowed)}, got {out.name!r}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in {' or '.join(allowed)}")
    if not out.parent.exists():
        raise UserError(f"{out.parent}: folder does not exist; create it first")
    return out


def save_array_or_png(arr, out: Path) -> None:
    import numpy as np

    from .plots import save_samples

    if out.suffix.lower() == ".npy":
        with atomic_path(out) as tmp:
            np.save(tmp, arr)
    else:
        save_samples(arr.reshape(len(arr), -1, *arr.shape[-2:]) if arr.ndim == 4 else arr[:, None], out)
