"""Writing a collection's decoded images as uint8 N x 3 x H x W shards per split, with a row
for every file kept or rejected."""
import collections
import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping

import numpy as np

from ..datasets.registry import SPLITS
from ..errors import UserError
from .pool import DecodeSettings, ingest_at_sizes, ingest_folder


@dataclass
class WrittenShards:
    kept: list[tuple[str, str, str, int, str]]  # (relative_path, split, shard, row, sha256), by split, then path
    rejected: list[tuple[str, str]]  # (relative_path, reason "<kind>: <detail>")
    split_counts: collections.Counter  # kept images per split
    train_channel_sums: np.ndarray  # exact (integers), for the mean pixel
    train_pixels: int

    def mean_pixel(self) -> list[float]:
        """Each channel's mean over the training images, in [0, 1]; needs at least one."""
        return (self.train_channel_sums / self.train_pixels / 255).tolist()


def write_shards(folder: str, split_of: Mapping[str, str], settings: DecodeSettings, workers: int, shard_size: int,
                 open_write: Callable[[str], ContextManager], progress: Callable[[int], None]) -> WrittenShards:
    """Decode every file of split_of (relative path below folder: split) in `workers` processes
    and write the kept images through open_write(name) as shards/<split>-NNNNN.npy, shard_size
    images each, in path order within their split; progress(files done) follows every file.

    Byte-identical duplicates are kept once: in train if a copy is there, else val, else
    test, and within a split the first in path order.
    """
    # Split by split, so that a split's last shard is written while the workers go on
    # decoding the next split rather than after the last file.
    paths = sorted(split_of, key=lambda path: (SPLITS.index(split_of[path]), path))
    kept, rejected, seen, previous_split = [], [], {}, None
    shards = _Shards(open_write, shard_size, (3, settings.image_size, settings.image_size))
    decoded = ingest_folder(folder, paths, settings, workers)
    with contextlib.closing(decoded):  # stops the workers at once if anything here fails
        for done, item in enumerate(decoded, 1):
            split = split_of[item.relative_path]
            if previous_split not in (None, split):
                shards.flush(previous_split)
            previous_split = split
            if item.image is None:
                rejected.append((item.relative_path, item.reason))
            elif item.sha256 in seen:
                rejected.append((item.relative_path, f"duplicate: same bytes as {seen[item.sha256]}"))
            else:
                seen[item.sha256] = item.relative_path
                kept.append((item.relative_path, split, *shards.add(split, item.image), item.sha256))
            progress(done)
    for split in SPLITS:
        shards.flush(split)
    return WrittenShards(kept, rejected, collections.Counter(row[1] for row in kept), shards.train_channel_sums,
                         shards.train_pixels)


def write_scoring_shards(folder: str, files: list[tuple[str, str, str]], sizes: tuple[int, ...], max_pixels: int,
                         workers: int, shard_size: int, open_write: Callable[[str], ContextManager],
                         ) -> list[tuple[str, str, int, int, str, int]]:
    """Decode the held-out files again at each of `sizes` and write them as
    eval/<size>px/<split>-<side>px-NNNNN.npy, where side is the size or, for a source whose
    short side is smaller, that short side: such an image is scored at its own size, never
    upscaled. files: (relative_path, split, sha256) of kept images; a file whose bytes changed
    since is refused. Returns (relative_path, split, size, side, shard, row) per file and size.
    """
    shards, rows = {}, []
    expected = {path: sha256 for path, _, sha256 in files}
    split_of = {path: split for path, split, _ in files}
    for path, sha256, images in ingest_at_sizes(folder, list(expected), sizes, max_pixels, workers):
        if sha256 != expected[path]:
            raise UserError(f"{path} changed while it was being prepared; run again")
        split = split_of[path]
        for size, image in zip(sizes, images):
            side = image.shape[-1]
            if (size, side) not in shards:
                shards[size, side] = _Shards(open_write, shard_size, image.shape,
                                             f"eval/{size}px/{{split}}-{side}px-{{index:05d}}.npy")
            rows.append((path, split, size, side, *shards[size, side].add(split, image)))
    for group in shards.values():
        for split in SPLITS:
            group.flush(split)
    return rows


class _Shards:
    """Kept images gathered per split and written shard_size at a time to shards/<split>-NNNNN.npy.

    Each image is copied into its split's buffer as it arrives from the decoding workers,
    so a shard is written from there without another copy, while the workers go on decoding.
    """

    def __init__(self, open_write: Callable[[str], ContextManager], shard_size: int, image_shape: tuple[int, ...],
                 name_template: str = "shards/{split}-{index:05d}.npy"):
        self.open_write = open_write
        self.name_template = name_template
        self.buffers = {split: np.empty((shard_size, *image_shape), dtype=np.uint8) for split in SPLITS}
        self.filled = dict.fromkeys(SPLITS, 0)
        self.written = dict.fromkeys(SPLITS, 0)
        self.train_channel_sums = np.zeros(image_shape[0], dtype=np.uint64)  # exact, for the mean pixel
        self.train_pixels = 0

    def add(self, split: str, image: np.ndarray) -> tuple[str, int]:
        """(shard, row) where the image will be."""
        place = (self._name(split), self.filled[split])
        self.buffers[split][self.filled[split]] = image
        self.filled[split] += 1
        if self.filled[split] == len(self.buffers[split]):
            self.flush(split)
        return place

    def flush(self, split: str) -> None:
        """Write the split's images not yet written, if any, as a shard."""
        if not self.filled[split]:
            return
        images = self.buffers[split][:self.filled[split]]
        with self.open_write(self._name(split)) as file:
            # What np.save writes; np.save itself copies the array into a bytes object first
            # when the file is not a plain one (here it hashes as it writes).
            np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(images))
            file.write(memoryview(images).cast("B"))
        if split == "train":
            self.train_channel_sums += images.sum(axis=(0, 2, 3), dtype=np.uint64)
            self.train_pixels += images.shape[0] * images.shape[2] * images.shape[3]
        self.filled[split] = 0
        self.written[split] += 1

    def _name(self, split: str) -> str:
        return self.name_template.format(split=split, index=self.written[split])
