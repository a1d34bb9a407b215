import gzip
import hashlib
import http.server
import io
import logging
import os
import socket
import sys
import tarfile
import threading
import traceback
import types
import zipfile
from collections import Counter

import numpy as np
import pytest
import requests
import scipy.io
from PIL import Image

from pipeline.datasets import celeba
from pipeline.datasets.archives import UnsafeArchive
from pipeline.datasets.celeba import CelebA, fetch_celeba, read_celeba_partition
from pipeline.datasets.digits import digits_split, fetch_digits
from pipeline.datasets.fetch import DownloadError, fetch_url
from pipeline.datasets.flowers import fetch_flowers, read_flowers_splits
from pipeline.datasets.paintings import Paintings, fetch_paintings


def md5_of(data):
    return hashlib.md5(data).hexdigest()


def tiny_jpeg(shade):
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (shade, 100, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def tar_gz(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def idx_gz(images):
    """uint8 (N, H, W) images as a gzipped IDX file, laid out like MNIST's."""
    header = (0x0803).to_bytes(4, "big") + b"".join(side.to_bytes(4, "big") for side in images.shape)
    return gzip.compress(header + images.astype(np.uint8).tobytes())


def mat_bytes(variables):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


class FileServer:
    """Serves in-memory files on 127.0.0.1 and counts the requests for each path."""

    def __init__(self):
        self.files = {}
        self.cut_short = set()
        self.requests = Counter()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests[self.path] += 1
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in owner.cut_short:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# ---- fetch_url -------------------------------------------------------------------------

PAYLOAD = os.urandom(50_000)


def test_fetch_url_downloads_and_verifies(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    path = fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    assert path == tmp_path / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_fetch_url_rerun_does_not_download_again(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    requests_after_first = server.requests["/data.bin"]
    fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    assert requests_after_first == 1
    assert server.requests["/data.bin"] == 1


def test_fetch_url_checksum_mismatch_keeps_nothing(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match=f"expected {'0' * 32}.*check the URL and md5"):
        fetch_url(server.url("/data.bin"), tmp_path, "data.bin", "0" * 32)
    assert os.listdir(tmp_path) == []


def test_fetch_url_interrupted_download_keeps_nothing(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.cut_short.add("/data.bin")
    with pytest.raises(DownloadError, match="cut off after 25000 of 50000 bytes.*Rerun"):
        fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    assert os.listdir(tmp_path) == []


def test_fetch_url_replaces_a_corrupt_existing_file(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(PAYLOAD[:100])
    fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests["/data.bin"] == 1


def test_fetch_url_failure_removes_a_corrupt_existing_file(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.cut_short.add("/data.bin")
    (tmp_path / "data.bin").write_bytes(b"stale")
    with pytest.raises(DownloadError):
        fetch_url(server.url("/data.bin"), tmp_path, "data.bin", md5_of(PAYLOAD))
    assert os.listdir(tmp_path) == []


def test_fetch_url_http_error_explained(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404.*Check the URL in luigi.cfg"):
        fetch_url(server.url("/missing.bin"), tmp_path, "missing.bin", md5_of(b""))
    assert os.listdir(tmp_path) == []


def test_fetch_url_unreachable_server_explained(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="Check the network connection"):
        fetch_url(f"http://127.0.0.1:{closed_port}/x", tmp_path, "x", md5_of(b""))
    assert os.listdir(tmp_path) == []


# ---- Oxford flowers ---------------------------------------------------------------------

FLOWER_IMAGES = {f"jpg/image_{number:05d}.jpg": tiny_jpeg(number * 30) for number in range(1, 7)}
SETID = {"trnid": np.array([[1, 2]], dtype=np.uint16), "valid": np.array([[3, 4]], dtype=np.uint16),
         "tstid": np.array([[5, 6]], dtype=np.uint16)}


@pytest.fixture
def flowers_server(server):
    server.files.update({
        "/flowers/102flowers.tgz": tar_gz(FLOWER_IMAGES),
        "/flowers/imagelabels.mat": mat_bytes({"labels": np.array([[1, 1, 2, 2, 3, 3]], dtype=np.uint8)}),
        "/flowers/setid.mat": mat_bytes(SETID),
    })
    return server


def flowers_settings(server):
    settings = {}
    for key, name in (("images", "102flowers.tgz"), ("labels", "imagelabels.mat"), ("splits", "setid.mat")):
        settings[f"{key}_url"] = server.url(f"/flowers/{name}")
        settings[f"{key}_md5"] = md5_of(server.files[f"/flowers/{name}"])
    return settings


def test_fetch_flowers_extracts_images_and_reads_splits(flowers_server, tmp_path):
    images_dir = fetch_flowers(tmp_path, **flowers_settings(flowers_server))
    assert images_dir == tmp_path / "jpg"
    assert sorted(os.listdir(images_dir)) == [f"image_{number:05d}.jpg" for number in range(1, 7)]
    assert (images_dir / "image_00003.jpg").read_bytes() == FLOWER_IMAGES["jpg/image_00003.jpg"]
    assert read_flowers_splits(tmp_path / "setid.mat") == {
        "image_00001.jpg": "train", "image_00002.jpg": "train", "image_00003.jpg": "val",
        "image_00004.jpg": "val", "image_00005.jpg": "test", "image_00006.jpg": "test"}


def test_fetch_flowers_rerun_fetches_and_extracts_nothing(flowers_server, tmp_path):
    settings = flowers_settings(flowers_server)
    fetch_flowers(tmp_path, **settings)
    (tmp_path / "jpg" / "image_00001.jpg").unlink()  # would come back if extracted again
    fetch_flowers(tmp_path, **settings)
    assert set(flowers_server.requests.values()) == {1}
    assert not (tmp_path / "jpg" / "image_00001.jpg").exists()


def test_fetch_flowers_refuses_an_escaping_tarball(flowers_server, tmp_path):
    flowers_server.files["/flowers/102flowers.tgz"] = tar_gz({"jpg/../../evil.jpg": b"x"})
    dest = tmp_path / "flowers"
    with pytest.raises(UnsafeArchive, match="evil.jpg"):
        fetch_flowers(dest, **flowers_settings(flowers_server))
    assert not (tmp_path / "evil.jpg").exists()
    assert not (dest / "jpg").exists()


def test_read_flowers_splits_rejects_other_mat_files(tmp_path):
    (tmp_path / "setid.mat").write_bytes(mat_bytes({"labels": np.array([[1]])}))
    with pytest.raises(DownloadError, match="Delete it and rerun"):
        read_flowers_splits(tmp_path / "setid.mat")


# ---- MNIST digits ----------------------------------------------------------------------

TRAIN_DIGITS = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
TEST_DIGITS = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)


def serve_digits(server, train, test, prefix="/mnist"):
    """Put the two IDX files on the server; returns fetch_digits' settings for them."""
    settings = {}
    for key, images in (("train_images", train), ("test_images", test)):
        path = f"{prefix}/{key}.gz"
        server.files[path] = idx_gz(images)
        settings[f"{key}_url"] = server.url(path)
        settings[f"{key}_md5"] = md5_of(server.files[path])
    return settings


def png_pixels(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def test_fetch_digits_writes_each_digit_as_png_and_splits_off_val(server, tmp_path):
    images_dir = fetch_digits(tmp_path, **serve_digits(server, TRAIN_DIGITS, TEST_DIGITS))
    assert images_dir == tmp_path / "images"
    files = sorted(f"{split}/{name}" for split in ("train", "test") for name in os.listdir(images_dir / split))
    assert files == [f"test/{i:05d}.png" for i in range(3)] + [f"train/{i:05d}.png" for i in range(12)]
    mode, pixels = png_pixels(images_dir / "train" / "00004.png")
    assert mode == "L" and np.array_equal(pixels, TRAIN_DIGITS[4])
    assert np.array_equal(png_pixels(images_dir / "test" / "00002.png")[1], TEST_DIGITS[2])
    split = digits_split(files)
    assert [split[f"train/{i:05d}.png"] for i in range(12)] == ["train"] * 10 + ["val"] * 2
    assert {split[f"test/{i:05d}.png"] for i in range(3)} == {"test"}
    assert leftovers(tmp_path) == [".images.written"]


def test_fetch_digits_rerun_downloads_and_writes_nothing(server, tmp_path):
    settings = serve_digits(server, TRAIN_DIGITS, TEST_DIGITS)
    first = tmp_path / "images" / "train" / "00000.png"
    fetch_digits(tmp_path, **settings)
    written = first.stat().st_mtime_ns
    fetch_digits(tmp_path, **settings)
    assert set(server.requests.values()) == {1}
    assert first.stat().st_mtime_ns == written


def test_fetch_digits_rewrites_the_images_of_a_replaced_file(server, tmp_path):
    fetch_digits(tmp_path, **serve_digits(server, TRAIN_DIGITS, TEST_DIGITS))
    fewer = 255 - TRAIN_DIGITS[:6]
    images_dir = fetch_digits(tmp_path, **serve_digits(server, fewer, TEST_DIGITS, prefix="/mirror"))
    assert sorted(os.listdir(images_dir / "train")) == [f"{i:05d}.png" for i in range(6)]
    assert np.array_equal(png_pixels(images_dir / "train" / "00005.png")[1], fewer[5])


def test_fetch_digits_refuses_a_file_that_is_not_idx_images(server, tmp_path):
    settings = serve_digits(server, TRAIN_DIGITS, TEST_DIGITS)
    server.files["/mnist/test_images.gz"] = gzip.compress(b"not an IDX file")
    settings["test_images_md5"] = md5_of(server.files["/mnist/test_images.gz"])
    with pytest.raises(DownloadError, match="not a gzipped IDX file of MNIST images.*luigi.cfg"):
        fetch_digits(tmp_path, **settings)
    assert not (tmp_path / "images").exists()
    assert leftovers(tmp_path) == []


# ---- CelebA -------------------------------------------------------------------------------

CELEBA_ZIP = zip_bytes({f"img_align_celeba/{number:06d}.jpg": tiny_jpeg(number) for number in range(1, 5)})
CELEBA_PARTITION = b"000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n"
CELEBA_SETTINGS = {**CelebA.settings, "md5": md5_of(CELEBA_ZIP), "partition_md5": md5_of(CELEBA_PARTITION)}


@pytest.fixture
def celeba_source(tmp_path):
    source = tmp_path / "manual"
    source.mkdir()
    (source / "img_align_celeba.zip").write_bytes(CELEBA_ZIP)
    (source / "list_eval_partition.txt").write_bytes(CELEBA_PARTITION)
    return source


def test_fetch_celeba_from_source_folder(celeba_source, tmp_path):
    dest = tmp_path / "celeba"
    images_dir = fetch_celeba(dest, source=celeba_source, **CELEBA_SETTINGS)
    assert images_dir == dest / "img_align_celeba"
    assert sorted(os.listdir(images_dir)) == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert read_celeba_partition(dest / "list_eval_partition.txt") == {
        "000001.jpg": "train", "000002.jpg": "train", "000003.jpg": "val", "000004.jpg": "test"}


def test_fetch_celeba_source_missing_files_explained(celeba_source, tmp_path):
    (celeba_source / "img_align_celeba.zip").unlink()
    with pytest.raises(DownloadError) as failure:
        fetch_celeba(tmp_path / "celeba", source=celeba_source, **CELEBA_SETTINGS)
    message = str(failure.value)
    assert "lacks img_align_celeba.zip" in message
    assert celeba.PAGE in message and "source" in message


def test_fetch_celeba_source_with_wrong_checksum_explained(celeba_source, tmp_path):
    (celeba_source / "img_align_celeba.zip").write_bytes(CELEBA_ZIP[:-10])
    with pytest.raises(DownloadError, match="img_align_celeba.zip has md5 .*Download it again"):
        fetch_celeba(tmp_path / "celeba", source=celeba_source, **CELEBA_SETTINGS)


def fake_gdown(monkeypatch, behaviour):
    import gdown

    calls = []

    def download(id, output, **options):
        calls.append(id)
        return behaviour(id, output)

    monkeypatch.setattr(gdown, "download", download)
    return calls


def test_fetch_celeba_from_google_drive_verifies_and_skips_on_rerun(monkeypatch, tmp_path):
    served = {"images-id": CELEBA_ZIP, "partition-id": CELEBA_PARTITION}

    def write_file(file_id, output):
        with open(output, "wb") as out:
            out.write(served[file_id])
        return output

    calls = fake_gdown(monkeypatch, write_file)
    options = {**CELEBA_SETTINGS, "file_id": "images-id", "partition_file_id": "partition-id"}
    images_dir = fetch_celeba(tmp_path, **options)
    fetch_celeba(tmp_path, **options)
    assert calls == ["images-id", "partition-id"]
    assert len(os.listdir(images_dir)) == 4
    assert leftovers(tmp_path) == [".img_align_celeba.zip.extracted"]


def test_fetch_celeba_drive_quota_points_to_manual_download(monkeypatch, tmp_path):
    import gdown

    def refuse(file_id, output):
        raise gdown.exceptions.FileURLRetrievalError(
            "Too many users have viewed or downloaded this file recently.")

    fake_gdown(monkeypatch, refuse)
    with pytest.raises(DownloadError) as failure:
        fetch_celeba(tmp_path, **CELEBA_SETTINGS)
    message = str(failure.value)
    assert "quota" in message and "by hand" in message and "pass that folder as source" in message
    assert os.listdir(tmp_path) == []


def test_fetch_celeba_drive_wrong_content_is_not_kept(monkeypatch, tmp_path):
    def quota_page(file_id, output):
        with open(output, "wb") as out:
            out.write(b"<html>Google Drive - Quota exceeded</html>")
        return output

    fake_gdown(monkeypatch, quota_page)
    with pytest.raises(DownloadError, match="has md5 .*pass that folder as source"):
        fetch_celeba(tmp_path, **CELEBA_SETTINGS)
    assert os.listdir(tmp_path) == []


def test_read_celeba_partition_rejects_malformed_lines(tmp_path):
    (tmp_path / "partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(DownloadError, match="line 2 .*Replace it"):
        read_celeba_partition(tmp_path / "partition.txt")


# ---- Painter by Numbers -------------------------------------------------------------------

def painting_zip(part):
    return zip_bytes({f"train_{part}/{part}{number}.jpg": tiny_jpeg(number) for number in range(3)})


SECRET_KEY = "s3cr3t-kaggle-key-0123456789"
COMPETITION = Paintings.settings["competition"]


@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name == "XDG_CONFIG_HOME":
            monkeypatch.delenv(name)
    return home


def test_fetch_paintings_from_source_folder(tmp_path):
    source = tmp_path / "manual"
    source.mkdir()
    for part in (1, 2):
        (source / f"train_{part}.zip").write_bytes(painting_zip(part))
    images_dir = fetch_paintings(tmp_path / "paintings_data", source=source, parts=(1, 2), competition=COMPETITION)
    found = sorted(str(path.relative_to(images_dir)) for path in images_dir.rglob("*.jpg"))
    assert found == [f"train_{part}/{part}{number}.jpg" for part in (1, 2) for number in range(3)]


def test_fetch_paintings_source_missing_part_explained(tmp_path):
    with pytest.raises(DownloadError, match="lacks train_3.zip.*kaggle.com/c/painter-by-numbers/data"):
        fetch_paintings(tmp_path / "dest", source=tmp_path, parts=(3,), competition=COMPETITION)


@pytest.mark.parametrize("parts", [(), (0,), (10,), ("1",)])
def test_fetch_paintings_rejects_unknown_parts(tmp_path, parts):
    with pytest.raises(DownloadError, match="numbered 1 to 9"):
        fetch_paintings(tmp_path, source=tmp_path, parts=parts, competition=COMPETITION)


def test_kaggle_missing_credentials_explained_without_importing_kaggle(no_kaggle_credentials, monkeypatch,
                                                                       tmp_path):
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    with pytest.raises(DownloadError) as failure:
        fetch_paintings(tmp_path / "dest", competition=COMPETITION)
    message = str(failure.value)
    assert "No Kaggle credentials" in message
    assert "~/.kaggle/kaggle.json" in message and "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message
    assert "kaggle" not in sys.modules


def install_fake_kaggle(monkeypatch, download):
    calls = []

    class FakeKaggleApi:
        def authenticate(self):
            pass

        def competition_download_file(self, competition, file_name, path, quiet):
            calls.append((competition, file_name))
            download(file_name, path)

    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(KaggleApi=FakeKaggleApi))
    return calls


def test_kaggle_download_with_credentials_file(no_kaggle_credentials, monkeypatch, tmp_path):
    (no_kaggle_credentials / ".kaggle").mkdir()
    (no_kaggle_credentials / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')

    def deliver(file_name, path):
        part = int(file_name.removeprefix("train_").removesuffix(".zip"))
        with open(os.path.join(path, file_name), "wb") as out:
            out.write(painting_zip(part))

    calls = install_fake_kaggle(monkeypatch, deliver)
    dest = tmp_path / "dest"
    images_dir = fetch_paintings(dest, parts=(1, 2), competition=COMPETITION)
    fetch_paintings(dest, parts=(1, 2), competition=COMPETITION)
    assert calls == [("painter-by-numbers", "train_1.zip"), ("painter-by-numbers", "train_2.zip")]
    assert len(list(images_dir.rglob("*.jpg"))) == 6
    assert sorted(os.listdir(dest)) == [".train_1.zip.extracted", ".train_2.zip.extracted",
                                        "paintings", "train_1.zip", "train_2.zip"]


def test_kaggle_forbidden_asks_to_accept_rules_and_hides_credentials(no_kaggle_credentials, monkeypatch,
                                                                     tmp_path, caplog):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET_KEY)

    def forbid(file_name, path):
        response = requests.Response()
        response.status_code = 403
        raise requests.HTTPError(f"403 Client Error for https://someone:{SECRET_KEY}@www.kaggle.com/",
                                 response=response)

    install_fake_kaggle(monkeypatch, forbid)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DownloadError) as failure:
        fetch_paintings(tmp_path / "dest", competition=COMPETITION)
    assert "https://www.kaggle.com/c/painter-by-numbers/rules" in str(failure.value)
    report = "".join(traceback.format_exception(failure.value))
    assert SECRET_KEY not in report
    assert SECRET_KEY not in caplog.text
    assert not (tmp_path / "dest" / "train_1.zip").exists()


def test_kaggle_truncated_delivery_is_not_kept(no_kaggle_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_KEY)

    def deliver_half(file_name, path):
        with open(os.path.join(path, file_name), "wb") as out:
            out.write(painting_zip(1)[:200])

    install_fake_kaggle(monkeypatch, deliver_half)
    with pytest.raises(DownloadError, match="did not deliver a complete train_1.zip"):
        fetch_paintings(tmp_path / "dest", competition=COMPETITION)
    assert os.listdir(tmp_path / "dest") == []


def test_kaggle_rejected_credentials_explained(no_kaggle_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_KEY)

    class RejectingKaggleApi:
        def authenticate(self):
            sys.exit(1)

    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(KaggleApi=RejectingKaggleApi))
    with pytest.raises(DownloadError, match="did not accept the credentials") as failure:
        fetch_paintings(tmp_path / "dest", competition=COMPETITION)
    assert SECRET_KEY not in str(failure.value)
