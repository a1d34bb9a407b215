"""Hole masks (rectangles and free-form brush strokes) and local patches, for a whole batch at once.

Everything is drawn on the generator's device from that generator alone, so a seeded
generator gives the same masks on every run, and training never waits for the host.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import check_choices, option, require, required

# Brush strokes in the spirit of DeepFill v2's free-form masks: a polyline of a few segments
# that turns by a random angle at each vertex, drawn with a round brush. Lengths and widths are
# fractions of the image side, so a mask looks the same at every image size.
MASK_KINDS = ("box", "strokes", "mixed")


@dataclass(frozen=True)
class MaskConfig:
    """Which holes to cut: rectangles, free-form brush strokes, or a mix of both.

    Rectangles: sides in [hole_min, hole_max] of the image side, placed inside the area
    that keeps `hole_margin` from every border, never larger than the local discriminator's
    patch (half the image). Strokes: their union covers a share of the image uniform in
    [stroke_area_min, stroke_area_max]. `mixed` gives each image a box with probability
    box_share, strokes otherwise.
    """

    image_size: int = required("Side in pixels of the square training images")
    mask_kind: str = option("mixed", "Training holes: box, strokes (free-form) or mixed", MASK_KINDS)
    hole_min: float = option(0.25, "Smallest box side, as a fraction of image_size")
    hole_max: float = option(0.5, "Largest box side, as a fraction of image_size")
    hole_margin: float = option(0.0, "Boxes keep this fraction of image_size from borders")
    stroke_area_min: float = option(0.1, "Smallest share of the image brush strokes cover")
    stroke_area_max: float = option(0.4, "Largest share of the image brush strokes cover")
    box_share: float = option(0.3, "mixed: the share of training images whose hole is a box (the rest get strokes)",
                              before=0.5)

    def __post_init__(self):
        check_choices(self)
        require(0 < self.stroke_area_min <= self.stroke_area_max <= 0.75,
                f"need 0 < stroke_area_min <= stroke_area_max <= 0.75, got {self.stroke_area_min}, "
                f"{self.stroke_area_max}")
        require(0 <= self.box_share <= 1, f"box_share must be in [0, 1], got {self.box_share}")
        require(0 < self.hole_min <= self.hole_max, f"need 0 < hole_min <= hole_max, got {self.hole_min}, {self.hole_max}")
        require(self.hole_max <= 0.5, f"hole_max must be <= 0.5 (the local patch is half the image), got {self.hole_max}")
        require(0 <= self.hole_margin < 0.5, f"hole_margin must be in [0, 0.5), got {self.hole_margin}")
        require(self.min_pixels >= 1, f"hole_min={self.hole_min} is less than one pixel at image_size={self.image_size}")
        require(self.max_pixels <= self.area_size,
                f"holes up to {self.max_pixels} px do not fit the placement area of {self.area_size} px "
                f"(image_size={self.image_size}, hole_margin={self.hole_margin})")

    @property
    def min_pixels(self) -> int:
        return round(self.hole_min * self.image_size)

    @property
    def max_pixels(self) -> int:
        return round(self.hole_max * self.image_size)

    @property
    def area_start(self) -> int:
        return round(self.hole_margin * self.image_size)

    @property
    def area_size(self) -> int:
        return self.image_size - 2 * self.area_start


STROKE_CANDIDATES = 8  # strokes drawn per image; the first k that reach the drawn area are kept
STROKE_SEGMENTS = 5
STROKE_SEGMENT_LENGTH = (0.08, 0.25)
STROKE_WIDTH = (0.05, 0.14)
STROKE_MAX_TURN = math.pi / 3  # radians either way at each vertex


def sample_holes(batch_size: int, config: MaskConfig, generator: torch.Generator, square: bool = False) -> torch.Tensor:
    """Random rectangles as an int64 (batch, 4) tensor of (top, left, height, width).

    Sides are uniform in [min_pixels, max_pixels] (one side for both with `square`);
    positions uniform over the places where the whole hole fits inside the placement area.
    """
    device = generator.device
    low, high = config.min_pixels, config.max_pixels
    sizes = torch.randint(low, high + 1, (batch_size, 1 if square else 2), generator=generator, device=device)
    sizes = sizes.expand(batch_size, 2)
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


def _reflect_into_unit(values: torch.Tensor) -> torch.Tensor:
    """Fold coordinates back into [0, 1] like a stroke bouncing off the image border (no strokes hug the edge)."""
    return 1 - (1 - values.remainder(2)).abs()


def sample_strokes(batch_size: int, config: MaskConfig, generator: torch.Generator) -> torch.Tensor:
    """Free-form brush-stroke masks, float (batch, 1, size, size), covering a drawn share of each image.

    Each image gets a target share uniform in [stroke_area_min, stroke_area_max] and keeps
    the fewest of its candidate strokes whose union reaches it, or one fewer where that would
    pass stroke_area_max. The distance to each stroke is computed on a grid of half the image
    side and interpolated: it is a smooth function, and this costs a quarter of the full grid.
    """
    device, size = generator.device, config.image_size
    shape = (batch_size, STROKE_CANDIDATES)

    def uniform(low: float, high: float, *extra: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, *extra, generator=generator, device=device)

    start = uniform(0, 1, 1, 2)
    turns = uniform(-STROKE_MAX_TURN, STROKE_MAX_TURN, STROKE_SEGMENTS - 1)
    angles = uniform(0, 2 * math.pi, 1) + F.pad(turns.cumsum(-1), (1, 0))
    lengths = uniform(*STROKE_SEGMENT_LENGTH, STROKE_SEGMENTS)
    steps = torch.stack([angles.cos(), angles.sin()], dim=-1) * lengths[..., None]
    vertices = _reflect_into_unit(torch.cat([start, start + steps.cumsum(2)], dim=2))  # (B, K, segments + 1, 2)
    radius = uniform(*STROKE_WIDTH, 1, 1) / 2

    grid = max(size // 2, 1)
    coords = (torch.arange(grid, device=device) + 0.5) / grid
    rows, cols = coords.view(1, 1, grid, 1), coords.view(1, 1, 1, grid)
    nearest = None  # squared distance from each grid point to each stroke
    for segment in range(STROKE_SEGMENTS):
        start_y, start_x = (vertices[:, :, segment, axis, None, None] for axis in (0, 1))
        delta = vertices[:, :, segment + 1] - vertices[:, :, segment]
        delta_y, delta_x = delta[..., 0, None, None], delta[..., 1, None, None]
        offset_y, offset_x = rows - start_y, cols - start_x
        along = ((offset_y * delta_y + offset_x * delta_x) / (delta_y.square() + delta_x.square()).clamp_min(1e-12))
        along = along.clamp_(0, 1)
        distance = (offset_y - along * delta_y).square_().add_((offset_x - along * delta_x).square_())
        nearest = distance if nearest is None else torch.minimum(nearest, distance)
    signed = nearest.sqrt_() - radius
    inside = F.interpolate(signed, size=(size, size), mode="bilinear", align_corners=False) <= 0

    unions, union = [], torch.zeros(batch_size, size, size, dtype=torch.bool, device=device)
    for stroke in range(STROKE_CANDIDATES):
        union = union | inside[:, stroke]
        unions.append(union)
    unions = torch.stack(unions, dim=1)
    coverage = unions.flatten(2).float().mean(-1)
    target = config.stroke_area_min + (config.stroke_area_max - config.stroke_area_min) * torch.rand(
        batch_size, 1, generator=generator, device=device)
    kept = (coverage < target).sum(1).clamp_(max=STROKE_CANDIDATES - 1)
    rows_index = torch.arange(batch_size, device=device)
    too_large = (coverage[rows_index, kept] > config.stroke_area_max) & (kept > 0)
    kept = kept - too_large.long()
    return unions[rows_index, kept].unsqueeze(1).float()


def bounding_boxes(mask: torch.Tensor) -> torch.Tensor:
    """(top, left, height, width) of the pixels set in each (1, H, W) mask, int64 (batch, 4); all zero if none."""
    def span(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(present.shape[1], device=present.device)
        first = torch.where(present, positions, present.shape[1]).amin(1)
        last = torch.where(present, positions, -1).amax(1)
        return first.clamp(max=last.clamp_min(0)), (last - first + 1).clamp_min(0)

    top, height = span(mask[:, 0].amax(2) > 0)
    left, width = span(mask[:, 0].amax(1) > 0)
    return torch.stack([top, left, height, width], dim=1)


def sample_masks(batch_size: int, config: MaskConfig, generator: torch.Generator,
                 kind: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, boxes): float (batch, 1, size, size) masks of the configured kind and their bounding boxes.

    `kind` overrides the config's: box, strokes, or mixed (each image a box with probability
    `config.box_share`, strokes otherwise). The boxes (top, left, height, width) place the
    local discriminator's patch.
    """
    kind = kind or config.mask_kind
    if kind == "box":
        holes = sample_holes(batch_size, config, generator)
        return holes_to_mask(holes, config.image_size), holes
    strokes = sample_strokes(batch_size, config, generator)
    if kind == "mixed":
        boxes = holes_to_mask(sample_holes(batch_size, config, generator), config.image_size)
        use_box = torch.rand(batch_size, generator=generator, device=generator.device) < config.box_share
        strokes = torch.where(use_box[:, None, None, None], boxes, strokes)
    return strokes, bounding_boxes(strokes)


def patch_origins(holes: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Top-left corners of patch_size squares centred on each hole's box, shifted to stay in the image."""
    centres = holes[:, :2] + holes[:, 2:] // 2
    return (centres - patch_size // 2).clamp(0, image_size - patch_size)


def crop_patches(images: torch.Tensor, origins: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Gather (C, patch_size, patch_size) patches: one per image at origins (B, 2) as (B, C, P, P),
    or K per image at origins (B, K, 2) as (B, K, C, P, P)."""
    corners = origins.reshape(len(images), -1, 2)
    offsets = torch.arange(patch_size, device=images.device)
    rows = (corners[..., 0, None] + offsets)[:, :, None, :, None]  # (B, K, 1, P, 1)
    cols = (corners[..., 1, None] + offsets)[:, :, None, None, :]  # (B, K, 1, 1, P)
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, None, :, None, None]
    return images[batch, channels, rows, cols].reshape(*origins.shape[:-1], images.shape[1], patch_size, patch_size)
