"""The studio's web application: pages, the files of runs, and the models behind Try it and Sample.

No request string ever becomes a path on its own: a run is looked up among the task
directories under the root, a file among the files of its run (its manifest once it is
complete), and on local disk the file's real path must be exactly that file under the
root, so `..`, absolute paths, encoded slashes and symbolic links all lead nowhere.
"""
import base64
import io
import os

import botocore.exceptions
import numpy as np
import torch
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ganmodels.dcgan.sampling import generate, slerp
from ganmodels.rendering import loss_curves_png

from ..artifacts import storage
from ..ingestion.decode import RejectedImage, TooManyPixels, decode_full_size
from ..infill import telea
from ..artifacts.runs import (INPAINTER_FAMILIES, GENERATOR_FAMILIES, Run, ancestry, load_run, loss_columns, run_names,
                              runs_table, training_history)
from ..errors import UserError, explain
from . import LOOPBACK_HOSTS, pages
from .models import Models, usable_runs

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TEST_IMAGES = 24  # of the model's test split offered in Try it
MAX_SAMPLES = 64
# Artifacts are served as what they are and never as HTML or script, whatever their name says.
CONTENT_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".json": "text/plain; charset=utf-8",
                 ".csv": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                 ".sha256": "text/plain; charset=utf-8"}
# A form's text fields and multipart framing, on top of its two files.
FORM_OVERHEAD_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, before it is parsed or stored."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope, send):
        response = JSONResponse({"error": f"the request is larger than the studio's limit of {self.limit} bytes; "
                                          "upload a smaller image (serve --max-upload-mb raises the limit)"},
                                status_code=413)
        await response(scope, None, send)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(pixels)).decode("ascii")


def _png_response(pixels: np.ndarray) -> Response:
    return Response(_png(pixels), media_type="image/png", headers={"Cache-Control": "no-store"})


def _status_of(error: Exception) -> int:
    if isinstance(error, TooManyPixels):
        return 413
    if isinstance(error, (UserError, RejectedImage)):
        return 400
    if isinstance(error, storage.ArtifactError):
        return 409  # a damaged artifact: the message names it and says how to make it again
    return 503  # the S3 store is unreachable or refuses


