"""Inpainting networks: GLCIC (Iizuka et al. 2017) and the small 'infill' pair.

Every network here is a plain nn.Module; discriminators return one logit per image
(no Sigmoid) so the losses can use BCE-with-logits, which is safe under autocast.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..masks import crop_patches
from .config import ModelConfig


def _channels(base: int, width: float) -> int:
    return max(4, round(base * width))


def conv_norm_act(c_in, c_out, kernel, stride=1, dilation=1, transpose=False, activation=None):
    if transpose:
        conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding=(kernel - stride) // 2, bias=False)
    else:
        padding = dilation * (kernel - 1) // 2
        conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=padding, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), activation or nn.ReLU(inplace=True))


def upsample_norm_act(c_in, c_out, upsample: str):
    """Double the resolution without the checkerboard of the paper's 4x4 stride-2 transposed convolution
    (`transpose`: its kernel overlaps unevenly between neighbouring output pixels, Odena et al. 2016):
    `resize` resizes (nearest neighbour) and then convolves."""
    if upsample == "transpose":
        return conv_norm_act(c_in, c_out, 4, stride=2, transpose=True)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_norm_act(c_in, c_out, 3))


# Keeps the fill's logits finite where it is exactly black or white.
FILL_EPSILON = 1e-3
# Largest difference between a pixel's channels (in [0, 1]) for which an image counts as greyscale: a grey
# photograph stored as RGB decodes with equal channels, give or take rounding.
GREY_TOLERANCE = 2 / 255


def keep_grey(x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """`output` with each image whose known pixels are all grey made grey (the mean of its channels).

    x: the network input (the filled image, then the mask). A greyscale photograph must be
    completed in grey; left to itself the adversarial phase tints such fills a little, which
    both the pixel metrics and the realism measures catch.
    """
    image, known = x[:, :3], x[:, 3:] < 0.5
    spread = (image.amax(1, keepdim=True) - image.amin(1, keepdim=True)).masked_fill(~known, 0)
    grey = (spread.flatten(1).amax(1) <= GREY_TOLERANCE) & known.flatten(1).any(1)
    return torch.where(grey[:, None, None, None], output.mean(1, keepdim=True).expand_as(output), output)


class CompletionNetwork(nn.Module):
    """GLCIC completion network: strided encoder, four dilated convolutions, a decoder back to full size.

    Input: 4 channels (the image with its holes filled as `hole_fill` says, then the mask).
    Output: an RGB image in [0, 1] of the same size, grey where the known pixels are (keep_grey).
    With a fill made from the image itself (not the mean pixel) the last layer predicts a
    correction to that fill, in logits, and starts at zero: the network begins as the
    interpolation and learns what to add to it, instead of first learning to copy it.

    With `skips`, the decoder's layers at half and at full resolution also receive the
    encoder's features of that resolution (as in a U-Net), so that fine detail next to a
    thin hole need not pass through the quarter-resolution middle. The layers keep their
    indices either way, so states of both kinds load into a network of their kind.
    """

    # Decoder layer index -> the encoder layer whose output is joined to its input.
    SKIPS = {13: 2, 15: 0}

    def __init__(self, width: float = 1.0, upsample: str = "transpose", skips: bool = False, hole_fill: str = "mean"):
        super().__init__()
        c64, c128, c256, c32 = (_channels(c, width) for c in (64, 128, 256, 32))
        joined = 2 if skips else 1
        self.skips, self.hole_fill = skips, hole_fill
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
            upsample_norm_act(c256, c128, upsample),
            conv_norm_act(joined * c128, c128, 3),
            upsample_norm_act(c128, c64, upsample),
            conv_norm_act(joined * c64, c32, 3),
            nn.Conv2d(c32, 3, 3, padding=1),  # logits
        )
        if hole_fill != "mean":  # a correction to the fill, which it starts from exactly
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, network_input: torch.Tensor) -> torch.Tensor:
        x, kept = network_input, {}  # kept: only the encoder outputs a skip joins, so inference holds no more
        for index, layer in enumerate(self.layers):
            if self.skips and index in self.SKIPS:
                x = torch.cat([x, kept.pop(self.SKIPS[index])], dim=1)
            x = layer(x)
            if self.skips and index in self.SKIPS.values():
                kept[index] = x
        if self.hole_fill != "mean":
            x = x + torch.logit(network_input[:, :3].clamp(FILL_EPSILON, 1 - FILL_EPSILON))
        return keep_grey(network_input, torch.sigmoid(x))


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

    def __init__(self, width: float = 1.0, hole_fill: str = "mean"):
        super().__init__()
        self.hole_fill = hole_fill
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
        return keep_grey(x, self.layers(x))


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
        return (CompletionNetwork(config.width, config.upsample, config.skips, config.hole_fill),
                GlobalLocalDiscriminator(config.image_size, config.width))
    return InfillGenerator(config.width, config.hole_fill), CheckerDiscriminator(config.width)


# Relaxation sweeps per pyramid level of the harmonic fill: on the evaluation's holes at 64 px, 20
# come within 0.15 dB of the converged solution in about a sixth of the time of 400 sweeps at full size.
HARMONIC_SWEEPS = 20


def smooth_fill(images: torch.Tensor, mask: torch.Tensor, sweeps: int = 0) -> torch.Tensor:
    """Holes (mask == 1) filled from the known pixels around them by pull-push interpolation.

    Pull: average the known colours, and the share of known pixels, over ever coarser 2x2
    blocks. Push: from the coarsest level back up, each level keeps its own known colour
    where it has one and takes the upsampled coarser estimate for the rest. A hole pixel
    so gets a smooth blend of the colours around it, nearer ones weighing more (Gortler et
    al. 1996, The Lumigraph). Any image size; a handful of pooling steps for the whole batch.

    With `sweeps`, each level then relaxes its unknown share towards the average of its four
    neighbours that many times (Jacobi): coarse to fine, a cascadic multigrid solution of
    Laplace's equation with the known pixels as the boundary, the harmonic fill. It continues
    gradients across a hole where pull-push alone flattens them towards the hole's mean colour.
    """
    # Its many small padding and elementwise steps are far slower on the channels_last batches of
    # training than on NCHW (on the CPU: 11.5 against 7.0 ms a batch of 16 at 64 px); the result
    # goes back in the layout it came in, bit for bit the same.
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images, mask = images.contiguous(), mask.contiguous()
    known = 1 - mask
    colours, shares = [images * known], [known]  # colours premultiplied by their share of known pixels
    while min(colours[-1].shape[-2:]) > 1:
        colours.append(F.avg_pool2d(colours[-1], 2, ceil_mode=True))
        shares.append(F.avg_pool2d(shares[-1], 2, ceil_mode=True))
    filled = colours[-1] / shares[-1].clamp_min(1e-8)
    for colour, share in zip(reversed(colours[:-1]), reversed(shares[:-1])):
        unknown = 1 - share
        coarser = F.interpolate(filled, size=colour.shape[-2:], mode="bilinear", align_corners=False)
        filled = colour + unknown * coarser
        for _ in range(sweeps):
            filled = jacobi_sweep(filled, colour, unknown)
    return filled.contiguous(memory_format=layout)


def jacobi_sweep(filled: torch.Tensor, colour: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """One Jacobi sweep: colour + unknown * (the mean of each pixel's four neighbours), where the border
    repeats the edge pixels (no flux across it).

    In place on one new tensor, in the order of the plain expression: bit for bit the same, with
    fewer of the small operations that the many sweeps of a batch spend their time on
    (bench/hole_fill.py times both).
    """
    padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
    relaxed = padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
    relaxed += padded[..., :-2, 1:-1]
    relaxed += padded[..., 2:, 1:-1]
    relaxed *= 0.25
    relaxed *= unknown
    return relaxed.add_(colour)


def fill_holes(images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """The images with their hole pixels (mask == 1) replaced: by the training set's mean pixel
    (`mean`, as in the paper), by pull-push interpolation of the known pixels around them
    (`smooth`), or by the harmonic interpolation of them (`harmonic`; smooth_fill)."""
    if how == "smooth":
        return smooth_fill(images, mask)
    if how == "harmonic":
        return smooth_fill(images, mask, HARMONIC_SWEEPS)
    return torch.lerp(images, mean_pixel.view(1, 3, 1, 1).to(images), mask)


def complete(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor) -> torch.Tensor:
    """Run the completion network and paste its output into the holes only.

    Discriminators and losses always see this composite, never the raw output, so the
    known pixels are exactly the input's.
    """
    filled = fill_holes(images, mask, mean_pixel, net.hole_fill)
    raw = net(torch.cat([filled, mask], dim=1))
    return torch.lerp(images, raw.to(images.dtype), mask)
