"""Where a dataset's source images come from: a local folder of files per dataset.

Every dataset resolves to a folder on local disk (downloaded or generated there once)
and, where the dataset defines one, its official train/val/test split.
"""
import hashlib
import os
import shutil
import tempfile

import luigi
import numpy as np
from PIL import Image

DATASETS = ("sample", "folder")

# Colour and greyscale photographs that ship inside scikit-image, so `sample` needs no network.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                 "rocket", "camera", "coins", "brick", "grass", "gravel", "moon")
SAMPLE_CROPS_PER_PHOTO = 52
SAMPLE_CROP_SIZE = 128
SAMPLE_VERSION = "sample-v1"


class datasets(luigi.Config):
    """`[datasets]` section of luigi.cfg."""

    download_dir = luigi.Parameter(default="./downloads",
                                   description="Local folder for downloaded and generated source images")


def resolve(dataset: str, source: str) -> tuple[str, dict[str, str] | None]:
    """(folder of source files, official split by relative path or None) for a dataset."""
    if dataset == "sample":
        return sample_folder(os.path.expanduser(datasets().download_dir)), None
    if dataset == "folder":
        folder = os.path.expanduser(source)
        if not source or not os.path.isdir(folder):
            raise ValueError(f"dataset=folder needs source= an existing directory of images, got {source!r}")
        return os.path.abspath(folder), None
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def sample_folder(download_dir: str) -> str:
    """Crops of scikit-image's bundled photographs, generated once (deterministically)."""
    folder = os.path.join(os.path.abspath(download_dir), SAMPLE_VERSION)
    if os.path.isdir(folder):
        return folder
    from skimage import data  # deferred: only the sample dataset needs scikit-image

    os.makedirs(download_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".sample-", dir=download_dir)
    rng = np.random.default_rng(0)
    for name in SAMPLE_PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        os.makedirs(os.path.join(staging, name))
        short = min(photo.size)
        for index in range(SAMPLE_CROPS_PER_PHOTO):
            side = int(short * rng.uniform(0.35, 0.9))
            left = int(rng.integers(0, photo.width - side + 1))
            top = int(rng.integers(0, photo.height - side + 1))
            crop = photo.resize((SAMPLE_CROP_SIZE, SAMPLE_CROP_SIZE), Image.Resampling.LANCZOS,
                                box=(left, top, left + side, top + side))
            crop.save(os.path.join(staging, name, f"crop-{index:03d}.jpg"), quality=92)
    try:
        os.rename(staging, folder)  # atomic: a concurrent or interrupted run never sees half a folder
    except OSError:
        shutil.rmtree(staging)
        if not os.path.isdir(folder):
            raise
    return folder


def list_files(folder: str) -> list[str]:
    """Relative paths (with '/') of every regular file below folder, sorted, hidden ones included."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(os.path.relpath(full, folder).replace(os.sep, "/"))
    return sorted(found)


def folder_fingerprint(folder: str) -> str:
    """sha256 over every file's relative path, size and modification time; empty if no such folder."""
    digest = hashlib.sha256()
    folder = os.path.expanduser(folder)
    for relative_path in (list_files(folder) if os.path.isdir(folder) else []):
        info = os.stat(os.path.join(folder, relative_path))
        digest.update(f"{relative_path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def hash_split(relative_path: str, val_fraction: float, test_fraction: float) -> str:
    """A split that depends on the file's path alone, so adding files never moves old ones."""
    position = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2 ** 64
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"
