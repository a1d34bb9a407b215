"""`python -m pipeline report`: a static page that opens from disk with every image in place."""
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from pipeline.cli import main

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome", "chrome-headless-shell")
# Appended to a copy of the page: once every image has loaded or failed, the body records the
# count and the sources of those that failed, for --dump-dom to print.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(image => !image.complete || image.naturalWidth === 0);
  document.body.dataset.images = document.images.length;
  document.body.dataset.broken = broken.map(image => image.getAttribute("src")).join(" ");
});
</script>"""


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def read_page(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as file:
        page.feed(file.read())
    return page


@pytest.fixture
def report_page(run_root, tmp_path, capsys) -> str:
    out = tmp_path / "report"
    assert main(["report", "TrainInpainter", "--root", run_root, "--out", str(out)]) == 0
    index = capsys.readouterr().out.strip()
    assert index == str(out / "index.html")
    return index


def test_report_holds_parameters_grids_loss_curves_and_metrics_with_baselines(report_page):
    page = read_page(report_page)
    text = " ".join(page.text)
    grids = [source for source in page.images if source.endswith("-grid.png")]
    assert len(grids) == 3 and "images/loss_curves.png" in page.images
    for phase in (1, 2, 3):
        assert f"RenderEvalGrid, phase {phase}" in text
    for source in page.images:  # relative paths to files next to the page
        assert not os.path.isabs(source)
        assert Image.open(os.path.join(os.path.dirname(report_page), source)).size > (0, 0)
    for method in ("model", "mean_fill", "telea", "navier_stokes"):
        assert method in text
    assert "floor" in text and "classical baseline" in text
    for kind in ("box", "strokes"):  # per mask kind, with the realism measures and the hole-area buckets
        assert f"{kind} masks" in text and f"{kind} masks by hole area" in text
    # over all masks, then per kind
    assert len(re.findall(r"psnr_hole: the model (beats|does not beat) the best baseline", text)) == 3
    assert len(re.findall(r"c2st_accuracy: the model (beats|does not beat) the best baseline", text)) == 3
    assert "phase3_steps" in text and "width" in text


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def broken_images_in_chromium(page: str, browser: list[str]) -> tuple[int, list[str]]:
    """(how many images the page has, the sources of those that did not load) as Chromium sees them."""
    checked = os.path.join(os.path.dirname(page), "checked.html")  # next to the page: sources resolve alike
    with open(page, encoding="utf-8") as source, open(checked, "w", encoding="utf-8") as target:
        target.write(source.read().replace("</body>", IMAGE_CHECK + "</body>"))
    dumped = subprocess.run([*browser, "--dump-dom", f"file://{checked}"], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    body = re.search(r'<body data-images="(\d+)" data-broken="([^"]*)">', dumped.stdout)
    assert body, dumped.stdout[-2000:]
    return int(body.group(1)), body.group(2).split()


@pytest.mark.skipif(find_chromium() is None,
                    reason=f"no Chromium binary on PATH (looked for {', '.join(CHROMIUM_NAMES)})")
@pytest.mark.parametrize("run_root", ["local"], indirect=True)
def test_report_opens_in_headless_chromium_with_every_image_loaded(report_page, tmp_path):
    browser = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    assert broken_images_in_chromium(report_page, browser) == (len(read_page(report_page).images), [])

    screenshot = tmp_path / "report.png"
    shot = subprocess.run([*browser, "--window-size=1000,1400", f"--screenshot={screenshot}", f"file://{report_page}"],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    colours = Image.open(screenshot).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, tables and pictures, not an empty page

    os.remove(os.path.join(os.path.dirname(report_page), "images", "loss_curves.png"))  # the check can fail
    assert broken_images_in_chromium(report_page, browser)[1] == ["images/loss_curves.png"]
