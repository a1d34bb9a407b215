"""`python -m pipeline COMMAND`: inspect the runs under the artifact root and use trained models.

Every artifact is read through `storage`, so a local root and an s3:// root behave alike.
Paths recorded inside manifests are followed by their directory name under the root the
run was found in, so a copied or synced artifact tree still resolves.
"""
import argparse
import datetime
import json
import os
import sys
import urllib.parse
from dataclasses import dataclass

import botocore.exceptions
import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from ganmodels.dcgan_training import generator_from_state
from ganmodels.distributed import resolve_device
from ganmodels.inference import generate, latent_walks, paste, predict, size_multiple
from ganmodels.training import load_completion

from . import report, sources, storage
from .base import MANIFEST
from .imagefiles import ACCEPTED_FORMATS, RejectedImage, _to_rgb
from .checkpoints import CHECKPOINT_PATTERN, FINAL_STATE, load_state
from .evaluation import CLASSICAL_RADIUS

KEY_PARAMETERS = ("dataset", "image_size", "arch", "width", "phase", "steps",
                  "phase1_steps", "phase2_steps", "phase3_steps")
MAX_KEY_METRICS = 4
# The default network took about 0.26 GB per megapixel on the CPU (README): 16 megapixels
# need about 4.7 GB; larger images are refused unless asked for.
DEFAULT_MAX_PIXELS = 16_000_000


class CommandError(Exception):
    """A problem with what the user asked for; reported in one line, without a traceback."""


@dataclass(frozen=True)
class Run:
    """One task directory under an artifact root; `manifest` is None while it is incomplete
    or when its manifest is broken, which `problem` then describes."""

    root: str
    name: str
    manifest: dict | None
    problem: str | None = None

    @property
    def directory(self) -> str:
        return storage.join(self.root, self.name)

    @property
    def family(self) -> str:
        return storage.TASK_DIRECTORY.match(self.name)["family"]

    @property
    def hash(self) -> str:
        return storage.TASK_DIRECTORY.match(self.name)["hash"]

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def parameters(self) -> dict:
        return (self.manifest or {}).get("parameters", {})

    @property
    def summary(self) -> dict:
        return (self.manifest or {}).get("summary", {})

    def path(self, name: str) -> str:
        return storage.join(self.directory, name)

    def files(self) -> dict[str, int | None]:
        """Every file with its size; sizes are known from the manifest, so None while incomplete."""
        if self.manifest:
            return {name: info["size"] for name, info in self.manifest["files"].items()}
        return dict.fromkeys(storage.list_files(self.directory))


def _last_parts(recorded_path: str, count: int) -> list[str]:
    return recorded_path.rstrip("/").split("/")[-count:]


def load_run(root: str, name: str) -> Run:
    try:
        return Run(root, name, storage.read_manifest(storage.join(root, name)))
    except storage.BrokenManifest as error:
        return Run(root, name, None, str(error))


def all_runs(root: str) -> list[Run]:
    return [load_run(root, name) for name in storage.list_dirs(root) if storage.TASK_DIRECTORY.match(name)]


def find_run(root: str, spec: str) -> Run:
    """A run named by its path, its directory name, a prefix of that name, or a prefix of its hash;
    one whose manifest is broken is refused."""
    if "/" in spec:
        root, name = spec.rstrip("/").rsplit("/", 1)
        if not (storage.TASK_DIRECTORY.match(name) and storage.list_files(spec.rstrip("/"))):
            raise CommandError(f"{spec} is not a task directory")
    else:
        names = [name for name in storage.list_dirs(root) if storage.TASK_DIRECTORY.match(name)]
        matches = [spec] if spec in names else [
            name for name in names if name.startswith(spec) or storage.TASK_DIRECTORY.match(name)["hash"].startswith(spec)]
        if not matches:
            raise CommandError(f"no run under {root} matches {spec!r}; `python -m pipeline runs` lists them")
        if len(matches) > 1:
            raise CommandError(f"{spec!r} matches {len(matches)} runs: {', '.join(matches)}; give more of the name")
        name = matches[0]
    run = load_run(root, name)
    if run.problem:
        raise CommandError(run.problem)
    return run


