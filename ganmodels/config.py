"""Frozen, validated configuration objects passed into the models and training loops."""
import math
from dataclasses import asdict, dataclass

ARCHITECTURES = ("glcic", "infill")
MASK_KINDS = ("box", "strokes", "mixed")
UPSAMPLING = ("transpose", "resize")
HOLE_FILLS = ("mean", "smooth")
RECONSTRUCTION_LOSSES = ("mse", "l1")
LR_SCHEDULES = ("constant", "cosine")
COLLAPSE_ACTIONS = ("warn", "stop")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Which inpainting networks to build, and how wide."""

    arch: str = "glcic"
    image_size: int = 64
    width: float = 1.0  # 1.0 is the paper's channel count; a CPU run uses a fraction
    upsample: str = "transpose"  # the completion network's decoder (glcic)
    skips: bool = False  # glcic: the decoder also sees the encoder's features at full and half resolution
    hole_fill: str = "mean"  # what the network sees in the holes: the mean pixel, or a smooth fill from around

    def __post_init__(self):
        _require(self.arch in ARCHITECTURES, f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        _require(self.upsample in UPSAMPLING, f"upsample must be one of {UPSAMPLING}, got {self.upsample!r}")
        _require(self.hole_fill in HOLE_FILLS, f"hole_fill must be one of {HOLE_FILLS}, got {self.hole_fill!r}")
        _require(self.width > 0, f"width must be positive, got {self.width}")
        size_ok = self.image_size >= 16 and math.log2(self.image_size).is_integer()
        _require(size_ok, f"image_size must be a power of two >= 16, got {self.image_size}")

    @property
    def local_size(self) -> int:
        """Side of the local discriminator's patch: half the image, as in the paper (128 of 256)."""
        return self.image_size // 2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MaskConfig:
    """Which holes to cut: rectangles, free-form brush strokes, or a mix of both.

    Rectangles: sides in [hole_min, hole_max] of the image side, placed inside the area
    that keeps `margin` from every border, never larger than the local discriminator's
    patch (half the image). Strokes: their union covers a share of the image uniform in
    [stroke_area_min, stroke_area_max]. `mixed` gives each image one kind or the other.
    """

    image_size: int = 64
    kind: str = "box"
    hole_min: float = 0.25
    hole_max: float = 0.5
    margin: float = 0.0
    stroke_area_min: float = 0.1
    stroke_area_max: float = 0.4

    def __post_init__(self):
        _require(self.kind in MASK_KINDS, f"mask kind must be one of {MASK_KINDS}, got {self.kind!r}")
        _require(0 < self.stroke_area_min <= self.stroke_area_max <= 0.75,
                 f"need 0 < stroke_area_min <= stroke_area_max <= 0.75, got {self.stroke_area_min}, "
                 f"{self.stroke_area_max}")
        _require(0 < self.hole_min <= self.hole_max, f"need 0 < hole_min <= hole_max, got {self.hole_min}, {self.hole_max}")
        _require(self.hole_max <= 0.5, f"hole_max must be <= 0.5 (the local patch is half the image), got {self.hole_max}")
        _require(0 <= self.margin < 0.5, f"margin must be in [0, 0.5), got {self.margin}")
        _require(self.min_pixels >= 1, f"hole_min={self.hole_min} is less than one pixel at image_size={self.image_size}")
        _require(self.max_pixels <= self.area_size,
                 f"holes up to {self.max_pixels} px do not fit the placement area of {self.area_size} px "
                 f"(image_size={self.image_size}, margin={self.margin})")

    @property
    def min_pixels(self) -> int:
        return round(self.hole_min * self.image_size)

    @property
    def max_pixels(self) -> int:
        return round(self.hole_max * self.image_size)

    @property
    def area_start(self) -> int:
        return round(self.margin * self.image_size)

    @property
    def area_size(self) -> int:
        return self.image_size - 2 * self.area_start

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase: 1 completion MSE, 2 discriminators only, 3 joint."""

    phase: int
    steps: int
    batch_size: int = 16
    lr_completion: float = 1e-3
    lr_discriminator: float = 1e-4
    alpha: float = 0.0  # weight of the adversarial term; used in phase 3 (paper: 0.0004)
    # The completion network's reconstruction loss: over the hole, plus `known_weight` times the
    # same loss over the known pixels of its raw output (which the paste then discards).
    loss: str = "mse"
    known_weight: float = 0.0
    # Learning rates over the phase: constant, or a cosine from the set rates down to
    # `lr_final` times them at the phase's last step (after `warmup_steps` of linear warm-up).
    lr_schedule: str = "constant"
    lr_final: float = 0.01
    warmup_steps: int = 0
    # Each training image is a random square of 1/z of its side, z uniform in [1, max_zoom],
    # resized back: faces framed closer than the collection's (1 = the stored framing only).
    max_zoom: float = 1.0
    # Collapse watch of phase 3: the discriminator's loss (real + fake BCE) below the floor at
    # `collapse_window` consecutive log lines means it has won; warn, or stop the phase.
    collapse_window: int = 10
    collapse_d_loss_floor: float = 0.05
    on_collapse: str = "warn"
    checkpoint_every: int = 100
    log_every: int = 20
    seed: int = 0

    def __post_init__(self):
        _require(self.phase in (1, 2, 3), f"phase must be 1, 2 or 3, got {self.phase}")
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr_completion > 0, f"lr_completion must be positive, got {self.lr_completion}")
        _require(self.lr_discriminator > 0, f"lr_discriminator must be positive, got {self.lr_discriminator}")
        _require(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        _require(self.loss in RECONSTRUCTION_LOSSES, f"loss must be one of {RECONSTRUCTION_LOSSES}, got {self.loss!r}")
        _require(self.known_weight >= 0, f"known_weight must be >= 0, got {self.known_weight}")
        _require(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        _require(0 <= self.lr_final <= 1, f"lr_final must be in [0, 1], got {self.lr_final}")
        _require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(1 <= self.max_zoom <= 4, f"max_zoom must be in [1, 4], got {self.max_zoom}")
        _require(self.collapse_window >= 1, f"collapse_window must be >= 1, got {self.collapse_window}")
        _require(self.on_collapse in COLLAPSE_ACTIONS,
                 f"on_collapse must be one of {COLLAPSE_ACTIONS}, got {self.on_collapse!r}")
        _require(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _require(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_factor(self, step: int) -> float:
        """The share of the set learning rates used for the update that follows `step` updates.

        A function of the step alone, so a resumed phase continues the same schedule.
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(self.steps - self.warmup_steps, 1)
        return self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
