"""Inpainting networks: GLCIC (Iizuka et al. 2017) and the small 'infill' pair.

Every network here is a plain nn.Module; discriminators return one logit per image
(no Sigmoid) so the losses can use BCE-with-logits, which is safe under autocast.
"""
import math

import torch
from torch import nn

from .config import ModelConfig
from .masks import crop_patches


def _channels(base: int, width: float) -> int:
    return max(4, round(base * width))


def conv_norm_act(c_in, c_out, kernel, stride=1, dilation=1, transpose=False, activation=None):
    if transpose:
        conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding=(kernel - stride) // 2, bias=False)
    else:
        padding = dilation * (kernel - 1) // 2
        conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=padding, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), activation or nn.ReLU(inplace=True))


class CompletionNetwork(nn.Module):
    """GLCIC completion network: strided encoder, four dilated convolutions, deconv decoder.

    Input: 4 channels (image with holes filled by the mean pixel, then the mask).
    Output: an RGB image in [0, 1] of the same size.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        c64, c128, c256, c32 = (_channels(c, width) for c in (64, 128, 256, 32))
        self.layers = nn.Sequential(
            conv_norm_act(4, c64, 5),
            conv_norm_act(c64, c128, 3, stride=2),
            conv_norm_act(c128, c128, 3),
            conv_norm_act(c128, c256, 3, stride=2),
            conv_norm_act(c256, c256, 3),
            conv_norm_act(c256, c256, 3),
            *(conv_norm_act(c256, c256, 3, dilation=d) for d in (2, 4, 8, 16)),
            conv_norm_act(c256, c256, 3),
            conv_norm_act(c256, c256, 3),
            conv_norm_act(c256, c128, 4, stride=2, transpose=True),
            conv_norm_act(c128, c128, 3),
            conv_norm_act(c128, c64, 4, stride=2, transpose=True),
            conv_norm_act(c64, c32, 3),
            nn.Conv2d(c32, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _strided_encoder(size: int, width: float) -> tuple[nn.Sequential, int]:
    """5x5 stride-2 convolutions down to 4x4, then a fully connected layer to 1024 features."""
    n_layers = int(math.log2(size)) - 2
    bases = (64, 128, 256, 512, 512, 512, 512, 512)[:n_layers]
    layers, c_in = [], 3
    for base in bases:
        c_out = _channels(base, width)
        layers.append(conv_norm_act(c_in, c_out, 5, stride=2))
        c_in = c_out
    features = _channels(1024, width)
    layers += [nn.Flatten(), nn.Linear(c_in * 4 * 4, features), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), features


class GlobalLocalDiscriminator(nn.Module):
    """Global context on the whole image plus local context on a patch around the hole."""

    def __init__(self, image_size: int, width: float = 1.0):
        super().__init__()
        self.local_size = image_size // 2
        self.global_branch, n_global = _strided_encoder(image_size, width)
        self.local_branch, n_local = _strided_encoder(self.local_size, width)
        self.head = nn.Linear(n_global + n_local, 1)

    def forward(self, images: torch.Tensor, patch_origins: torch.Tensor) -> torch.Tensor:
        patches = crop_patches(images, patch_origins, self.local_size)
        joined = torch.cat([self.global_branch(images), self.local_branch(patches)], dim=1)
        return self.head(joined).squeeze(1)


class InfillGenerator(nn.Module):
    """The small 4-channel generator of the 'Adversarial infill' post, size-preserving."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c64, c128 = _channels(64, width), _channels(128, width)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.layers = nn.Sequential(
            conv_norm_act(4, c64, 5, activation=act()),
            conv_norm_act(c64, c128, 7, activation=act()),
            conv_norm_act(c128, c128, 3, activation=act()),
            nn.Conv2d(c128, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CheckerDiscriminator(nn.Module):
    """The post's 'checker': two conv + max-pool stages and two linear layers on the whole image.

    Global average pooling replaces the post's fixed-size flatten so any image size works.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        c32, c64 = _channels(32, width), _channels(64, width)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.layers = nn.Sequential(
            nn.Conv2d(3, c32, 3, padding=1), act(), nn.MaxPool2d(2),
            conv_norm_act(c32, c64, 5, activation=act()), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(c64, c32), act(),
            nn.Linear(c32, 1),
        )

    def forward(self, images: torch.Tensor, patch_origins: torch.Tensor) -> torch.Tensor:
        # The checker judges the whole image; patch_origins keeps the discriminator interface uniform.
        return self.layers(images).squeeze(1)


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """The (completion network, discriminator) pair for an architecture."""
    if config.arch == "glcic":
        return CompletionNetwork(config.width), GlobalLocalDiscriminator(config.image_size, config.width)
    return InfillGenerator(config.width), CheckerDiscriminator(config.width)


def fill_holes(images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor) -> torch.Tensor:
    """Replace hole pixels (mask == 1) by the training set's mean pixel."""
    return torch.lerp(images, mean_pixel.view(1, 3, 1, 1).to(images), mask)


def complete(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor) -> torch.Tensor:
    """Run the completion network and paste its output into the holes only.

    Discriminators and losses always see this composite, never the raw output, so the
    known pixels are exactly the input's.
    """
    filled = fill_holes(images, mask, mean_pixel)
    raw = net(torch.cat([filled, mask], dim=1))
    return torch.lerp(images, raw.to(images.dtype), mask)
