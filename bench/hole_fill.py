"""Milliseconds per batch of the harmonic hole fill's relaxation sweeps: the project's against the plain formula.

    python bench/hole_fill.py --batch 16 --size 64

The harmonic fill (ganmodels.glcic.networks.smooth_fill with HARMONIC_SWEEPS) runs that many
Jacobi sweeps on every level of a pull-push pyramid, for every training batch. Both ways sweep
the same levels of the same batch (training's masks, random colours) in the same run, and
must give the same bits; the whole fill is timed as well, for scale.
"""
import argparse
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.plain import plain_relax  # noqa: E402
from ganmodels.glcic.networks import HARMONIC_SWEEPS, jacobi_sweep, smooth_fill  # noqa: E402
from ganmodels.masks import MaskConfig, sample_masks  # noqa: E402


def pyramid(images: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(premultiplied colour, known share) of every level the fill sweeps, finest first."""
    colour, share = images * (1 - mask), 1 - mask
    levels = []
    while min(colour.shape[-2:]) > 1:
        levels.append((colour, share))
        colour, share = F.avg_pool2d(colour, 2, ceil_mode=True), F.avg_pool2d(share, 2, ceil_mode=True)
    return levels


def milliseconds(work, repeats: int) -> float:
    for _ in range(3):
        work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    generator = torch.Generator().manual_seed(0)
    mask, _ = sample_masks(args.batch, MaskConfig(image_size=args.size), generator)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    levels = pyramid(images, mask)

    def sweeps(relax, unknown_of):
        results = []
        for colour, share in levels:
            filled, unknown = colour, unknown_of(share)
            for _ in range(HARMONIC_SWEEPS):
                filled = relax(filled, colour, unknown)
            results.append(filled)
        return results

    project = lambda: sweeps(jacobi_sweep, lambda share: 1 - share)  # noqa: E731
    plain = lambda: sweeps(plain_relax, lambda share: share)  # noqa: E731
    same = all(torch.equal(a, b) for a, b in zip(project(), plain()))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch} at {args.size} px, {HARMONIC_SWEEPS} sweeps on each of {len(levels)} levels")
    print(f"sweeps, plain formula: {milliseconds(plain, args.repeats):.2f} ms")
    print(f"sweeps, in place:      {milliseconds(project, args.repeats):.2f} ms  (same bits: {same})")
    print(f"the whole fill:        {milliseconds(lambda: smooth_fill(images, mask, HARMONIC_SWEEPS), args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
