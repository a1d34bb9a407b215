"""Using a trained completion network on new inputs: any image size, any mask."""
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..options import from_dict
from .config import ModelConfig
from .networks import build_networks, fill_holes

# Hole regions are told apart on a grid of at most this many cells a side: fine enough to keep a
# scratch apart from a distant one, coarse enough that labelling the regions of a 12-megapixel
# mask takes milliseconds.
REGION_GRID = 64
# The network fills each hole region in a crop this many times the region's extent (never smaller
# than the training size), seen at the training scale. Its training holes span 25-50 % of the image
# side; on flower photographs of 256 and 512 pixels, square holes scored 0.3-0.4 dB higher in crops
# 1.5 times the hole than in crops twice it, and 0.02 dB lower than in crops 1.25 times it
# (docs/hires-fill.md).
CONTEXT = 1.5
# Crops are given the fine detail of their holes' border at their own size up to this short side, and
# above it at this size, upsampled: the harmonic fill that carries it costs in proportion to the pixels
# it covers. At 4000x3000 pixels, 768 and 1024 look alike, and 768 filled in 2.2 s against 2.9 s
# (under load).
DETAIL_SIZE = 768
# The side, in pixels of the training scale, of the blocks of a hole that each borrow their fine
# texture from one place (borrowed_texture). On 32 full-size flowers at 256 px, blocks of 2 and 4
# brought the squares' hole-patch SWD to Telea's, blocks of 8 did not, and single pixels showed as a
# mosaic (docs/experiments.md).
TEXTURE_BLOCK = 4
# How much a source's squared distance, in units of the image's area, counts against its likeness:
# textures repeat mostly near where they are, and a distant look-alike is often another object.
TEXTURE_NEARNESS = 0.01
# On `sample`'s strokes at 128 px, fading the texture in over 2 small pixels rather than none gave
# back part of the hole PSNR and border measure the texture costs, for as low a hole-patch SWD; over
# 4 the strokes' SWD rose again (docs/experiments.md).
TEXTURE_FADE = 2
# The network's correction, upsampled, fades in over this many pixels of the training scale from
# the holes' border. A small pixel of the border holds a full correction, which bicubic upsampling
# spreads half a small pixel either side of where the border lies at the image's size: without the
# fade the fill met the known pixels with a step. On the full-size flowers at 256 and 512 px and
# paintings at 256 px the fade lowered the border measure by 2-15 %, to below Telea's where it had
# been above, and raised hole PSNR by up to 0.06 dB (docs/hires-fill.md).
CORRECTION_FADE = 1

CropFill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, mask) -> the holes filled


