"""Images per second of each GLCIC training phase: the project's training loop against the plain step.

    python bench/train_step.py --device cuda --size 256 --batch 32 --variants fast,compile,stream
    python bench/train_step.py --device cpu --size 64 --batch 16 --width 0.25

Both paths train the same networks from the same weights on the same synthetic photos:
the fast path runs `ganmodels.glcic.training.train_phase` on uint8 shards (held on the
device, or streamed from a memory map), the plain path
(bench/plain.py) decodes the same photos from JPEG files at every step. Model FLOPs
per image are counted from the networks with torch's FlopCounterMode over one real
training step; on CUDA, MFU is achieved FLOP/s over the device's dense bf16 peak.
"""
import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import functional as TF

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.plain import plain_phase  # noqa: E402
from ganmodels.feeding import ImageBank, training_images  # noqa: E402
from ganmodels.glcic.config import PhaseOptions  # noqa: E402
from ganmodels.glcic.training import train_phase  # noqa: E402
from ganmodels.runtime import Runtime, RuntimeOptions  # noqa: E402

# Fast-path variants: Runtime settings over those Runtime.resolve picks for the device.
VARIANTS = {"fast": {}, "eager": {"compile": False}, "compile": {"compile": True}, "stream": {"data_on_device": "no"},
            "nchw": {"channels_last": False}, "fp32": {"precision": "fp32"}}

# Which completion network and training recipe to time: the paper's (configs/paper.cfg; the one
# docs/speed.md's GPU and CPU tables measured) or the pipeline's defaults.
NETWORKS = {"paper": {"upsample": "transpose", "skips": False, "hole_fill": "mean", "mask_kind": "box", "loss": "mse",
                      "lr_schedule": "constant", "max_zoom": 1.0},
            "default": {}}

