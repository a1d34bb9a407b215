"""Rendering training progress and results as images: grids, GIFs, loss curves.

Off the training import path (matplotlib and torchvision load here, when first used).
Every function takes images as floats in [0, 1] and returns bytes or PIL images,
leaving the writing to the caller.
"""
import io
import math

import pandas
import torch
from PIL import Image
from torch import Tensor, nn

from .glcic.networks import complete, fill_holes

# torchvision and matplotlib are imported where they are used: torchvision's import loads
# torch._dynamo, about 1.5 s for every process that imports this module.


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] as uint8 on the CPU, rounded to the nearest level."""
    return images.detach().float().cpu().mul(255).round_().clamp_(0, 255).to(torch.uint8)  # in place after mul


def image_grid(images: Tensor, nrow: int) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] tiled nrow per row on a black 2 px border."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    return to_pil_image(make_grid(to_uint8(images), nrow=nrow))


def square_grid(images: Tensor) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] tiled in a near-square grid."""
    return image_grid(images, nrow=math.ceil(math.sqrt(len(images))))


def grid_png(images: Tensor) -> bytes:
    """PNG bytes of square_grid."""
    buffer = io.BytesIO()
    square_grid(images).save(buffer, format="PNG")
    return buffer.getvalue()


@torch.no_grad()
def inpainting_grid(completion: nn.Module, images: Tensor, mask: Tensor, mean_pixel: Tensor) -> Tensor:
    """A (3, H, W) grid in [0, 1] of images (N, 3, h, w) in [0, 1], one row each: masked input
    (the holes mean-filled) | completion | original."""
    from torchvision.utils import make_grid

    rows = torch.stack([fill_holes(images, mask, mean_pixel), complete(completion, images, mask, mean_pixel), images],
                       dim=1).flatten(0, 1)
    return make_grid(rows, nrow=3, padding=2, pad_value=1.0)


def frames(images: Tensor) -> list[Image.Image]:
    """Images (N, C, H, W) in [0, 1] as PIL images, e.g. the frames of a GIF."""
    from torchvision.transforms.functional import to_pil_image

    return [to_pil_image(image) for image in to_uint8(images)]


def animated_gif(gif_frames: list[Image.Image], duration_ms: int, loop: int = 0) -> bytes:
    """GIF bytes; loop=0 repeats forever. Pillow merges identical consecutive frames."""
    if not gif_frames:
        raise ValueError("animated_gif needs at least one frame")
    buffer = io.BytesIO()
    gif_frames[0].save(buffer, format="GIF", save_all=True, append_images=gif_frames[1:],
                       duration=duration_ms, loop=loop)
    return buffer.getvalue()


def steps_across_phases(history: pandas.DataFrame) -> tuple[pandas.Series, list[float]]:
    """Each row's step counted from the first phase's start, and where each later phase starts;
    a history without phase and steps columns keeps its own steps."""
    steps = history["step"].astype(float)
    if "phase" not in history or "steps" not in history:
        return steps, []
    phase_lengths = history.groupby("phase")["steps"].max()
    offsets = phase_lengths.cumsum() - phase_lengths
    return steps + history["phase"].map(offsets), list(offsets.iloc[1:])


def loss_curves_png(history: pandas.DataFrame, columns: list[str]) -> bytes:
    """PNG of one panel per column against the step; with phase and steps columns, the steps count
    across phases and each phase's start is dashed."""
    from matplotlib.figure import Figure

    missing = [column for column in columns if column not in history.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the history; it has {list(history.columns)}")
    steps, starts = steps_across_phases(history)
    figure = Figure(figsize=(4 * len(columns), 3), layout="constrained")
    for axes, column in zip(figure.subplots(1, len(columns), squeeze=False, sharex=True)[0], columns):
        axes.plot(steps, history[column], marker=".")
        for start in starts:
            axes.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        axes.set(title=column, xlabel="step (all phases)" if starts else "step")
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
