"""How good are the inpainters the pipeline trains? Trained on one folder, scored on another.

    python bench/quality.py --train faces/train --eval faces/held-out
    python bench/quality.py --train DIR --eval DIR --variant l1:loss=l1 --variant wide:width=0.5,batch_size=32

Each variant is the main job's TrainInpainter with the given parameters changed (none for
`default`), run through Luigi exactly as a user runs it, on `--train` (dataset=folder).
The final completion network of each requested phase is then scored on every image of
`--eval`, which the training never saw, next to the mean-fill floor, OpenCV's Telea and
Navier-Stokes, and the pull-push and harmonic interpolations alone, under the same seeded
masks of each kind (squares of side 25-50% of the image, brush strokes covering 10-40%):
PSNR, L1 and SSIM, the hole-patch sliced Wasserstein distance and the classifier
two-sample accuracy (pipeline.evaluation). Artifacts go under
`--root` (a fresh temporary folder by default), so variants that share their phase 1 train
it once. Training time is each phase's wall time from its manifest.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

import luigi
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.glcic.networks import complete, fill_holes  # noqa: E402
from pipeline import PrepareImages, PretrainCompletion, TrainJoint  # noqa: E402
from pipeline.artifacts import storage  # noqa: E402
from pipeline.tasks.inpainting import trained_model  # noqa: E402
from pipeline.evaluation import (HIGHER_IS_BETTER, PIXEL_METRICS, REALISM_METRICS, baseline_fills,  # noqa: E402
                                 evaluate_fills)

PHASE_TASKS = {1: PretrainCompletion, 3: TrainJoint}


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, {key: value}); values are given to Luigi as strings."""
    name, _, assignments = text.partition(":")
    settings = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, settings


def use_folders(root: str) -> None:
    """The artifact root and the download folder of this run's in-process tasks."""
    config = luigi.configuration.get_config()
    for section, key, value in (("artifacts", "root", root), ("datasets", "download_dir", os.path.join(root, "downloads"))):
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)


def build(task: luigi.Task) -> None:
    if not luigi.build([task], local_scheduler=True, workers=1, log_level="WARNING"):
        raise SystemExit(f"{task} failed")


def seconds(task: luigi.Task) -> float:
    manifest = storage.read_json(task.output().path)
    started, finished = (datetime.datetime.fromisoformat(manifest[key]) for key in ("started", "finished"))
    return (finished - started).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="folder of training images")
    parser.add_argument("--eval", required=True, help="folder of held-out images to score on")
    parser.add_argument("--variant", action="append", default=[],
                        help="name:param=value,... (TrainInpainter parameters); repeatable; default: the defaults")
    parser.add_argument("--phases", default="1,3", help="phases whose final network is scored (1 and/or 3)")
    parser.add_argument("--size", type=int, default=64, help="image_size")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the masks and the realism measures")
    parser.add_argument("--root", help="artifact root (default: a new temporary folder)")
    parser.add_argument("--out", help="write every figure to this JSON file too")
    args = parser.parse_args()
    use_folders(os.path.abspath(args.root or tempfile.mkdtemp(prefix="quality-")))
    phases = [int(phase) for phase in args.phases.split(",")]
    variants = [parse_variant(text) for text in args.variant] or [("default", {})]

    held_out = PrepareImages(dataset="folder", source=os.path.abspath(args.eval), image_size=args.size,
                             val_fraction=0.0, test_fraction=0.0)
    build(held_out)
    eval_images = held_out.split_arrays("train")
    scored, timings, evaluated = [], [], {}
    for name, settings in variants:
        base = dict(dataset="folder", source=os.path.abspath(args.train), image_size=str(args.size), **settings)
        for phase in phases:
            task = PHASE_TASKS[phase].from_str_params({k: str(v) for k, v in base.items()})
            build(task)
            label = f"{name} phase {phase}"
            timings.append({"variant": name, "phase": phase, "train_seconds": sum(seconds(t) for t in _chain(task))})
            if task.directory in evaluated:  # variants that differ only in later phases share this one
                per_image, realism = evaluated[task.directory]
                scored.append((per_image.assign(method=label), realism.assign(method=label)))
                continue
            completion, options = trained_model(task)
            mean_pixel = torch.tensor(task.requires()["shards"].mean_pixel())
            mask_config = options.masks
            fill = {label: lambda images, mask: complete(completion, images, mask, mean_pixel)}
            evaluated[task.directory] = evaluate_fills(eval_images, fill, mask_config, args.eval_seed)
            scored.append(evaluated[task.directory])
    # The interpolations the network can start from, alone: what its learned correction adds.
    interpolations = {f"{how} interpolation": lambda images, mask, how=how: fill_holes(images, mask, mean_pixel, how)
                      for how in ("smooth", "harmonic")}
    scored.append(evaluate_fills(eval_images, {**baseline_fills(mean_pixel), **interpolations}, mask_config,
                                 args.eval_seed))

    per_image = pd.concat([pair[0] for pair in scored])
    realism = pd.concat([pair[1] for pair in scored])
    table = per_image.groupby(["kind", "method"], sort=False)[list(PIXEL_METRICS)].mean().join(
        realism.set_index(["kind", "method"]))
    pd.set_option("display.width", 200)
    print(f"\n{per_image['image'].nunique()} held-out images from {args.eval}, "
          f"{platform.node()}, torch {torch.__version__}")
    for kind, rows in table.groupby(level="kind", sort=False):
        print(f"\n{kind}  (arrows: which way is better)")
        shown = rows.droplevel("kind").rename(columns={m: m + (" ↑" if m in HIGHER_IS_BETTER else " ↓")
                                                       for m in (*PIXEL_METRICS, *REALISM_METRICS)})
        print(shown.to_string(float_format=lambda value: f"{value:.4f}"))
    print("\n" + pd.DataFrame(timings).to_string(index=False))
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"table": table.reset_index().to_dict(orient="records"), "timings": timings,
                       "argv": sys.argv}, file, indent=2)


def _chain(task: luigi.Task) -> list[luigi.Task]:
    """The training phases up to `task` (its PrepareImages excluded)."""
    previous = task.requires().get("previous")
    return (_chain(previous) if previous else []) + [task]


if __name__ == "__main__":
    main()
