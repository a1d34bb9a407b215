"""Watching adversarial training for collapse, the same way in every training loop.

A loop feeds the watch its log-step figures; when the watch fires with on_collapse=stop
the loop raises TrainingCollapsed, and the last checkpoint written before it holds the
last good state.
"""
import math

import torch
from torch import Tensor

from .options import require


class TrainingCollapsed(RuntimeError):
    """The collapse watch ended a run (on_collapse=stop); the message says at which step and why,
    and `history` holds the log rows up to there."""

    def __init__(self, step: int, reason: str, history: list[dict]):
        super().__init__(f"collapse at step {step}: {reason}")
        self.step, self.reason, self.history = step, reason, history


class CollapseWatch:
    """Flags a run whose discriminator keeps winning or whose samples stop varying.

    A floor of 0 switches that check off. Warnings repeat on every update while the
    condition persists.
    """

    def __init__(self, window: int, d_loss_floor: float, diversity_floor: float):
        require(window >= 1, f"window must be at least 1, got {window}")
        self.window = window
        self.d_loss_floor = d_loss_floor
        self.diversity_floor = diversity_floor
        self.low_loss_streak = 0
        self.low_diversity_streak = 0

    def update(self, loss_d: float, diversity: float | None) -> str | None:
        """Record one measurement; diversity None means not measured this time."""
        self.low_loss_streak = self.low_loss_streak + 1 if loss_d < self.d_loss_floor else 0
        if diversity is not None:
            below = diversity < self.diversity_floor
            self.low_diversity_streak = self.low_diversity_streak + 1 if below else 0
        if self.low_loss_streak >= self.window:
            return (f"discriminator loss below {self.d_loss_floor} for {self.low_loss_streak} "
                    f"consecutive checks (last {loss_d:.4g}): the discriminator has won and "
                    f"the generator gets no useful gradient")
        if self.low_diversity_streak >= self.window:
            return (f"sample diversity below {self.diversity_floor} for {self.low_diversity_streak} "
                    f"consecutive checks (last {diversity:.4g}): the generator has collapsed "
                    f"to near-identical samples")
        return None

    def state_dict(self) -> dict:
        return {"low_loss_streak": self.low_loss_streak,
                "low_diversity_streak": self.low_diversity_streak}

    def load_state_dict(self, state: dict) -> None:
        self.low_loss_streak = state["low_loss_streak"]
        self.low_diversity_streak = state["low_diversity_streak"]


def sample_diversity(images: Tensor) -> float:
    """Mean over all pairs of samples of their RMS per-element difference.

    Independent of image size; for images in [-1, 1] it lies in [0, 2], 0 = identical samples.
    """
    if len(images) < 2:
        raise ValueError(f"sample_diversity needs at least 2 samples, got {len(images)}")
    flat = images.detach().flatten(1).float()
    return (torch.pdist(flat).mean() / math.sqrt(flat.shape[1])).item()
