"""flowers: Oxford 102 Flowers over HTTPS, with its published train/val/test split."""
from pathlib import Path

import numpy as np

from .fetch import DownloadError, extract_once, fetch_url, require_folder
from .registry import DatasetSpec, Request, Source, files_below

IMAGES = "102flowers.tgz"
LABELS = "imagelabels.mat"
SPLITS_FILE = "setid.mat"
_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"  # torchvision's Flowers102 uses it too


class Flowers(DatasetSpec):
    name = "flowers"
    description = "Oxford 102 Flowers, downloaded over HTTPS"
    official_split = True
    settings = {"images_url": _URL + IMAGES, "images_md5": "52808999861908f626f3c1f4e79d11fa",
                "labels_url": _URL + LABELS, "labels_md5": "e0620be6f572b9609742df49c70aed4d",
                "splits_url": _URL + SPLITS_FILE, "splits_md5": "a5357ecc9cb78c4bef273ce3793fc85c"}

    def resolve(self, request: Request) -> Source:
        destination = request.download_dir / "flowers"
        images = fetch_flowers(destination, **request.settings)
        return Source(str(images), files_below(images), read_flowers_splits(destination / SPLITS_FILE))


def fetch_flowers(dest_dir, images_url: str, images_md5: str, labels_url: str, labels_md5: str,
                  splits_url: str, splits_md5: str) -> Path:
    """Fetch Oxford 102 Flowers into dest_dir and return dest_dir/jpg with the images.

    102flowers.tgz, imagelabels.mat and setid.mat are kept in dest_dir; pass
    dest_dir/setid.mat to read_flowers_splits for the official split.
    """
    dest_dir = Path(dest_dir)
    archive = fetch_url(images_url, dest_dir, IMAGES, images_md5)
    fetch_url(labels_url, dest_dir, LABELS, labels_md5)
    fetch_url(splits_url, dest_dir, SPLITS_FILE, splits_md5)
    extract_once(archive, dest_dir, marker_dir=dest_dir)
    return require_folder(dest_dir / "jpg", archive)


def read_flowers_splits(setid_path) -> dict[str, str]:
    """Map each image file name in the flowers jpg folder to 'train', 'val' or 'test'."""
    try:
        # Lazy: only this .mat file needs scipy, as in torchvision's Flowers102.
        from scipy.io import loadmat
    except ImportError:
        raise DownloadError("Reading setid.mat needs scipy: run `pip install scipy`.") from None
    try:
        image_ids = loadmat(setid_path, squeeze_me=True)
        splits = {}
        for split, key in _SPLIT_KEYS.items():
            for image_id in np.atleast_1d(image_ids[key]).tolist():
                splits[f"image_{int(image_id):05d}.jpg"] = split
    except (KeyError, ValueError, OSError) as error:
        raise DownloadError(f"{setid_path} is not the Oxford flowers split file ({error}). "
                            "Delete it and rerun to download it again.") from error
    return splits