def create_app(root: str, cache_dir: str, device: torch.device, max_upload_bytes: int, max_pixels: int,
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> FastAPI:
    """The studio over the artifact root `root` (S3 files cached in `cache_dir`), its models on `device`; uploads of at most
    max_upload_bytes and max_pixels. Requests naming another host are refused, so that a web
    page elsewhere cannot reach the studio through a name it points at this machine."""
    app = FastAPI(title="gan-pipeline studio", docs_url=None, redoc_url=None, openapi_url=None)
    models = Models(root, device)
    app.state.models = models
    limits = {"max_upload_mb": max_upload_bytes / 1e6, "max_pixels": max_pixels}
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def refusal(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        if request.url.path.startswith("/runs/") and "/files/" in request.url.path:
            return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")
        return HTMLResponse(pages.message_page("Cannot show this", message), status_code=status)

    async def explained(request: Request, error: Exception) -> Response:
        message = str(error) if isinstance(error, RejectedImage) else explain(error)
        return refusal(request, _status_of(error), message)

    for kind in (UserError, RejectedImage, storage.ArtifactError, botocore.exceptions.BotoCoreError,
                 botocore.exceptions.ClientError):
        app.add_exception_handler(kind, explained)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return refusal(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(map(str, problem['loc'][1:]))}: {problem['msg']}" for problem in error.errors())
        return refusal(request, 422, f"invalid request: {problems}")

    def find(name: str, families: tuple[str, ...] | None = None) -> Run:
        """The run of that exact directory name, of one of `families` if given."""
        if name not in run_names(root):
            raise HTTPException(404, f"no run named {name!r} under {root}")
        if families and name.split("-")[0] not in families:
            raise HTTPException(404, f"{name} is not a {' or '.join(families)} run")
        if storage.is_link(storage.join(root, name)):
            raise HTTPException(404, f"{name} is a symbolic link, which the studio never follows")
        return load_run(root, name)

    def upload(file: UploadFile, what: str) -> bytes:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"the {what} is larger than the upload limit of {limits['max_upload_mb']:g} MB "
                                     "(serve --max-upload-mb)")
        return data

    def decoded(data: bytes, what: str) -> np.ndarray:
        try:
            return decode_full_size(data, max_pixels)
        except TooManyPixels as error:
            raise HTTPException(413, f"the {what} has {error.width}x{error.height} pixels, more than the limit of "
                                     f"{max_pixels:,} (serve --max-pixels); shrink or crop it") from None
        except RejectedImage as error:
            raise HTTPException(400, f"cannot read the {what}: {error}") from None

    @app.get("/", response_class=HTMLResponse)
    def runs_page():
        return pages.runs_page(root, runs_table(root).to_dict("records"))

    @app.get("/runs-table", response_class=HTMLResponse)
    def runs_fragment():
        return pages.runs_table(runs_table(root).to_dict("records"))

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def run_page(name: str):
        run = find(name)
        chain = ancestry(run)
        has_losses = any("history.csv" in member.files() for member in chain if member.complete)
        return pages.run_page(run, chain, has_losses)

    @app.get("/runs/{name}/losses.png")
    def losses(name: str):
        history = training_history(ancestry(find(name)))
        if not (columns := loss_columns(history)):
            raise HTTPException(404, f"{name} and its upstream runs logged no losses")
        return Response(loss_curves_png(history, columns), media_type="image/png")

    @app.get("/runs/{name}/files/{file:path}")
    def run_file(name: str, file: str, download: bool = False):
        run = find(name)
        if file not in run.files():
            raise HTTPException(404, f"{name} has no file {file!r}")
        path = run.path(file)
        if not storage.is_remote(path) and os.path.realpath(path) != os.path.join(os.path.realpath(root), name, file):
            raise HTTPException(404, f"{name}/{file} is reached through a symbolic link, which the studio never follows")
        headers = {"X-Content-Type-Options": "nosniff"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{os.path.basename(file)}"'
        media_type = CONTENT_TYPES.get(os.path.splitext(file)[1], "application/octet-stream")
        if run.complete:  # the bytes its manifest records, from S3 through the verified cache
            return FileResponse(storage.local_path(path, cache_dir), media_type=media_type, headers=headers)
        return Response(storage.read_bytes(path), media_type=media_type, headers=headers)

    @app.get("/runs/{name}/test-images/{index}.png")
    def test_image(name: str, index: int):
        shards = find(name, ("PrepareImages",))
        for shard in sorted(file for file in shards.files() if file.startswith("shards/test-")):
            images = storage.load_array(shards.path(shard), cache_dir)
            if index < len(images):
                return _png_response(np.ascontiguousarray(images[index].transpose(1, 2, 0)))
            index -= len(images)
        raise HTTPException(404, f"{name} has no test image {index}")

    @app.get("/compare", response_class=HTMLResponse)
    def compare(run: list[str] = Query(default=[])):
        return pages.compare_page([find(name) for name in dict.fromkeys(run)], run_names(root))

    @app.get("/try", response_class=HTMLResponse)
    def try_page(model: str | None = None):
        return pages.try_page(usable_runs(root, INPAINTER_FAMILIES), model, limits)

    @app.get("/sample", response_class=HTMLResponse)
    def sample_page(model: str | None = None):
        return pages.sample_page(usable_runs(root, GENERATOR_FAMILIES), model)

    @app.get("/api/test-images")
    def test_images(model: str):
        chain = ancestry(find(model, INPAINTER_FAMILIES))
        shards = next((run for run in chain if run.family == "PrepareImages" and run.complete), None)
        if shards is None:
            return {"images": []}
        images, served = [], 0
        for shard in sorted(file for file in shards.files() if file.startswith("shards/test-")):
            rows = len(storage.load_array(shards.path(shard), cache_dir))
            images += [f"/runs/{shards.name}/test-images/{served + row}.png"
                       for row in range(min(rows, TEST_IMAGES - served))]
            served += rows
            if served >= TEST_IMAGES:
                break
        return {"images": images}

    @app.post("/api/decode")
    def decode(image: UploadFile = File(...)):
        """The upload as the model will see it: decoded, upright, on white where it was transparent."""
        return _png_response(decoded(upload(image, "image"), "image"))

    @app.post("/api/fill")
    def fill(model: str = Form(...), poisson: bool = Form(False), image: UploadFile = File(...),
             mask: UploadFile = File(...)):
        pixels = decoded(upload(image, "image"), "image")
        holes = decoded(upload(mask, "mask"), "mask").mean(axis=2) > 127
        if holes.shape != pixels.shape[:2]:
            raise HTTPException(400, f"the mask is {holes.shape[1]}x{holes.shape[0]} pixels but the image is "
                                     f"{pixels.shape[1]}x{pixels.shape[0]}")
        if not holes.any():
            raise HTTPException(400, "the mask is empty: paint over what should go, then press Fill")
        inpainter = models.inpainter(find(model, INPAINTER_FAMILIES).name)
        inpainter.check_size(pixels, "the image")
        return {"width": pixels.shape[1], "height": pixels.shape[0],
                "model": _data_url(inpainter.fill(pixels, holes, poisson)), "telea": _data_url(telea(pixels, holes))}

    def images_png(images: torch.Tensor, per_row: int) -> Response:
        from torchvision.utils import make_grid  # here: its import takes seconds (torch._dynamo)

        grid = make_grid(images, nrow=per_row, padding=2, pad_value=1.0)
        return _png_response(grid.mul(255).round().byte().permute(1, 2, 0).numpy())

    def latents(seed: int, count: int, size: int) -> torch.Tensor:
        """The latents `python -m pipeline sample --seed SEED --n COUNT` draws."""
        return torch.randn(count, size, generator=torch.Generator().manual_seed(seed)).to(models.device)

    @app.get("/api/sample.png")
    def sample(model: str, seed: int = Query(0, ge=0), count: int = Query(16, ge=1, le=MAX_SAMPLES)):
        generator = models.generator(find(model, GENERATOR_FAMILIES).name)
        images = generate(generator, latents(seed, count, generator.latent_size)).cpu()
        return images_png(images, per_row=max(1, int(count ** 0.5)))

    @app.get("/api/walk.png")
    def walk(model: str, seed_a: int = Query(ge=0), seed_b: int = Query(ge=0), t: float = Query(ge=0, le=1)):
        """The image of the latent a fraction t along the great circle from seed_a's latent to seed_b's."""
        generator = models.generator(find(model, GENERATOR_FAMILIES).name)
        start, end = (latents(seed, 1, generator.latent_size) for seed in (seed_a, seed_b))
        return images_png(generate(generator, slerp(start, end, t)).cpu(), per_row=1)

    hosts = ["*"] if "0.0.0.0" in allowed_hosts or "::" in allowed_hosts else list(allowed_hosts)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(BodyLimit, limit=2 * max_upload_bytes + FORM_OVERHEAD_BYTES)  # outermost: before parsing
    return app