def load_completion(state: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The completion network of a saved training state, in eval mode."""
    completion, _ = build_networks(from_dict(ModelConfig, state["config"]["model"]))
    completion.load_state_dict(state["networks"]["completion"])
    return completion.to(device).eval()


def size_multiple(net: nn.Module) -> int:
    """Side lengths a fully convolutional network maps back to themselves are multiples of this.

    Each strided convolution divides the side by its stride and the decoder multiplies it
    back, so sides must be divisible by the product of the downsampling strides.
    """
    return math.prod(layer.stride[0] for layer in net.modules() if isinstance(layer, nn.Conv2d))


def network_output(net: nn.Module, filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network's output for images whose holes are already filled, at any size.

    The network sees the images and mask reflect-padded at the bottom and right up to its size
    multiple, and its output is cropped back, so no pixel is resampled.
    """
    height, width = filled.shape[-2:]
    multiple = size_multiple(net)
    if min(height, width) < multiple:
        raise ValueError(f"images must be at least {multiple} pixels on each side, got {width}x{height}")
    padding = (0, -width % multiple, 0, -height % multiple)
    network_input = torch.cat([F.pad(filled, padding, mode="reflect"), F.pad(mask, padding, mode="reflect")], dim=1)
    with torch.no_grad():
        return net(network_input)[..., :height, :width]


def predict(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor) -> torch.Tensor:
    """The network's raw output for images of any size: every pixel predicted, none pasted.

    The mean of its outputs for the images and for their mirror images (mirrored back), a
    self-ensemble as in Lim et al. 2017 (EDSR+): the network's errors on the two views differ
    in part, so their mean is closer to the truth: 0.17-0.35 dB of hole PSNR in squares and
    0.10-0.22 dB in strokes on held-out flowers, paintings and `sample` photographs, for twice the
    network's time and a little of its texture (docs/experiments.md).

    images: (N, 3, H, W) in [0, 1]; mask: (N, 1, H, W) of 0 and 1, 1 in the holes.
    """
    filled = fill_holes(images, mask, mean_pixel, net.hole_fill)
    both = network_output(net, torch.cat([filled, filled.flip(-1)]), torch.cat([mask, mask.flip(-1)]))
    return (both[:len(images)] + both[len(images):].flip(-1)) / 2


def paste(images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction in the holes (mask == 1), the images' own pixels everywhere else."""
    return torch.lerp(images, prediction.to(images.dtype), mask)


def working_size(height: int, width: int, training_size: int) -> tuple[int, int]:
    """(height, width) at which an image of this size shows its content at the training scale.

    Training images are the square centre crops of photographs resized to training_size, so
    a crop's short side maps to training_size; an image already smaller keeps its size.
    """
    scale = max(1.0, min(height, width) / training_size)
    return max(1, round(height / scale)), max(1, round(width / scale))


def downscaled(images: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and the mask at `size`, from the known pixels alone.

    Each small pixel is the antialiased average of the known pixels under it, so no colour of a
    hole leaks into what the network sees; it is a hole where less than half of what it averages
    is known, so that holes keep their size (a thin stroke does not widen).
    """
    def shrunk(values: torch.Tensor) -> torch.Tensor:
        return F.interpolate(values, size=size, mode="bilinear", antialias=True, align_corners=False)

    known = shrunk(1 - mask)
    small = (shrunk(images * (1 - mask)) / known.clamp_min(1e-6)).clamp(0, 1)
    return small, (known < 0.5).to(mask.dtype)


def upscaled(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, unclamped: smooth across the small pixels' borders, where bilinear shows their grid."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False)


def hole_regions(mask: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of each connected region of a (H, W) mask's holes.

    Regions are told apart on a grid of at most REGION_GRID cells a side (holes that share a
    cell are one region), labelled by spreading the largest cell index over each region.
    """
    height, width = mask.shape
    cell = math.ceil(max(height, width) / REGION_GRID)
    holes = F.max_pool2d(mask[None, None].float(), cell, ceil_mode=True)[0, 0] > 0
    labels = torch.where(holes, torch.arange(1, holes.numel() + 1, dtype=torch.float32).view(holes.shape), 0.0)
    while True:
        spread = torch.where(holes, F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0], 0.0)
        if torch.equal(spread, labels):
            break
        labels = spread
    regions = []
    for label in labels.unique()[1:] if holes.any() else ():
        rows, cols = (labels == label).nonzero(as_tuple=True)
        regions.append((rows.min().item() * cell, cols.min().item() * cell,
                        min(height, (rows.max().item() + 1) * cell), min(width, (cols.max().item() + 1) * cell)))
    return regions


def hole_crops(mask: torch.Tensor, training_size: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the crops in which the holes of a (H, W) mask are filled.

    Each hole region gets a square CONTEXT times its extent and at least training_size on a
    side, centred on it and shifted (or cut) to lie inside the image; crops that overlap are
    merged into the rectangle around both, so every hole pixel lies in exactly one crop.
    """
    height, width = mask.shape
    crops = []
    for top, left, bottom, right in hole_regions(mask):
        side = max(training_size, math.ceil(CONTEXT * max(bottom - top, right - left)))
        crop_height, crop_width = min(side, height), min(side, width)
        crop_top = min(max(0, (top + bottom - crop_height) // 2), height - crop_height)
        crop_left = min(max(0, (left + right - crop_width) // 2), width - crop_width)
        crops.append((crop_top, crop_left, crop_top + crop_height, crop_left + crop_width))
    merging = True
    while merging:  # each pass joins every crop into the first kept one it overlaps
        merging, kept = False, []
        for crop in crops:
            for index, other in enumerate(kept):
                if crop[0] < other[2] and other[0] < crop[2] and crop[1] < other[3] and other[1] < crop[3]:
                    kept[index] = (min(crop[0], other[0]), min(crop[1], other[1]), max(crop[2], other[2]),
                                   max(crop[3], other[3]))
                    merging = True
                    break
            else:
                kept.append(crop)
        crops = kept
    return [(top, left, bottom - top, right - left) for top, left, bottom, right in crops]


def complete_in_crops(images: torch.Tensor, mask: torch.Tensor, training_size: int, fill: CropFill) -> torch.Tensor:
    """The images with the holes of each crop (hole_crops) filled by `fill` and pasted."""
    completed = images.clone()
    for index in range(len(images)):
        for top, left, height, width in hole_crops(mask[index, 0], training_size):
            window = (slice(index, index + 1), slice(None), slice(top, top + height), slice(left, left + width))
            # In place: at 12 megapixels every full-size copy is 144 MB.
            completed[window].lerp_(fill(images[window], mask[window]).to(images.dtype), mask[window])
    return completed


def borrowed_texture(small_fill: torch.Tensor, small_mask: torch.Tensor, images: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Fine texture for the holes of `images`, copied from their known pixels (0 outside the holes).

    A fill made at the training scale and upsampled lacks the detail finer than that scale: it
    looks blurred next to the sharp image around it. The small fill is cut into blocks of
    TEXTURE_BLOCK pixels, each seen through a window twice its side; every block whose window
    touches a hole finds the wholly known window that looks most like its own (nearer ones
    preferred, TEXTURE_NEARNESS), and at the images' size takes the detail the known image has
    there beyond what its small version holds. Each pixel blends the pieces of its four nearest
    blocks, so no block edge shows: HiFill's contextual residual aggregation (Yi et al. 2020)
    with the small fill's own look in place of learned attention.
    """
    count, _, height, width = images.shape
    small_height, small_width = small_fill.shape[-2:]
    block, device = TEXTURE_BLOCK, images.device
    small_known, _ = downscaled(images, mask, (small_height, small_width))
    texture = (images - upscaled(small_known, (height, width))) * (1 - mask)
    pad = (block // 2, -small_width % block + block // 2, block // 2, -small_height % block + block // 2)
    windows = lambda values, fill: F.unfold(F.pad(values, pad, value=fill), 2 * block, stride=block)  # noqa: E731
    looks = windows(small_fill, 0.0).transpose(1, 2)
    holes_seen = windows(small_mask, 1.0).amax(1)  # a window reaching outside the image is no source
    rows_of_blocks, cols_of_blocks = math.ceil(small_height / block), math.ceil(small_width / block)
    block_rows, block_cols = torch.meshgrid(torch.arange(rows_of_blocks, device=device),
                                            torch.arange(cols_of_blocks, device=device), indexing="ij")
    places = torch.stack([block_rows.flatten(), block_cols.flatten()], dim=1).to(small_fill.dtype)
    # Where each pixel lies, in blocks (the window of block k is centred k + 1/2 blocks from the top
    # left); beyond the outermost blocks' centres, pixels take those blocks' pieces alone.
    along = lambda size, small, blocks: ((torch.arange(size, device=device) + 0.5) * small / size / block  # noqa: E731
                                         - 0.5).clamp(0, blocks - 1)
    pixel_rows, pixel_cols = along(height, small_height, rows_of_blocks), along(width, small_width, cols_of_blocks)
    borrowed = torch.zeros_like(images)
    for index in range(count):
        targets, sources = holes_seen[index] > 0, holes_seen[index] == 0
        if not targets.any() or not sources.any():
            continue
        unlikeness = torch.cdist(looks[index][targets], looks[index][sources]).square() / looks.shape[-1]
        distance = torch.cdist(places[targets], places[sources]).square() / (rows_of_blocks * cols_of_blocks)
        choice = (unlikeness + TEXTURE_NEARNESS * distance).argmin(1)
        shift = torch.zeros(rows_of_blocks * cols_of_blocks, 2, device=device)
        shift[targets] = (places[sources][choice] - places[targets]) * block
        shift = shift.view(rows_of_blocks, cols_of_blocks, 2)
        for row_step in (0, 1):
            block_row = pixel_rows.floor().long() + row_step
            row_weight = (1 - (pixel_rows - block_row).abs()).clamp_min(0)  # 0 for a block past the last
            for col_step in (0, 1):
                block_col = pixel_cols.floor().long() + col_step
                col_weight = (1 - (pixel_cols - block_col).abs()).clamp_min(0)
                pixel_shift = shift[block_row.clamp(max=rows_of_blocks - 1)[:, None],
                                    block_col.clamp(max=cols_of_blocks - 1)[None, :]]  # (H, W, 2) in small pixels
                from_rows = (torch.arange(height, device=device)[:, None]
                             + (pixel_shift[..., 0] * height / small_height).round().long()).clamp(0, height - 1)
                from_cols = (torch.arange(width, device=device)[None, :]
                             + (pixel_shift[..., 1] * width / small_width).round().long()).clamp(0, width - 1)
                borrowed[index] += texture[index][:, from_rows, from_cols] * (row_weight[:, None] * col_weight[None, :])
    # Near the border the harmonic fill already carries the border's own detail: the borrowed
    # texture fades in over TEXTURE_FADE pixels of the training scale instead of doubling it.
    return borrowed * mask * fade_from_border(mask, TEXTURE_FADE * height / small_height)


def fade_from_border(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Weights for the hole pixels: 0 on the holes' border, rising to 1 about `pixels` into them (the
    share of hole pixels in a window of that half-width around each pixel, stretched from one half
    to one)."""
    reach = 2 * round(pixels) + 1
    hole_share = _window_sums(mask, reach) / _window_sums(torch.ones_like(mask[:1]), reach)
    return (2 * hole_share - 1).clamp(0, 1)


def _window_sums(values: torch.Tensor, reach: int) -> torch.Tensor:
    """The sum of each pixel's reach x reach window (nothing beyond the image), from running sums
    along each axis: their cost does not grow with the window, as avg_pool2d's does (the fades'
    windows span 25 and 49 pixels at DETAIL_SIZE; docs/hires-fill.md). On masks of 0 and 1 the sums
    are whole numbers, so the shares made from them are avg_pool2d's (count_include_pad=False) bit
    for bit."""
    half = reach // 2
    padded = F.pad(values, (half + 1, half, half + 1, half))
    across = padded.cumsum(-1)
    across = across[..., reach:] - across[..., :-reach]
    down = across.cumsum(-2)
    return down[..., reach:, :] - down[..., :-reach, :]


def fill_at_training_scale(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor,
                           training_size: int) -> torch.Tensor:
    """The holes filled by the network at the training scale (working_size), brought back to the
    images' size with the fine detail of the holes' border.

    Upsampled alone, the small fill is blurred where it meets the sharp image around the hole.
    So the network's correction to the harmonic fill at the training scale is upsampled and added,
    fading in from the border (CORRECTION_FADE), to the harmonic fill at the images' own size, which
    meets the border exactly and carries its detail into the hole, fading inwards; the fine texture
    the small fill cannot hold is borrowed from the known pixels (borrowed_texture). Crops whose
    short side passes DETAIL_SIZE get that detail at DETAIL_SIZE and are upsampled from there.
    """
    height, width = images.shape[-2:]
    size = working_size(height, width, training_size)
    if size == (height, width):
        return predict(net, images, mask, mean_pixel)
    small_images, small_mask = downscaled(images, mask, size)
    small_fill = paste(small_images, predict(net, small_images, small_mask, mean_pixel), small_mask)
    correction = small_fill - fill_holes(small_images, small_mask, mean_pixel, "harmonic")
    detail_size = working_size(height, width, DETAIL_SIZE)
    if detail_size != (height, width):
        images, mask = downscaled(images, mask, detail_size)
    fade = fade_from_border(mask, CORRECTION_FADE * detail_size[0] / size[0])
    filled = (fill_holes(images, mask, mean_pixel, "harmonic") + upscaled(correction, detail_size) * fade
              + borrowed_texture(small_fill, small_mask, images, mask))
    return (filled if detail_size == (height, width) else upscaled(filled, (height, width))).clamp_(0, 1)


def complete_any_size(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, mean_pixel: torch.Tensor,
                      training_size: int) -> torch.Tensor:
    """The images completed by a network trained on training_size images, at any size; known pixels unchanged.

    images: (N, 3, H, W) in [0, 1], mask (N, 1, H, W), 1 in the holes. Each region of holes is
    filled in a crop around it (hole_crops) at the training scale (fill_at_training_scale): the
    holes then look to the network as those it learned to fill, whatever the photograph's size,
    and a small hole in a large photograph costs a small crop. Where the crop is no larger than
    training_size the network runs on it as it is, so images of the training size are filled at the
    scale and framing it trained on, without resampling. docs/hires-fill.md compares this with the other ways measured.
    """
    if max(images.shape[-2:]) <= training_size:  # every crop would be the whole image: one batch
        return paste(images, predict(net, images, mask, mean_pixel), mask)
    return complete_in_crops(images, mask, training_size,
                             lambda crop, holes: fill_at_training_scale(net, crop, holes, mean_pixel, training_size))
