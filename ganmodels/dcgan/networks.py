"""DCGAN generator and discriminator (Radford et al. 2015)."""
import math

from torch import Tensor, nn

from .config import PROJECTIONS, check_image_size

RGB_CHANNELS = 3
SMALLEST_FEATURE_MAP = 4
LEAKY_SLOPE = 0.2
# Channel counts stop doubling at 8x base_channels, as in the DCGAN paper's 64 px networks;
# without the cap a 256 px network would reach 32x base_channels.
WIDTH_MULTIPLIER_CAP = 8


def feature_widths(image_size: int, base_channels: int) -> list[int]:
    """Channel counts of the feature maps from image_size / 2 down to 4x4."""
    check_image_size(image_size)
    halvings = int(math.log2(image_size // SMALLEST_FEATURE_MAP))
    return [base_channels * min(2**level, WIDTH_MULTIPLIER_CAP) for level in range(halvings)]


class Generator(nn.Module):
    """Maps latents (N, latent_size) to images (N, 3, image_size, image_size) in [-1, 1]."""

    def __init__(self, image_size: int, latent_size: int, base_channels: int,
                 projection: str = "linear"):
        super().__init__()
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.image_size = image_size
        self.latent_size = latent_size
        widths = feature_widths(image_size, base_channels)[::-1]
        side = SMALLEST_FEATURE_MAP
        # Biases before BatchNorm are cancelled by its mean subtraction, hence bias=False.
        if projection == "linear":
            project = [nn.Linear(latent_size, widths[0] * side * side, bias=False),
                       nn.Unflatten(1, (widths[0], side, side))]
        else:
            project = [nn.Unflatten(1, (latent_size, 1, 1)),
                       nn.ConvTranspose2d(latent_size, widths[0], side, 1, 0, bias=False)]
        layers = [*project, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for in_width, out_width in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(in_width, out_width, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(out_width), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], RGB_CHANNELS, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)


class Discriminator(nn.Module):
    """Maps images (N, 3, image_size, image_size) to one real-vs-fake logit each, shape (N,)."""

    def __init__(self, image_size: int, base_channels: int):
        super().__init__()
        widths = feature_widths(image_size, base_channels)
        # The first layer sees raw pixels; the DCGAN paper leaves BatchNorm off there.
        layers = [nn.Conv2d(RGB_CHANNELS, widths[0], 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        for in_width, out_width in zip(widths, widths[1:]):
            layers += [nn.Conv2d(in_width, out_width, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(out_width), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        layers += [nn.Conv2d(widths[-1], 1, SMALLEST_FEATURE_MAP, 1, 0), nn.Flatten(0)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper initialisation for every layer inside module (call it on the whole network)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
