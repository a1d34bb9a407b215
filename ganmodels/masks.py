"""Rectangular hole masks and local patches, generated for a whole batch at once."""
import torch

from .config import MaskConfig


def sample_holes(batch_size: int, config: MaskConfig, generator: torch.Generator) -> torch.Tensor:
    """Random holes as an int64 (batch, 4) tensor of (top, left, height, width).

    Sizes are uniform in [min_pixels, max_pixels]; positions uniform over the places
    where the whole hole fits inside the placement area.
    """
    device = generator.device
    low, high = config.min_pixels, config.max_pixels
    sizes = torch.randint(low, high + 1, (batch_size, 2), generator=generator, device=device)
    room = config.area_size - sizes + 1  # number of valid offsets per axis
    offsets = (torch.rand(batch_size, 2, generator=generator, device=device) * room).long()
    corners = config.area_start + offsets
    return torch.cat([corners, sizes], dim=1)


def holes_to_mask(holes: torch.Tensor, image_size: int) -> torch.Tensor:
    """A float (batch, 1, size, size) mask that is 1 inside each hole and 0 elsewhere."""
    coords = torch.arange(image_size, device=holes.device)
    top, left, height, width = (holes[:, i, None] for i in range(4))
    rows = (coords >= top) & (coords < top + height)
    cols = (coords >= left) & (coords < left + width)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1).float()


def patch_origins(holes: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Top-left corners of patch_size squares centred on each hole, shifted to stay in the image."""
    centres = holes[:, :2] + holes[:, 2:] // 2
    return (centres - patch_size // 2).clamp(0, image_size - patch_size)


def crop_patches(images: torch.Tensor, origins: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Gather one (C, patch_size, patch_size) patch per image at the given origins."""
    offsets = torch.arange(patch_size, device=images.device)
    rows = (origins[:, 0, None] + offsets)[:, None, :, None]  # (B, 1, P, 1)
    cols = (origins[:, 1, None] + offsets)[:, None, None, :]  # (B, 1, 1, P)
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return images[batch, channels, rows, cols]
