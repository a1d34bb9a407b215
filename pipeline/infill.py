"""Filling a user's image with a trained inpainter, as `python -m pipeline infill` and the studio do.

Images are (H, W, 3) uint8 RGB at their own size and masks (H, W) bool, True in the holes.
The network fills each region of holes in a crop around it seen at its training scale
(ganmodels.glcic.inference.complete_any_size), Navier-Stokes' finest detail is added inside the
holes (inpaint), and known pixels come back unchanged. The evaluation scores this same path.
"""
import cv2
import numpy as np
import torch
from torch import nn

from ganmodels.glcic.inference import complete_any_size, load_completion, size_multiple
from ganmodels.rendering import to_uint8

from .errors import UserError
# The evaluation's classical baseline, so that Telea here is the Telea of the metrics table.
from .evaluation import CLASSICAL_RADIUS, classical_inpaint

# Navier-Stokes' fill carries the edges at a hole's border into the hole along their direction. Its
# detail finer than what this Gaussian keeps (about two pixels of the image's own size), added to the
# network's fill, made held-out strokes of flowers, paintings and `sample` at 64 and 128 px more
# realistic (two-sample accuracy 0.02-0.12 lower, hole-patch SWD 0.6-4.3 lower) for 0.07-0.24 dB of
# their PSNR; squares, whose Navier-Stokes fill is smooth away from the border, lost 0.02-0.07 dB. At
# 512 px it changes little (docs/quality.md). Twice this sigma bought more realism for twice the
# PSNR (docs/experiments.md).
DETAIL_SIGMA = 1.0


def navier_stokes_detail(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The detail finer than DETAIL_SIGMA of OpenCV's Navier-Stokes fill of the holes, zero outside them."""
    marched = classical_inpaint(images.float().cpu(), mask.float().cpu(), "navier_stokes")
    taps = 2 * round(3 * DETAIL_SIGMA) + 1
    smooth = np.stack([cv2.GaussianBlur(image, (taps, taps), DETAIL_SIGMA, borderType=cv2.BORDER_REFLECT_101)
                       for image in marched.permute(0, 2, 3, 1).numpy()])
    detail = (marched - torch.from_numpy(smooth).permute(0, 3, 1, 2)) * mask.cpu()
    return detail.to(images.device, images.dtype)


def inpaint(completion: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor,
             training_size: int) -> torch.Tensor:
    """The images inpainted as `infill`, the studio and the evaluation inpaint them; known pixels unchanged.

    images: (N, 3, H, W) in [0, 1], mask (N, 1, H, W), 1 in the holes, at any size: the network's
    fill (complete_any_size) with Navier-Stokes' finest detail added inside the holes.
    """
    filled = complete_any_size(completion, images, mask, mean_pixel, training_size).to(images.dtype)
    return (filled + navier_stokes_detail(images, mask)).clamp_(0, 1)


def _pixels(batch: torch.Tensor) -> np.ndarray:
    """The first image of a [0, 1] batch as (H, W, 3) uint8."""
    return to_uint8(batch[0]).permute(1, 2, 0).numpy()


def _batch(pixels: np.ndarray, mask: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(device).float().div_(255)
    holes = torch.from_numpy(mask)[None, None].to(device).float()
    return images, holes


class Inpainter:
    """The completion network of a training state with the mean pixel and the image size it was trained with."""

    def __init__(self, state: dict, device: torch.device):
        self.device = device
        self.completion = load_completion(state, device)
        self.mean_pixel = torch.tensor(state["mean_pixel"], device=device)
        self.training_size = state["config"]["masks"]["image_size"]
        self.multiple = size_multiple(self.completion)

    def check_size(self, pixels: np.ndarray, what: str) -> None:
        height, width = pixels.shape[:2]
        if min(height, width) < self.multiple:
            raise UserError(f"{what} is {width}x{height} pixels; the network needs at least {self.multiple} "
                            "on each side")

    def fill(self, pixels: np.ndarray, mask: np.ndarray, poisson: bool) -> np.ndarray:
        """The image with its holes filled by the network, pasted or Poisson-blended (`poisson`)."""
        images, holes = _batch(pixels, mask, self.device)
        completed = _pixels(inpaint(self.completion, images, holes, self.mean_pixel, self.training_size))
        return poisson_blend(pixels, completed, mask) if poisson else completed


def telea(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its holes filled by OpenCV's Telea, the classical baseline of the evaluation."""
    images, holes = _batch(pixels, mask, torch.device("cpu"))
    return _pixels(classical_inpaint(images, holes, "telea"))


def poisson_blend(image: np.ndarray, prediction: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its holes filled by the prediction, Poisson-blended so no seam shows.

    As in the GLCIC paper, the holes are first filled by fast marching (OpenCV's Telea) so
    that the image's gradients continue smoothly across the hole border; cv2.seamlessClone
    then keeps the prediction's gradients inside the holes and fits them to that border.
    """
    marched = cv2.inpaint(image, mask.astype(np.uint8), CLASSICAL_RADIUS, cv2.INPAINT_TELEA)
    # OpenCV ignores the mask's outermost pixel ring, so holes touching the image border are
    # blended on copies one pixel larger on every side.
    grow = lambda pixels: np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")  # noqa: E731
    holes = np.pad(mask, 1).astype(np.uint8) * 255
    left, top, width, height = cv2.boundingRect(holes)
    # seamlessClone centres the mask's bounding box at `center`: that box's own centre keeps it in place.
    blended = cv2.seamlessClone(grow(prediction), grow(marched), holes, (left + width // 2, top + height // 2),
                                cv2.NORMAL_CLONE)[1:-1, 1:-1]
    # It solves over the whole box, moving known pixels inside it by rounding: take only the holes.
    return np.where(mask[..., None], blended, image)
