"""Images per second of the project's ingestion against a plain one-process Pillow loop.

    python bench/ingest.py FOLDER [--size 128] [--repeats 3] [--workers 0]

Both go over the same files in the same run, after one untimed pass has read every file
into the file cache, and alternate so that a busy machine slows both alike; the best of
the repeats counts. The plain loop opens each file, converts it to RGB, crops the centred
square and resizes it with the same LANCZOS filter, in one process. The project's figure
is the wall time of building BuildShards (with its PrepareImages) through luigi in a fresh
artifact folder: listing, fingerprinting, decoding in worker processes, duplicates,
splits, writing the image parts, the shards, their tables and manifests. The two results
are compared image by image (PSNR) to show the speed is not bought with quality.
"""
import argparse
import datetime
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import luigi
import luigi.configuration
import numpy as np
import pandas as pd
from luigi.task_register import Register
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pipeline, not an installed one

from pipeline import BuildShards, storage  # noqa: E402
from pipeline.data import load_array  # noqa: E402
from pipeline.ingest import usable_cores  # noqa: E402
from pipeline.sources import list_files  # noqa: E402


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


def project_ingestion(folder: str, size: int, workers: int) -> tuple[float, float, dict[str, np.ndarray]]:
    """(seconds for the whole build, seconds PrepareImages itself ran, images by path)."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as root:
        luigi.configuration.get_config().set("artifacts", "root", root)
        Register.clear_instance_cache()
        task = BuildShards(dataset="folder", source=folder, image_size=size, decode_workers=workers)
        started = time.perf_counter()
        if not luigi.build([task], local_scheduler=True, log_level="WARNING"):
            raise SystemExit("the project's ingestion failed; see the log above")
        seconds = time.perf_counter() - started
        prepared = task.requires()
        manifest = storage.read_json(prepared.path("manifest.json"))
        prepare_seconds = (datetime.datetime.fromisoformat(manifest["finished"])
                           - datetime.datetime.fromisoformat(manifest["started"])).total_seconds()
        table = pd.read_csv(prepared.path("images.csv"))
        arrays = {name: load_array(prepared.path(name)) for name in table["file"].unique()}
        images = {path: arrays[file][row].transpose(1, 2, 0).copy()
                  for path, file, row in zip(table["relative_path"], table["file"], table["row"])}
    return seconds, prepare_seconds, images


def psnr(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    common = sorted(set(reference) & set(candidate))
    mse = np.mean([np.mean((reference[p].astype(np.float64) - candidate[p]) ** 2) for p in common])
    return 10 * math.log10(255 ** 2 / mse) if mse else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=128, help="target side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = one per usable core")
    args = parser.parse_args()
    folder = os.path.abspath(args.folder)
    paths = list_files(folder)
    for path in paths:  # warm the file cache for both contenders
        Path(folder, path).read_bytes()

    plain_times, project_times, prepare_times = [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        plain = plain_loop(folder, paths, args.size)
        plain_times.append(time.perf_counter() - started)
        seconds, prepare_seconds, ours = project_ingestion(folder, args.size, args.workers)
        project_times.append(seconds)
        prepare_times.append(prepare_seconds)

    plain_rate, project_rate = len(paths) / min(plain_times), len(paths) / min(project_times)
    print(f"{folder}: {len(paths)} files, {len(ours)} kept, {args.size} px, "
          f"{usable_cores()} usable cores, Pillow {Image.__version__}")
    print(f"plain Pillow loop, 1 process   {plain_rate:8.1f} images/s  "
          f"(best of {args.repeats}: {min(plain_times):.2f} s)")
    print(f"project ingestion to shards    {project_rate:8.1f} images/s  "
          f"(best of {args.repeats}: {min(project_times):.2f} s, of which PrepareImages {min(prepare_times):.2f} s)")
    print(f"ratio                          {project_rate / plain_rate:8.2f}x")
    print(f"PSNR project vs plain          {psnr(plain, ours):8.1f} dB")


if __name__ == "__main__":
    main()
