"""`python -m pipeline COMMAND`: inspect the runs under the artifact root and use trained models.

Every artifact is read through `storage`, so a local root and an s3:// root behave alike;
pipeline.artifacts.runs is the model of the runs that these commands, the report and the studio share.
"""
import argparse
import datetime
import json
import os
import socket
import sys

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from ganmodels.dcgan.sampling import generate, generator_from_state, latent_walks
from ganmodels.world import resolve_device

from . import report
from .artifacts import storage
from .datasets import files_below
from .ingestion.decode import ACCEPTED_FORMATS, RejectedImage, TooManyPixels, decode_full_size
from .infill import Inpainter
from .artifacts.runs import (Run, ancestry, checkpoint_path, find_run, human_size, load_run, model_state, progress,
                             runs_table, status, timestamp, upstream)
from .errors import UserError, exit_code
from .studio import LOOPBACK_HOSTS
from .settings import artifact_root, cache_dir

# Filling in crops around the holes peaked at 1.4 GiB for a 16-megapixel photograph (docs/hires-fill.md); beyond
# this, decoding and the full-size copies grow with the image, so larger images are refused unless asked for.
DEFAULT_MAX_PIXELS = 16_000_000
DEFAULT_MAX_UPLOAD_MB = 20.0


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
    status = f"complete, finished {timestamp(run.manifest['finished'])} UTC" if run.complete else progress(run)
    sections = [f"{run.name}  [{status}]\n{run.directory}"]
    if run.complete:
        sections.append("Parameters\n" + "\n".join(f"  {k} = {v}" for k, v in sorted(run.parameters.items())))
        if config := run.manifest.get("config"):
            sections.append("Resolved configuration\n" + json.dumps(config, indent=2, sort_keys=True))
    sections.append("Upstream runs\n" + "\n".join(_tree(run, set())))
    sections.append("Files\n" + "\n".join(f"  {human_size(size):>10}  {name}" for name, size in run.files().items()))
    if run.complete:
        sections.append("Metrics\n" + json.dumps(run.summary, indent=2, sort_keys=True, default=str))
    return "\n\n".join(sections)


