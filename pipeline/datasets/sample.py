"""sample: crops of photographs that ship inside scikit-image and matplotlib, and dead-leaves images drawn in
their colours, so it needs no network."""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .registry import DatasetSpec, Request, Source, files_below

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
          "rocket", "camera", "coins", "brick", "grass", "gravel", "moon",
          # v2: every other photograph the two packages bundle (not documents, logos, a colour wheel or a stereo
          # twin); ten training photographs, most of them textures, taught the network too little that carries over.
          "motorcycle_left", "cell", "clock", "grace_hopper")
CROPS_PER_PHOTO = 52
CROP_SIZE = 128
# v3: fourteen photographs still taught the network too little that carries over to unseen ones.
# Dead-leaves images (Lee, Mumford & Huang 2001, "Occlusion models for natural images") share the
# statistics of photographs that inpainting needs, edges and occlusions at every scale, and cost
# nothing to draw; they are training images only, in colours drawn from the training crops.
LEAVES = 728
LEAF_RADII = (3.0, CROP_SIZE / 2)  # pixels: from a few to half the image side
LEAF_BLUR = (0.3, 1.0)  # Gaussian radius in pixels: the soft edges of a photograph's optics
VERSION = "sample-v3"
# Crops of one photograph share its content, so a split of crops would test on photographs the
# model trained on. The split is by photograph instead: a colour photograph and a greyscale one,
# unlike any training photograph in subject, are held out for testing, one more for validation.
SPLIT = {"chelsea": "test", "camera": "test", "coffee": "val"}
SPLIT_VERSION = "split by photograph v1"


class Sample(DatasetSpec):
    name = "sample"
    description = "crops of the photographs bundled with scikit-image and matplotlib, and dead-leaves images (offline)"
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


def dead_leaves(rng: np.random.Generator, palette: np.ndarray, size: int = CROP_SIZE,
                blur: tuple[float, float] = LEAF_BLUR) -> Image.Image:
    """A dead-leaves image: opaque discs, each in a colour drawn from `palette` (N, 3), dropped one behind the
    other until they cover the canvas, then blurred by a Gaussian of radius uniform in `blur`.

    Radii have density proportional to r^-3 within LEAF_RADII, which makes the image look the
    same at every scale, as photographs do. Each disc paints only the pixels no earlier disc covers.
    """
    canvas = np.zeros((size, size, 3), np.uint8)
    uncovered = np.ones((size, size), bool)
    low, high = (radius ** -2 for radius in LEAF_RADII)  # r^-3 sampled by inverting its CDF in r^-2
    while uncovered.any():
        radius = (low - rng.random() * (low - high)) ** -0.5
        centre_y, centre_x = rng.uniform(-radius, size + radius, 2)
        top, left = max(0, int(centre_y - radius)), max(0, int(centre_x - radius))
        bottom, right = min(size, int(centre_y + radius) + 2), min(size, int(centre_x + radius) + 2)
        ys, xs = np.ogrid[top:bottom, left:right]
        disc = ((ys - centre_y) ** 2 + (xs - centre_x) ** 2 <= radius ** 2) & uncovered[top:bottom, left:right]
        canvas[top:bottom, left:right][disc] = palette[rng.integers(len(palette))]
        uncovered[top:bottom, left:right] &= ~disc
    return Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(rng.uniform(*blur)))


def sample_folder(download_dir: Path) -> str:
    """Crops of the bundled photographs and the dead-leaves images, generated once (deterministically)."""
    folder = os.path.join(download_dir, VERSION)
    if os.path.isdir(folder):
        return folder
    os.makedirs(download_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".sample-", dir=download_dir)
    rng = np.random.default_rng(0)
    palette = []  # every 97th pixel of the training crops: a prime stride, so no column dominates
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
            if name not in SPLIT:
                palette.append(np.asarray(crop).reshape(-1, 3)[::97])
    os.makedirs(os.path.join(staging, "leaves"))
    palette = np.concatenate(palette)
    for index in range(LEAVES):
        dead_leaves(rng, palette).save(os.path.join(staging, "leaves", f"leaves-{index:03d}.png"))
    try:
        os.rename(staging, folder)  # atomic: a concurrent or interrupted run never sees half a folder
    except OSError:
        shutil.rmtree(staging)
        if not os.path.isdir(folder):
            raise
    return folder
