"""Where a dataset's source images come from: a local folder of files per dataset.

Every dataset resolves to a folder on local disk (downloaded or generated there once),
the files in it that belong to the dataset and, where the dataset defines one, its
official train/val/test split.
"""
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import luigi
import numpy as np
from PIL import Image

from . import downloads

DATASETS = ("sample", "folder", "flowers", "celeba", "paintings", "digits")
OFFICIAL_SPLIT_DATASETS = ("sample", "flowers", "celeba", "digits")  # with their own train/val/test split
# Datasets that read their files from `source`: a folder of images, or of archives
# downloaded by hand (for celeba and paintings, where it is optional).
SOURCE_DATASETS = ("folder", "celeba", "paintings")

FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"  # torchvision's Flowers102 uses it too

# Colour and greyscale photographs that ship inside scikit-image, so `sample` needs no network.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                 "rocket", "camera", "coins", "brick", "grass", "gravel", "moon")
SAMPLE_CROPS_PER_PHOTO = 52
SAMPLE_CROP_SIZE = 128
SAMPLE_VERSION = "sample-v1"
# Crops of one photograph share its content, so a split of crops would test on photographs the
# model trained on. The split is by photograph instead: a colour photograph and a greyscale one,
# unlike any training photograph in subject, are held out for testing, one more for validation.
SAMPLE_SPLIT = {"chelsea": "test", "camera": "test", "coffee": "val"}
SAMPLE_SPLIT_VERSION = "split by photograph v1"


class datasets(luigi.Config):
    """`[datasets]` section of luigi.cfg."""

    download_dir = luigi.Parameter(default="./downloads",
                                   description="Local folder for downloaded and generated source images")


class flowers(luigi.Config):
    """`[flowers]` section: the Oxford 102 Flowers files; point the URLs at a mirror if need be."""

    images_url = luigi.Parameter(default=FLOWERS_URL + downloads.FLOWERS_IMAGES)
    images_md5 = luigi.Parameter(default="52808999861908f626f3c1f4e79d11fa")
    labels_url = luigi.Parameter(default=FLOWERS_URL + downloads.FLOWERS_LABELS)
    labels_md5 = luigi.Parameter(default="e0620be6f572b9609742df49c70aed4d")
    splits_url = luigi.Parameter(default=FLOWERS_URL + downloads.FLOWERS_SPLITS)
    splits_md5 = luigi.Parameter(default="a5357ecc9cb78c4bef273ce3793fc85c")


class celeba(luigi.Config):
    """`[celeba]` section: Google Drive ids and md5s of aligned CelebA and its partition file."""

    file_id = luigi.Parameter(default=downloads.CELEBA_IMAGES_FILE_ID)
    md5 = luigi.Parameter(default=downloads.CELEBA_IMAGES_MD5)
    partition_file_id = luigi.Parameter(default=downloads.CELEBA_PARTITION_FILE_ID)
    partition_md5 = luigi.Parameter(default=downloads.CELEBA_PARTITION_MD5)


class digits(luigi.Config):
    """`[digits]` section: MNIST's gzipped IDX image files; point the URLs at a mirror if need be."""

    train_images_url = luigi.Parameter(default=downloads.DIGITS_URL + downloads.DIGITS_TRAIN_IMAGES)
    train_images_md5 = luigi.Parameter(default=downloads.DIGITS_TRAIN_IMAGES_MD5)
    test_images_url = luigi.Parameter(default=downloads.DIGITS_URL + downloads.DIGITS_TEST_IMAGES)
    test_images_md5 = luigi.Parameter(default=downloads.DIGITS_TEST_IMAGES_MD5)


class paintings(luigi.Config):
    """`[paintings]` section: the Kaggle competition holding Painter by Numbers."""

    competition = luigi.Parameter(default="painter-by-numbers")


_SETTINGS = {"flowers": flowers, "celeba": celeba, "paintings": paintings, "digits": digits}


@dataclass(frozen=True)
class Source:
    folder: str  # absolute
    files: list[str]  # relative paths (with '/') below folder that make up the dataset, sorted
    official_split: Mapping[str, str] | None  # "train"/"val"/"test" by relative path, if the dataset has one


def settings(dataset: str) -> dict:
    """The dataset's luigi.cfg section (URLs, ids, checksums); empty for sample and folder."""
    return dict(_SETTINGS[dataset]().param_kwargs) if dataset in _SETTINGS else {}


