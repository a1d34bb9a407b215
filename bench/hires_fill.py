"""Filling photographs larger than the network's training size: ways of doing it, against OpenCV's Telea.

    python bench/hires_fill.py --root ARTIFACTS --model TrainJoint-... --images DIR [--images DIR] \
        --sizes 256,512 --count 100
    python bench/hires_fill.py --root ARTIFACTS --model TrainJoint-... --timing [--photo FILE]

Scores: `--count` images of each `--images` folder (a seeded choice of its files), centre-cropped
and resized to each of `--sizes`, under the evaluation's seeded masks scaled to that size
(squares of side 25-50 % of the image, brush strokes covering 10-40 %): hole PSNR and SSIM of
each way of filling next to Telea's (pipeline.evaluation). The ways: the harmonic interpolation
of the holes' border alone (no network, for reference), the network on the whole image (`whole`,
what infill did before), on a copy at the training scale upsampled (`resize`), on a crop around
each region of holes at the training scale (`crop`, hole_crops), and `resize` or `crop` with
detail added: the full-size harmonic fill's detail from the hole border (`crop + border detail`,
complete_any_size; with Navier-Stokes' finest detail on top, `crop + border detail + Navier-Stokes
detail` is what infill, the studio and the evaluation use: pipeline.infill.inpaint), high-frequency residuals
of the known pixels copied in by attention over the small fill (`crop + attention detail`,
HiFill's contextual residual aggregation), or the fill refined at every doubling of the scale
with the upsampled coarser fill as the network's pre-fill (`crop + coarse to fine`).
`--pictures DIR` writes, per setting, a grid of the first images: the masked input, each fill
in that order, the original.

Timing (`--timing`): `python -m pipeline infill` on a 4000x3000 photograph (`--photo`, resized
to that size, or a synthetic one) with brush strokes drawn to cover 10 % of a 4000-pixel square
and cut to its 3000 rows (the share they cover is printed), in a fresh process: its wall time
and peak resident memory (VmHWM, Linux), and those of the fill alone in another.
"""
import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.glcic.inference import (complete_any_size, complete_in_crops, downscaled,  # noqa: E402
                                       fill_at_training_scale, network_output, paste, predict, upscaled,
                                       working_size)
from ganmodels.glcic.networks import fill_holes  # noqa: E402
from ganmodels.masks import MaskConfig, sample_strokes  # noqa: E402
from ganmodels.metrics import inpainting_metrics  # noqa: E402
from pipeline.artifacts.runs import checkpoint_path, model_state  # noqa: E402
from pipeline.evaluation import EVALUATION_KINDS, classical_inpaint, evaluation_masks  # noqa: E402
from pipeline.infill import Inpainter, inpaint  # noqa: E402
from pipeline.ingestion.decode import decode_image  # noqa: E402

PHOTO_SIZE = (3000, 4000)  # height, width
PHOTO_STROKES = 0.1
PICTURES = 4  # images per grid of --pictures


def read_images(folder: str, count: int, size: int, seed: int) -> torch.Tensor:
    """`count` images of the folder (a seeded choice), centre-cropped and resized to size, in [0, 1]."""
    files = sorted(os.listdir(folder))
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    arrays = []
    for name in chosen:
        with open(os.path.join(folder, name), "rb") as file:
            arrays.append(decode_image(file.read(), size, max_pixels=10 ** 9))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


def small_fill(net, images, mask, mean_pixel, training_size):
    """(the holes filled at the training scale, the pasted small images, the small mask); None at that scale."""
    size = working_size(*images.shape[-2:], training_size)
    if size == tuple(images.shape[-2:]):
        return None
    small_images, small_mask = downscaled(images, mask, size)
    return paste(small_images, predict(net, small_images, small_mask, mean_pixel), small_mask), small_images, small_mask


def upsampled_fill(net, images, mask, mean_pixel, training_size):
    small = small_fill(net, images, mask, mean_pixel, training_size)
    if small is None:
        return predict(net, images, mask, mean_pixel)
    return upscaled(small[0], images.shape[-2:]).clamp(0, 1)


