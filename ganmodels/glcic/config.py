"""The options of a GLCIC training run: the networks, and how each of the three phases trains.

Phase 1 trains the completion network alone, phase 2 the discriminators alone, phase 3
both. Each phase has the options it uses (point of a split: changing a phase-3 option
never reruns phases 1 and 2), and a phase's run carries the options of the phases
before it, since it starts from their result. The defaults are this project's recipe;
configs/paper.cfg sets the paper's choices.
"""
import math
from dataclasses import asdict, dataclass, fields

from ..masks import MaskConfig
from ..options import COLLAPSE_ACTIONS, check_choices, from_dict, option, require, required

ARCHITECTURES = ("glcic", "infill")
UPSAMPLING = ("transpose", "resize")
HOLE_FILLS = ("mean", "smooth", "harmonic")
RECONSTRUCTION_LOSSES = ("mse", "l1")
LR_SCHEDULES = ("constant", "cosine")
PHASES = (1, 2, 3)
COMPLETION_BETAS = (0.9, 0.999)
DISCRIMINATOR_BETAS = (0.5, 0.999)


@dataclass(frozen=True)
class ModelConfig:
    """Which inpainting networks to build, and how wide."""

    image_size: int = required("Side in pixels of the square training images")
    arch: str = option("glcic", "glcic (paper) or infill (small)", ARCHITECTURES)
    width: float = option(0.25, "Channel multiplier of both networks; 1.0 is the paper's channel count")
    upsample: str = option("resize", "Decoder upsampling: resize (nearest + conv, no checkerboard) or "
                                     "transpose (paper)", UPSAMPLING)
    skips: bool = option(True, "glcic: skip connections from the encoder to the decoder (U-Net)")
    hole_fill: str = option("harmonic", "What the network sees in the holes: the mean pixel (paper), or a fill "
                                        "from the known pixels around them, smooth (pull-push) or harmonic",
                            HOLE_FILLS)

    def __post_init__(self):
        check_choices(self)
        require(self.width > 0, f"width must be positive, got {self.width}")
        size_ok = self.image_size >= 16 and math.log2(self.image_size).is_integer()
        require(size_ok, f"image_size must be a power of two >= 16, got {self.image_size}")

    @property
    def local_size(self) -> int:
        """Side of the local discriminator's patch: half the image, as in the paper (128 of 256)."""
        return self.image_size // 2


