"""Decoding every file of a source folder on all cores, in a stable order."""
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .imagefiles import RejectedImage, content_hash, decode_image


@dataclass
class IngestedFile:
    relative_path: str
    sha256: str
    image: np.ndarray | None  # (3, H, W) uint8 when kept
    reason: str = ""  # why it was rejected


def ingest_file(folder: str, relative_path: str, image_size: int, max_pixels: int) -> IngestedFile:
    try:
        with open(os.path.join(folder, relative_path), "rb") as file:
            data = file.read()
    except OSError as error:
        return IngestedFile(relative_path, "", None, f"cannot read: {error.strerror}")
    sha = content_hash(data)
    try:
        image = decode_image(data, image_size, max_pixels)
    except RejectedImage as rejection:
        return IngestedFile(relative_path, sha, None, str(rejection))
    return IngestedFile(relative_path, sha, image.transpose(2, 0, 1).copy())


def _ingest_chunk(args) -> list[IngestedFile]:
    folder, paths, image_size, max_pixels = args
    return [ingest_file(folder, path, image_size, max_pixels) for path in paths]


def ingest_folder(folder: str, relative_paths: list[str], image_size: int, max_pixels: int,
                  workers: int, chunk_size: int = 64) -> Iterator[IngestedFile]:
    """Results in the order of relative_paths; decoding spread over `workers` processes."""
    chunks = [(folder, relative_paths[i:i + chunk_size], image_size, max_pixels)
              for i in range(0, len(relative_paths), chunk_size)]
    if workers <= 1:
        for chunk in chunks:
            yield from _ingest_chunk(chunk)
        return
    with ProcessPoolExecutor(workers) as pool:
        for results in pool.map(_ingest_chunk, chunks):
            yield from results