def check_source(dataset: str, source: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    if source and dataset not in SOURCE_DATASETS:
        raise ValueError(f"dataset={dataset} takes no source (got {source!r}); "
                         f"source is for {', '.join(SOURCE_DATASETS)}")


def resolve(dataset: str, source: str = "", paintings_parts=(1,)) -> Source:
    """Fetch the dataset where needed and say which files make it up."""
    check_source(dataset, source)
    download_dir = os.path.abspath(os.path.expanduser(datasets().download_dir))
    source_dir = os.path.abspath(os.path.expanduser(source)) if source else None
    if dataset == "sample":
        folder = sample_folder(download_dir)
        files = list_files(folder)
        return Source(folder, files, {path: SAMPLE_SPLIT.get(path.split("/")[0], "train") for path in files})
    if dataset == "folder":
        if not source_dir or not os.path.isdir(source_dir):
            raise ValueError(f"dataset=folder needs source= an existing directory of images, got {source!r}")
        return Source(source_dir, list_files(source_dir), None)
    if dataset == "flowers":
        config = flowers()
        destination = Path(download_dir, "flowers")
        images = downloads.fetch_flowers(destination, config.images_url, config.images_md5, config.labels_url,
                                         config.labels_md5, config.splits_url, config.splits_md5)
        split = downloads.read_flowers_splits(destination / downloads.FLOWERS_SPLITS)
        return Source(str(images), list_files(images), split)
    if dataset == "celeba":
        config = celeba()
        destination = Path(download_dir, "celeba")
        images = downloads.fetch_celeba(destination, source_dir, file_id=config.file_id, md5=config.md5,
                                        partition_file_id=config.partition_file_id,
                                        partition_md5=config.partition_md5)
        split = downloads.read_celeba_partition(destination / downloads.CELEBA_PARTITION)
        return Source(str(images), list_files(images), split)
    if dataset == "digits":
        images = downloads.fetch_digits(Path(download_dir, "digits"), **settings("digits"))
        files = list_files(images)
        return Source(str(images), files, downloads.digits_split(files))
    images = downloads.fetch_paintings(Path(download_dir, "paintings"), source_dir, parts=paintings_parts,
                                       competition=paintings().competition)
    return Source(str(images), _painting_files(images, paintings_parts), None)


def _painting_files(images: Path, parts) -> list[str]:
    """The files of the chosen parts only: train_N.zip unpacks into train_N/, and parts
    chosen by earlier runs stay unpacked next to them."""
    files = []
    for part in parts:
        found = [f"train_{part}/{path}" for path in list_files(images / f"train_{part}")]
        if not found:
            raise downloads.DownloadError(f"train_{part}.zip brought no files under train_{part}/ in {images}; "
                                          "it is not the Painter by Numbers archive of that name.")
        files += found
    return sorted(files)


def fingerprint(dataset: str, source: str = "", paintings_parts=(1,)) -> str:
    """What identifies the dataset's content and split beyond the task's own parameters, known
    before anything is fetched."""
    if dataset == "sample":
        return f"{SAMPLE_VERSION}, {SAMPLE_SPLIT_VERSION}"
    if dataset == "folder":
        return folder_fingerprint(source)
    if dataset in ("flowers", "celeba", "digits"):
        return " ".join(value for key, value in sorted(settings(dataset).items()) if key.endswith("md5"))
    # paintings: no published checksums, so archives downloaded by hand are known by size and date.
    archives = [Path(os.path.expanduser(source), f"train_{part}.zip") for part in paintings_parts] if source else []
    stats = [f"{path.name} {path.stat().st_size} {path.stat().st_mtime_ns}" for path in archives if path.is_file()]
    return " ".join([paintings().competition, *stats])


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


def list_files(folder) -> list[str]:
    """Relative paths (with '/') of every regular file below folder, sorted, hidden ones
    included, symbolic links left out; empty if there is no such folder."""
    if not os.path.isdir(folder):
        return []
    found, pending = [], [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(os.path.join(folder, prefix)) as entries:  # file types without a stat per file
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(f"{prefix}{entry.name}/")
                elif entry.is_file(follow_symlinks=False):
                    found.append(prefix + entry.name)
    return sorted(found)


def folder_fingerprint(folder: str) -> str:
    """sha256 over every file's relative path, size and modification time; empty if no such folder."""
    digest = hashlib.sha256()
    folder = os.path.expanduser(folder)
    for relative_path in list_files(folder):
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
