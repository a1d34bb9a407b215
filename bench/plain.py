"""The training step written the plain way, as in the popular PyTorch GLCIC reimplementation.

Every step decodes, resizes and crops JPEG files in DataLoader workers, builds its hole
masks in a Python loop, trains fp32 NCHW networks wrapped in DataParallel with PyTorch's
default settings, and reads the loss back to print it. The losses and networks are the
project's own, so the fast path can be checked against this one on the same batch.
"""
import random
import time
from typing import Iterator

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ganmodels.glcic.config import PhaseOptions
from ganmodels.glcic.networks import build_networks, fill_holes
from ganmodels.glcic.training import train_step
from ganmodels.masks import MaskConfig, patch_origins
from ganmodels.runtime import Runtime

PLAIN_RUNTIME_SETTINGS = dict(precision="fp32", channels_last=False, compile=False, fused_optimizer=False)


class JpegFolder(Dataset):
    """Image files decoded at every access: resize the short side, random crop, to a float tensor."""

    def __init__(self, paths: list[str], size: int):
        self.paths = paths
        self.transform = transforms.Compose([transforms.Resize(size), transforms.RandomCrop(size),
                                             transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def reference_holes(batch_size: int, config: MaskConfig, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of one hole per image, drawn one by one with Python's random."""
    holes = []
    for _ in range(batch_size):
        height = rng.randint(config.min_pixels, config.max_pixels)
        width = rng.randint(config.min_pixels, config.max_pixels)
        top = rng.randint(config.area_start, config.area_start + config.area_size - height)
        left = rng.randint(config.area_start, config.area_start + config.area_size - width)
        holes.append((top, left, height, width))
    return holes


def reference_mask(holes: list[tuple[int, int, int, int]], image_size: int) -> torch.Tensor:
    mask = torch.zeros(len(holes), 1, image_size, image_size)
    for i, (top, left, height, width) in enumerate(holes):
        mask[i, 0, top:top + height, left:left + width] = 1.0
    return mask


def plain_relax(filled: torch.Tensor, colour: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """One Jacobi sweep of the harmonic fill written as the formula reads: the known colour plus the
    unknown share times the mean of the four neighbours (edge pixels repeated)."""
    padded = torch.nn.functional.pad(filled, (1, 1, 1, 1), mode="replicate")
    neighbours = padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:] + padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1]
    return colour + unknown * (0.25 * neighbours)


def _epochs(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        yield from loader


def plain_phase(options: PhaseOptions, paths: list[str], mean_pixel: torch.Tensor, start: dict | None, device: str,
                workers: int, warmup_steps: int) -> dict:
    """Train `options.steps` plain steps; returns images/s and the share of time spent waiting for data.

    The first `warmup_steps` are not timed.
    """
    runtime = Runtime(device=device, **PLAIN_RUNTIME_SETTINGS)
    model_config, mask_config, batch_size = options.model, options.masks, options.completion.batch_size
    torch.manual_seed(options.completion.seed)
    completion, discriminator = (net.to(device).train() for net in build_networks(model_config))
    lr_completion, lr_discriminator = options.learning_rates(0)
    optimizers = (torch.optim.Adam(completion.parameters(), lr=lr_completion),
                  torch.optim.Adam(discriminator.parameters(), lr=lr_discriminator, betas=(0.5, 0.999)))
    if start is not None:
        completion.load_state_dict(start["networks"]["completion"])
        discriminator.load_state_dict(start["networks"]["discriminator"])
    discriminator.requires_grad_(options.trains_discriminator)
    if not options.trains_completion:
        completion.eval()
    if device.startswith("cuda"):
        completion, discriminator = nn.DataParallel(completion), nn.DataParallel(discriminator)
    loader = DataLoader(JpegFolder(paths, model_config.image_size), batch_size=batch_size, shuffle=True,
                        drop_last=True, num_workers=workers, pin_memory=device.startswith("cuda"))
    batches, rng = _epochs(loader), random.Random(options.completion.seed)
    mean_pixel = mean_pixel.to(device)
    waited, started = 0.0, time.perf_counter()
    for step in range(options.steps):
        if step == warmup_steps:
            waited, started = 0.0, time.perf_counter()
        fetch_start = time.perf_counter()
        real = next(batches).to(device)
        waited += time.perf_counter() - fetch_start
        holes = reference_holes(batch_size, mask_config, rng)
        mask = reference_mask(holes, model_config.image_size).to(device)
        origins = patch_origins(torch.tensor(holes, device=device), model_config.image_size, model_config.local_size)
        filled = fill_holes(real, mask, mean_pixel, model_config.hole_fill)
        losses = train_step(options, completion, discriminator, optimizers, real, mask, origins, filled, runtime)
        losses.tolist()  # the reimplementation prints every step's loss
    elapsed = time.perf_counter() - started
    return {"images_per_s": (options.steps - warmup_steps) * batch_size / elapsed, "data_wait": waited / elapsed}
