"""`python -m pipeline serve`: the studio started as a user starts it, on a tiny completed run on
local disk and on S3, used over HTTP and in a real headless Chromium."""
import base64
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.artifacts import storage
from pipeline.settings import cache_dir
from pipeline.studio.app import TEST_IMAGES
from pipeline.studio.models import Models
from tests.conftest import REPO_ROOT
from tests.services import stop
from tests.test_cli import INCOMPLETE, add_incomplete_run, run_name, write_dcgan_run
from tests.test_report import CHROMIUM_NAMES, find_chromium

UPLOAD_LIMIT_MB = 0.2  # small, so that the tests can cross it with a small file
PIXEL_LIMIT = 20_000
SECRET = b"the contents of a file outside the artifact root"
ARTIFACTS = os.path.join(REPO_ROOT, "test-artifacts")


class Studio:
    """The studio in its own process, as `python -m pipeline serve --port 0` starts it."""

    def __init__(self, root: str, tmp_path):
        config = tmp_path / "studio.cfg"
        config.write_text(f"[artifacts]\ncache_dir = {tmp_path / 'cache'}\n")
        self.log = open(tmp_path / "studio.log", "w")
        command = [sys.executable, "-m", "pipeline", "serve", "--root", root, "--port", "0", "--device", "cpu",
                   "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--max-pixels", str(PIXEL_LIMIT)]
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env=dict(os.environ, PYTHONPATH=REPO_ROOT, LUIGI_CONFIG_PATH=str(config)))
        first_line = self.process.stdout.readline()
        assert first_line.startswith("studio on http://127.0.0.1:"), first_line + self.errors()
        self.url = first_line.split()[2].rstrip("/")
        self.port = urllib.parse.urlsplit(self.url).port

    def errors(self) -> str:
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name) as file:
            return file.read()[-3000:]

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of a request sent as written: no client tidies `..` or `%2F` away."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in {"Content-Length": str(len(body or b"")), **(headers or {})}.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str], files: dict[str, bytes]):
        boundary = "studio-test-boundary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                  for name, data in files.items()]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def close(self):
        stop(self.process)
        self.log.close()


@pytest.fixture
def studio(run_root, tmp_path):
    server = Studio(run_root, tmp_path)
    yield server
    alive = server.process.poll() is None
    server.close()
    assert alive, "the studio exited while the test used it: " + server.errors()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def from_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return decoded(base64.b64decode(url.split(",", 1)[1]))


