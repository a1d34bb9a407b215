"""Pictures of a trained inpainter: its fills next to OpenCV's, on the run's own held-out images.

    python bench/render_grids.py TrainInpainter --out grids/
    python bench/render_grids.py RUN --root s3://bucket/prefix --images 6 --scale 4 --out grids/

RUN names a TrainInpainter run as the `python -m pipeline` commands do: a directory name, a
prefix of it or of its hash, or a path to it (or to its result.json); by default the one
TrainInpainter run under the artifact root. For each evaluation mask kind it writes
OUT/<kind>.png (box.png: the squares; strokes.png: the brush strokes): one row per test image,
taken evenly across the run's test split, under the very mask the evaluation drew for that
image (pipeline.evaluation.evaluation_masks, the run's eval_seed), and four columns: the image
with its hole in white, OpenCV Telea's fill (classical_inpaint, as the evaluation scores it),
the model's fill (pipeline.infill.Inpainter, as `python -m pipeline infill` fills a user's
image) and the original. Pixels are enlarged by a whole factor, without smoothing.
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.feeding import to_float  # noqa: E402
from ganmodels.glcic.config import PhaseOptions  # noqa: E402
from ganmodels.rendering import to_uint8  # noqa: E402
from ganmodels.world import resolve_device  # noqa: E402
from pipeline.artifacts import storage  # noqa: E402
from pipeline.artifacts.runs import Run, ancestry, checkpoint_path, find_run, model_state  # noqa: E402
from pipeline.errors import UserError, exit_code  # noqa: E402
from pipeline.evaluation import EVALUATION_KINDS, classical_inpaint, evaluation_masks  # noqa: E402
from pipeline.infill import Inpainter  # noqa: E402
from pipeline.settings import artifact_root, cache_dir  # noqa: E402

COLUMNS = ("with its hole", "OpenCV Telea", "the model", "original")
GAP = 2  # white pixels between and around the cells
BACKGROUND = 255


def test_images(run: Run) -> np.ndarray:
    """The test split of the run's prepared images, uint8 (N, 3, H, W), in the order the evaluation reads it."""
    shards = next((upstream for upstream in ancestry(run) if upstream.family == "PrepareImages"), None)
    if shards is None:
        raise UserError(f"{run.name} has no PrepareImages run upstream; name a TrainInpainter run")
    names = sorted(name for name in shards.files() if name.startswith("shards/test-"))
    if not names:
        raise UserError(f"{shards.name} has no test images")
    return np.concatenate([storage.load_array(shards.path(name), cache_dir()) for name in names])


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over `count` images, first and last included."""
    return sorted(set(np.linspace(0, count - 1, min(wanted, count)).round().astype(int).tolist()))


def grid_rows(images: np.ndarray, masks: torch.Tensor, inpainter: Inpainter) -> list[tuple[np.ndarray, ...]]:
    """One row per image (uint8 (N, 3, H, W), masks (N, 1, H, W) with 1 in the holes): the image
    with its hole in white, Telea's fill, the model's fill and the original, each (H, W, 3) uint8."""
    telea = to_uint8(classical_inpaint(to_float(images, "cpu"), masks, "telea")).permute(0, 2, 3, 1).numpy()
    rows = []
    for image, mask, telea_fill in zip(images.transpose(0, 2, 3, 1), masks[:, 0].bool().numpy(), telea):
        with_hole = np.where(mask[..., None], np.uint8(255), image)
        rows.append((with_hole, telea_fill, inpainter.fill(np.ascontiguousarray(image), mask, poisson=False), image))
    return rows


def render(rows: list[tuple[np.ndarray, ...]], scale: int) -> Image.Image:
    """The rows as one picture, each cell enlarged `scale` times, under a line naming the columns."""
    height, width = rows[0][0].shape[:2]
    cell_height, cell_width = height * scale, width * scale
    font = ImageFont.load_default(size=max(10, cell_width // 14))
    label_height = font.getbbox("Tg")[3] + 2 * GAP
    canvas = Image.new("RGB", (GAP + len(COLUMNS) * (cell_width + GAP),
                               label_height + len(rows) * (cell_height + GAP)), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(COLUMNS):
        left = GAP + column * (cell_width + GAP)
        draw.text((left + (cell_width - draw.textlength(label, font=font)) / 2, GAP), label, fill=(0, 0, 0), font=font)
    for row_index, row in enumerate(rows):
        top = label_height + row_index * (cell_height + GAP)
        for column, pixels in enumerate(row):
            enlarged = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
            canvas.paste(Image.fromarray(enlarged), (GAP + column * (cell_width + GAP), top))
    return canvas


def render_grids(root: str, spec: str, out: str, images: int, scale: int, device: torch.device) -> list[str]:
    """Write OUT/<kind>.png for every evaluation mask kind; the paths written."""
    if images < 1 or scale < 1:
        raise UserError(f"--images and --scale must be at least 1, got {images} and {scale}")
    spec = spec.removesuffix("/result.json")
    run = find_run(root, spec)
    state = model_state(checkpoint_path(root, spec), device, "completion")
    mask_config = PhaseOptions.from_dict(state["config"]).masks
    eval_seed = int(run.parameters.get("eval_seed", 0))
    test = test_images(run)
    chosen = spread(len(test), images)
    inpainter = Inpainter(state, device)
    os.makedirs(out, exist_ok=True)
    written = []
    for kind_index, kind in enumerate(EVALUATION_KINDS):
        # The evaluation draws the masks of the whole test split at once, seeded per kind.
        masks = evaluation_masks(len(test), mask_config, kind, eval_seed + kind_index)[chosen]
        path = os.path.join(out, f"{kind}.png")
        render(grid_rows(test[chosen], masks, inpainter), scale).save(path, optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", default="TrainInpainter",
                        help="a TrainInpainter run: name, prefix, hash prefix or path (default: the one there is)")
    parser.add_argument("--root", help="artifact root (default: [artifacts] root of luigi.cfg)")
    parser.add_argument("--out", required=True, help="folder for box.png and strokes.png")
    parser.add_argument("--images", type=int, default=4, help="test images, one per row (default 4)")
    parser.add_argument("--scale", type=int, default=3, help="whole-number enlargement of the pixels (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    root = args.root or artifact_root()

    def render() -> None:
        for path in render_grids(root, args.run, args.out, args.images, args.scale, resolve_device(args.device)):
            print(path)

    return exit_code(render)


if __name__ == "__main__":
    sys.exit(main())
