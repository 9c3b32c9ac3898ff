"""Building blocks: MLP stacks sized from the input shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


def exporting() -> bool:
    """True while ``torch.export`` (ONNX's exporter) or the JIT tracer records the model: a layer that reads
    only the non-zeros of its input (``nonzero``, whose size depends on the data) takes its dense path there,
    so the exported graph keeps a free batch size."""
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing())


def mlp(sizes: Sequence[int], *, activation: str = "relu", last_activation: bool = True, bias: bool = True) -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with an activation after each (optionally not the last)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if last_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def conv_sizes(hw: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Spatial sizes after each of n stride-2 convolutions (kernel 4, padding 1): ⌊s/2⌋ each."""
    sizes = [tuple(hw)]
    for _ in range(n):
        h, w = sizes[-1]
        sizes.append(((h - 2) // 2 + 1, (w - 2) // 2 + 1))
    return sizes


def conv_depth(hw: tuple[int, int], wanted: int) -> int:
    """How many stride-2 stages fit: stop before a side would drop below 3 pixels."""
    n = 0
    while n < wanted and min(conv_sizes(hw, n + 1)[-1]) >= 3:
        n += 1
    return n


def conv_encoder(input_shape: Sequence[int], out_features: int, *, channels: Sequence[int] = (32, 64),
                 activation: str = "relu", spectral_norm: bool = False) -> nn.Sequential:
    """Stride-2 4×4 convolutions (as many of ``channels`` as the image allows), then a Linear head."""
    c, h, w = input_shape
    n = conv_depth((h, w), len(channels))
    sizes = conv_sizes((h, w), n)
    wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
    layers: list[nn.Module] = []
    prev = c
    for ch in channels[:n]:
        layers += [wrap(nn.Conv2d(prev, ch, 4, 2, 1)), ACTIVATIONS[activation]()]
        prev = ch
    fh, fw = sizes[-1]
    layers += [nn.Flatten(), wrap(nn.Linear(prev * fh * fw, out_features))]
    return nn.Sequential(*layers)


def conv_decoder(in_features: int, output_shape: Sequence[int], *, channels: Sequence[int] = (32, 64),
                 activation: str = "relu", batchnorm: bool = False) -> nn.Sequential:
    """Mirror of :func:`conv_encoder`: Linear, then stride-2 transposed convolutions back to the
    exact input size (output_padding picks up odd sizes). Output: (batch, C·H·W) flat pre-activations."""
    c, h, w = output_shape
    n = conv_depth((h, w), len(channels))
    sizes = conv_sizes((h, w), n)
    chans = list(channels[:n])[::-1]  # deepest first
    fh, fw = sizes[-1]
    first = chans[0] if chans else c
    layers: list[nn.Module] = [nn.Linear(in_features, first * fh * fw), ACTIVATIONS[activation](),
                               nn.Unflatten(1, (first, fh, fw))]
    for i in range(n):
        cin = chans[i]
        cout = chans[i + 1] if i + 1 < n else c
        (ih, iw), (oh, ow) = sizes[n - i], sizes[n - i - 1]
        layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, output_padding=(oh - 2 * ih, ow - 2 * iw)))
        if i + 1 < n:
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(ACTIVATIONS[activation]())
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def default_arch(input_shape: Sequence[int]) -> str:
    """Convolutional stacks for images of at least 28×28, MLPs for everything else."""
    return "conv" if len(input_shape) == 3 and min(input_shape[1:]) >= 28 else "mlp"


def resolve_arch(arch: str, input_shape: Sequence[int]) -> str:
    """``auto`` → :func:`default_arch`; a ValueError for an unknown arch or conv on non-images."""
    if arch == "auto":
        arch = default_arch(input_shape)
    if arch not in ("mlp", "conv"):
        raise ValueError(f"unknown arch {arch!r}; use mlp, conv or auto")
    if arch == "conv" and len(input_shape) != 3:
        raise ValueError(f"arch conv needs images (channels, height, width); got samples of shape {list(input_shape)}")
    return arch
