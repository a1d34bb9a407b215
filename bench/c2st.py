"""Seconds per two-sample test of the evaluation: its two classifiers trained at once against in turn.

    python bench/c2st.py --images 300 --sizes 64,128

EvaluateInpainter runs ganmodels.metrics.classifier_two_sample_accuracy once per method, mask
kind and scoring size, and it is most of the evaluation's time. Each test trains two small
classifiers, one per half of the images, on one thread each. The same test (smooth random
images, the evaluation's stroke masks, a blurred fill that is hard to tell from them) is timed
in the same run with both classifiers trained at once and one after the other; both must give
the same accuracy.
"""
import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.masks import MaskConfig, sample_strokes  # noqa: E402
from ganmodels.metrics import classifier_two_sample_accuracy  # noqa: E402


def test_images(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real, completed, mask): smooth images with fine grain, and the same with their holes blurred."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=generator)
    real = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    real = (real + 0.1 * torch.rand(real.shape, generator=generator)).clamp(0, 1)
    mask = sample_strokes(count, MaskConfig(image_size=size, mask_kind="strokes"), generator)
    completed = torch.lerp(real, torch.nn.functional.avg_pool2d(real, 5, 1, 2), mask)
    return real, completed, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--sizes", default="64,128", help="comma-separated image sides")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} cores; {args.images} images")
    for size in map(int, args.sizes.split(",")):
        real, completed, mask = test_images(args.images, size)
        seconds, accuracies = {}, {}
        for folds_at_once in (1, 2):
            start = time.perf_counter()
            accuracies[folds_at_once] = classifier_two_sample_accuracy(real, completed, mask, folds_at_once=folds_at_once)
            seconds[folds_at_once] = time.perf_counter() - start
        print(f"{size} px: in turn {seconds[1]:.1f} s, at once {seconds[2]:.1f} s ({seconds[1] / seconds[2]:.2f}x); "
              f"accuracy {accuracies[2]:.4f} (same: {accuracies[1] == accuracies[2]})")


if __name__ == "__main__":
    main()
