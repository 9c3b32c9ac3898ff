"""Small helpers the CLI's command modules share: checked output paths and counts."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .io import atomic_path


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
