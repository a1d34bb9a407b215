"""Using trained networks on new inputs: inpainting at any image size, and DCGAN samples and latent walks."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .monitoring import slerp
from .networks import fill_holes


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


def latent_walks(walks: int, steps: int, latent_size: int, generator: torch.Generator) -> torch.Tensor:
    """`walks` great-circle walks of `steps` latents each between random pairs, flattened walk by walk."""
    if steps < 2:
        raise ValueError(f"a walk needs at least 2 steps, got {steps}")
    ends = torch.randn(2, walks, latent_size, generator=generator)
    return torch.stack([slerp(ends[0], ends[1], t) for t in torch.linspace(0, 1, steps)], dim=1).flatten(0, 1)


def generate(generator_net: nn.Module, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images in [0, 1] from a generator whose output is in [-1, 1], in eval mode, batch by batch."""
    generator_net.eval()
    with torch.no_grad():
        batches = [generator_net(chunk) for chunk in latents.split(batch_size)]
    return torch.cat(batches).add(1).div(2).clamp(0, 1)
