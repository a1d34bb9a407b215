"""Training images as uint8 batches on the device: held there whole, or streamed from shards.

Both sources draw the images of step s from a generator seeded with (seed, s) alone, so
they yield the same batches, a resumed run continues the sequence exactly, and where
the images live never changes what is trained. Each batch comes with the seconds the
host waited for it (drawing rows, or for a DataLoader worker), not counting the copy it
queues for the device: that runs behind the device's earlier work and delays nothing.
"""
import itertools
import mmap
import time
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .masks import crop_patches
from .runtime import Runtime


def batch_indices(count: int, batch_size: int, seed: Sequence[int], step: int) -> np.ndarray:
    """The dataset rows of one step's batch, drawn with replacement."""
    return np.random.default_rng([*seed, step]).integers(count, size=batch_size)


def _image_shape(arrays: Sequence[np.ndarray]) -> tuple[int, ...]:
    if not arrays or sum(len(a) for a in arrays) == 0:
        raise ValueError("no images to train on: the split is empty")
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or any(a.dtype != np.uint8 for a in arrays):
        raise ValueError(f"shards must be uint8 (N, C, H, W) arrays of one image shape, got shapes {sorted(shapes)}")
    return next(iter(shapes))


class ImageBank:
    """All images of a split in one uint8 (N, C, H, W) tensor on the training device.

    Keeping uint8 on the device costs a quarter of float32 memory and turns each step's
    batch into a gather, with no host work. Shards are copied one at a time, so the host
    never holds more than one of them.
    """

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device | str):
        shape = _image_shape(arrays)
        self.images = torch.empty((sum(len(a) for a in arrays), *shape), dtype=torch.uint8, device=device)
        start = 0
        for array in arrays:
            self.images[start:start + len(array)] = torch.from_numpy(np.array(array))
            start += len(array)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def batches(self, batch_size: int, seed: Sequence[int], first_step: int = 0,
                steps_per_copy: int = 256) -> Iterator[tuple[torch.Tensor, float]]:
        """(uint8 batch on the device, seconds waited) for steps first_step, first_step + 1, ...

        The rows of `steps_per_copy` steps go to the device in one copy: from pinned memory
        it is queued behind the running steps instead of making the host wait, and pinning
        once per step would cost more than the draw itself.
        """
        pin = self.images.device.type == "cuda"
        for chunk in itertools.count(first_step, steps_per_copy):
            start = time.perf_counter()
            rows = torch.from_numpy(np.stack([batch_indices(len(self), batch_size, seed, step)
                                              for step in range(chunk, chunk + steps_per_copy)]))
            rows = (rows.pin_memory() if pin else rows).to(self.images.device, non_blocking=True)
            waited = time.perf_counter() - start
            for index in rows:
                yield self.images[index], waited
                waited = 0.0


class _MemoryMap:
    """How to reopen a read-only memory map in another process instead of copying its contents there."""

    def __init__(self, array: np.memmap):
        self.filename, self.dtype, self.offset, self.shape = array.filename, array.dtype, array.offset, array.shape

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _whole_map(array: np.ndarray) -> bool:
    """True for a memory map of a whole file region (what np.load(mmap_mode='r') returns), not a view into one."""
    return isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.flags.c_contiguous


class ShardRows(Dataset):
    """Rows of several shards as one dataset; an item is a whole batch, read by a list of row numbers."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        _image_shape(arrays)
        self.arrays = list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        shards = np.searchsorted(self.starts, rows, side="right") - 1
        return torch.from_numpy(np.stack([self.arrays[s][r - self.starts[s]] for s, r in zip(shards, rows)]))

    def __getstate__(self) -> dict:
        # Workers started by spawn or forkserver receive the dataset pickled; a memory map
        # would arrive as a full in-memory copy, which is what streaming exists to avoid.
        return {**self.__dict__, "arrays": [_MemoryMap(a) if _whole_map(a) else a for a in self.arrays]}

    def __setstate__(self, state: dict) -> None:
        state["arrays"] = [a.open() if isinstance(a, _MemoryMap) else a for a in state["arrays"]]
        self.__dict__.update(state)


class _StepBatches(torch.utils.data.Sampler):
    """Row numbers of each step's batch, forever, starting at first_step."""

    def __init__(self, count: int, batch_size: int, seed: Sequence[int], first_step: int):
        self.count, self.batch_size, self.seed, self.first_step = count, batch_size, tuple(seed), first_step

    def __iter__(self) -> Iterator[np.ndarray]:  # numpy, not tensors: these cross to the workers pickled
        for step in itertools.count(self.first_step):
            yield batch_indices(self.count, self.batch_size, self.seed, step)