# Dense (no sparsity) bf16 tensor-core peaks from the vendor's data sheets, in FLOP/s.
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.4e12), ("H200", 989.4e12),
              ("GH200", 989.4e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


def bf16_peak(device_name: str) -> float | None:
    return next((peak for name, peak in BF16_PEAKS if name in device_name), None)


def synthetic_photos(count: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, height, width, 3) images: smooth colour fields with grain, so JPEG decoding costs what photos cost."""
    low = torch.from_numpy(rng.uniform(0, 255, (count, 3, 8, 8)).astype(np.float32))
    smooth = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    grain = torch.from_numpy(rng.normal(0, 12, (count, 3, height, width)).astype(np.float32))
    return (smooth + grain).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def prepare_data(folder: str, count: int, photo_size: tuple[int, int], size: int,
                 chunk: int = 64) -> tuple[list[str], np.ndarray]:
    """JPEG files (for the plain path) and the shard PrepareImages would make of them (for the fast path)."""
    rng, paths = np.random.default_rng(0), []
    shard_path = os.path.join(folder, "train-00000.npy")
    shard = np.lib.format.open_memmap(shard_path, mode="w+", dtype=np.uint8, shape=(count, 3, size, size))
    for start in range(0, count, chunk):
        photos = synthetic_photos(min(chunk, count - start), *photo_size, rng)
        for index, photo in enumerate(photos, start):
            paths.append(os.path.join(folder, f"photo-{index:05d}.jpg"))
            Image.fromarray(photo).save(paths[-1], quality=90)
        chw = torch.from_numpy(photos).permute(0, 3, 1, 2)
        shard[start:start + len(photos)] = TF.center_crop(TF.resize(chw, size, antialias=True), size)
    shard.flush()
    del shard
    return paths, np.load(shard_path, mmap_mode="r")


def phase_options(phase: int, steps: int, batch: int, log_every: int, network: dict) -> PhaseOptions:
    return PhaseOptions.from_settings(phase, **network, **{f"phase{earlier}_steps": steps for earlier in range(1, phase + 1)},
                                      **({"alpha": 4e-4} if phase == 3 else {}), batch_size=batch, log_every=log_every,
                                      checkpoint_every=steps + 1)


def count_flops(phases, network, shard, mean_pixel, device) -> tuple[dict, dict]:
    """Model FLOPs per image of one training step of each phase, and each phase's end state to start from."""
    runtime = Runtime(device=device)  # eager fp32: every convolution and product is seen by the counter
    images = ImageBank([shard[:4]], device)
    flops, starts, state = {}, {}, None
    for phase in range(1, max(phases) + 1):
        starts[phase] = state
        with FlopCounterMode(display=False) as counter:
            state = train_phase(phase_options(phase, 1, 2, 1, network), images, mean_pixel, state, runtime)
        flops[phase] = counter.get_total_flops() / 2
    return flops, starts


def time_fast(phase, runtime, images, starts, args, network, mean_pixel) -> dict:
    steps = args.window * (args.windows + 1)  # the first window (autotuning, compilation) is not counted
    state = train_phase(phase_options(phase, steps, args.batch, args.window, network), images, mean_pixel,
                        starts[phase], runtime)
    rows = [row for row in state["history"] if row["phase"] == phase][1:]
    return {"images_per_s": statistics.median(row["images_per_s"] for row in rows),
            "data_wait": max(row["data_wait"] for row in rows), "windows": [row["images_per_s"] for row in rows]}


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()}, {cores} cores"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (auto: cuda when present)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier; 1.0 is the paper's")
    parser.add_argument("--phases", default="1,2,3")
    parser.add_argument("--window", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per measurement (after one warm-up)")
    parser.add_argument("--photos", type=int, default=0, help="synthetic photos (default: enough for one epoch)")
    parser.add_argument("--photo-size", default="218x178",
                        help="HEIGHTxWIDTH of the JPEG files the plain path decodes (default: aligned CelebA's)")
    parser.add_argument("--variants", default="fast,stream",
                        help=f"fast-path variants to time, from {', '.join(VARIANTS)} (the plain path always runs)")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="paper",
                        help="paper: the paper's network and recipe (as docs/speed.md's tables measured); "
                             "default: the pipeline's")
    parser.add_argument("--data-workers", type=int, default=RuntimeOptions.data_workers,
                        help="DataLoader workers of the fast path when it streams")
    parser.add_argument("--plain-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers of the plain path")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the dense bf16 peak for MFU")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    device = Runtime.resolve(args.device).device
    phases = sorted({int(p) for p in args.phases.split(",")})
    network = {**NETWORKS[args.network], "image_size": args.size, "width": args.width}
    steps = args.window * (args.windows + 1)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and device != "cpu":
        peak = bf16_peak(describe_device(device))

    variants = {name: VARIANTS[name] for name in args.variants.split(",")}

    with tempfile.TemporaryDirectory() as folder:
        photo_size = tuple(int(side) for side in args.photo_size.split("x"))
        paths, shard = prepare_data(folder, args.photos or steps * args.batch, photo_size, args.size)
        mean_pixel = torch.from_numpy(shard.mean(axis=(0, 2, 3)) / 255).float()
        flops, starts = count_flops(phases, network, shard, mean_pixel, device)
        results = []
        for phase in phases:
            for name, settings in variants.items():
                runtime = dataclasses.replace(Runtime.resolve(device, RuntimeOptions(data_workers=args.data_workers)),
                                              **settings)
                images = training_images([shard], runtime)
                try:
                    measured = time_fast(phase, runtime, images, starts, args, network, mean_pixel)
                except Exception as error:  # one variant failing (a compiler error, say) leaves the others' figures
                    print(f"phase {phase} {name}: {type(error).__name__}: {error}", file=sys.stderr)
                    continue
                results.append({"phase": phase, "path": name, "runtime": runtime.to_dict(), **measured})
                print(f"phase {phase} {name}: {measured}", flush=True)
            measured = plain_phase(phase_options(phase, steps, args.batch, steps, network), paths, mean_pixel,
                                   starts[phase], device, args.plain_workers, warmup_steps=args.window)
            results.append({"phase": phase, "path": "plain", **measured})
            print(f"phase {phase} plain: {measured}", flush=True)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    for row in results:
        plain = next(r for r in results if r["phase"] == row["phase"] and r["path"] == "plain")
        row["vs_plain"] = row["images_per_s"] / plain["images_per_s"]
        row["gflop_per_image"] = flops[row["phase"]] / 1e9
        row["mfu"] = row["images_per_s"] * flops[row["phase"]] / peak if peak else None
    report = {"device": describe_device(device), "torch": torch.__version__, "size": args.size, "batch": args.batch,
              "width": args.width, "network": args.network, "photo_size": args.photo_size, "bf16_peak_tflops": peak / 1e12 if peak else None,
              "results": results}
    print(f"{report['device']}, torch {report['torch']}: size {args.size}, batch {args.batch}, width {args.width}, "
          f"plain path decoding {args.photo_size} JPEGs")
    print(f"{'phase':>5}  {'path':<16}{'images/s':>10}{'vs plain':>10}{'data wait':>11}{'GFLOP/img':>11}{'MFU':>8}")
    for row in results:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(f"{row['phase']:>5}  {row['path']:<16}{row['images_per_s']:>10.1f}{row['vs_plain']:>9.2f}x"
              f"{row['data_wait']:>11.1%}{row['gflop_per_image']:>11.1f}{mfu:>8}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)
    return report


if __name__ == "__main__":
    main()
