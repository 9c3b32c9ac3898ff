"""Feature spaces for the sample-quality metrics other than the shipped MNIST net.

The shipped :class:`~latentforge.metrics.sample_quality.FeatureNet` is for 28×28 grey images. For
other images, and for numbers comparable with papers, FID/KID are computed in Inception-v3's pool
features (Heusel et al. 2017). Its weights are not shipped and never downloaded: a user who has the
TorchScript file that StyleGAN2-ADA, StyleGAN3 and clean-fid use (``inception-2015-12-05.pt``, from
NVIDIA's StyleGAN2-ADA release) points latentforge at it, or at any TorchScript network with the
same contract:

    forward(images: uint8 tensor (N, 3, H, W) in 0..255[, return_features=True]) -> (N, D) features

Grey images are repeated over three channels; the network resizes them itself (Inception to 299×299).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.store import data_dirs, file_digest
from ..errors import UserError

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_HELP = (f"put NVIDIA's {INCEPTION_FILE} (the TorchScript Inception-v3 of StyleGAN2-ADA and clean-fid) "
                  "in $LATENTFORGE_DATA_DIR or ~/.cache/latentforge, or set LATENTFORGE_INCEPTION to its path; "
                  "latentforge never downloads it")


class TorchScriptFeatures:
    """A feature extractor loaded from a TorchScript file (e.g. Inception-v3), called on uint8 images.

    ``name`` is what ``metrics.json`` records as ``quality_features`` so that numbers from different
    feature spaces are never compared by mistake.
    """

    def __init__(self, path: str | Path, *, name: str | None = None, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"feature network {path} not found; give the path of a TorchScript file "
                            f"(for Inception: {INCEPTION_HELP})")
        try:
            self.net = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{path} is not a TorchScript network ({_first_line(e)}); save one with "
                            "torch.jit.script(net).save(path)") from None
        self.device = torch.device(device)
        self.path = path
        if name is None:  # NVIDIA's file is "inception" however it is reached; other nets by name + content
            name = "inception" if path.name == INCEPTION_FILE else f"{path.stem}-{file_digest(path)[:8]}"
        self.name = name
        args = [a.name for a in self.net.forward.schema.arguments]
        self._kwargs = {"return_features": True} if "return_features" in args else {}

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, *, batch_size: int = 100) -> np.ndarray:
        """Features (float64) of images (N, C, H, W) with C = 1 or 3 and values in [0, 1]."""
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))
            x = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            try:
                f = self.net(x.to(self.device), **self._kwargs)
            except Exception as e:  # TorchScript raises torch.jit.Error, which is no RuntimeError
                raise UserError(f"feature network {self.path} failed on images shaped {tuple(x.shape)} "
                                f"({_first_line(e)}); it must take uint8 (N, 3, H, W) images") from None
            if not isinstance(f, torch.Tensor) or len(f) != len(x):
                raise UserError(f"feature network {self.path} must return one feature row per image as a tensor")
            out.append(f.reshape(len(x), -1).double().cpu())
        return torch.cat(out).numpy()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def find_inception() -> Path:
    """The local Inception TorchScript file: $LATENTFORGE_INCEPTION, else ``inception-2015-12-05.pt`` in
    the folders named data sets are searched in ($LATENTFORGE_DATA_DIR, then the cache)."""
    explicit = os.environ.get("LATENTFORGE_INCEPTION")
    if explicit:
        return Path(explicit)
    places = data_dirs()
    for place in places:
        if (place / INCEPTION_FILE).is_file():
            return place / INCEPTION_FILE
    raise UserError(f"Inception features were asked for but {INCEPTION_FILE} was not found in "
                    f"{', '.join(str(p) for p in places)}: {INCEPTION_HELP}")


def resolve_features(spec: str | None) -> TorchScriptFeatures | None:
    """``None``/``"mnist"`` → the shipped MNIST net (returned as None); ``"inception"`` → the local
    Inception file; anything else is the path of a TorchScript feature network."""
    if spec in (None, "", "mnist"):
        return None
    if spec == "inception":
        return TorchScriptFeatures(find_inception(), name="inception")
    return TorchScriptFeatures(spec)
