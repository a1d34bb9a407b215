"""DCGAN generator and discriminator (Radford et al. 2015) and their training configuration."""
import math
from dataclasses import dataclass

from torch import Tensor, nn

from .config import COLLAPSE_ACTIONS, _require

SUPPORTED_IMAGE_SIZES = (32, 64, 128, 256)
PROJECTIONS = ("linear", "conv")
RGB_CHANNELS = 3
SMALLEST_FEATURE_MAP = 4
LEAKY_SLOPE = 0.2
# Widths stop doubling at 8x the base width, as in the DCGAN paper's 64 px networks;
# without the cap a 256 px network would reach 32x the base width.
WIDTH_MULTIPLIER_CAP = 8


def check_image_size(image_size: int) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")


def feature_widths(image_size: int, width: int) -> list[int]:
    """Channel counts of the feature maps from image_size / 2 down to 4x4."""
    check_image_size(image_size)
    halvings = int(math.log2(image_size // SMALLEST_FEATURE_MAP))
    return [width * min(2**level, WIDTH_MULTIPLIER_CAP) for level in range(halvings)]


class Generator(nn.Module):
    """Maps latents (N, latent_size) to images (N, 3, image_size, image_size) in [-1, 1]."""

    def __init__(self, image_size: int, latent_size: int = 100, width: int = 64,
                 projection: str = "linear"):
        super().__init__()
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.image_size = image_size
        self.latent_size = latent_size
        widths = feature_widths(image_size, width)[::-1]
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

    def __init__(self, image_size: int, width: int = 64):
        super().__init__()
        widths = feature_widths(image_size, width)
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


@dataclass(frozen=True)
class DCGANConfig:
    """Everything that defines a DCGAN training run; stored as a dict in every checkpoint.

    Label and optimiser defaults follow Ritchie Vink's "The distribution of Art?" post
    (itself following Radford et al. and Salimans et al.), except that real targets stop at
    1.0: BCE with a target above 1 has no minimum, it rewards ever larger real logits.
    """
    image_size: int
    steps: int
    latent_size: int = 100
    width: int = 64
    projection: str = "linear"
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # Discriminator targets are drawn per sample, uniformly in these ranges (soft, noisy labels).
    real_label_low: float = 0.9
    real_label_high: float = 1.0
    fake_label_low: float = 0.0
    fake_label_high: float = 0.2
    # Share of discriminator targets mirrored to the other class (target -> 1 - target).
    label_flip_prob: float = 0.03
    # False feeds the discriminator one batch mixing real and fake images.
    separate_batches: bool = True
    # Experimental (stdm, 2016): before the discriminator step, fit each fake's latent for this
    # many Adam steps to the real image at the same batch position, under L1, with G frozen.
    latent_match_steps: int = 0
    latent_match_lr: float = 0.1
    ema_decay: float = 0.0
    seed: int = 0
    fixed_latent_count: int = 64
    log_every: int = 100
    checkpoint_every: int = 1000
    # How often train_dcgan's on_snapshot gets the samples of the fixed latents.
    snapshot_every: int = 500
    # Collapse watch, checked at log steps on loss_d averaged since the previous log. With the
    # default labels a discriminator that separates perfectly still pays about 0.65 nats
    # (label noise), so an average below 0.7 means it has won.
    # Diversity is the RMS pixel difference between samples, in [0, 2]; an untrained
    # generator already gives about 0.2, so 0.05 means the samples have become near copies.
    collapse_window: int = 10
    collapse_d_loss_floor: float = 0.7
    collapse_diversity_floor: float = 0.05
    on_collapse: str = "warn"
    channels_last: bool = False
    mixed_precision: bool = False  # bfloat16 autocast; needs no gradient scaling

    def __post_init__(self):
        check_image_size(self.image_size)
        _require(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        _require(self.latent_size >= 1, f"latent_size must be at least 1, got {self.latent_size}")
        _require(self.width >= 1, f"width must be at least 1, got {self.width}")
        _require(self.projection in PROJECTIONS,
                 f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        _require(self.batch_size >= 2,
                 f"batch_size must be at least 2 for BatchNorm statistics, got {self.batch_size}")
        _require(self.lr > 0, f"lr must be positive, got {self.lr}")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1), got {getattr(self, name)}")
        for kind in ("real", "fake"):
            low, high = getattr(self, f"{kind}_label_low"), getattr(self, f"{kind}_label_high")
            _require(0 <= low <= high <= 1,
                     f"{kind} label range must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
        _require(0 <= self.label_flip_prob < 0.5,
                 f"label_flip_prob must be in [0, 0.5), got {self.label_flip_prob}")
        _require(self.latent_match_steps >= 0,
                 f"latent_match_steps must be non-negative, got {self.latent_match_steps}")
        _require(self.latent_match_lr > 0, f"latent_match_lr must be positive, got {self.latent_match_lr}")
        _require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        for name in ("fixed_latent_count", "log_every", "checkpoint_every", "snapshot_every", "collapse_window"):
            _require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("collapse_d_loss_floor", "collapse_diversity_floor"):
            _require(getattr(self, name) >= 0, f"{name} must be non-negative (0 = off), got {getattr(self, name)}")
        _require(self.on_collapse in COLLAPSE_ACTIONS,
                 f"on_collapse must be one of {COLLAPSE_ACTIONS}, got {self.on_collapse!r}")