def picture(width: int, height: int) -> np.ndarray:
    """A smooth picture with a pure red bar, which any fill of the bar replaces."""
    ramp = np.linspace(0, 1, width)[None, :, None] * (180, 60, 20) + np.linspace(0, 1, height)[:, None, None] * 60
    pixels = np.clip(ramp + 30, 0, 255).astype(np.uint8)
    pixels[height // 3:height // 3 + 3, 5:width - 5] = (255, 0, 0)
    return pixels


def test_pages_files_and_fills_over_http(studio, run_root):
    final = run_name(run_root, "TrainInpainter")
    status, _, body = studio.get("/")
    assert status == 200
    for name in storage.list_dirs(run_root):
        assert name.encode() in body
    assert b"psnr_hole model" in body  # the metrics column of `runs`

    status, _, body = studio.get(f"/runs/{final}")
    page = body.decode()
    assert status == 200 and "Test metrics" in page and "navier_stokes" in page and "phase3_steps" in page
    sections = [page.index(f"<h2>{section}") for section in ("Verdict", "Grids and images", "Test metrics",
                                                             "Loss curves", "Parameters")]
    assert sections == sorted(sections) and re.search(r"<li>strokes, [^:<]+: hole PSNR", page)  # the answer first
    images = [source for source in page.split('src="')[1:] if source.startswith("/runs/")]
    assert sum("grid.png" in source for source in images) == 3 and any("losses.png" in source for source in images)
    for source in images:
        status, headers, data = studio.get(source.split('"')[0])
        assert status == 200 and headers["content-type"] == "image/png" and Image.open(io.BytesIO(data)).size > (8, 8)

    status, headers, data = studio.get(f"/runs/{final}/files/result.json?download=1")
    assert status == 200 and data == storage.read_bytes(storage.join(run_root, final, "result.json"))
    assert headers["content-disposition"] == 'attachment; filename="result.json"'
    assert headers["content-type"].startswith("text/plain")  # never served as a page that could run script

    phases = [run_name(run_root, family) for family in ("PretrainCompletion", "TrainJoint")]
    status, _, body = studio.get("/compare?" + urllib.parse.urlencode([("run", name) for name in phases]))
    assert status == 200 and b"phase3_steps" in body and b"alpha" in body and b"loss_rec" in body

    status, _, body = studio.get(f"/api/test-images?model={final}")
    test_images = json.loads(body)["images"]
    shards = run_name(run_root, "PrepareImages")
    test_split = sum(len(storage.load_array(storage.join(run_root, shards, name), cache_dir()))
                     for name in storage.list_files(storage.join(run_root, shards)) if name.startswith("shards/test-"))
    assert status == 200 and len(test_images) == min(test_split, TEST_IMAGES) > 0
    pixels = decoded(studio.get(test_images[0])[2])
    assert pixels.shape == (32, 32, 3)

    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:16] = True
    for poisson in ("false", "true"):
        status, _, body = studio.post("/api/fill", {"model": final, "poisson": poisson},
                                      {"image": png(pixels), "mask": png(mask.astype(np.uint8) * 255)})
        assert status == 200, body
        filled = json.loads(body)
        for method in ("model", "telea"):
            result = from_data_url(filled[method])
            assert result.shape == pixels.shape
            assert (result[~mask] == pixels[~mask]).all() and (result[mask] != pixels[mask]).any()


def test_a_model_is_loaded_once_and_shared_by_the_names_of_its_checkpoint(tiny_run_root):
    models = Models(tiny_run_root, torch.device("cpu"))
    final, joint = run_name(tiny_run_root, "TrainInpainter"), run_name(tiny_run_root, "TrainJoint")
    first = models.inpainter(final)
    assert models.inpainter(final) is first and models.inpainter(joint) is first  # TrainInpainter's is TrainJoint's
    assert models.loads == 1
    models.inpainter(run_name(tiny_run_root, "PretrainCompletion"))
    assert models.loads == 2


