"""Decoding every file of a source folder in worker processes, in a stable order."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from .imagefiles import RejectedImage, content_hash, decode_image

# Small enough that the workers finish together and progress moves steadily, large
# enough that sending work and results costs little next to decoding.
CHUNK_SIZE = 16


@dataclass
class IngestedFile:
    relative_path: str
    sha256: str
    image: np.ndarray | None  # (3, H, W) uint8 when kept
    reason: str = ""  # why it was rejected: "<kind>: <detail>"


@dataclass(frozen=True)
class DecodeSettings:
    image_size: int  # side of the square result
    max_pixels: int  # larger sources are rejected; also Pillow's limit inside the workers
    reject_smaller: bool = False  # reject sources with a short side below image_size instead of upscaling

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ingest_file(folder: str, relative_path: str, settings: DecodeSettings) -> IngestedFile:
    try:
        with open(os.path.join(folder, relative_path), "rb") as file:
            data = file.read()
    except OSError as error:
        return IngestedFile(relative_path, "", None, f"cannot read: {error.strerror}")
    sha = content_hash(data)
    try:
        image = decode_image(data, settings.image_size, settings.max_pixels, reject_smaller=settings.reject_smaller)
    except RejectedImage as rejection:
        return IngestedFile(relative_path, sha, None, str(rejection))
    return IngestedFile(relative_path, sha, image.transpose(2, 0, 1).copy())


def _start_worker(max_pixels: int) -> None:
    # Pillow's decompression-bomb limit is process-wide; these processes are ours, so it
    # can follow the task's setting and the effective limit is exactly max_pixels
    # (Painter by Numbers holds paintings above Pillow's default).
    Image.MAX_IMAGE_PIXELS = max_pixels


def _ingest_chunk(args) -> list[IngestedFile]:
    folder, paths, settings = args
    return [ingest_file(folder, path, settings) for path in paths]


def _pool_context():
    # Forked workers start at once; spawned ones would import the pipeline package (and
    # torch) again, which costs seconds per worker.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def ingest_folder(folder: str, relative_paths: list[str], settings: DecodeSettings,
                  workers: int) -> Iterator[IngestedFile]:
    """Results in the order of relative_paths, decoded by `workers` processes (at least one,
    so that Pillow's limit is never changed in the calling process)."""
    chunks = [(folder, relative_paths[start:start + CHUNK_SIZE], settings)
              for start in range(0, len(relative_paths), CHUNK_SIZE)]
    pool = ProcessPoolExecutor(max(1, workers), mp_context=_pool_context(), initializer=_start_worker,
                               initargs=(settings.max_pixels,))
    try:
        for results in pool.map(_ingest_chunk, chunks):
            yield from results
    finally:
        pool.shutdown(cancel_futures=True)  # a failing consumer must not wait for the whole folder
