"""Images per second of the project's ingestion against a plain one-process Pillow loop.

    python bench/ingest.py FOLDER [--size 128] [--repeats 5] [--workers 0]

Both go over the same files in the same run, after one untimed pass has read every file
into the file cache, and alternate so that a busy machine slows both alike; the best of
the repeats counts. The plain loop opens each file, converts it to RGB, crops the centred
square and resizes it with Pillow's LANCZOS, in one process (the project applies the same
Lanczos-3 filter, in SIMD where cykooz-resizer is installed). The project's figure
is the wall time of running PrepareImages through luigi in a fresh artifact folder
(listing, fingerprinting, decoding in worker processes, duplicates, splits, writing the
training shards, tables, mean pixel and manifest). The two results are compared image by
image (PSNR) to show the speed is not bought with quality.
"""
import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import luigi
import luigi.configuration
import numpy as np
import pandas as pd
from luigi.task_register import Register
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pipeline, not an installed one

from pipeline import PrepareImages  # noqa: E402
from pipeline.artifacts.storage import load_array  # noqa: E402
from pipeline.settings import cache_dir  # noqa: E402
from pipeline.datasets import files_below  # noqa: E402
from pipeline.ingestion.pool import usable_cores  # noqa: E402


def plain_loop(folder: str, paths: list[str], size: int) -> dict[str, np.ndarray]:
    images = {}
    for path in paths:
        try:
            with Image.open(os.path.join(folder, path)) as image:
                rgb = image.convert("RGB")
        except OSError:  # not an image: the project rejects it too
            continue
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        square = rgb.crop((left, top, left + side, top + side))
        images[path] = np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))
    return images


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def lap(laps: list[tuple[float, float]]):
    """Appends (wall seconds, CPU seconds) of the block to laps."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    laps.append((time.perf_counter() - wall, cpu_seconds() - cpu))


def build(task) -> None:
    if not luigi.build([task], local_scheduler=True, log_level="WARNING"):
        raise SystemExit(f"{task.get_task_family()} failed; see the log above")


def project_ingestion(folder: str, size: int, workers: int, laps: list) -> dict[str, np.ndarray]:
    """Runs PrepareImages; returns the images of its shards by path."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as root:
        luigi.configuration.get_config().set("artifacts", "root", root)
        Register.clear_instance_cache()
        prepared = PrepareImages(dataset="folder", source=folder, image_size=size, decode_workers=workers)
        with lap(laps):
            build(prepared)
        table = pd.read_csv(prepared.path("images.csv"))
        shards = {name: load_array(prepared.path(name), cache_dir()) for name in table["shard"].unique()}
        return {path: shards[shard][row].transpose(1, 2, 0).copy()
                for path, shard, row in zip(table["relative_path"], table["shard"], table["row"])}


def psnr(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    common = sorted(set(reference) & set(candidate))
    mse = np.mean([np.mean((reference[p].astype(np.float64) - candidate[p]) ** 2) for p in common])
    return 10 * math.log10(255 ** 2 / mse) if mse else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=128, help="target side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = one per usable core")
    args = parser.parse_args()
    folder = os.path.abspath(args.folder)
    paths = files_below(folder)
    for path in paths:  # warm the file cache for both contenders
        Path(folder, path).read_bytes()

    plain_laps, project_laps = [], []
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        with lap(plain_laps):
            plain = plain_loop(folder, paths, args.size)
        ours = project_ingestion(folder, args.size, args.workers, project_laps)

    print(f"{folder}: {len(paths)} files, {len(ours)} kept, {args.size} px, {usable_cores()} usable cores, "
          f"Pillow {Image.__version__}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"best of {args.repeats} runs                        images/s    ratio   CPU ms/image (all processes)")
    plain_wall = min(wall for wall, _ in plain_laps)
    for label, laps in (("plain Pillow loop, 1 process", plain_laps), ("PrepareImages, to shards", project_laps)):
        wall, cpu = min(wall for wall, _ in laps), min(cpu for _, cpu in laps)
        print(f"{label:36s} {len(paths) / wall:9.1f} {plain_wall / wall:7.2f}x {1000 * cpu / len(paths):9.2f}")
    # A shared machine's speed drifts over seconds: each project run against the plain run just before it.
    paired = sorted(plain_lap[0] / project_lap[0] for plain_lap, project_lap in zip(plain_laps, project_laps))
    print(f"ratio of each run to the plain run before it: median {statistics.median(paired):.2f}x, "
          f"range {paired[0]:.2f}x to {paired[-1]:.2f}x")
    print(f"PSNR of the project's images against the plain loop's: {psnr(plain, ours):.1f} dB")


if __name__ == "__main__":
    main()