def test_paths_outside_the_root_and_bad_uploads_are_refused_and_the_studio_goes_on(run_root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    final = run_name(run_root, "TrainInpainter")
    add_incomplete_run(run_root)
    if not storage.is_remote(run_root):  # links are refused: in a run, and as a run
        os.symlink(secret, os.path.join(run_root, INCOMPLETE, "link.txt"))
        elsewhere = tmp_path / "elsewhere"
        storage.write_marker(str(elsewhere), "TrainJoint", "f" * 64)
        (elsewhere / "secret.txt").write_bytes(SECRET)
        os.symlink(elsewhere, os.path.join(run_root, "TrainJoint-ffffffffff"))
    studio = Studio(run_root, tmp_path)
    try:
        status, _, body = studio.get("/")
        row = next(row for row in body.decode().split("<tr ") if INCOMPLETE in row)
        assert status == 200 and "data-incomplete" in row and "incomplete: checkpoint at step 3" in row
        depth = "../" * (secret.as_posix().count("/") + 2)
        refused = [f"/runs/{final}/files/{depth}{secret.as_posix().lstrip('/')}",
                   f"/runs/{final}/files/{secret.as_posix()}",
                   f"/runs/{final}/files/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
                   f"/runs/{final}/files/..%2f..%2f..%2fsecret.txt",
                   f"/runs/{final}/files/result.json%2F..%2F..%2F..%2Fsecret.txt",
                   f"/runs/..%2F{tmp_path.name}/files/secret.txt",
                   f"/runs/{urllib.parse.quote(str(tmp_path), safe='')}/files/secret.txt",
                   "/static/..%2F..%2F..%2F..%2Fsetup.py",
                   f"/runs/{INCOMPLETE}/files/link.txt",
                   "/runs/TrainJoint-ffffffffff/files/secret.txt",
                   "/runs/TrainJoint-ffffffffff"]
        for path in refused:
            status, _, body = studio.get(path)
            assert 400 <= status < 500 and body.strip(), path
            assert SECRET not in body and b"Traceback" not in body, path
        status, _, body = studio.get(f"/runs/{INCOMPLETE}/files/checkpoints/step-0000003.pt")
        assert status == 200 and body == b"not a real checkpoint"  # an incomplete run's own file is served

        status, _, body = studio.get(f"/api/test-images?model={final}")
        pixels = decoded(studio.get(json.loads(body)["images"][0])[2])
        mask = np.zeros((32, 32), np.uint8)
        mask[4:9, 4:9] = 255
        noise = lambda side: np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)  # noqa: E731
        cases = [({"image": png(noise(300))}, 413, f"larger than the upload limit of {UPLOAD_LIMIT_MB:g} MB"),
                 ({"image": png(noise(450))}, 413, "larger than the studio's limit"),  # refused before it is parsed
                 ({"image": png(np.zeros((200, 200, 3), np.uint8))}, 413, f"more than the limit of {PIXEL_LIMIT:,}"),
                 ({"image": b"\x89PNG\r\n\x1a\n" + b"broken" * 50}, 400, "cannot read the image"),
                 ({"image": png(pixels)[:120]}, 400, "cannot read the image"),
                 ({"mask": png(mask[:16])}, 400, "the mask is 32x16 pixels but the image is 32x32"),
                 ({"mask": png(np.zeros_like(mask))}, 400, "the mask is empty"),
                 ({"model": "TrainJoint-0000000000"}, 404, "no run named"),
                 ({"model": run_name(run_root, "EvaluateInpainter")}, 404, "is not a PretrainCompletion or")]
        for change, expected_status, message in cases:
            form = {"model": final, "image": png(pixels), "mask": png(mask), **change}
            status, _, body = studio.post("/api/fill", {"model": form["model"]},
                                          {"image": form["image"], "mask": form["mask"]})
            assert status == expected_status and message in json.loads(body)["error"], (change.keys(), body)

        status, _, body = studio.post("/api/decode", {}, {"image": b"GIF89a not really"})
        assert status == 400 and "cannot read the image" in json.loads(body)["error"]
        status, _, body = studio.get(f"/api/sample.png?model={final}")
        assert status == 404 and "is not a TrainDCGAN run" in json.loads(body)["error"]
        status, _, body = studio.request("GET", "/", headers={"Host": "attacker.example"})
        assert status == 400  # a name pointed at this machine by another site

        status, _, body = studio.post("/api/fill", {"model": final}, {"image": png(pixels), "mask": png(mask)})
        assert status == 200 and studio.process.poll() is None  # still serving
    finally:
        studio.close()
    assert "Traceback" not in studio.errors()


def test_serve_says_in_one_line_when_it_cannot_listen(tiny_run_root):
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--root", tiny_run_root, "--port",
                                 str(taken.getsockname()[1])], cwd=REPO_ROOT, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: cannot listen on 127.0.0.1:")
    assert result.stderr.count("\n") == 1


