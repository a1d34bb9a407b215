"""`python -m pipeline report`: a static page that opens from disk with every image in place, and
that leads with the answer."""
import copy
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from pipeline.artifacts import storage
from pipeline.cli import main
from pipeline.report import verdict_lines
from tests.test_cli import run_name

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome", "chrome-headless-shell")
# The report's sections in the order a reader needs them: the answer first, the settings last.
SECTIONS = ("Verdict", "Evaluation grids and images", "Test metrics", "Loss curves", "Parameters")
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
    """The page's image sources, its text, and the text of each section heading (h2) and list item (li)."""

    def __init__(self):
        super().__init__()
        self.images, self.text, self.headings, self.items = [], [], [], []
        self.open = None  # the h2 or li list whose last entry the text goes to

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in ("h2", "li"):
            self.open = self.headings if tag == "h2" else self.items
            self.open.append("")

    def handle_endtag(self, tag):
        if tag in ("h2", "li"):
            self.open = None

    def handle_data(self, data):
        self.text.append(data)
        if self.open is not None:
            self.open[-1] += data

    def verdict(self) -> list[str]:
        return [item for item in self.items if re.match(r"(box|strokes), ", item)]


def read_page(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as file:
        page.feed(file.read())
    return page


def write_report(root: str, out, capsys) -> str:
    assert main(["report", "TrainInpainter", "--root", root, "--out", str(out)]) == 0
    index = capsys.readouterr().out.strip()
    assert index == str(out / "index.html")
    return index


@pytest.fixture
def report_page(run_root, tmp_path, capsys) -> str:
    return write_report(run_root, tmp_path / "report", capsys)


def test_report_leads_with_the_verdict_then_grids_metrics_loss_curves_and_parameters(report_page):
    page = read_page(report_page)
    text = " ".join(page.text)
    positions = [next(index for index, heading in enumerate(page.headings) if heading.startswith(section))
                 for section in SECTIONS]
    assert positions[0] == 0 and positions == sorted(positions)
    # The tiny run's metrics at its training size and at its eval_sizes, smallest first.
    assert [line.split(":")[0] for line in page.verdict()] == ["box, 32 px", "strokes, 32 px", "box, 40 px",
                                                               "strokes, 40 px"]
    for line in page.verdict():
        assert re.fullmatch(r"\w+, [^:]+: hole PSNR [\d.]+ dB vs [\d.]+ dB \([+−][\d.]+ dB, (better|worse|equal)\); "
                            r"SSIM .+; border gradient error .+; realism: C2ST accuracy .+; hole patch SWD .+", line), line
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
    # over all masks, then per kind, at each of the two sizes
    assert len(re.findall(r"psnr_hole: the model (beats|does not beat) the best baseline", text)) == 6
    assert len(re.findall(r"c2st_accuracy: the model (beats|does not beat) the best baseline", text)) == 6
    assert "phase3_steps" in text and "width" in text


def write_two_sizes(root: str) -> None:
    """The final run's copy of metrics.json as an evaluation at its training size (32 px) and at
    64 px, where the model trails Telea in the boxes and 5 of the 12 images were smaller than 64 px."""
    final = storage.join(root, run_name(root, "TrainInpainter"))
    manifest = storage.read_manifest(final)
    metrics = manifest["summary"]["metrics_summary"]
    larger = {**copy.deepcopy(metrics), "n_images": 12, "n_at_own_size": 5}
    for method, psnr in (("model", 17.4), ("telea", 17.8), ("navier_stokes", 17.1)):
        larger["by_kind"]["box"][method]["psnr_hole"] = psnr
    metrics.update(image_size=32, sizes={"32": {**copy.deepcopy(metrics), "n_at_own_size": 0}, "64": larger})
    del manifest["checksum"]  # write_manifest closes it anew
    storage.write_manifest(final, manifest)


@pytest.mark.parametrize("run_root", ["local"], indirect=True)
def test_the_verdict_has_a_line_per_mask_kind_and_image_size(run_root, tmp_path, capsys):
    write_two_sizes(run_root)
    page = read_page(write_report(run_root, tmp_path / "report", capsys))
    verdict = page.verdict()
    assert [line.split(":")[0] for line in verdict] == ["box, 32 px", "strokes, 32 px", "box, 64 px", "strokes, 64 px"]
    assert verdict[2].startswith("box, 64 px: hole PSNR 17.4 dB vs 17.8 dB (−0.4 dB, worse); SSIM ")
    assert verdict[2].endswith("; 5 of 12 images scored at their own smaller size")
    assert not any("own smaller size" in line for line in verdict[:2])
    text = " ".join(page.text)
    assert "32 px" in text and "12 test images (5 of 12 images scored at their own smaller size)" in text


def test_a_metrics_json_from_before_per_size_results_gives_one_line_per_mask_kind():
    methods = {"model": {"psnr_hole": 20.0, "ssim": 0.8}, "telea": {"psnr_hole": 19.0, "ssim": 0.85},
               "navier_stokes": {"psnr_hole": 19.5, "ssim": 0.7}, "mean_fill": {"psnr_hole": 30.0, "ssim": 0.9}}
    old = {"n_images": 4, "methods": methods, "by_kind": {"box": methods}, "by_area": {}}
    assert verdict_lines(old) == ["box, size unknown: hole PSNR 20.0 dB vs 19.5 dB (+0.5 dB, better); "
                                  "SSIM 0.800 vs 0.850 (−0.050, worse)"]
    assert verdict_lines({**old, "image_size": 64, "by_kind": {}})[0].startswith("all masks, 64 px: hole PSNR 20.0 dB")


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