class StreamedImages:
    """Images read from memory-mapped shards by DataLoader workers, a batch ahead, into pinned memory.

    For sets larger than the device's memory (or the host's RAM): only the rows of the
    batches in flight are ever read.
    """

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device | str, workers: int = 2):
        self.rows, self.device, self.workers = ShardRows(arrays), torch.device(device), workers

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.rows.arrays[0].shape[1:]

    def batches(self, batch_size: int, seed: Sequence[int], first_step: int = 0) -> Iterator[tuple[torch.Tensor, float]]:
        """(uint8 batch on the device, seconds waited) for steps first_step, first_step + 1, ..."""
        loader = DataLoader(self.rows, sampler=_StepBatches(len(self), batch_size, seed, first_step), batch_size=None,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.workers else None)
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - start
            yield batch.to(self.device, non_blocking=True), waited


TrainingImages = ImageBank | StreamedImages


def training_images(arrays: Sequence[np.ndarray], runtime: Runtime) -> TrainingImages:
    """The split's images on the device when they fit its budget (or when asked), else streamed."""
    size = sum(a.nbytes for a in arrays)
    on_device = {"yes": True, "no": False}.get(runtime.data_on_device)
    if on_device is None:
        on_device = size <= runtime.data_budget_bytes()
    if on_device:
        return ImageBank(arrays, runtime.torch_device)
    return StreamedImages(arrays, runtime.torch_device, runtime.data_workers)


def augment(stored: torch.Tensor, size: int, generator: torch.Generator,
            memory_format: torch.memory_format = torch.contiguous_format, max_zoom: float = 1.0) -> torch.Tensor:
    """Float images in [0, 1]: a random size x size crop of each, flipped left-right with probability 1/2,
    and with `max_zoom` > 1 zoomed in (random_zoom).

    All on the batch's device, for the whole batch at once; with stored images already
    of the training size the crop is the whole image.
    """
    batch_size, _, height, width = stored.shape
    if height < size or width < size:
        raise ValueError(f"stored images of {height}x{width} px are smaller than the training size {size}")
    device = generator.device
    if (height, width) != (size, size):
        offsets = torch.rand(batch_size, 2, generator=generator, device=device)
        origins = torch.stack([offsets[:, 0] * (height - size + 1), offsets[:, 1] * (width - size + 1)], dim=1).long()
        stored = crop_patches(stored, origins.to(stored.device), size)
    images = random_flip(stored, generator).float().div_(255)
    if max_zoom > 1:
        images = random_zoom(images, max_zoom, generator)
    return images.contiguous(memory_format=memory_format)


def random_zoom(images: torch.Tensor, max_zoom: float, generator: torch.Generator) -> torch.Tensor:
    """Each image replaced by a random square of 1/z of its side, z uniform in [1, max_zoom],
    resized (bilinear) back to the image's size; drawn from `generator` (on any device)."""
    draws = torch.rand(len(images), 3, generator=generator, device=generator.device).to(images.device)
    scale = 1 / (1 + draws[:, 0] * (max_zoom - 1))  # the square's side, as a share of the image's
    shift = (draws[:, 1:] * 2 - 1) * (1 - scale)[:, None]  # its centre, anywhere it stays inside
    theta = torch.zeros(len(images), 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2, drawn from `generator` (on any device)."""
    flips = (torch.rand(len(images), generator=generator, device=generator.device) < 0.5).to(images.device)
    return torch.where(flips[:, None, None, None], images.flip(3), images)


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 images to a float tensor in [0, 1] on the device."""
    tensor = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    return tensor.to(device).float().div_(255)
