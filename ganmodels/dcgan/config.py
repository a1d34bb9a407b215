"""The options of a DCGAN training run; stored in every checkpoint, they rebuild its networks."""
from dataclasses import asdict, dataclass

from ..options import COLLAPSE_ACTIONS, check_choices, from_dict, option, require, required

SUPPORTED_IMAGE_SIZES = (32, 64, 128, 256)
PROJECTIONS = ("linear", "conv")


def check_image_size(image_size: int) -> None:
    require(image_size in SUPPORTED_IMAGE_SIZES, f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")


@dataclass(frozen=True)
class DCGANConfig:
    """Everything that defines a DCGAN training run.

    Label and optimiser defaults follow Ritchie Vink's "The distribution of Art?" post
    (itself following Radford et al. and Salimans et al.), except that real targets stop at
    1.0: BCE with a target above 1 has no minimum, it rewards ever larger real logits.
    """
    image_size: int = required("Side in pixels of the square training images")
    steps: int = option(5000, "Training steps (one D and one G update each)")
    latent_size: int = option(100, "Size of the generator's latent vector")
    base_channels: int = option(64, "Channels of the first D / last G layer; deeper layers double them, up to 8x")
    projection: str = option("linear", "How G maps the latent to 4x4 features: linear or conv", PROJECTIONS)
    batch_size: int = option(64, "Images per step, split over the training processes")
    lr: float = option(2e-4, "Adam learning rate of both networks")
    beta1: float = option(0.5, "Adam beta1 of both networks")
    beta2: float = option(0.999, "Adam beta2 of both networks")
    real_label_low: float = option(0.9, "D's targets for real images are uniform in [low, high]")
    real_label_high: float = option(1.0, "Upper end of D's targets for real images")
    fake_label_low: float = option(0.0, "D's targets for fakes are uniform in [low, high]")
    fake_label_high: float = option(0.2, "Upper end of D's targets for fakes")
    label_flip_prob: float = option(0.03, "Share of D's targets mirrored to the other class")
    # False feeds the discriminator one batch mixing real and fake images.
    separate_batches: bool = option(True, "D sees real and fake images in separate batches")
    random_flip: bool = option(True, "Flip real images left-right at random (turn off for digits, text)")
    # Experimental (stdm, 2016): before the discriminator step, fit each fake's latent for this
    # many Adam steps to the real image at the same batch position, under L1, with G frozen.
    latent_match_steps: int = option(0, "Experimental: Adam steps fitting each fake's latent to a real image under "
                                        "L1 before D's step; 0 = off")
    latent_match_lr: float = option(0.1, "Adam learning rate of the latent matching")
    ema_decay: float = option(0.0, "Keep an EMA of G's weights for sampling; 0 = off (e.g. 0.999)")
    seed: int = option(0, "Seed of the weights, the fixed latents and every random draw of training")
    fixed_latent_count: int = option(64, "Latents of the snapshot grids")
    snapshot_every: int = option(500, "Steps between snapshot grids (and at the last step)")
    # Collapse watch, checked at log steps on loss_d averaged since the previous log. With the
    # default labels a discriminator that separates perfectly still pays about 0.65 nats
    # (label noise), so an average below 0.7 means it has won.
    # Diversity is the RMS pixel difference between samples, in [0, 2]; an untrained
    # generator already gives about 0.2, so 0.05 means the samples have become near copies.
    collapse_window: int = option(10, "Consecutive log checks below a floor that count as collapse",
                                  affects_result=False)
    collapse_d_loss_floor: float = option(0.7, "D loss (mean since the last log) under which D has won; 0 = off",
                                          affects_result=False)
    collapse_diversity_floor: float = option(0.05, "RMS difference between samples under which G has collapsed; "
                                                   "0 = off", affects_result=False)
    on_collapse: str = option("warn", "warn: log and go on; stop: fail, keeping the last good checkpoint",
                              COLLAPSE_ACTIONS, affects_result=False)
    log_every: int = option(100, "Steps between log lines", affects_result=False)
    checkpoint_every: int = option(1000, "Steps between checkpoints", affects_result=False)

    def __post_init__(self):
        check_choices(self)
        check_image_size(self.image_size)
        require(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        require(self.latent_size >= 1, f"latent_size must be at least 1, got {self.latent_size}")
        require(self.base_channels >= 1, f"base_channels must be at least 1, got {self.base_channels}")
        require(self.batch_size >= 2, f"batch_size must be at least 2 for BatchNorm statistics, got {self.batch_size}")
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1), got {getattr(self, name)}")
        for kind in ("real", "fake"):
            low, high = getattr(self, f"{kind}_label_low"), getattr(self, f"{kind}_label_high")
            require(0 <= low <= high <= 1, f"{kind}_label_low and {kind}_label_high must satisfy "
                                           f"0 <= low <= high <= 1, got [{low}, {high}]")
        require(0 <= self.label_flip_prob < 0.5, f"label_flip_prob must be in [0, 0.5), got {self.label_flip_prob}")
        require(self.latent_match_steps >= 0, f"latent_match_steps must be non-negative, got {self.latent_match_steps}")
        require(self.latent_match_lr > 0, f"latent_match_lr must be positive, got {self.latent_match_lr}")
        require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        for name in ("fixed_latent_count", "log_every", "checkpoint_every", "snapshot_every", "collapse_window"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("collapse_d_loss_floor", "collapse_diversity_floor"):
            require(getattr(self, name) >= 0, f"{name} must be non-negative (0 = off), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DCGANConfig":
        return from_dict(cls, values)