def upstream(run: Run) -> list[Run]:
    recorded = (run.manifest or {}).get("upstream", {}).values()
    return [load_run(run.root, _last_parts(directory, 1)[0]) for directory in sorted(recorded)]


def ancestry(run: Run) -> list[Run]:
    """The run and every run upstream of it, each once, nearest first."""
    found, queue = {}, [run]
    while queue:
        current = queue.pop(0)
        if current.name not in found:
            found[current.name] = current
            queue += upstream(current)
    return list(found.values())


def _timestamp(value: str | datetime.datetime) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def status(run: Run) -> str:
    if run.problem:
        return "broken manifest"
    return "complete" if run.complete else progress(run)


def progress(run: Run) -> str:
    """What an incomplete run got to: its latest checkpoint, or how many files it wrote, and when."""
    files = storage.list_files(run.directory)
    steps = [int(match.group(1)) for name in files if (match := CHECKPOINT_PATTERN.search(name))]
    reached = f"checkpoint at step {max(steps)}" if steps else f"{len(files)} files"
    return f"incomplete: {reached}, last write {_timestamp(storage.last_modified(run.directory))} UTC"


def key_metrics(summary: dict) -> str:
    if evaluation := report.evaluation_summary(summary):
        parts = []
        for kind, methods in (evaluation.get("by_kind") or {"all": evaluation["methods"]}).items():
            text = f"{kind}: psnr_hole model {methods['model']['psnr_hole']:.2f}"
            if baselines := {name: values["psnr_hole"] for name, values in methods.items() if name != "model"}:
                best = max(baselines, key=baselines.get)
                text += f", best baseline {best} {baselines[best]:.2f}"
            parts.append(text)
        return "; ".join(parts)
    if "swd_samples" in summary:
        return f"patch SWD samples {summary['swd_samples']:.2f}, training images {summary['swd_train_images']:.2f}"
    entries = report.flatten(summary.get("last_log") or summary)
    shown = [f"{name}={value:.4g}" for name, value in entries.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in report.NOT_LOSSES]
    return ", ".join(shown[:MAX_KEY_METRICS])


