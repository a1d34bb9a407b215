"""Seconds per two-sample test of the evaluation: as it runs, against its classifiers trained in turn and in NCHW.

    python bench/c2st.py --images 300 --sizes 64,128 --repeats 3

EvaluateInpainter runs ganmodels.metrics.classifier_two_sample_accuracy once per method, mask
kind and scoring size, and it is most of the evaluation's time. Each test trains two small
classifiers, one per half of the images, on one thread each, in channels-last layout. The same
test (smooth random images, the evaluation's stroke masks, a blurred fill that is hard to tell
from them) is timed in the same run as the evaluation runs it, with the two classifiers trained
one after the other (which must give the same accuracy), and with both trained at once in
PyTorch's default NCHW layout (the plain reference: the same classifiers, whose accuracy differs
only by the rounding of other kernels).
"""
import argparse
import os
import platform
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.masks import MaskConfig, sample_strokes  # noqa: E402
from ganmodels import metrics  # noqa: E402

# (classifiers trained at once, memory format) of the test as the evaluation runs it and of the two references.
WAYS = {"evaluation": (2, torch.channels_last), "in turn": (1, torch.channels_last), "NCHW": (2, torch.contiguous_format)}


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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} cores; {args.images} images")
    for size in map(int, args.sizes.split(",")):
        real, completed, mask = test_images(args.images, size)
        seconds, accuracies = {}, {}
        for _ in range(args.repeats):  # the ways in turn, so that a shared machine's drift reaches each
            for way, (folds_at_once, memory_format) in WAYS.items():
                with mock.patch.object(metrics, "C2ST_MEMORY_FORMAT", memory_format):
                    start = time.perf_counter()
                    accuracies[way] = metrics.classifier_two_sample_accuracy(real, completed, mask,
                                                                             folds_at_once=folds_at_once)
                    seconds.setdefault(way, []).append(time.perf_counter() - start)
        best = {way: min(times) for way, times in seconds.items()}
        print(f"{size} px, best of {args.repeats} (all): " + "; ".join(
            f"{way} {best[way]:.1f} s ({', '.join(f'{t:.1f}' for t in times)}; {best[way] / best['evaluation']:.2f}x)"
            for way, times in seconds.items()))
        print(f"  accuracy {accuracies['evaluation']:.4f}; in turn the same: "
              f"{accuracies['in turn'] == accuracies['evaluation']}; NCHW {accuracies['NCHW']:.4f}")


if __name__ == "__main__":
    main()
