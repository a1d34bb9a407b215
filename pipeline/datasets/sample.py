"""sample: crops of photographs that ship inside scikit-image and matplotlib, so it needs no network."""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .registry import DatasetSpec, Request, Source, files_below

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
          "rocket", "camera", "coins", "brick", "grass", "gravel", "moon",
          # v2: every other photograph the two packages bundle (not documents, logos, a colour wheel or a stereo
          # twin); ten training photographs, most of them textures, taught the network too little that carries over.
          "motorcycle_left", "cell", "clock", "grace_hopper")
CROPS_PER_PHOTO = 52
CROP_SIZE = 128
VERSION = "sample-v2"
# Crops of one photograph share its content, so a split of crops would test on photographs the
# model trained on. The split is by photograph instead: a colour photograph and a greyscale one,
# unlike any training photograph in subject, are held out for testing, one more for validation.
SPLIT = {"chelsea": "test", "camera": "test", "coffee": "val"}
SPLIT_VERSION = "split by photograph v1"


class Sample(DatasetSpec):
    name = "sample"
    description = "crops of the photographs bundled with scikit-image and matplotlib (offline)"
    official_split = True

    def resolve(self, request: Request) -> Source:
        folder = sample_folder(request.download_dir)
        files = files_below(folder)
        return Source(folder, files, {path: SPLIT.get(path.split("/")[0], "train") for path in files})

    def fingerprint(self, request: Request) -> str:
        return f"{VERSION}, {SPLIT_VERSION}"


def _photo(name: str) -> Image.Image:
    from skimage import data  # deferred: only the sample dataset needs scikit-image

    if name == "motorcycle_left":
        pixels = data.stereo_motorcycle()[0]
    elif name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as file:
            pixels = np.asarray(Image.open(file))
    else:
        pixels = getattr(data, name)()
    return Image.fromarray(pixels).convert("RGB")


def sample_folder(download_dir: Path) -> str:
    """Crops of the bundled photographs, generated once (deterministically)."""
    folder = os.path.join(download_dir, VERSION)
    if os.path.isdir(folder):
        return folder
    os.makedirs(download_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".sample-", dir=download_dir)
    rng = np.random.default_rng(0)
    for name in PHOTOS:
        photo = _photo(name)
        os.makedirs(os.path.join(staging, name))
        short = min(photo.size)
        for index in range(CROPS_PER_PHOTO):
            side = int(short * rng.uniform(0.35, 0.9))
            left = int(rng.integers(0, photo.width - side + 1))
            top = int(rng.integers(0, photo.height - side + 1))
            crop = photo.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS,
                                box=(left, top, left + side, top + side))
            crop.save(os.path.join(staging, name, f"crop-{index:03d}.jpg"), quality=92)
    try:
        os.rename(staging, folder)  # atomic: a concurrent or interrupted run never sees half a folder
    except OSError:
        shutil.rmtree(staging)
        if not os.path.isdir(folder):
            raise
    return folder
