"""Losses for the three inpainting phases."""
import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / (weights.sum() * values.shape[1]).clamp_min(1)


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse",
                        known_weight: float = 0.0) -> torch.Tensor:
    """The completion network's pixel loss: mean squared or absolute error over the hole pixels,
    plus `known_weight` times the same over the known pixels of the raw output.

    The known term costs nothing at inference (the known pixels are pasted back) but asks
    the network to reproduce its input, which ties the fill's colours to its surroundings.
    """
    error = (output - target).square() if kind == "mse" else (output - target).abs()
    loss = _masked_mean(error, mask)
    if known_weight:
        loss = loss + known_weight * _masked_mean(error, 1 - mask)
    return loss


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def detail_gradient_only(images: torch.Tensor, block: int) -> torch.Tensor:
    """The same images, through which a gradient reaches only what differs from their averages over
    `block` x `block` pixels (bilinearly upsampled).

    The average is a linear low-pass L, and the result is x - L(x) + stop_gradient(L(x)): equal to
    x, with gradient (I - L) applied to whatever flows back. A loss of the result cannot move the
    images' coarse colours and shading, only their detail.
    """
    coarse = F.interpolate(F.avg_pool2d(images, block, ceil_mode=True), size=images.shape[-2:], mode="bilinear",
                           align_corners=False)
    return images - coarse + coarse.detach()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: make the discriminator call the completions real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