@dataclass(frozen=True)
class CompletionTraining:
    """Phase 1, and what every phase shares: batches, the reconstruction loss, the learning-rate schedule."""

    phase1_steps: int = option(2400, "Steps of phase 1 (the completion network alone)")
    batch_size: int = option(16, "Images per step, split over the training processes")
    lr_completion: float = option(1e-3, "Adam learning rate of the completion network in phase 1")
    # The reconstruction loss covers the hole, plus known_weight times the same loss over the
    # known pixels of the raw output (which the paste then discards).
    loss: str = option("l1", "Reconstruction loss of the completion network: l1 or mse (paper)",
                       RECONSTRUCTION_LOSSES)
    known_weight: float = option(0.0, "Weight of the reconstruction loss on known pixels")
    lr_schedule: str = option("cosine", "Learning rates over each phase: cosine or constant (paper)", LR_SCHEDULES)
    lr_final: float = option(0.01, "cosine: the share of the rates left at the end")
    warmup_steps: int = option(0, "Steps of linear learning-rate warm-up per phase")
    max_zoom: float = option(1.5, "Train on random squares of 1/z of each image's side, z uniform in [1, max_zoom], "
                                  "resized back (1: off)")
    seed: int = option(0, "Seed of the weights and of every random draw of training")
    checkpoint_every: int = option(100, "Steps between checkpoints", affects_result=False)
    log_every: int = option(50, "Steps between log lines", affects_result=False)

    def __post_init__(self):
        check_choices(self)
        require(self.phase1_steps >= 1, f"phase1_steps must be >= 1, got {self.phase1_steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr_completion > 0, f"lr_completion must be positive, got {self.lr_completion}")
        require(self.known_weight >= 0, f"known_weight must be >= 0, got {self.known_weight}")
        require(0 <= self.lr_final <= 1, f"lr_final must be in [0, 1], got {self.lr_final}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(1 <= self.max_zoom <= 4, f"max_zoom must be in [1, 4], got {self.max_zoom}")
        require(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        require(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")


@dataclass(frozen=True)
class DiscriminatorTraining:
    """Phase 2: the discriminators against the frozen completion network (and their rate in phase 3)."""

    phase2_steps: int = option(100, "Steps of phase 2 (the discriminators alone)")
    # Four times the 1e-4 of earlier versions: a discriminator that keeps up with the completion network
    # catches the coloured streaks it otherwise learns to paint into large holes.
    lr_discriminator: float = option(4e-4, "Adam learning rate of the discriminators (phases 2 and 3)")

    def __post_init__(self):
        require(self.phase2_steps >= 1, f"phase2_steps must be >= 1, got {self.phase2_steps}")
        require(self.lr_discriminator > 0, f"lr_discriminator must be positive, got {self.lr_discriminator}")


@dataclass(frozen=True)
class JointTraining:
    """Phase 3: both networks, the completion network on reconstruction + alpha * adversarial loss."""

    phase3_steps: int = option(1200, "Steps of phase 3 (both networks)")
    lr_joint: float = option(1e-3, "Adam learning rate of the completion network in phase 3")
    # Chosen over faces, flowers and paintings together (docs/experiments.md): at 0.02 the texture it adds
    # cost flowers and paintings 0.6-0.8 dB in the squares, where they fell behind Telea.
    alpha: float = option(5e-3, "Weight of the adversarial loss (paper: 0.0004, with MSE)")
    adversarial_block: int = option(0, "Side in pixels of the blocks whose average colours the adversarial loss "
                                       "leaves to the reconstruction loss (0: it moves every colour, as in the paper)")
    # The discriminator's loss (real + fake BCE) below the floor at collapse_window
    # consecutive log lines means it has won.
    collapse_window: int = option(10, "Consecutive log lines of a winning discriminator that count as collapse",
                                  affects_result=False)
    collapse_d_loss_floor: float = option(0.05, "Discriminator loss below which it is winning", affects_result=False)
    on_collapse: str = option("warn", "When the discriminator has won: warn, or stop the phase", COLLAPSE_ACTIONS,
                              affects_result=False)

    def __post_init__(self):
        check_choices(self)
        require(self.phase3_steps >= 1, f"phase3_steps must be >= 1, got {self.phase3_steps}")
        require(self.lr_joint > 0, f"lr_joint must be positive, got {self.lr_joint}")
        require(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        require(self.adversarial_block >= 0, f"adversarial_block must be >= 0, got {self.adversarial_block}")
        require(self.collapse_window >= 1, f"collapse_window must be >= 1, got {self.collapse_window}")


@dataclass(frozen=True)
class PhaseOptions:
    """Everything one phase's run is given; saved once as its training_options.json."""

    phase: int
    model: ModelConfig
    masks: MaskConfig
    completion: CompletionTraining
    discriminator: DiscriminatorTraining | None = None  # phases 2 and 3
    joint: JointTraining | None = None  # phase 3

    def __post_init__(self):
        require(self.phase in PHASES, f"phase must be one of {PHASES}, got {self.phase}")
        require((self.discriminator is not None) == (self.phase >= 2), "phases 2 and 3, and only they, have "
                                                                         "discriminator options")
        require((self.joint is not None) == (self.phase == 3), "phase 3, and only it, has joint options")
        require(self.model.image_size == self.masks.image_size,
                f"the model's image_size {self.model.image_size} differs from the masks' {self.masks.image_size}")
        require(self.joint is None or self.joint.adversarial_block <= self.model.image_size,
                f"adversarial_block must be at most image_size {self.model.image_size}, "
                f"got {self.joint and self.joint.adversarial_block}")

    @property
    def steps(self) -> int:
        if self.phase == 1:
            return self.completion.phase1_steps
        return self.discriminator.phase2_steps if self.phase == 2 else self.joint.phase3_steps

    @property
    def trains_completion(self) -> bool:
        return self.phase != 2

    @property
    def trains_discriminator(self) -> bool:
        return self.phase != 1

    @property
    def alpha(self) -> float:
        return self.joint.alpha if self.joint else 0.0

    def learning_rates(self, step: int) -> tuple[float, float]:
        """(completion, discriminator) rates for the update that follows `step` updates; 0 for a frozen network."""
        factor = self.lr_factor(step)
        completion = self.joint.lr_joint if self.joint else self.completion.lr_completion if self.phase == 1 else 0.0
        discriminator = self.discriminator.lr_discriminator if self.discriminator else 0.0
        return completion * factor, discriminator * factor

    def lr_factor(self, step: int) -> float:
        """The share of the set learning rates used for the update that follows `step` updates.

        A function of the step alone, so a resumed phase continues the same schedule.
        """
        schedule = self.completion
        if step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        if schedule.lr_schedule == "constant":
            return 1.0
        progress = (step - schedule.warmup_steps) / max(self.steps - schedule.warmup_steps, 1)
        return schedule.lr_final + (1 - schedule.lr_final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PhaseOptions":
        return from_dict(cls, values)

    @classmethod
    def from_settings(cls, phase: int, **settings) -> "PhaseOptions":
        """The options of `phase` from settings named as the tasks' parameters are (image_size sets
        both the model's and the masks'); the rest keep their defaults."""
        require(phase in PHASES, f"phase must be one of {PHASES}, got {phase}")
        classes = [option_class for earlier in PHASES[:phase] for option_class in OPTION_CLASSES[earlier]]
        known = {field.name for option_class in classes for field in fields(option_class)}
        require(not (unknown := set(settings) - known), f"phase {phase} has no options {sorted(unknown)}")
        return cls(phase, *(option_class(**{field.name: settings[field.name] for field in fields(option_class)
                                             if field.name in settings}) for option_class in classes))


# The option classes each phase adds to those of the phases before it, in PhaseOptions' order.
OPTION_CLASSES = {1: (ModelConfig, MaskConfig, CompletionTraining), 2: (DiscriminatorTraining,), 3: (JointTraining,)}
