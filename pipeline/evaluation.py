"""Scoring inpainters on held-out images: the model next to the floor and the classical methods.

Every method fills the same images under the same seeded masks, of each kind (rectangles and
brush strokes). Per image: PSNR and L1 inside the holes and SSIM of the whole image; per
method and kind, over the set: the hole-patch sliced Wasserstein distance and the accuracy
of a classifier two-sample test (ganmodels.metrics). Results are reported per kind and per
hole-area bucket, as the inpainting papers do.
"""
import dataclasses
import functools
import logging
import os
from typing import Callable, Sequence

import cv2
import luigi
import numpy as np
import pandas as pd
import torch

from ganmodels.feeding import to_float
from ganmodels.glcic.networks import fill_holes
from ganmodels.masks import MaskConfig, holes_to_mask, sample_holes, sample_strokes
from ganmodels.metrics import classifier_two_sample_accuracy, hole_patch_swd, inpainting_metrics

CLASSICAL_METHODS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}
CLASSICAL_RADIUS = 3  # neighbourhood, in pixels, that OpenCV's inpainting draws each hole pixel from
EVALUATION_KINDS = ("box", "strokes")
GRID_IMAGES = 8  # validation images of the fixed grids, in TensorBoard during training and in RenderEvalGrid
AREA_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # hole area as a share of the image
PIXEL_METRICS = ("psnr_hole", "l1_hole", "ssim", "border_error")
REALISM_METRICS = ("swd_hole", "c2st_accuracy")
# The metrics that grow as fills get better; every other one shrinks.
HIGHER_IS_BETTER = ("psnr_hole", "ssim")

Fill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, mask) -> completed images
Measure = Callable[[torch.Tensor, torch.Tensor], float]  # (real images, completed images) -> a score
log = logging.getLogger("luigi-interface")


class evaluation(luigi.Config):
    """`[evaluation]` section: measures that need pretrained weights, computed only when they are here.

    Nothing is downloaded: without the files these measures are skipped, with a line saying so.
    """

    fid_inception_weights = luigi.Parameter(
        default="", description="FID: the Inception weights torchmetrics uses (pt_inception-2015-12-05-6726825d.pth)")
    lpips_torch_home = luigi.Parameter(
        default="", description="LPIPS: a torch cache folder (TORCH_HOME) holding hub/checkpoints/ with "
                                "torchvision's AlexNet weights (alexnet-owt-7be5be79.pth)")


class FidMeasure:
    """Fréchet Inception distance of completed images to the real ones (both whole images).

    The real images' features are computed at the first call and reused: every call of one
    instance must pass the same real images (evaluate_fills does).
    """

    def __init__(self, weights_path: str):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.metric = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False,
                                               feature_extractor_weights_path=weights_path)
        self.has_real = False

    def __call__(self, real: torch.Tensor, completed: torch.Tensor) -> float:
        if not self.has_real:
            for batch in real.split(64):
                self.metric.update(batch, real=True)
            self.has_real = True
        self.metric.reset()  # the fake features only: reset_real_features=False
        for batch in completed.split(64):
            self.metric.update(batch, real=False)
        return float(self.metric.compute())


class LpipsMeasure:
    """Mean LPIPS (AlexNet) between each completed image and its real one."""

    def __init__(self, torch_home: str):
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        saved = torch.hub.get_dir()
        torch.hub.set_dir(os.path.join(torch_home, "hub"))  # where torchvision looks for the backbone
        try:
            self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
        finally:
            torch.hub.set_dir(saved)

    def __call__(self, real: torch.Tensor, completed: torch.Tensor) -> float:
        self.metric.reset()
        for real_batch, completed_batch in zip(real.split(64), completed.split(64)):
            self.metric.update(completed_batch, real_batch)
        return float(self.metric.compute())


def weighted_measures() -> dict[str, Callable[[], Measure]]:
    """FID and LPIPS for the weight files [evaluation] names and that exist, each as a function that makes a
    fresh one (a measure keeps the real images it first saw); one log line per skipped one."""
    from torchvision.models import AlexNet_Weights

    settings = evaluation()
    backbone = os.path.join(os.path.expanduser(settings.lpips_torch_home), "hub", "checkpoints",
                            os.path.basename(AlexNet_Weights.DEFAULT.url))
    wanted = {"fid": (os.path.expanduser(settings.fid_inception_weights), FidMeasure, "fid_inception_weights"),
              "lpips": (backbone if settings.lpips_torch_home else "", LpipsMeasure, "lpips_torch_home")}
    measures = {}
    for name, (path, measure, option) in wanted.items():
        if not path:
            log.info("%s skipped: it needs pretrained weights; set [evaluation] %s in luigi.cfg to compute it",
                     name.upper(), option)
        elif not os.path.isfile(path):
            log.info("%s skipped: %s, named by [evaluation] %s, does not exist", name.upper(), path, option)
        else:
            measures[name] = functools.partial(measure, settings.lpips_torch_home if name == "lpips" else path)
    return measures


