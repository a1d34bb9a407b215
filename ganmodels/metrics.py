"""Inpainting quality measures, per image, on images in [0, 1]."""
import torch


def _hole_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_pixel = values.mean(dim=1, keepdim=True)  # average over colour channels
    return (per_pixel * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def hole_l1(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over each image's hole pixels."""
    return _hole_mean((predicted - target).abs(), mask)


def hole_psnr(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB, peak 1.0) over each image's hole pixels."""
    mse = _hole_mean((predicted - target).square(), mask)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def ssim(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity of each whole image."""
    # Imported here: torchmetrics loads scipy.signal, about 1 s for every process that
    # imports the pipeline, while only evaluation needs it.
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(predicted, target, data_range=1.0, reduction="none")


def inpainting_metrics(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"psnr_hole": hole_psnr(predicted, target, mask),
            "l1_hole": hole_l1(predicted, target, mask),
            "ssim": ssim(predicted, target)}