def runs_table(root: str, family: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    rows = []
    for run in all_runs(root):
        if family and run.family.lower() != family.lower():
            continue
        if dataset and run.parameters.get("dataset") != dataset:
            continue
        rows.append({
            "family": run.family, "hash": run.hash,
            "status": status(run),
            "parameters": " ".join(f"{key}={run.parameters[key]}" for key in KEY_PARAMETERS if key in run.parameters),
            "metrics": key_metrics(run.summary),
            "finished": _timestamp(run.manifest["finished"]) if run.complete else "",
        })
    return pd.DataFrame(rows, columns=["family", "hash", "status", "parameters", "metrics", "finished"])


def _human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _tree(run: Run, seen: set[str], depth: int = 0) -> list[str]:
    if run.name in seen:
        return [f"{'  ' * depth}- {run.name} (shown above)"]
    seen.add(run.name)
    lines = [f"{'  ' * depth}- {run.name} ({status(run).split(':')[0]})"]
    for parent in upstream(run):
        lines += _tree(parent, seen, depth + 1)
    return lines


def describe(run: Run) -> str:
    """The text of `show`: parameters, the upstream chain, files and metrics."""
    status = f"complete, finished {_timestamp(run.manifest['finished'])} UTC" if run.complete else progress(run)
    sections = [f"{run.name}  [{status}]\n{run.directory}"]
    if run.complete:
        sections.append("Parameters\n" + "\n".join(f"  {k} = {v}" for k, v in sorted(run.parameters.items())))
        if config := run.manifest.get("config"):
            sections.append("Resolved configuration\n" + json.dumps(config, indent=2, sort_keys=True))
    sections.append("Upstream runs\n" + "\n".join(_tree(run, set())))
    sections.append("Files\n" + "\n".join(f"  {_human_size(size):>10}  {name}" for name, size in run.files().items()))
    if run.complete:
        sections.append("Metrics\n" + json.dumps(run.summary, indent=2, sort_keys=True, default=str))
    return "\n\n".join(sections)


def model_state(root: str, spec: str, device: torch.device, network: str) -> dict:
    """The saved state named by spec, which must hold `network`.

    spec is a .pt file, a run with model.pt, or a TrainInpainter run (its result.json
    names the final checkpoint).
    """
    if spec.endswith(".pt"):
        path = spec
    else:
        run = find_run(root, spec)
        path = run.path(FINAL_STATE)
        if not storage.exists(path) and storage.exists(run.path("result.json")):
            recorded = storage.read_json(run.path("result.json"))["checkpoint"]
            path = storage.join(run.root, *_last_parts(recorded, 2))
    if not storage.exists(path):
        raise CommandError(f"no checkpoint at {path}; name a .pt file, a training run or a TrainInpainter run")
    state = load_state(path, device)
    if network not in state:
        raise CommandError(f"{path} holds no {network} network (it has: {', '.join(sorted(state))})")
    return state


def read_image(path: str, max_pixels: int) -> np.ndarray:
    """A user's image as (H, W, 3) uint8 RGB, upright, transparency composited as in training;
    refused from its header when it has more than max_pixels pixels."""
    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise CommandError(f"image {path} has {image.width}x{image.height} pixels, more than --max-pixels "
                                   f"{max_pixels}; the memory needed grows with the pixels (README): shrink or crop "
                                   "it, or raise --max-pixels if this machine has the memory")
            return np.array(_to_rgb(ImageOps.exif_transpose(image)))
    except (OSError, Image.DecompressionBombError, RejectedImage) as error:
        raise CommandError(f"cannot read image {path}: {error}") from None


def read_mask(path: str, image_path: str, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool mask, True where the mask is white (grey level above half); must match the image."""
    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as image:
            mask = np.array(ImageOps.exif_transpose(image).convert("L")) > 127
    except (OSError, Image.DecompressionBombError) as error:
        raise CommandError(f"cannot read mask {path}: {error}") from None
    if mask.shape != size:
        raise CommandError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but image {image_path} "
                           f"is {size[1]}x{size[0]}; the mask must have the image's size")
    if not mask.any():
        raise CommandError(f"mask {path} has no white pixels: nothing to fill")
    return mask


def poisson_blend(image: np.ndarray, prediction: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its holes filled by the prediction, Poisson-blended so no seam shows.

    As in the GLCIC paper, the holes are first filled by fast marching (OpenCV's Telea) so
    that the image's gradients continue smoothly across the hole border; cv2.seamlessClone
    then keeps the prediction's gradients inside the holes and fits them to that border.
    """
    marched = cv2.inpaint(image, mask.astype(np.uint8), CLASSICAL_RADIUS, cv2.INPAINT_TELEA)
    # OpenCV ignores the mask's outermost pixel ring, so holes touching the image border are
    # blended on copies one pixel larger on every side.
    grow = lambda pixels: np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")  # noqa: E731
    holes = np.pad(mask, 1).astype(np.uint8) * 255
    left, top, width, height = cv2.boundingRect(holes)
    # seamlessClone centres the mask's bounding box at `center`: that box's own centre keeps it in place.
    blended = cv2.seamlessClone(grow(prediction), grow(marched), holes, (left + width // 2, top + height // 2),
                                cv2.NORMAL_CLONE)[1:-1, 1:-1]
    # It solves over the whole box, moving known pixels inside it by rounding: take only the holes.
    return np.where(mask[..., None], blended, image)


def infill_jobs(image: str, mask: str, out: str) -> list[tuple[str, str, str]]:
    """(image, mask, output) paths: one file, or every image of a folder with the mask of the same name."""
    if not os.path.isdir(image):
        if os.path.isdir(mask):
            raise CommandError(f"--image {image} is a file, so --mask must be a file too, not a folder")
        if os.path.isdir(out):
            out = os.path.join(out, os.path.splitext(os.path.basename(image))[0] + ".png")
        return [(image, mask, out)]
    if not os.path.isdir(mask):
        raise CommandError(f"--image {image} is a folder, so --mask must be a folder of masks with the same names")
    masks = {os.path.splitext(name)[0]: name for name in sources.list_files(mask)}
    jobs = []
    for name in sources.list_files(image):
        stem = os.path.splitext(name)[0]
        if stem not in masks:
            raise CommandError(f"no mask for {name} in {mask} (masks are matched by name, any extension)")
        jobs.append((os.path.join(image, name), os.path.join(mask, masks[stem]), os.path.join(out, stem + ".png")))
    if not jobs:
        raise CommandError(f"no images in {image}")
    return jobs


def cmd_runs(args) -> None:
    table = runs_table(args.root, args.family, args.dataset)
    print(table.to_string(index=False) if len(table) else f"no matching runs under {args.root}")


def cmd_show(args) -> None:
    print(describe(find_run(args.root, args.run)))


def cmd_report(args) -> None:
    run = find_run(args.root, args.run)
    print(report.write_report(run, ancestry(run), args.out))


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """The first image of a [0, 1] batch as (H, W, 3) uint8."""
    return image[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()


def cmd_infill(args) -> None:
    device = resolve_device(args.device)
    state = model_state(args.root, args.model, device, "completion")
    if "mean_pixel" not in state:
        raise CommandError(f"{args.model} was saved without its mean pixel (trained before it was recorded); "
                           "train it again to use it here")
    if args.max_pixels < 1:
        raise CommandError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    completion = load_completion(state, device)
    mean_pixel = torch.tensor(state["mean_pixel"], device=device)
    multiple = size_multiple(completion)
    for image_path, mask_path, out_path in infill_jobs(args.image, args.mask, args.out):
        pixels = read_image(image_path, args.max_pixels)
        if min(pixels.shape[:2]) < multiple:
            raise CommandError(f"image {image_path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the network "
                               f"needs at least {multiple} on each side")
        mask = read_mask(mask_path, image_path, pixels.shape[:2])
        images = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device).float().div(255)
        holes = torch.from_numpy(mask)[None, None].to(device).float()
        prediction = predict(completion, images, holes, mean_pixel)
        if args.poisson:
            result = poisson_blend(pixels, _to_uint8(prediction), mask)
        else:
            result = _to_uint8(paste(images, prediction, holes))
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        Image.fromarray(result).save(out_path)
        print(out_path)


def cmd_sample(args) -> None:
    if args.n < 1 or args.per_row < 1:
        raise CommandError("--n and --per-row must be at least 1")
    device = resolve_device(args.device)
    # The EMA copy of the generator when training kept one: it samples more smoothly.
    generator = generator_from_state(model_state(args.root, args.model, device, "generator")).to(device)
    rng = torch.Generator().manual_seed(args.seed)
    if args.interpolate:
        if args.n % args.per_row or args.per_row < 2:
            raise CommandError(f"--interpolate draws rows of --per-row >= 2 images; --n {args.n} is not a "
                               f"multiple of --per-row {args.per_row}")
        latents = latent_walks(args.n // args.per_row, args.per_row, generator.latent_size, rng)
    else:
        latents = torch.randn(args.n, generator.latent_size, generator=rng)
    images = generate(generator, latents.to(device)).cpu()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from torchvision.utils import make_grid, save_image  # here: its import takes seconds (torch._dynamo)

    save_image(make_grid(images, nrow=args.per_row, padding=2, pad_value=1.0), args.out)
    print(args.out)


def _confirmed(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:  # nobody to answer: no
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_clean(args) -> None:
    """Remove incomplete task directories that the pipeline made (they hold its marker) and
    that nothing was written to for a while. Nothing else is touched: not complete runs, not
    broken ones, not folders without the marker (the user's own, runs from before markers),
    and no symbolic link is followed."""
    try:
        age = pd.Timedelta(args.older_than)
    except ValueError:
        raise CommandError(f"--older-than takes an age such as 30min, 12h or 7d, got {args.older_than!r}") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    stale, skipped = [], []
    for name in storage.list_dirs(args.root):
        directory = storage.join(args.root, name)
        if storage.is_link(directory):
            skipped.append(f"{name}: a symbolic link, not followed")
            continue
        run = load_run(args.root, name)
        if run.problem:
            skipped.append(f"{name}: {run.problem}")
        elif not run.complete and storage.read_marker(directory) is None:
            skipped.append(f"{name}: not made by the pipeline (it has no {storage.MARKER} naming it)")
        elif not run.complete and now - storage.last_modified(directory) > age:
            stale.append(run)
    if skipped:
        print("Never removed:\n" + "\n".join(f"  {line}" for line in skipped))
    if not stale:
        print(f"no incomplete runs older than {age} under {args.root}")
        return
    print(f"Incomplete runs (no manifest) not written to for over {age}:")
    for run in stale:
        print(f"  {run.name}  {progress(run)}")
    if not args.yes and not _confirmed(f"Remove these {len(stale)} directories? [y/N] "):
        print("nothing removed")
        return
    for run in stale:
        storage.remove(run.directory)
        print(f"removed {run.directory}")


def _root(value: str | None) -> str:
    if value is None:
        return storage.root()
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help="artifact root (default: [artifacts] root of luigi.cfg)")
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    runs = commands.add_parser("runs", parents=[common], help="every run under the artifact root, one per line")
    runs.add_argument("--family", help="only this task family, e.g. TrainInpainter")
    runs.add_argument("--dataset", help="only runs on this dataset")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", parents=[common], help="one run's parameters, upstream runs, files, metrics")
    show.add_argument("run", help="directory name, path, name prefix or hash prefix")
    show.set_defaults(handler=cmd_show)

    report_parser = commands.add_parser("report", parents=[common], help="a static HTML report of a run")
    report_parser.add_argument("run", help="directory name, path, name prefix or hash prefix")
    report_parser.add_argument("--out", required=True, help="folder for index.html and its images")
    report_parser.set_defaults(handler=cmd_report)

    infill = commands.add_parser("infill", parents=[common], help="fill the white pixels of a mask in an image")
    infill.add_argument("--model", required=True, help="an inpainter run (TrainInpainter, a phase) or a .pt file")
    infill.add_argument("--image", required=True, help="an image, or a folder of images")
    infill.add_argument("--mask", required=True,
                        help="the mask (white = fill), or a folder of masks named as the images")
    infill.add_argument("--out", required=True, help="output image, or output folder (PNG files)")
    infill.add_argument("--poisson", action="store_true", help="Poisson-blend the filled region (cv2.seamlessClone)")
    infill.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    infill.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS}); memory grows with the pixels")
    infill.set_defaults(handler=cmd_infill)

    sample = commands.add_parser("sample", parents=[common], help="a grid of images from a DCGAN run")
    sample.add_argument("--model", required=True, help="a DCGAN run or its .pt file")
    sample.add_argument("--n", type=int, default=64, help="how many images")
    sample.add_argument("--per-row", type=int, default=8, help="images per grid row")
    sample.add_argument("--interpolate", action="store_true",
                        help="each row walks between two random latents (spherical interpolation)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help="PNG file of the grid")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    sample.set_defaults(handler=cmd_sample)

    clean = commands.add_parser("clean", parents=[common],
                                help="remove incomplete runs (no manifest) not written to for a while")
    clean.add_argument("--older-than", default="24h", help="age such as 30min, 12h or 7d (default 24h)")
    clean.add_argument("--yes", action="store_true", help="remove without asking")
    clean.set_defaults(handler=cmd_clean)
    return parser


def _endpoint(error: botocore.exceptions.BotoCoreError) -> str:
    """The scheme, host and port of the endpoint an error names: never a path, query or user info."""
    url = urllib.parse.urlsplit(error.kwargs.get("endpoint_url", ""))
    return f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "") if url.hostname else "the endpoint"


def _one_line(error: Exception) -> str | None:
    """The message for an error that comes from what the user asked for or from their
    environment (a damaged artifact, an unreachable or refusing S3 store), or None for any
    other, which is a bug and keeps its traceback."""
    if isinstance(error, (CommandError, storage.ArtifactError)):
        return str(error)
    if isinstance(error, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return (f"cannot reach the S3 endpoint {_endpoint(error)} ({type(error).__name__}); check [s3] endpoint_url "
                "and that the store is up")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use ~/.aws/credentials"
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        return f"S3 refused the request: {details.get('Code', 'unknown error')} ({details.get('Message', '')})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = _root(args.root)
    try:
        args.handler(args)
    except Exception as error:
        if (message := _one_line(error)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