def screenshot(page, tmp_path, name: str) -> None:
    """A screenshot of the whole page, kept with the test's files and in test-artifacts/."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(path, os.path.join(ARTIFACTS, f"studio-{tmp_path.name}-{name}.png"))


def distance_to_segment(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    along = np.clip(((points - start) @ (end - start)) / ((end - start) @ (end - start)), 0, 1)
    return np.linalg.norm(points - (start + along[:, None] * (end - start)), axis=1)


@pytest.mark.skipif(find_chromium() is None,
                    reason=f"no Chromium executable on PATH (looked for {', '.join(CHROMIUM_NAMES)})")
def test_in_chromium_a_brushed_stroke_is_filled_only_where_it_was_painted(studio, run_root, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    dcgan = write_dcgan_run(run_root)
    final = run_name(run_root, "TrainInpainter")
    width, height = 45, 30  # not a multiple of the network's 4
    original = picture(width, height)
    (tmp_path / "photo.png").write_bytes(png(original))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        failures = []
        page.on("pageerror", lambda error: failures.append(str(error)))

        page.goto(studio.url + "/")
        expect(page.locator("#runs tbody tr")).to_have_count(len(storage.list_dirs(run_root)))
        page.fill("#filter", "TrainJoint")
        expect(page.locator("#runs tbody tr:not(.hidden)")).to_have_count(1)
        page.fill("#filter", "")
        screenshot(page, tmp_path, "runs")

        page.click(f"text={final}")
        page.wait_for_load_state("load")
        assert page.evaluate("[...document.images].every(image => image.complete && image.naturalWidth > 0)")
        grid = page.locator("img.pixels").first
        assert grid.evaluate("image => image.getBoundingClientRect().width >= 2 * image.naturalWidth")  # scaled up
        screenshot(page, tmp_path, "run")

        page.click("text=Try it")
        expect(page.locator("#stage")).to_have_attribute("data-loaded", "32x32")  # the first test image
        page.set_input_files("#upload", str(tmp_path / "photo.png"))
        expect(page.locator("#stage")).to_have_attribute("data-loaded", f"{width}x{height}")
        page.fill("#brush", "40")
        box = page.locator("#mask").bounding_box()
        scale = box["width"] / width  # screen pixels per image pixel
        stroke = np.array([[8.5, 10.5], [36.5, 18.5]])  # in image pixels
        screen = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        page.mouse.move(*screen[0])
        page.mouse.down()
        for fraction in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(*(np.array(screen[0]) + fraction * (np.array(screen[1]) - np.array(screen[0]))))
        page.mouse.up()
        painted = "canvas => canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data" \
                  ".filter((value, index) => index % 4 === 3 && value > 127).length"
        assert page.locator("#mask").evaluate(painted) > 0
        page.click("#undo")
        assert page.locator("#mask").evaluate(painted) == 0
        page.mouse.move(*screen[0])
        page.mouse.down()
        for fraction in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(*(np.array(screen[0]) + fraction * (np.array(screen[1]) - np.array(screen[0]))))
        page.mouse.up()
        page.click("#fill")
        page.wait_for_function("document.getElementById('result-telea').src.startsWith('data:')")
        screenshot(page, tmp_path, "try-it")

        radius = 40 / scale / 2
        rows, columns = np.mgrid[:height, :width]
        centres = np.stack([columns.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
        near_stroke = (distance_to_segment(centres, *stroke) <= radius + 1).reshape(height, width)
        on_stroke = (distance_to_segment(centres, *stroke) <= radius - 1).reshape(height, width)
        for method in ("model", "telea"):
            result = from_data_url(page.locator(f"#result-{method}").get_attribute("src"))
            assert result.shape == original.shape, method
            changed = (result != original).any(axis=2)
            assert changed.any() and not (changed & ~near_stroke).any(), method
            red = (original == (255, 0, 0)).all(axis=2)
            assert not (red & on_stroke & ~changed).any(), method  # the red bar under the stroke was filled
        page.click("button.toggle[data-target=result-model]")
        assert (from_data_url(page.locator("#result-model").get_attribute("src")) == original).all()  # before

        page.goto(f"{studio.url}/compare?run={final}&run={run_name(run_root, 'TrainJoint')}")
        expect(page.locator("h2", has_text="Parameters that differ")).to_be_visible()
        screenshot(page, tmp_path, "compare")

        page.goto(f"{studio.url}/sample?model={dcgan}")
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0 "
                               "&& document.getElementById('walk').naturalWidth > 0")
        assert page.evaluate("document.getElementById('grid').naturalWidth") == 4 * 34 + 2  # 16 images of 32 px
        first_walk = page.evaluate("document.getElementById('walk').src")
        page.fill("#t", "1")
        page.wait_for_function(f"document.getElementById('walk').src !== {json.dumps(first_walk)}")
        screenshot(page, tmp_path, "sample")
        browser.close()
    assert not failures, failures