def read_image(path: str, max_pixels: int) -> np.ndarray:
    """A user's image as (H, W, 3) uint8 RGB, upright, transparency composited as in training;
    refused from its header when it has more than max_pixels pixels."""
    try:
        with open(path, "rb") as file:
            return decode_full_size(file.read(), max_pixels)
    except TooManyPixels as error:
        raise UserError(f"image {path} has {error.width}x{error.height} pixels, more than --max-pixels "
                        f"{max_pixels}; the memory needed grows with the pixels (docs/runs.md): shrink or crop "
                        "it, or raise --max-pixels if this machine has the memory") from None
    except (OSError, RejectedImage) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def read_mask(path: str, image_path: str, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool mask, True where the mask is white (grey level above half); must match the image."""
    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as image:
            mask = np.array(ImageOps.exif_transpose(image).convert("L")) > 127
    except (OSError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read mask {path}: {error}") from None
    if mask.shape != size:
        raise UserError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but image {image_path} "
                           f"is {size[1]}x{size[0]}; the mask must have the image's size")
    if not mask.any():
        raise UserError(f"mask {path} has no white pixels: nothing to fill")
    return mask


def infill_jobs(image: str, mask: str, out: str) -> list[tuple[str, str, str]]:
    """(image, mask, output) paths: one file, or every image of a folder with the mask of the same name."""
    if not os.path.isdir(image):
        if os.path.isdir(mask):
            raise UserError(f"--image {image} is a file, so --mask must be a file too, not a folder")
        if os.path.isdir(out):
            out = os.path.join(out, os.path.splitext(os.path.basename(image))[0] + ".png")
        return [(image, mask, out)]
    if not os.path.isdir(mask):
        raise UserError(f"--image {image} is a folder, so --mask must be a folder of masks with the same names")
    masks = {os.path.splitext(name)[0]: name for name in files_below(mask)}
    jobs = []
    for name in files_below(image):
        stem = os.path.splitext(name)[0]
        if stem not in masks:
            raise UserError(f"no mask for {name} in {mask} (masks are matched by name, any extension)")
        jobs.append((os.path.join(image, name), os.path.join(mask, masks[stem]), os.path.join(out, stem + ".png")))
    if not jobs:
        raise UserError(f"no images in {image}")
    return jobs


def cmd_runs(args) -> None:
    table = runs_table(args.root, args.family, args.dataset)
    print(table.to_string(index=False) if len(table) else f"no matching runs under {args.root}")


def cmd_show(args) -> None:
    print(describe(find_run(args.root, args.run)))


def cmd_report(args) -> None:
    run = find_run(args.root, args.run)
    print(report.write_report(run, ancestry(run), args.out))


def cmd_infill(args) -> None:
    device = resolve_device(args.device)
    inpainter = Inpainter(model_state(checkpoint_path(args.root, args.model), device, "completion"), device)
    if args.max_pixels < 1:
        raise UserError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    for image_path, mask_path, out_path in infill_jobs(args.image, args.mask, args.out):
        pixels = read_image(image_path, args.max_pixels)
        inpainter.check_size(pixels, f"image {image_path}")
        result = inpainter.fill(pixels, read_mask(mask_path, image_path, pixels.shape[:2]), args.poisson)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        # A 12-megapixel PNG takes 2.5 s at Pillow's default level and 0.7 s at level 1, for a file 25 % larger.
        Image.fromarray(result).save(out_path, compress_level=1)
        print(out_path)


def cmd_sample(args) -> None:
    if args.n < 1 or args.per_row < 1:
        raise UserError("--n and --per-row must be at least 1")
    device = resolve_device(args.device)
    # The EMA copy of the generator when training kept one: it samples more smoothly.
    generator = generator_from_state(model_state(checkpoint_path(args.root, args.model), device, "generator")).to(device)
    rng = torch.Generator().manual_seed(args.seed)
    if args.interpolate:
        if args.n % args.per_row or args.per_row < 2:
            raise UserError(f"--interpolate draws rows of --per-row >= 2 images; --n {args.n} is not a "
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
        raise UserError(f"--older-than takes an age such as 30min, 12h or 7d, got {args.older_than!r}") from None
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


def cmd_serve(args) -> None:
    """Serve the studio until interrupted; the address goes to standard output once it listens."""
    if args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise UserError("--max-upload-mb must be above 0 and --max-pixels at least 1")
    listener = _listen(args.host, args.port)
    import uvicorn  # here: only this command needs the web server

    from .studio.app import create_app

    app = create_app(args.root, cache_dir(), resolve_device(args.device), int(args.max_upload_mb * 1e6), args.max_pixels,
                     allowed_hosts=(*LOOPBACK_HOSTS, args.host))
    host, port = listener.getsockname()[:2]
    print(f"studio on http://{f'[{host}]' if ':' in host else host}:{port}/ (artifact root {args.root}); "
          "Ctrl+C stops it", flush=True)
    if args.host not in LOOPBACK_HOSTS:
        print(f"warning: listening on {args.host}: anyone who reaches this address can read every artifact under "
              "the root and run its models", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: a free one), or a one-line reason why not."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, protocol)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; pick another --port or --host") \
            from None
    return listener


def _root(value: str | None) -> str:
    if value is None:
        return artifact_root()
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

    serve = commands.add_parser("serve", parents=[common],
                                help="a local web page to watch runs and try their models (the studio)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    serve.add_argument("--device", default="auto", help="where the models run: auto, cpu, cuda or cuda:N")
    serve.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                       help=f"largest image file accepted (default {DEFAULT_MAX_UPLOAD_MB:g} MB)")
    serve.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help=f"largest image accepted, in pixels (default {DEFAULT_MAX_PIXELS})")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = _root(args.root)
    return exit_code(lambda: args.handler(args))
