"""Losses for the three inpainting phases."""
import torch
import torch.nn.functional as F


def hole_mse(completed: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over hole pixels only (phase 1 and the reconstruction term of phase 3)."""
    squared = (completed - target).square() * mask
    return squared.sum() / (mask.sum() * target.shape[1]).clamp_min(1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: make the discriminator call the completions real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
