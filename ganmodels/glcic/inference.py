"""Using a trained completion network on new inputs: any image size, any mask."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..options import from_dict
from .config import ModelConfig
from .networks import build_networks, fill_holes


def load_completion(state: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The completion network of a saved training state, in eval mode."""
    completion, _ = build_networks(from_dict(ModelConfig, state["config"]["model"]))
    completion.load_state_dict(state["networks"]["completion"])
    return completion.to(device).eval()


def size_multiple(net: nn.Module) -> int:
    """Side lengths a fully convolutional network maps back to themselves are multiples of this.

    Each strided convolution divides the side by its stride and the decoder multiplies it
    back, so sides must be divisible by the product of the downsampling strides.
    """
    return math.prod(layer.stride[0] for layer in net.modules() if isinstance(layer, nn.Conv2d))


def predict(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor) -> torch.Tensor:
    """The network's raw output for images of any size: every pixel predicted, none pasted.

    images: (N, 3, H, W) in [0, 1]; mask: (N, 1, H, W) of 0 and 1, 1 in the holes. The
    network sees the images and mask reflect-padded at the bottom and right up to its size
    multiple, and its output is cropped back, so no pixel is resampled.
    """
    height, width = images.shape[-2:]
    multiple = size_multiple(net)
    if min(height, width) < multiple:
        raise ValueError(f"images must be at least {multiple} pixels on each side, got {width}x{height}")
    padding = (0, -width % multiple, 0, -height % multiple)
    padded_mask = F.pad(mask, padding, mode="reflect")
    network_input = torch.cat([fill_holes(F.pad(images, padding, mode="reflect"), padded_mask, mean_pixel,
                                          net.hole_fill), padded_mask], dim=1)
    with torch.no_grad():
        return net(network_input)[..., :height, :width]


def paste(images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction in the holes (mask == 1), the images' own pixels everywhere else."""
    return torch.lerp(images, prediction.to(images.dtype), mask)


def complete_any_size(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor,
                      training_size: int) -> torch.Tensor:
    """The completed images at their own size, known pixels unchanged: the network on the whole image."""
    return paste(images, predict(net, images, mask, mean_pixel), mask)
