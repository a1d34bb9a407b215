"""How good are the inpainters the pipeline trains? Trained on one folder, scored on another, at several sizes.

    python bench/quality.py --data ../shared/data                  # the README's results table
    python bench/quality.py --data ../shared/data --collection flowers --variant low-alpha:alpha=0.001
    python bench/quality.py --train DIR --eval DIR --sizes 64,256 --variant wide:width=0.5

Each variant is the main job's TrainInpainter with the given parameters changed (none for
`default`), run through Luigi exactly as a user runs it (dataset=folder on the training
folder), its own evaluation included, and timed from its manifests. The final completion
network of each requested phase then fills a fixed subset (`--images`, chosen by path hash) of
the held-out folder, which training never saw, centre-cropped and resized to each size (a
smaller image at its own size), through the path `infill` uses, next to the mean-fill floor,
OpenCV's Telea and Navier-Stokes and, with `--interpolations`, the pull-push and harmonic
interpolations the network starts from, all under the same seeded masks of each kind
(squares of side 25-50 % of the image, brush strokes covering 10-40 %): the measures of
EvaluateInpainter (pipeline.evaluation). `--data` names the development folders of each
collection (COLLECTIONS); artifacts go under `--root`, so variants that share a phase train it once.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

import cv2
import luigi
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganmodels.glcic.networks import fill_holes  # noqa: E402
from pipeline import PretrainCompletion, TrainInpainter, TrainJoint  # noqa: E402
from pipeline.artifacts import storage  # noqa: E402
from pipeline.datasets.registry import files_below, scoring_subset  # noqa: E402
from pipeline.evaluation import (HIGHER_IS_BETTER, PIXEL_METRICS, REALISM_METRICS, baseline_fills,  # noqa: E402
                                 evaluate_sizes, summarise_sizes)
from pipeline.infill import inpaint  # noqa: E402
from pipeline.ingestion.decode import RejectedImage, decode_image_at_most  # noqa: E402
from pipeline.tasks.inpainting import trained_model  # noqa: E402

PHASE_TASKS = {1: PretrainCompletion, 3: TrainJoint}
# collection: (training folder, held-out folder, training size, scoring sizes), below --data
COLLECTIONS = {"faces": ("faces-more", "faces", 64, (64, 128)),
               "flowers": ("flowers-train", "flowers", 64, (64, 256, 512)),
               "paintings": ("paintings-more", "paintings", 64, (64, 256))}
README_METHODS = {"mean_fill": "mean fill", "telea": "Telea", "navier_stokes": "Navier–Stokes", "model": "the model"}
KIND_NAMES = {"box": "squares", "strokes": "strokes"}


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


def held_out_sets(folder: str, sizes: tuple[int, ...], count: int) -> dict[int, dict[int, np.ndarray]]:
    """A fixed subset of the folder's images at each size as PrepareImages keeps its scoring splits:
    {size: {side: (N, 3, side, side) uint8}}, a smaller image at its own size."""
    sets = {size: {} for size in sizes}
    for path in scoring_subset(files_below(folder), count):
        with open(os.path.join(folder, path), "rb") as file:
            data = file.read()
        try:
            images = [decode_image_at_most(data, size, 10**9) for size in sizes]
        except RejectedImage:
            continue
        for size, image in zip(sizes, images):
            sets[size].setdefault(image.shape[0], []).append(image.transpose(2, 0, 1))
    return {size: {side: np.stack(images) for side, images in sorted(groups.items())} for size, groups in sets.items()}


def score_collection(name: str, train: str, held_out: str, size: int, sizes: tuple[int, ...], args) -> dict:
    """Train every variant on `train`, score it on `held_out`: per-size summaries and training times."""
    sizes = tuple(sorted({size, *sizes}))  # the training size always, as EvaluateInpainter scores it
    sets = held_out_sets(held_out, sizes, args.images)
    summaries, timings, mean_pixel, mask_config = {}, [], None, None
    for variant, settings in [parse_variant(text) for text in args.variant] or [("default", {})]:
        parameters = {"dataset": "folder", "source": os.path.abspath(train), "image_size": str(size), **settings}
        end = TrainInpainter.from_str_params(parameters)
        build(end)
        chain = [t for t in _upstream(end) if t.get_task_family() != "PrepareImages"]
        timings.append({"collection": name, "variant": variant, "train_and_evaluate_seconds": sum(map(seconds, chain)),
                        "with_prepare_seconds": sum(map(seconds, _upstream(end)))})
        for phase in args.phases:
            task = PHASE_TASKS[phase].from_str_params(parameters)
            completion, options = trained_model(task)
            mean_pixel = torch.tensor(task.requires()["shards"].mean_pixel())
            mask_config = options.masks
            fill = {f"{variant} phase {phase}" if (args.variant or len(args.phases) > 1) else "model":
                    lambda images, mask: inpaint(completion, images, mask, mean_pixel, size)}
            summaries[variant, phase] = evaluate_sizes(sets, fill, mask_config, args.eval_seed)
    baselines = baseline_fills(mean_pixel)
    if args.interpolations:  # what the network's learned correction adds to the fill it starts from
        baselines.update({f"{how} interpolation": lambda images, mask, how=how: fill_holes(images, mask, mean_pixel, how)
                          for how in ("smooth", "harmonic")})
    scored = [evaluate_sizes(sets, baselines, mask_config, args.eval_seed), *summaries.values()]
    per_image = pd.concat([pair[0] for pair in scored], ignore_index=True)
    realism = pd.concat([pair[1] for pair in scored], ignore_index=True)
    return {"summary": summarise_sizes(per_image, realism, size), "timings": timings}


def _upstream(task: luigi.Task) -> list[luigi.Task]:
    """Every task `task` depends on, itself included, each once."""
    found = {task.task_id: task}
    for required in luigi.task.flatten(task.requires()):
        found.update({t.task_id: t for t in _upstream(required)})
    return list(found.values())


def full_table(results: dict) -> pd.DataFrame:
    """A row per collection, size, mask kind and method with every measure."""
    rows = []
    for name, result in results.items():
        for size, summary in result["summary"]["sizes"].items():
            for kind, methods in summary["by_kind"].items():
                for method, values in methods.items():
                    rows.append({"collection": name, "size": int(size), "kind": kind, "method": method,
                                 "images": summary["n_images"], "at_own_size": summary["n_at_own_size"], **values})
    return pd.DataFrame(rows)


def readme_table(table: pd.DataFrame) -> str:
    """The README's results table: hole PSNR / SSIM / two-sample accuracy of each method per collection,
    size and mask kind, the best of each measure in bold."""
    measures = {"psnr_hole": ".2f", "ssim": ".3f", "c2st_accuracy": ".3f"}
    lines = ["| collection | size | holes | images | " + " | ".join(README_METHODS.values()) + " |",
             "|---|---|---|---|" + "---|" * len(README_METHODS)]
    for (name, size, kind), rows in table.groupby(["collection", "size", "kind"], sort=False):
        rows = rows.set_index("method").reindex([m for m in README_METHODS if m in set(rows["method"])])
        best = {m: rows[m].max() if m in HIGHER_IS_BETTER else rows[m].min() for m in measures}
        own = rows["at_own_size"].iloc[0]
        images = f"{rows['images'].iloc[0]}" + (f" ({own} at own size)" if own else "")
        cells = [" / ".join(f"**{value:{form}}**" if value == best[m] else f"{value:{form}}"
                            for m, form in measures.items() for value in [rows.loc[method, m]])
                 for method in rows.index]
        lines.append(f"| {name} | {size} px | {KIND_NAMES.get(kind, kind)} | {images} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
            f"torch {torch.__version__}, OpenCV {cv2.__version__}, NumPy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder holding each collection's development folders (COLLECTIONS)")
    parser.add_argument("--collection", action="append", choices=sorted(COLLECTIONS),
                        help="with --data: only these collections (repeatable; default: all)")
    parser.add_argument("--train", help="without --data: folder of training images")
    parser.add_argument("--eval", help="without --data: folder of held-out images to score on")
    parser.add_argument("--size", type=int, default=64, help="without --data: image_size")
    parser.add_argument("--sizes", help="sizes to score at besides the training size, e.g. 256,512 "
                                        "(default: the collection's)")
    parser.add_argument("--variant", action="append", default=[],
                        help="name:param=value,... (TrainInpainter parameters); repeatable; default: the defaults")
    parser.add_argument("--phases", default="3", help="phases whose final network is scored (1 and/or 3)")
    parser.add_argument("--images", type=int, default=300, help="held-out images scored at each size")
    parser.add_argument("--interpolations", action="store_true", help="also score the interpolations alone")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the masks and the realism measures")
    parser.add_argument("--root", help="artifact root (default: a new temporary folder)")
    parser.add_argument("--out", help="write every figure to this JSON file too")
    parser.add_argument("--tables-from", help="print the tables of an earlier run's --out file, and nothing else")
    args = parser.parse_args()
    if args.tables_from:
        with open(args.tables_from) as file:
            saved = json.load(file)
        return print_tables(pd.DataFrame(saved["table"]), saved["timings"], saved["machine"])
    if bool(args.data) == bool(args.train and args.eval):
        parser.error("give either --data, or --train and --eval")
    args.phases = [int(phase) for phase in args.phases.split(",")]
    use_folders(os.path.abspath(args.root or tempfile.mkdtemp(prefix="quality-")))
    chosen_sizes = tuple(int(size) for size in args.sizes.split(",")) if args.sizes else None
    if args.data:
        jobs = {name: (os.path.join(args.data, train), os.path.join(args.data, held_out), size, chosen_sizes or sizes)
                for name, (train, held_out, size, sizes) in COLLECTIONS.items()
                if not args.collection or name in args.collection}
    else:
        jobs = {os.path.basename(os.path.normpath(args.eval)): (args.train, args.eval, args.size,
                                                                chosen_sizes or (args.size,))}
    results = {name: score_collection(name, *job, args) for name, job in jobs.items()}

    table = full_table(results)
    timings = [timing for result in results.values() for timing in result["timings"]]
    print_tables(table, timings, machine())
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"machine": machine(), "argv": sys.argv, "timings": timings,
                       "table": table.to_dict(orient="records"),
                       "summaries": {name: result["summary"] for name, result in results.items()}}, file, indent=2)


def print_tables(table: pd.DataFrame, timings: list[dict], machine_text: str) -> None:
    """Every measure per collection, size and mask kind, the training times and the README's table."""
    pd.set_option("display.width", 250)
    print(f"\n{machine_text}")
    arrows = {m: m + (" ↑" if m in HIGHER_IS_BETTER else " ↓") for m in (*PIXEL_METRICS, *REALISM_METRICS)}
    for key, rows in table.groupby(["collection", "size", "kind"], sort=False):
        print(f"\n{key[0]}, {key[1]} px, {key[2]} ({rows['images'].iloc[0]} images, "
              f"{rows['at_own_size'].iloc[0]} at their own smaller size; arrows: which way is better)")
        print(rows.set_index("method")[list(arrows)].rename(columns=arrows).to_string(
            float_format=lambda value: f"{value:.4f}"))
    print("\n" + pd.DataFrame(timings).to_string(index=False))
    print("\n" + readme_table(table))


if __name__ == "__main__":
    main()