def attention_detail_fill(net, images, mask, mean_pixel, training_size, temperature=10.0):
    """The upsampled fill plus, in each hole's small pixel, the known pixels' high-frequency residual
    (the image less its upsampled small copy) averaged over the small pixels whose 3x3 neighbourhood
    in the small fill looks most alike (softmax of cosine similarity), as in HiFill."""
    small = small_fill(net, images, mask, mean_pixel, training_size)
    if small is None:
        return predict(net, images, mask, mean_pixel)
    filled, small_images, small_mask = small
    (height, width), (rows, cols) = images.shape[-2:], filled.shape[-2:]
    residual = images - upscaled(small_images, (height, width))
    # Each small pixel's block of full-size residual, resampled to a common block shape.
    block_height, block_width = -(-height // rows), -(-width // cols)
    blocks = F.interpolate(residual, size=(rows * block_height, cols * block_width), mode="nearest")
    blocks = blocks.reshape(3, rows, block_height, cols, block_width).permute(1, 3, 0, 2, 4).reshape(rows * cols, -1)
    patches = F.unfold(filled, 3, padding=1)[0].T
    patches = F.normalize(patches - patches.mean(1, keepdim=True), dim=1)
    hole = small_mask.flatten() > 0
    detail = torch.zeros_like(blocks)
    if hole.any() and not hole.all():
        weights = torch.softmax(patches[hole] @ patches[~hole].T * temperature, dim=1)
        detail[hole] = weights @ blocks[~hole]
    detail = detail.reshape(rows, cols, 3, block_height, block_width).permute(2, 0, 3, 1, 4)
    detail = F.interpolate(detail.reshape(1, 3, rows * block_height, cols * block_width), size=(height, width),
                           mode="nearest")
    return (upscaled(filled, (height, width)) + detail).clamp(0, 1)


def coarse_to_fine_fill(net, images, mask, mean_pixel, training_size):
    """The fill at the training scale, then at each doubling of it up to the images' size, the network
    seeing the upsampled coarser fill in the holes instead of its own pre-fill."""
    height, width = images.shape[-2:]
    sizes = [working_size(height, width, training_size)]
    while sizes[-1] != (height, width):
        sizes.append((min(height, 2 * sizes[-1][0]), min(width, 2 * sizes[-1][1])))
    filled = None
    for size in sizes:
        scaled, scaled_mask = (images, mask) if size == (height, width) else downscaled(images, mask, size)
        if filled is None:
            prefill = fill_holes(scaled, scaled_mask, mean_pixel, net.hole_fill)
        else:
            prefill = torch.lerp(scaled, upscaled(filled, size).clamp(0, 1), scaled_mask)
        filled = paste(scaled, network_output(net, prefill, scaled_mask), scaled_mask)
    return filled


def candidates(inpainter: Inpainter) -> dict:
    """Each way of filling as (images, mask) -> completed images."""
    net, mean_pixel, size = inpainter.completion, inpainter.mean_pixel, inpainter.training_size

    def in_crops(fill):
        return lambda images, mask: complete_in_crops(images, mask, size,
                                                      lambda crop, holes: fill(net, crop, holes, mean_pixel, size))

    return {
        "telea": lambda images, mask: classical_inpaint(images, mask, "telea"),
        "harmonic (no network)": lambda images, mask: fill_holes(images, mask, mean_pixel, "harmonic"),
        "whole": lambda images, mask: paste(images, predict(net, images, mask, mean_pixel), mask),
        "resize": lambda images, mask: paste(images, upsampled_fill(net, images, mask, mean_pixel, size), mask),
        "crop": in_crops(upsampled_fill),
        "resize + border detail": lambda images, mask: paste(
            images, fill_at_training_scale(net, images, mask, mean_pixel, size), mask),
        "crop + border detail": lambda images, mask: complete_any_size(net, images, mask, mean_pixel, size),
        "crop + border detail + Navier-Stokes detail": lambda images, mask: inpaint(net, images, mask, mean_pixel,
                                                                                    size),
        "crop + attention detail": in_crops(attention_detail_fill),
        "crop + coarse to fine": in_crops(coarse_to_fine_fill),
    }


def score(folders: list[str], sizes: list[int], count: int, seed: int, inpainter: Inpainter,
          pictures: str | None) -> pd.DataFrame:
    fills, rows = candidates(inpainter), []
    for folder in folders:
        for size in sizes:
            images = read_images(folder, count, size, seed)
            for kind_index, kind in enumerate(EVALUATION_KINDS):
                mask = evaluation_masks(len(images), MaskConfig(image_size=size), kind, seed + kind_index)
                shown = []
                for name, fill in fills.items():
                    seconds, scores, pictured = 0.0, [], []
                    for index in range(len(images)):  # one by one: SSIM over a whole batch at 512 px takes GBs
                        image, holes = images[index:index + 1], mask[index:index + 1]
                        started = time.perf_counter()
                        completed = fill(image, holes).float().clamp(0, 1)
                        seconds += time.perf_counter() - started
                        scores.append(inpainting_metrics(completed, image, holes))
                        if index < PICTURES:
                            pictured.append(completed)
                    rows.append({"images": os.path.basename(os.path.normpath(folder)), "size": size, "kind": kind,
                                 "method": name, "n": len(images),
                                 "psnr_hole": torch.cat([score["psnr_hole"] for score in scores]).mean().item(),
                                 "ssim": torch.cat([score["ssim"] for score in scores]).mean().item(),
                                 "seconds_per_image": seconds / len(images)})
                    print(*rows[-1].values(), sep="\t", flush=True)  # progress: a full run takes long
                    shown.append(torch.cat(pictured))
                if pictures:
                    save_pictures(pictures, f"{os.path.basename(os.path.normpath(folder))}-{size}-{kind}",
                                  images[:PICTURES], mask[:PICTURES], shown)
    table, setting = pd.DataFrame(rows), ["images", "size", "kind"]
    telea = table.loc[table["method"] == "telea", [*setting, "psnr_hole", "ssim"]]
    joined = table.merge(telea, on=setting, suffixes=("", "_telea"), sort=False)
    joined["psnr_vs_telea"] = joined["psnr_hole"] - joined["psnr_hole_telea"]
    joined["ssim_vs_telea"] = joined["ssim"] - joined["ssim_telea"]
    return joined.drop(columns=["psnr_hole_telea", "ssim_telea"])


def save_pictures(folder: str, name: str, images: torch.Tensor, mask: torch.Tensor, fills: list[torch.Tensor]) -> None:
    """Rows of: masked input, then each fill in the order of candidates(), then the original."""
    os.makedirs(folder, exist_ok=True)
    masked = torch.lerp(images, torch.ones_like(images), mask)
    columns = [masked, *fills, images]
    rows = [torch.cat([column[row] for column in columns], dim=2) for row in range(len(images))]
    grid = torch.cat(rows, dim=1).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(grid).save(os.path.join(folder, f"{name}.png"))


def write_photo(folder: str, photo: str | None, seed: int) -> tuple[str, str, float]:
    """A 4000x3000 photograph (the given one resized to it, or a synthetic one) and a brush-stroke mask
    covering about PHOTO_STROKES of it, as files; (image path, mask path, share of hole pixels)."""
    height, width = PHOTO_SIZE
    if photo:
        image = Image.open(photo).convert("RGB").resize((width, height), Image.BICUBIC)
    else:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(1, 3, 12, 16, generator=generator)
        smooth = F.interpolate(coarse, size=PHOTO_SIZE, mode="bicubic", align_corners=False)
        grain = 0.05 * torch.randn(1, 3, height, width, generator=generator)
        image = Image.fromarray((smooth + grain)[0].clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy())
    config = MaskConfig(image_size=max(height, width), stroke_area_min=PHOTO_STROKES, stroke_area_max=PHOTO_STROKES)
    mask = sample_strokes(1, config, torch.Generator().manual_seed(seed))[0, 0, :height, :width].bool().numpy()
    image_path, mask_path = os.path.join(folder, "photo.jpg"), os.path.join(folder, "photo-mask.png")
    image.save(image_path, quality=92)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    return image_path, mask_path, float(mask.mean())


# Peak memory is the child's VmHWM (Linux): its ru_maxrss would start from the RSS of this process,
# which it is forked from.
PEAK = "next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM'))"
CLI = f"""
import atexit, runpy, sys
atexit.register(lambda: print("peak_kib", {PEAK}, file=sys.stderr))
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline", run_name="__main__")
"""
FILL_ONLY = f"""
import sys, time
import numpy as np, torch
from PIL import Image
from pipeline.artifacts.runs import checkpoint_path, model_state
from pipeline.infill import Inpainter
device = torch.device("cpu")
inpainter = Inpainter(model_state(checkpoint_path(sys.argv[1], sys.argv[2]), device, "completion"), device)
pixels = np.array(Image.open(sys.argv[3]).convert("RGB"))
mask = np.array(Image.open(sys.argv[4])) > 127
started = time.perf_counter()
inpainter.fill(pixels, mask, poisson=False)
print(time.perf_counter() - started, {PEAK})
"""


def timing(root: str, model: str, photo: str | None, seed: int) -> None:
    """Time `python -m pipeline infill` on a 4000x3000 photograph in fresh processes."""
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {**os.environ, "PYTHONPATH": repository}
    with tempfile.TemporaryDirectory() as folder:
        image_path, mask_path, share = write_photo(folder, photo, seed)
        arguments = ["infill", "--root", root, "--model", model, "--image", image_path, "--mask", mask_path,
                     "--out", os.path.join(folder, "filled.png")]
        started = time.perf_counter()
        cli = subprocess.run([sys.executable, "-c", CLI, *arguments], check=True, cwd=repository, env=environment,
                             capture_output=True, text=True)
        wall = time.perf_counter() - started
        peak_kib = int(cli.stderr.split("peak_kib")[-1])
        fill = subprocess.run([sys.executable, "-c", FILL_ONLY, root, model, image_path, mask_path], check=True,
                              cwd=repository, env=environment, capture_output=True, text=True).stdout.split()
    what = f"photograph {os.path.basename(photo)} resized to it" if photo else "synthetic image"
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"infill, {PHOTO_SIZE[1]}x{PHOTO_SIZE[0]} {what}, strokes covering {share:.1%}: {wall:.1f} s wall "
          f"(start, decode, fill, PNG), peak {peak_kib / 2 ** 20:.2f} GiB")
    print(f"the fill alone (Inpainter.fill): {float(fill[0]):.1f} s, "
          f"its process's peak {int(fill[1]) / 2 ** 20:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="artifact root holding the model's run")
    parser.add_argument("--model", required=True, help="an inpainter run (TrainInpainter, a phase) or a .pt file")
    parser.add_argument("--images", action="append", default=[], help="folder of held-out images; repeatable")
    parser.add_argument("--sizes", default="256,512", help="image sides to score at, comma-separated")
    parser.add_argument("--count", type=int, default=100, help="images per folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chosen images and of the masks")
    parser.add_argument("--pictures", help="write grids of a few fills to this folder")
    parser.add_argument("--timing", action="store_true", help="time infill on a 4000x3000 photograph")
    parser.add_argument("--photo", help="--timing: this photograph resized to 4000x3000 (default: synthetic)")
    parser.add_argument("--out", help="write the table to this CSV file too")
    args = parser.parse_args()
    if args.images:
        device = torch.device("cpu")
        inpainter = Inpainter(model_state(checkpoint_path(args.root, args.model), device, "completion"), device)
        table = score(args.images, [int(size) for size in args.sizes.split(",")], args.count, args.seed, inpainter,
                      args.pictures)
        pd.set_option("display.width", 200)
        print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}")
        print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
        if args.out:
            table.to_csv(args.out, index=False)
    if args.timing:
        timing(args.root, args.model, args.photo, args.seed)


if __name__ == "__main__":
    main()