def classical_inpaint(images: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    """OpenCV's inpainting of each image (CPU, float in [0, 1]), pasted into the known pixels like the model's."""
    pixels = np.ascontiguousarray(images.mul(255).round().byte().permute(0, 2, 3, 1).numpy())
    holes = mask[:, 0].byte().numpy()
    filled = np.stack([cv2.inpaint(image, hole, CLASSICAL_RADIUS, CLASSICAL_METHODS[method])
                       for image, hole in zip(pixels, holes)])
    return torch.lerp(images, to_float(filled, "cpu").permute(0, 3, 1, 2), mask)


def baseline_fills(mean_pixel: torch.Tensor) -> dict[str, Fill]:
    """The floor (the network's mean-filled input) and OpenCV's two classical methods."""
    fills = {"mean_fill": lambda images, mask: fill_holes(images, mask, mean_pixel)}
    for name in CLASSICAL_METHODS:
        fills[name] = lambda images, mask, name=name: classical_inpaint(images, mask, name)
    return fills


def evaluation_masks(count: int, config: MaskConfig, kind: str, seed: int) -> torch.Tensor:
    """The same masks on every device and run, drawn on the CPU from a seeded generator.

    Boxes are squares (side in [hole_min, hole_max] of the image side), the usual benchmark
    hole; strokes cover [stroke_area_min, stroke_area_max] of the image.
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "box":
        return holes_to_mask(sample_holes(count, config, generator, square=True), config.image_size)
    return sample_strokes(count, config, generator)


def grid_masks(count: int, config: MaskConfig, seed: int) -> torch.Tensor:
    """Masks for a grid of `count` images shown once per evaluation kind: the box masks of
    every image, then its stroke masks, each kind seeded as the evaluation seeds it."""
    return torch.cat([evaluation_masks(count, config, kind, seed + index) for index, kind in enumerate(EVALUATION_KINDS)])


def area_bucket(area: float) -> str:
    """The hole-area bucket ('0-10%', ...) of a hole covering `area` of the image."""
    for low, high in zip(AREA_BUCKETS, AREA_BUCKETS[1:]):
        if area < high:
            return f"{low:.0%}-{high:.0%}".replace("%-", "-")
    return f">{AREA_BUCKETS[-1]:.0%}"


def evaluate_fills(images: Sequence[np.ndarray], fills: dict[str, Fill], mask_config: MaskConfig, seed: int,
                   batch_size: int = 64, realism_images: int = 2000,
                   measures: dict[str, Measure] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per image, realism): every fill scored on every image under each kind of evaluation mask.

    `images` are uint8 (N, 3, H, W) arrays (shards). The per-image table has a row per
    method, kind and image with its hole area and PIXEL_METRICS; the realism table a row per
    method and kind with REALISM_METRICS and any `measures` (weighted_measures()), computed
    over the first `realism_images` images (they need the whole set at once). The masks of
    kind k and the realism measures are seeded from `seed`, so a rerun gives the same numbers.
    """
    count = sum(len(array) for array in images)
    rows, realism = [], []
    for kind_index, kind in enumerate(EVALUATION_KINDS):
        masks = evaluation_masks(count, mask_config, kind, seed + kind_index)
        kept = {name: [] for name in fills}
        kept_real, kept_masks, offset = [], [], 0
        for array in images:
            for start in range(0, len(array), batch_size):
                real = to_float(array[start:start + batch_size], "cpu")
                mask = masks[offset:offset + len(real)]
                areas = mask.flatten(1).mean(1).tolist()
                keep = max(0, min(len(real), realism_images - offset))
                kept_real.append(real[:keep])
                kept_masks.append(mask[:keep])
                for name, fill in fills.items():
                    with torch.no_grad():
                        completed = fill(real, mask).float().clamp(0, 1)
                    kept[name].append(completed[:keep])
                    values = {metric: value.tolist() for metric, value in inpainting_metrics(completed, real, mask).items()}
                    rows.append(pd.DataFrame({"method": name, "kind": kind, "image": range(offset, offset + len(real)),
                                              "area": areas, **values}))
                offset += len(real)
        real, mask = torch.cat(kept_real), torch.cat(kept_masks)
        for name in fills:
            completed = torch.cat(kept[name])
            realism.append({"method": name, "kind": kind,
                            "swd_hole": hole_patch_swd(real, completed, mask, seed=seed),
                            "c2st_accuracy": classifier_two_sample_accuracy(real, completed, mask, seed=seed),
                            **{measure: score(real, completed) for measure, score in (measures or {}).items()}})
    per_image = pd.concat(rows).sort_values(["kind", "method", "image"], kind="stable", ignore_index=True)
    per_image["area_bucket"] = per_image["area"].map(area_bucket)
    return per_image, pd.DataFrame(realism)


def summarise(per_image: pd.DataFrame, realism: pd.DataFrame) -> dict:
    """metrics.json: every method overall (`methods`), per mask kind (`by_kind`) and per kind and
    hole-area bucket (`by_area`, pixel metrics and image counts).

    Overall pixel metrics are means over all scored (image, mask) pairs; overall realism
    measures are means over the kinds.
    """
    overall = per_image.groupby("method")[list(PIXEL_METRICS)].mean()
    overall = overall.join(realism.drop(columns="kind").groupby("method").mean())
    by_kind = per_image.groupby(["kind", "method"])[list(PIXEL_METRICS)].mean().join(
        realism.set_index(["kind", "method"]))
    by_area = per_image.groupby(["kind", "area_bucket", "method"])[list(PIXEL_METRICS)].mean()
    by_area["n"] = per_image.groupby(["kind", "area_bucket", "method"]).size()
    summary = {"n_images": int(per_image["image"].nunique()), "methods": overall.to_dict(orient="index"),
               "by_kind": {}, "by_area": {}}
    for (kind, method), values in by_kind.to_dict(orient="index").items():
        summary["by_kind"].setdefault(kind, {})[method] = values
    for (kind, bucket, method), values in by_area.to_dict(orient="index").items():
        summary["by_area"].setdefault(kind, {}).setdefault(bucket, {})[method] = {
            key: (int(value) if key == "n" else value) for key, value in values.items()}
    return summary


def evaluate_sizes(sets: dict[int, dict[int, np.ndarray]], fills: dict[str, Fill], mask_config: MaskConfig,
                   seed: int, batch_size: int = 64,
                   measures: dict[str, Callable[[], Measure]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """evaluate_fills at every scoring size: sets is {size: {side: (N, 3, side, side) uint8}}, where a side
    below the size holds the images kept at their own, smaller size. Masks are drawn at each side with
    the same fractions of the image, so holes grow with it. Rows gain `size` and `side`; realism rows
    also `n`, the images they rest on. `measures` (weighted_measures()) are made afresh for each set of images."""
    per_image, realism = [], []
    for size, groups in sets.items():
        first_image = 0
        for side, images in groups.items():
            scored, measured = evaluate_fills([images], fills, dataclasses.replace(mask_config, image_size=side),
                                              seed, batch_size,
                                              measures={name: make() for name, make in (measures or {}).items()})
            per_image.append(scored.assign(size=size, side=side, image=scored["image"] + first_image))
            realism.append(measured.assign(size=size, side=side, n=len(images)))
            first_image += len(images)
    return pd.concat(per_image, ignore_index=True), pd.concat(realism, ignore_index=True)


def summarise_sizes(per_image: pd.DataFrame, realism: pd.DataFrame, training_size: int) -> dict:
    """metrics.json: summarise() of the training size at the top level, and of every size under
    `sizes`, each with `n_at_own_size`, the images whose source was smaller and were scored at their
    own size. A size's realism measures are the means over its sides, weighted by their images."""
    sizes = {}
    for size, rows in per_image.groupby("size"):
        measured = realism[realism["size"] == size]
        weights = measured["n"] / measured.groupby(["method", "kind"])["n"].transform("sum")
        columns = [column for column in measured.columns if column not in ("method", "kind", "size", "side", "n")]
        combined = measured[columns].mul(weights, axis=0).groupby([measured["method"], measured["kind"]]).sum()
        summary = summarise(rows.drop(columns=["size", "side"]), combined.reset_index())
        summary["n_at_own_size"] = int(rows.loc[rows["side"] < size, "image"].nunique())
        sizes[str(size)] = summary
    return {**sizes[str(training_size)], "image_size": training_size, "sizes": sizes}
