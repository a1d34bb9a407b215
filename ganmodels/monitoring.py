"""Watching GAN training and rendering its progress: collapse checks, grids, GIFs, plots.

Shared by every adversarial training loop; rendering functions return bytes or PIL images
and leave writing them to the caller.
"""
import io
import math

import pandas
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from .networks import complete, fill_holes

# torchvision is imported where it is used: its import loads torch._dynamo, about 1.5 s
# for every process that imports this module.

FRAMES_PER_GENERATOR_CALL = 64


class CollapseWatch:
    """Flags a run whose discriminator keeps winning or whose samples stop varying.

    A floor of 0 switches that check off. Warnings repeat on every update while the
    condition persists.
    """

    def __init__(self, window: int, d_loss_floor: float, diversity_floor: float):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.d_loss_floor = d_loss_floor
        self.diversity_floor = diversity_floor
        self.low_loss_streak = 0
        self.low_diversity_streak = 0

    def update(self, loss_d: float, diversity: float | None) -> str | None:
        """Record one measurement; diversity None means not measured this time."""
        self.low_loss_streak = self.low_loss_streak + 1 if loss_d < self.d_loss_floor else 0
        if diversity is not None:
            below = diversity < self.diversity_floor
            self.low_diversity_streak = self.low_diversity_streak + 1 if below else 0
        if self.low_loss_streak >= self.window:
            return (f"discriminator loss below {self.d_loss_floor} for {self.low_loss_streak} "
                    f"consecutive checks (last {loss_d:.4g}): the discriminator has won and "
                    f"the generator gets no useful gradient")
        if self.low_diversity_streak >= self.window:
            return (f"sample diversity below {self.diversity_floor} for {self.low_diversity_streak} "
                    f"consecutive checks (last {diversity:.4g}): the generator has collapsed "
                    f"to near-identical samples")
        return None

    def state_dict(self) -> dict:
        return {"low_loss_streak": self.low_loss_streak,
                "low_diversity_streak": self.low_diversity_streak}

    def load_state_dict(self, state: dict) -> None:
        self.low_loss_streak = state["low_loss_streak"]
        self.low_diversity_streak = state["low_diversity_streak"]


def sample_diversity(images: Tensor) -> float:
    """Mean over all pairs of samples of their RMS per-element difference.

    Independent of image size; for images in [-1, 1] it lies in [0, 2], 0 = identical samples.
    """
    if len(images) < 2:
        raise ValueError(f"sample_diversity needs at least 2 samples, got {len(images)}")
    flat = images.detach().flatten(1).float()
    return (torch.pdist(flat).mean() / math.sqrt(flat.shape[1])).item()


def _to_uint8(images: Tensor) -> Tensor:
    return images.detach().float().cpu().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def image_grid(images: Tensor, nrow: int) -> Image.Image:
    """Images (N, C, H, W) in [-1, 1] tiled nrow per row on a black 2 px border."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    return to_pil_image(make_grid(_to_uint8(images), nrow=nrow))


@torch.no_grad()
def inpainting_grid(completion: nn.Module, images: Tensor, mask: Tensor, mean_pixel: Tensor) -> Tensor:
    """A (3, H, W) grid in [0, 1] of images (N, 3, h, w) in [0, 1], one row each: masked input
    (the holes mean-filled) | completion | original."""
    from torchvision.utils import make_grid

    rows = torch.stack([fill_holes(images, mask, mean_pixel), complete(completion, images, mask, mean_pixel), images],
                       dim=1).flatten(0, 1)
    return make_grid(rows, nrow=3, padding=2, pad_value=1.0)


def grid_png(images: Tensor) -> bytes:
    """PNG bytes of images (N, C, H, W) in [-1, 1] tiled in a near-square grid."""
    buffer = io.BytesIO()
    image_grid(images, nrow=math.ceil(math.sqrt(len(images)))).save(buffer, format="PNG")
    return buffer.getvalue()


def animated_gif(frames: list[Image.Image], duration_ms: int, loop: int = 0) -> bytes:
    """GIF bytes; loop=0 repeats forever. Pillow merges identical consecutive frames."""
    if not frames:
        raise ValueError("animated_gif needs at least one frame")
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:],
                   duration=duration_ms, loop=loop)
    return buffer.getvalue()


def slerp(a: Tensor, b: Tensor, t: float, parallel_eps: float = 1e-6) -> Tensor:
    """Spherical interpolation between latents along the last dimension (White 2016).

    Gaussian latents concentrate near a sphere, and a straight line between two of them
    passes through the improbable low-norm interior; slerp stays near that sphere.
    Falls back to linear interpolation where a and b are (anti)parallel: the great circle
    is then undefined, and the angle, from acos near +-1, is mostly rounding error.
    """
    cos_angle = (nn.functional.normalize(a, dim=-1) * nn.functional.normalize(b, dim=-1)).sum(-1, keepdim=True)
    near_parallel = cos_angle.abs() > 1 - parallel_eps
    angle = torch.acos(cos_angle.clamp(-1.0, 1.0))
    sin_angle = torch.sin(angle).masked_fill(near_parallel, 1.0)
    spherical = (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / sin_angle
    linear = (1 - t) * a + t * b
    return torch.where(near_parallel, linear, spherical)


@torch.no_grad()
def latent_walk(generator: nn.Module, n_keyframes: int, steps_between: int, latent_size: int,
                seed: int) -> list[Image.Image]:
    """Frames of a closed slerp tour through n_keyframes random latents.

    n_keyframes * steps_between frames; the last segment heads back to the first keyframe
    and stops one step short of it, so the animation loops without a repeated frame.
    The generator runs in eval mode and gets its previous mode back afterwards.
    """
    if n_keyframes < 2 or steps_between < 1:
        raise ValueError(f"latent_walk needs n_keyframes >= 2 and steps_between >= 1, "
                         f"got {n_keyframes} and {steps_between}")
    keyframes = torch.randn(n_keyframes, latent_size, generator=torch.Generator().manual_seed(seed))
    next_keyframes = keyframes.roll(-1, dims=0)
    latents = torch.stack([slerp(keyframes, next_keyframes, step / steps_between)
                           for step in range(steps_between)], dim=1).flatten(0, 1)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        images = torch.cat([generator(chunk.to(device)).cpu()
                            for chunk in latents.split(FRAMES_PER_GENERATOR_CALL)])
    finally:
        generator.train(was_training)
    from torchvision.transforms.functional import to_pil_image

    return [to_pil_image(image) for image in _to_uint8(images)]


def loss_curve_png(frame: pandas.DataFrame, columns: list[str]) -> bytes:
    """PNG line plot of the given columns against the frame's index (e.g. set_index('step'))."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in frame; it has {list(frame.columns)}")
    figure = Figure(figsize=(8, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for column in columns:
        axes.plot(frame.index, frame[column], label=column)
    axes.set_xlabel(frame.index.name or "index")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
