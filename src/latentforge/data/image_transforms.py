"""Random geometric changes of image batches while training (``--augment shift:2,rotate:10``).

One random affine map per image — a shift, a rotation, a zoom and a mirror image, as asked for — applied to a
whole batch at once by ``affine_grid`` + ``grid_sample`` (bilinear, edges repeated outward), so there is no
per-image Python on the training path. The random numbers come from the trainer's batch generator, so a run is
the same run again with the same seed, also across ``--resume``. Codes that should not change when a digit moves
by a pixel or two are what deep clustering with augmentation learns (Guo et al. 2018, "Deep Embedded Clustering
with Data Augmentation").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..settings import SettingError

KINDS = ("shift", "rotate", "scale", "flip")
EXAMPLE = "shift:2,rotate:10 (also scale:0.1 and flip)"
EXAMPLES = {"shift": "shift:2", "rotate": "rotate:10", "scale": "scale:0.1"}


@dataclass(frozen=True)
class ImageAugment:
    """Each image is shifted by up to ``shift`` pixels along each axis, turned by up to ``rotate`` degrees,
    zoomed by a factor in [1 − ``scale``, 1 + ``scale``] and, with ``flip``, mirrored left–right half the time."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A changed copy of the batch ``x`` (N, C, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"image batches are (N, C, H, W); got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        u = torch.rand(n, 5, generator=generator).to(x.device) * 2 - 1  # drawn on the CPU: the same on any device
        angle = u[:, 0] * math.radians(self.rotate)
        zoom = 1 + u[:, 1] * self.scale
        mirror = torch.where(u[:, 2] < 0, -1.0, 1.0) if self.flip else torch.ones(n, device=x.device)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # where each output pixel reads from, in [-1, 1] coordinates (x spans w pixels, y spans h: a turn in
        # pixels scales the cross terms by h/w and w/h, so non-square images turn rather than shear)
        theta = torch.stack([
            torch.stack([cos * mirror, -sin * h / w, u[:, 3] * self.shift * 2 / w], 1),
            torch.stack([sin * mirror * w / h, cos, u[:, 4] * self.shift * 2 / h], 1),
        ], 1)
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)  # fp32 even for bf16 batches
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.to(x.dtype)


def parse_image_augment(spec: str | None) -> ImageAugment | None:
    """``"shift:2,rotate:10,scale:0.1,flip"`` → :class:`ImageAugment` (None, "none" or only zeros: None, no
    augmentation)."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    values: dict[str, float | bool] = {}
    for part in spec.split(","):
        name, _, value = part.strip().partition(":")
        name = name.strip().lower()
        if name not in KINDS:
            raise SettingError("augment", f"unknown change {name!r} in {spec!r}; use {EXAMPLE}")
        if name in values:
            raise SettingError("augment", f"{name} is given twice in {spec!r}")
        if name == "flip":
            if value:
                raise SettingError("augment", f"flip takes no value (it mirrors half the images), got flip:{value}")
            values[name] = True
            continue
        try:
            v = float(value)
        except ValueError:
            raise SettingError("augment", f"{name} needs a number, e.g. {EXAMPLES[name]}, got {part.strip()!r}") from None
        limits = {"shift": (0, 64, "pixels"), "rotate": (0, 180, "degrees"), "scale": (0, 0.9, "a fraction")}[name]
        if not (limits[0] <= v <= limits[1]) or not math.isfinite(v):
            raise SettingError("augment", f"{name} must be between {limits[0]} and {limits[1]} ({limits[2]}), got {v}")
        values[name] = v
    augment = ImageAugment(**values)
    return None if augment == ImageAugment() else augment  # all zero: nothing to change


def check_images(augment: ImageAugment | None, data) -> None:
    """Refuse augmentation for data that is not (channels, height, width) images (a table, sparse rows)."""
    if augment is not None and (not data.is_image or data.is_sparse):
        raise UserError(f"--augment changes images; {data.name} holds rows shaped {data.sample_shape}, not "
                        "(channels, height, width) images; drop --augment")


def preview(images: torch.Tensor, augment: ImageAugment, *, changes: int = 7, seed: int = 0) -> torch.Tensor:
    """Each of ``images`` followed by ``changes`` random changes of it, row by row: (n · (changes + 1), C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.cat([x[None], augment(x[None].expand(changes, *x.shape).contiguous(), g)]) for x in images]
    return torch.cat(rows)
