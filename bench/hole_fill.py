"""Milliseconds per batch of the harmonic hole fill: its in-place Jacobi sweeps against the plain formula.

    python bench/hole_fill.py --batch 16 --size 64

The harmonic fill (ganmodels.glcic.networks.smooth_fill with HARMONIC_SWEEPS) runs that many
Jacobi sweeps on every level of a pull-push pyramid, for every training batch. The same fill
of the same batch (training's masks, random colours) is timed in the same run with its sweep
as it is and with the sweep written as the formula reads (bench.plain.plain_relax); both must
give the same bits.
"""
import argparse
import os
import platform
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.plain import plain_relax  # noqa: E402
from ganmodels.glcic import networks  # noqa: E402
from ganmodels.masks import MaskConfig, sample_masks  # noqa: E402


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

    def fill():
        return networks.smooth_fill(images, mask, networks.HARMONIC_SWEEPS)

    with mock.patch.object(networks, "jacobi_sweep", plain_relax):
        plain, plain_ms = fill(), milliseconds(fill, args.repeats)
    in_place, in_place_ms = fill(), milliseconds(fill, args.repeats)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch} at {args.size} px, {networks.HARMONIC_SWEEPS} sweeps a level")
    print(f"harmonic fill, plain sweeps:    {plain_ms:.2f} ms")
    print(f"harmonic fill, in-place sweeps: {in_place_ms:.2f} ms  (same bits: {torch.equal(plain, in_place)})")


if __name__ == "__main__":
    main()
