"""Decoding every file of a source folder in worker processes, in a stable order."""
import collections
import ctypes
import math
import mmap
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UserError
from .decode import RejectedImage, content_hash, decode_image, decode_image_at_most

# Small enough that the workers finish together and progress moves steadily, large
# enough that sending work and results costs little next to decoding.
CHUNK_SIZE = 16
# Chunks handed out per worker ahead of the consumer: enough that the workers go on
# decoding while the consumer hashes and writes a shard (50-200 ms at 128 px here). Their
# shared slots take 6 MB per worker at 128 px, 25 MB at 256 px.
CHUNKS_IN_FLIGHT_PER_WORKER = 8


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
            raise UserError(f"image_size must be at least 8, got {self.image_size}")
        if self.max_pixels < 1:
            raise UserError(f"max_pixels must be positive, got {self.max_pixels}")


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
    return IngestedFile(relative_path, sha, image.transpose(2, 0, 1))


# In a worker process: the shared (slot, 3, H, W) array that decoded images are written to.
_slots: np.ndarray | None = None


def _shared_slots(shared, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(shared, dtype=np.uint8).reshape(shape)


def _limit_pixels(max_pixels: int) -> None:
    # Pillow's decompression-bomb limit is process-wide; these processes are ours, so it
    # can follow the task's setting and the effective limit is exactly max_pixels
    # (Painter by Numbers holds paintings above Pillow's default).
    Image.MAX_IMAGE_PIXELS = max_pixels


def _start_worker(max_pixels: int, shared, shape: tuple[int, ...]) -> None:
    global _slots
    _limit_pixels(max_pixels)
    _slots = _shared_slots(shared, shape)


def _ingest_chunk(folder: str, paths: list[str], settings: DecodeSettings, first_slot: int) -> list[IngestedFile]:
    """The chunk's results without their pixels: a kept file's (its reason is empty) are
    left in the slot of its place in the chunk, counting from first_slot."""
    results = []
    for slot, path in enumerate(paths, first_slot):
        result = ingest_file(folder, path, settings)
        if result.image is not None:
            _slots[slot] = result.image
            result.image = None
        results.append(result)
    return results


def _shared_buffer(context, size: int):
    # An anonymous shared mapping costs nothing until written and forked workers inherit
    # it; spawned workers (platforms without fork) need multiprocessing's picklable kind,
    # which is zero-filled up front (10-40 ms for the 12 MB of two workers at 128 px).
    if context.get_start_method() == "fork":
        return mmap.mmap(-1, size)
    return context.RawArray(ctypes.c_uint8, size)


def _pool_context():
    # Forked workers start at once; spawned ones would import the pipeline package (and
    # torch) again, which costs seconds per worker.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def ingest_folder(folder: str, relative_paths: list[str], settings: DecodeSettings,
                  workers: int) -> Iterator[IngestedFile]:
    """Results in the order of relative_paths, decoded by `workers` processes (at least one,
    so that Pillow's limit is never changed in the calling process).

    The pixels come back through shared memory rather than the result pipe: pickling,
    piping and unpickling every image cost about a tenth of the decoding's CPU time
    (docs/experiments.md, "What made ingestion fast"). A fixed number of chunks is in flight, each with its own block of
    slots, so a slow consumer holds the workers back instead of letting results pile up
    in memory.
    """
    workers = max(1, workers)
    blocks = workers * CHUNKS_IN_FLIGHT_PER_WORKER
    shape = (blocks * CHUNK_SIZE, 3, settings.image_size, settings.image_size)
    context = _pool_context()
    shared = _shared_buffer(context, math.prod(shape))
    slots = _shared_slots(shared, shape)
    starts = range(0, len(relative_paths), CHUNK_SIZE)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(settings.max_pixels, shared, shape))

    def submit(chunk: int):
        first_slot = chunk % blocks * CHUNK_SIZE
        paths = relative_paths[starts[chunk]:starts[chunk] + CHUNK_SIZE]
        return pool.submit(_ingest_chunk, folder, paths, settings, first_slot), first_slot

    try:
        pending = collections.deque(submit(chunk) for chunk in range(min(blocks, len(starts))))
        next_chunk = len(pending)
        while pending:
            future, first_slot = pending.popleft()
            results = future.result()
            images = slots[first_slot:first_slot + len(results)].copy()
            if next_chunk < len(starts):  # the chunk's block of slots is free again
                pending.append(submit(next_chunk))
                next_chunk += 1
            for result, image in zip(results, images):
                if not result.reason:
                    result.image = image
                yield result
    finally:
        pool.shutdown(cancel_futures=True)  # a failing consumer must not wait for the whole folder


def _decode_at_sizes(folder: str, relative_path: str, sizes: tuple[int, ...], max_pixels: int,
                     ) -> tuple[str, list[np.ndarray]]:
    with open(os.path.join(folder, relative_path), "rb") as file:
        data = file.read()
    try:
        return content_hash(data), [decode_image_at_most(data, size, max_pixels).transpose(2, 0, 1) for size in sizes]
    except RejectedImage as rejection:
        raise UserError(f"{relative_path} decoded before, no longer: {rejection}") from None


def ingest_at_sizes(folder: str, relative_paths: list[str], sizes: tuple[int, ...], max_pixels: int,
                    workers: int) -> Iterator[tuple[str, str, list[np.ndarray]]]:
    """(relative path, sha256, one (3, side, side) image per size) in the order of relative_paths,
    each image at min(size, the source's short side), decoded by `workers` processes.

    For the held-out splits at scoring sizes, a few hundred files: their pixels come back
    through the result pipe, which costs little next to decoding them at several sizes.
    """
    pool = ProcessPoolExecutor(max(1, workers), mp_context=_pool_context(), initializer=_limit_pixels,
                               initargs=(max_pixels,))
    try:
        for path, (sha256, images) in zip(relative_paths, pool.map(
                _decode_at_sizes, [folder] * len(relative_paths), relative_paths,
                [sizes] * len(relative_paths), [max_pixels] * len(relative_paths), chunksize=CHUNK_SIZE)):
            yield path, sha256, images
    finally:
        pool.shutdown(cancel_futures=True)
