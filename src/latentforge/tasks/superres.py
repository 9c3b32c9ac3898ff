"""The superres task: upscale images by 2, 3 or 4 (``sr-ae``).

Training pairs come from the images themselves: the model averages each ``scale × scale`` block of a
training image into the low-resolution input it learns to undo. A validation slice of the training
images picks the kept epoch (lowest validation loss). Evaluation upscales the test images' block
averages and compares them with the originals, next to bicubic interpolation of the same inputs in the
same run: PSNR and SSIM of both. The run keeps ``superres.png`` (input, bicubic, ours, original).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import plots
from ..checkpoint import load_model, read_config
from ..data import Dataset, Splits
from ..errors import UserError
from ..io import atomic_path
from ..metrics.reconstruction import psnr, ssim
from ..models.base import Batch
from ..models.superres import Upscaler
from ..train_records import Monitor, TrainResult
from .base import Figure, Metric, RunOptions, Task, named_or_file, register_task
from .generate import hold_out_rows

SR_METRICS = {
    "loss": Metric("test loss (the training objective: error per value of the upscaled test images)", "lower"),
    "psnr": Metric("peak signal-to-noise ratio of the upscaled test images against the originals, dB", "higher"),
    "ssim": Metric("structural similarity of the upscaled test images to the originals (1 = identical)", "higher"),
    "psnr_bicubic": Metric("PSNR of bicubic interpolation of the same low-resolution inputs, dB (the baseline)",
                           "higher"),
    "ssim_bicubic": Metric("SSIM of bicubic interpolation of the same low-resolution inputs (the baseline)", "higher"),
}
SR_FIGURE = "superres.png"
SR_FIGURES = (
    Figure(SR_FIGURE, "Super-resolution", "Test images, top to bottom: the low-resolution input (block averages, "
           "enlarged without smoothing), bicubic interpolation, the model's upscaling, the original."),
    Figure("curves.png", "Training curves", "Loss per value on the training and test images after each epoch; "
           "the validation loss (right axis) picks the kept epoch."),
)
EVAL_BATCH = 1000


class SuperResTask(Task):
    name = "superres"
    metrics = SR_METRICS
    figures = SR_FIGURES

    def load(self, data: str, options: dict, run: RunOptions) -> Splits:
        if run.binarize is not None:
            raise UserError("--binarize does not apply to super-resolution, which learns grey levels; drop it")
        splits = super().load(data, options, run)
        for ds in (splits.train, splits.test):
            check_images(ds)
        return hold_out_rows(splits, seed=run.seed)

    def monitor(self, splits: Splits) -> Monitor | None:
        return Monitor("val_loss", higher_is_better=False) if splits.validation is not None else None

    def evaluate(self, model: nn.Module, test: Dataset, splits: Splits | None, *, k: int, device,
                 max_iwae: int | None = None, progress: bool = False, features=None) -> dict:
        return evaluate_superres(model, test, device=device)

    def write_artifacts(self, run_dir: Path, model: nn.Module, splits: Splits, result: TrainResult,
                        run: RunOptions) -> dict:
        self.write_pictures(run_dir, model, splits.test, result.history)
        return {}

    def write_pictures(self, run_dir: Path, model: nn.Module, test: Dataset, history: list[dict]) -> None:
        model = model.cpu().eval()
        x = torch.from_numpy(test.head(8))
        with torch.no_grad():
            low = model.downsample(x)
            rows = [("input", enlarge(low, model.scale)), ("bicubic", model.bicubic(low)),
                    ("ours", model.upscale(low)), ("original", x)]
        save_labelled_rows([(label, r.numpy()) for label, r in rows], Path(run_dir) / SR_FIGURE)
        if history:
            plots.save_curves(history, Path(run_dir) / "curves.png",
                              monitor="val_loss" if any("val_loss" in r for r in history) else None,
                              higher_is_better=False)


register_task(SuperResTask())


def check_images(ds: Dataset) -> None:
    """Super-resolution takes images with grey levels (or colours) in [0, 1]."""
    if not ds.is_image:
        raise UserError(f"{ds.name}: super-resolution needs images (n, channels, height, width) or (n, height, width); "
                        f"got samples of shape {list(ds.sample_shape)} (a table cannot be upscaled)")
    if not ds.in_unit_interval:
        lo, hi = ds.value_range
        raise UserError(f"{ds.name}: values range over [{lo:g}, {hi:g}]; super-resolution needs grey levels in [0, 1] "
                        "(floats) or 0–255 (uint8 images); rescale the data")


def enlarge(x_low: torch.Tensor, scale: int) -> torch.Tensor:
    """Low-resolution images at the high resolution, each pixel repeated (no smoothing)."""
    return x_low.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


@torch.no_grad()
def evaluate_superres(model: nn.Module, test: Dataset, *, device="cpu") -> dict:
    """The ``test`` block of a super-resolution run: loss, and PSNR/SSIM of ours and of bicubic interpolation."""
    check_images(test)
    model = model.to(device).eval()
    x = test.floats()
    ours, bicubic, loss_sum = np.empty_like(x), np.empty_like(x), 0.0
    for i in range(0, len(x), EVAL_BATCH):
        xb = torch.from_numpy(x[i : i + EVAL_BATCH]).to(device)
        low = model.downsample(xb)
        ours[i : i + EVAL_BATCH] = model.upscale(low).cpu().numpy()
        bicubic[i : i + EVAL_BATCH] = model.bicubic(low).cpu().numpy()
        loss_sum += float(model.loss(Batch(xb))["loss"]) * len(xb)
    return {"loss": loss_sum / len(x), "psnr": psnr(ours, x), "ssim": ssim(ours, x),
            "psnr_bicubic": psnr(bicubic, x), "ssim_bicubic": ssim(bicubic, x)}


# ---------------------------------------------------------------- the `latentforge upscale` command


def low_res_data(spec: str, model: nn.Module, *, from_high: bool, n: int | None) -> tuple[Dataset, np.ndarray]:
    """The images to upscale as float32 (N, C, h, w) in [0, 1]: a data name (its test split) or a whole file or
    folder; with ``from_high``, high-resolution images that are block-averaged first."""
    ds = named_or_file(spec)
    if not ds.is_image:
        raise UserError(f"{ds.name}: samples of shape {list(ds.sample_shape)} are not images; give images "
                        "(n, height, width) or (n, channels, height, width)")
    x = ds.head(len(ds) if n is None else min(n, len(ds)))
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        whole = np.array_equal(x, np.round(x))
        if not whole or lo < 0 or hi > 255:
            raise UserError(f"{ds.name}: values range over [{lo:g}, {hi:g}]; give floats in [0, 1] or integer grey "
                            "levels 0–255")
        x = x / np.float32(255)  # integer grey levels stored as another dtype than uint8
    want_high, want_low = list(model.input_shape), list(model.low_shape)
    if from_high:
        if list(x.shape[1:]) != want_high:
            raise UserError(f"{ds.name}: --from-high needs high-resolution images of shape {want_high} (what the model "
                            f"was trained on); got {list(x.shape[1:])}")
        with torch.no_grad():
            x = model.downsample(torch.from_numpy(x)).numpy()
    elif list(x.shape[1:]) != want_low:
        hint = (f"add --from-high to downsample them by {model.scale} first" if list(x.shape[1:]) == want_high else
                f"resize them to {want_low[1]}x{want_low[2]} with {want_low[0]} channel(s)")
        raise UserError(f"{ds.name}: low-resolution images must have shape {want_low} (the model upscales by "
                        f"{model.scale} to {want_high}); got {list(x.shape[1:])}: {hint}")
    return ds, np.ascontiguousarray(x, dtype=np.float32)


def upscale_run(run_dir: Path, data: str, out: Path, *, n: int | None = None, from_high: bool = False) -> int:
    """Upscale ``data`` with a trained ``sr-ae`` run and write ``out`` (.npy: the images; .png: inputs above
    outputs). Returns how many images were written."""
    config, model = read_config(Path(run_dir)), load_model(Path(run_dir))
    if not isinstance(model, Upscaler):
        raise UserError(f"{run_dir}: model {config['model']!r} does not upscale images; train sr-ae "
                        "(latentforge train sr-ae --data mnist --scale 2)")
    _, low = low_res_data(data, model, from_high=from_high, n=n)
    with torch.no_grad():
        high = torch.cat([model.upscale(torch.from_numpy(low[i : i + EVAL_BATCH]))
                          for i in range(0, len(low), EVAL_BATCH)]).numpy()
    if Path(out).suffix.lower() == ".npy":
        with atomic_path(Path(out)) as tmp:
            np.save(tmp, high)
    else:
        save_pairs(enlarge(torch.from_numpy(low), model.scale).numpy(), high, Path(out))
    return len(high)


def save_pairs(inputs: np.ndarray, outputs: np.ndarray, path: Path, *, per_row: int = 8) -> None:
    """Pairs of rows: inputs (enlarged) above, their upscaled versions below."""
    rows = []
    for i in range(0, len(inputs), per_row):
        rows += [("input", inputs[i : i + per_row]), ("upscaled", outputs[i : i + per_row])]
    save_labelled_rows(rows, path, per_row=per_row)


def save_labelled_rows(rows: list[tuple[str, np.ndarray]], path: Path, *, per_row: int | None = None) -> None:
    """Rows of images (N, C, H, W) in [0, 1], each with its label on the left."""
    from PIL import Image, ImageDraw

    per_row = per_row or max(len(r) for _, r in rows)
    strips = [Image.fromarray(plots.image_grid(r, nrow=per_row)) for _, r in rows]
    margin, w, h = 64, max(s.size[0] for s in strips), strips[0].size[1]
    white = 255 if strips[0].mode == "L" else (255,) * 3
    canvas = Image.new(strips[0].mode, (w + margin, h * len(strips)), color=white)
    draw = ImageDraw.Draw(canvas)
    for k, ((label, _), strip) in enumerate(zip(rows, strips)):
        canvas.paste(strip, (margin, k * h))
        draw.text((4, k * h + h // 2 - 6), label, fill=0 if canvas.mode == "L" else (0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
