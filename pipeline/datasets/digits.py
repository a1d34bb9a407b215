"""digits: MNIST's handwritten digits (training and test images; no labels), written once as PNG files."""
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .fetch import DownloadError, fetch_url, files_identity, marked
from .registry import DatasetSpec, Request, Source, files_below

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the mirror torchvision's MNIST tries first
# MNIST publishes train and test only; the customary validation set is the last 10,000 of
# the 60,000 training digits (the 50,000 / 10,000 / 10,000 split).
VAL_SHARE = 1 / 6


class Digits(DatasetSpec):
    name = "digits"
    description = "MNIST's handwritten digits, downloaded over HTTPS"
    official_split = True
    settings = {"train_images_url": _URL + TRAIN_IMAGES, "train_images_md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "test_images_url": _URL + TEST_IMAGES, "test_images_md5": "9fb629c4189551a2d022fa330f9573f3"}

    def resolve(self, request: Request) -> Source:
        images = fetch_digits(request.download_dir / "digits", **request.settings)
        files = files_below(images)
        return Source(str(images), files, digits_split(files))


def fetch_digits(dest_dir, train_images_url: str, train_images_md5: str, test_images_url: str,
                 test_images_md5: str) -> Path:
    """Fetch MNIST's digits into dest_dir and return dest_dir/images, one PNG file per digit.

    The gzipped IDX files of the training and test images are kept in dest_dir (the labels
    are not fetched: the pipeline trains unconditional generators). Their digits are
    written once, as images/train/NNNNN.png and images/test/NNNNN.png (28x28 greyscale),
    and again only when an IDX file is replaced; pass the files below images/ to
    digits_split for the split.
    """
    dest_dir = Path(dest_dir)
    archives = {"train": fetch_url(train_images_url, dest_dir, TRAIN_IMAGES, train_images_md5),
                "test": fetch_url(test_images_url, dest_dir, TEST_IMAGES, test_images_md5)}
    images_dir, marker = dest_dir / "images", dest_dir / ".images.written"
    identity = files_identity(*archives.values())
    if images_dir.is_dir() and marked(marker, identity):
        return images_dir
    logger.info("Writing the MNIST digits as PNG files into %s", images_dir)
    staging = Path(tempfile.mkdtemp(prefix=".images-", dir=dest_dir))
    try:
        for split, archive in archives.items():
            (staging / split).mkdir()
            for index, digit in enumerate(_read_idx_images(archive)):
                Image.fromarray(digit).save(staging / split / f"{index:05d}.png")
        marker.unlink(missing_ok=True)
        shutil.rmtree(images_dir, ignore_errors=True)  # digits of replaced IDX files
        os.replace(staging, images_dir)  # atomic: the folder is either complete or absent
        marker.write_text(identity)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return images_dir


def digits_split(files) -> dict[str, str]:
    """Map each path below the digits' images/ folder to 'train', 'val' or 'test': the
    test digits are the test split, the last sixth of the training digits the val split."""
    training = sorted(path for path in files if path.startswith("train/"))
    first_val = round(len(training) * (1 - VAL_SHARE))
    split = {path: "train" if index < first_val else "val" for index, path in enumerate(training)}
    split.update((path, "test") for path in files if path.startswith("test/"))
    return split


def _read_idx_images(archive: Path) -> np.ndarray:
    """The (N, H, W) uint8 images of a gzipped IDX file, read with torchvision's MNIST reader."""
    from torchvision.datasets.mnist import read_image_file
    from torchvision.datasets.utils import extract_archive

    with tempfile.TemporaryDirectory(prefix=".idx-", dir=archive.parent) as scratch:
        try:
            images = read_image_file(extract_archive(str(archive), scratch)).numpy()
        except (AssertionError, OSError, EOFError, ValueError, KeyError) as error:
            raise DownloadError(f"{archive} is not a gzipped IDX file of MNIST images ({error!r}), although its "
                                "md5 is the one configured. Check the digits URLs and md5s in luigi.cfg.") from error
    return images
