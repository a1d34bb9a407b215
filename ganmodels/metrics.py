"""Inpainting quality measures, per image, on images in [0, 1]."""
import copy
import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .masks import crop_patches


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


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def _gradients(images: torch.Tensor) -> torch.Tensor:
    """Each channel's Sobel derivatives, (N, 2C, H, W): intensity change per pixel across x, then y."""
    kernels = torch.stack([_SOBEL, _SOBEL.T]).to(images)[:, None].repeat(images.shape[1], 1, 1, 1)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(images, (1,) * 4, mode="replicate"), kernels,
                                      groups=images.shape[1])


def border_ring(mask: torch.Tensor) -> torch.Tensor:
    """The pixels whose 3x3 neighbourhood holds both hole and known pixels: where a gradient crosses the border."""
    near_hole = torch.nn.functional.max_pool2d(mask, 3, stride=1, padding=1)
    near_known = torch.nn.functional.max_pool2d(1 - mask, 3, stride=1, padding=1)
    return near_hole * near_known


def border_gradient_error(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the completed and the real image's gradients across each hole's border.

    A seam, a step in brightness or a dark outline where the fill meets the known pixels changes the
    gradients in the ring of pixels that straddles the border (border_ring) even when it barely moves
    the hole's PSNR; a fill that continues the image as the real one does scores 0.
    """
    return _hole_mean((_gradients(predicted) - _gradients(target)).abs(), border_ring(mask))


def inpainting_metrics(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"psnr_hole": hole_psnr(predicted, target, mask),
            "l1_hole": hole_l1(predicted, target, mask),
            "ssim": ssim(predicted, target),
            "border_error": border_gradient_error(predicted, target, mask)}


# --- Realism: measures that need no pretrained weights ------------------------------------------
# Hole PSNR, L1 and SSIM reward the blur of a mean prediction. These two ask instead whether
# completed hole regions look like real ones: as a distribution of local texture, and to a
# classifier that is trained to tell them apart.

SWD_NEIGHBOURHOOD = 7  # Karras et al. 2018 (Progressive GAN), appendix D: 7x7 neighbourhoods,
SWD_DESCRIPTORS_PER_IMAGE = 128  # 128 per image and level,
SWD_DIRECTION_REPEATS, SWD_DIRECTIONS = 4, 128  # 4 x 128 random directions,
SWD_SMALLEST_LEVEL = 16  # pyramid levels down to 16 px; distances reported x 1e3
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    kernel = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(images).expand(images.shape[1], 1, 5, 5)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(images, (2,) * 4, mode="reflect"), kernel,
                                      groups=images.shape[1])


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels, full resolution first, and the low-pass residual last (`levels` in all)."""
    gaussian = [images]
    for _ in range(levels - 1):
        gaussian.append(_blur(gaussian[-1])[:, :, ::2, ::2])
    pyramid = []
    for finer, coarser in zip(gaussian, gaussian[1:]):
        upsampled = torch.zeros_like(finer)
        upsampled[:, :, ::2, ::2] = coarser
        pyramid.append(finer - _blur(upsampled, gain=4.0))
    return pyramid + [gaussian[-1]]


def _swd_levels(image_size: int) -> int:
    return max(1, int(math.log2(image_size // SWD_SMALLEST_LEVEL)) + 1)


def _normalised(descriptors: torch.Tensor) -> torch.Tensor:
    """Each colour channel to zero mean and unit variance over the set, as Karras et al. do."""
    mean = descriptors.mean(dim=(0, 2, 3), keepdim=True)
    std = descriptors.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((descriptors - mean) / std).flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein distance between the projected sets."""
    distances = []
    # NumPy sorts these rows about eight times faster than torch.sort on the CPU, and lets go of
    # the GIL while it sorts: the two sets' projections are sorted at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(SWD_DIRECTION_REPEATS):
            directions = torch.randn(a.shape[1], SWD_DIRECTIONS, generator=generator)
            directions /= directions.norm(dim=0, keepdim=True)
            projected = [(directions.T @ x.T).numpy() for x in (a, b)]
            projected_a, projected_b = pool.map(functools.partial(np.sort, axis=1), projected)
            distances.append(np.abs(projected_a - projected_b).mean())
    return float(np.mean(distances))


def _neighbourhood_corners(weights: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Top-left corners (rows, cols: (N, per image)) of neighbourhoods drawn inside the image, each
    image's centres weighted by `weights` (N, 1, size, size) or, where an image's weights are all
    zero, uniform."""
    half = SWD_NEIGHBOURHOOD // 2
    inside = torch.zeros(1, 1, size, size)
    inside[:, :, half:size - half, half:size - half] = 1
    weights = (weights * inside).flatten(1)
    weights[weights.sum(1) == 0] = inside.flatten()
    centres = torch.multinomial(weights, SWD_DESCRIPTORS_PER_IMAGE, replacement=True, generator=generator)
    return centres // size - half, centres % size - half


def _pyramid_swd(real: torch.Tensor, fake: torch.Tensor, seed: int, hole: torch.Tensor | None) -> float:
    generator = torch.Generator().manual_seed(seed)
    levels = _swd_levels(real.shape[-1])
    distances = []
    for real_band, fake_band in zip(laplacian_pyramid(real.float().cpu(), levels),
                                    laplacian_pyramid(fake.float().cpu(), levels)):
        size = real_band.shape[-1]
        if hole is None:  # two sets of different images: each sampled on its own, uniformly
            corners = [_neighbourhood_corners(torch.zeros(len(band), 1, size, size), size, generator)
                       for band in (real_band, fake_band)]
        else:  # the same images: sampled at the same places, where a neighbourhood touches the hole
            level_hole = torch.nn.functional.adaptive_max_pool2d(hole.float().cpu(), size)
            touches = torch.nn.functional.max_pool2d(level_hole, SWD_NEIGHBOURHOOD, stride=1,
                                                     padding=SWD_NEIGHBOURHOOD // 2)
            corners = [_neighbourhood_corners(touches, size, generator)] * 2
        descriptors = [_normalised(crop_patches(band, torch.stack([rows, cols], dim=-1), SWD_NEIGHBOURHOOD).flatten(0, 1))
                       for band, (rows, cols) in zip((real_band, fake_band), corners)]
        distances.append(sliced_wasserstein(*descriptors, generator) * 1e3)
    return float(sum(distances) / len(distances))


def patch_swd(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> float:
    """Karras et al.'s sliced Wasserstein distance (x 1e3, the mean over Laplacian-pyramid levels down
    to 16 px) between random 7x7 neighbourhoods of two sets of images in [0, 1], e.g. generated
    samples against held-out real images. Deterministic for a seed."""
    return _pyramid_swd(real, fake, seed, hole=None)


def hole_patch_swd(real: torch.Tensor, completed: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> float:
    """The same distance between completed and real images, from neighbourhoods that overlap a hole.

    Restricted to the holes so that the known pixels, identical in both sets, do not dilute
    it; both sets are sampled at the same places. 0 for identical sets; a blurred fill scores
    higher.
    """
    return _pyramid_swd(real, completed, seed, hole=mask)


class _RealismClassifier(torch.nn.Module):
    """A small fully convolutional classifier of (RGB + mask) patches: real (logit > 0) or completed."""

    def __init__(self, channels: int = 16):
        super().__init__()
        act = lambda: torch.nn.LeakyReLU(0.2)  # noqa: E731
        # Batch norm lets it learn the fills' texture within C2ST_STEPS: without it the classifier
        # sat near chance for several epochs and was still learning when it stopped, so its
        # accuracy depended on its seed more than on the fills (docs/quality.md).
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(4, channels, 3, padding=1), torch.nn.BatchNorm2d(channels), act(),
            torch.nn.Conv2d(channels, 2 * channels, 4, 2, 1), torch.nn.BatchNorm2d(2 * channels), act(),
            torch.nn.Conv2d(2 * channels, 4 * channels, 4, 2, 1), torch.nn.BatchNorm2d(4 * channels), act(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4 * channels, 1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches).squeeze(1)


C2ST_PATCHES_PER_IMAGE = 16
# Patches stop growing with the image here: larger ones cost the classifier quadratically more
# and the seams, stripes and blocks it should catch are a few pixels wide at every size.
C2ST_LARGEST_PATCH = 32
# Each classifier takes this many steps whatever the number of images: fewer left it still
# learning, its accuracy hanging on its seed, on sets of 100 to 300 images (docs/quality.md), and a
# fixed number keeps the cost of a test from growing with the set. On a set so small that they
# would pass over its patches more than C2ST_MOST_EPOCHS times it takes fewer: those passes
# memorise the patches rather than learn more of them.
C2ST_STEPS = 600
C2ST_MOST_EPOCHS = 25
C2ST_BATCH = 64
C2ST_LEARNING_RATE = 2e-3
# Channels-last convolutions spare oneDNN its reorders between layouts: on the 32-px patches of the
# sizes above 64 px, which cost the evaluation most, the classifiers trained 1.29 times as fast as
# in NCHW, on 16-px ones 1.18 times (bench/c2st.py on 2 vCPUs of an AMD EPYC with AVX512-BF16,
# torch 2.14.1; docs/speed.md).
C2ST_MEMORY_FORMAT = torch.channels_last


def classifier_two_sample_accuracy(real: torch.Tensor, completed: torch.Tensor, mask: torch.Tensor,
                                   seed: int = 0, folds_at_once: int = 2) -> float:
    """How well a classifier trained from scratch tells real hole regions from completed ones.

    Each image gives C2ST_PATCHES_PER_IMAGE patches of a quarter of its side (8 to C2ST_LARGEST_PATCH px),
    each centred on a random hole pixel, with the mask as a fourth channel, once from the
    real image and once from the completed one at the same places. The images are split in
    two halves at random; a classifier trained on the patches of one half is scored on those
    of the other, and the other way round. The accuracy is the mean over both: 0.5 when the
    completions cannot be told from real images, 1.0 when they always can. Deterministic
    for a seed, and the same whether the two classifiers train at once (`folds_at_once=2`,
    one thread each) or in turn (1).
    """
    generator = torch.Generator().manual_seed(seed)
    real, completed, mask = real.float().cpu(), completed.float().cpu(), mask.float().cpu()
    size, patch = real.shape[-1], min(max(real.shape[-1] // 4, 8), C2ST_LARGEST_PATCH)
    weights = mask.flatten(1).clone()
    weights[weights.sum(1) == 0] = 1  # a mask without a hole: anywhere
    centres = torch.multinomial(weights, C2ST_PATCHES_PER_IMAGE, replacement=True, generator=generator)
    rows = (centres // size - patch // 2).clamp(0, size - patch)
    cols = (centres % size - patch // 2).clamp(0, size - patch)
    patches = {name: crop_patches(torch.cat([images * 2 - 1, mask], dim=1), torch.stack([rows, cols], dim=-1), patch)
               for name, images in (("real", real), ("completed", completed))}
    order = torch.randperm(len(real), generator=generator)
    halves = order[: len(order) // 2], order[len(order) // 2:]
    # Every random draw is taken here, in the order the two folds would take them one after
    # the other, so that they can train at the same time and still give the same accuracy.
    folds = [(train, test, _training_draws(2 * len(train) * C2ST_PATCHES_PER_IMAGE, generator))
             for train, test in (halves, halves[::-1])]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = _RealismClassifier()

    def correct_on_test_half(fold: tuple[torch.Tensor, torch.Tensor, list]) -> int:
        train, test, draws = fold
        classifier = _fit_classifier(initial, patches["real"][train].flatten(0, 1),
                                     patches["completed"][train].flatten(0, 1), draws)
        with torch.no_grad():
            return int((classifier(patches["real"][test].flatten(0, 1)) > 0).sum()
                       + (classifier(patches["completed"][test].flatten(0, 1)) <= 0).sum())

    threads = torch.get_num_threads()
    # Its kernels are too small to gain from several threads each, and on a busy machine every
    # parallel region waits for its slowest thread: one thread per fold, both folds at once.
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=folds_at_once) as pool:
            correct = sum(pool.map(correct_on_test_half, folds))
    finally:
        torch.set_num_threads(threads)
    return correct / (2 * len(real) * C2ST_PATCHES_PER_IMAGE)


def _training_draws(count: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """C2ST_STEPS batches (fewer on a small set) from successive shuffles of `count` patches, each with
    which of them to mirror."""
    steps = min(C2ST_STEPS, C2ST_MOST_EPOCHS * math.ceil(count / C2ST_BATCH))
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        batches += torch.randperm(count, generator=generator).split(C2ST_BATCH)
    return [(batch, torch.rand(len(batch), generator=generator) < 0.5) for batch in batches[:steps]]


def _fit_classifier(initial: torch.nn.Module, real: torch.Tensor, completed: torch.Tensor,
                    draws: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.nn.Module:
    # Tiny gradients late in training turn into denormal floats, which run far slower on CPUs;
    # the setting belongs to the thread, which ends with the fold.
    torch.set_flush_denormal(True)
    classifier = copy.deepcopy(initial).to(memory_format=C2ST_MEMORY_FORMAT)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=C2ST_LEARNING_RATE)
    # Annealed to zero, so that the accuracy is that of where training settled rather than of
    # wherever its last steps happened to leave it.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(draws))
    inputs = torch.cat([real, completed])
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(completed))])
    for batch, flips in draws:
        batch_inputs = torch.where(flips[:, None, None, None], inputs[batch].flip(3), inputs[batch]).contiguous(
            memory_format=C2ST_MEMORY_FORMAT)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(batch_inputs), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return classifier.eval()
