"""PrepareImages on each dataset, built from small generated files: flowers and digits over
a local HTTP server, CelebA and Painter by Numbers from archives "downloaded by hand", and a
folder of broken and awkward files."""
import io
import multiprocessing
import os
import re
from collections import Counter

import luigi
import luigi.configuration
import numpy as np
import pandas as pd
import pytest
from luigi.task_register import Register
from PIL import Image

from pipeline import PrepareImages, ingest, sources, storage
from pipeline.imagefiles import decode_image
from pipeline.ingest import DecodeSettings, ingest_folder
from tests.test_downloads import mat_bytes, md5_of, serve_digits, tar_gz, zip_bytes
from tests.test_imagefiles import KEPT, REJECTION_REASONS, awkward_files, png_header_only


def jpeg_bytes(seed, size=(24, 20)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def settings():
    """Sets luigi.cfg values for one test and restores them afterwards."""
    config = luigi.configuration.get_config()
    previous = []

    def set_values(section, **values):
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            previous.append((section, key, config.get(section, key, None)))
            config.set(section, key, str(value))
        Register.clear_instance_cache()

    yield set_values
    for section, key, value in reversed(previous):
        if value is None:
            config.remove_option(section, key)
        else:
            config.set(section, key, value)
    Register.clear_instance_cache()


def prepare(**params):
    """Run PrepareImages; return the task, its manifest summary, splits and rejection reasons by path."""
    task = PrepareImages(**{"image_size": 16, "decode_workers": 1, **params})
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    summary = storage.read_json(task.path("manifest.json"))["summary"]
    splits = pd.read_csv(task.path("images.csv")).set_index("relative_path")["split"].to_dict()
    reasons = pd.read_csv(task.path("rejected.csv")).set_index("relative_path")["reason"].to_dict()
    return task, summary, splits, reasons


def failure(task, caplog) -> str:
    """Run a task that must fail; return what luigi logged about it."""
    caplog.set_level("ERROR", logger="luigi-interface")
    assert not luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert not task.complete()
    return caplog.text


def test_flowers_fetched_over_http_keep_the_official_split(artifact_root, settings, server):
    images = {f"jpg/image_{number:05d}.jpg": jpeg_bytes(number) for number in range(1, 8)}
    images["jpg/image_00007.jpg"] = images["jpg/image_00007.jpg"][:100]  # cut short
    served = {"images": ("102flowers.tgz", tar_gz(images)),
              "labels": ("imagelabels.mat", mat_bytes({"labels": np.ones((1, 7), dtype=np.uint8)})),
              "splits": ("setid.mat", mat_bytes({"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5]]),
                                                 "tstid": np.array([[6, 7]])}))}
    for key, (name, data) in served.items():
        server.files[f"/mirror/{name}"] = data
        settings("flowers", **{f"{key}_url": server.url(f"/mirror/{name}"), f"{key}_md5": md5_of(data)})

    task, summary, splits, reasons = prepare(dataset="flowers", decode_workers=2)
    assert splits == {"image_00001.jpg": "train", "image_00002.jpg": "train", "image_00003.jpg": "train",
                      "image_00004.jpg": "val", "image_00005.jpg": "val", "image_00006.jpg": "test"}
    assert reasons["image_00007.jpg"].startswith("cannot decode")
    assert (summary["files"], summary["kept"], summary["rejected"], summary["split"]) == (7, 6, 1, "official")
    assert summary["split_counts"] == {"train": 3, "val": 2, "test": 1}
    config = storage.read_json(task.path("manifest.json"))["config"]["dataset_settings"]
    assert config["images_url"] == server.url("/mirror/102flowers.tgz")

    prepare(dataset="flowers", image_size=8)  # another run reuses the verified downloads
    assert set(server.requests.values()) == {1}


def test_digits_fetched_over_http_become_greyscale_rgb_with_a_val_split(artifact_root, settings, server):
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    settings("digits", **serve_digits(server, train, test))

    task, summary, splits, reasons = prepare(dataset="digits", image_size=32)
    assert splits == {**{f"train/{i:05d}.png": "train" for i in range(5)}, "train/00005.png": "val",
                      "test/00000.png": "test", "test/00001.png": "test"}
    assert (summary["kept"], summary["rejected"], summary["split"]) == (8, 0, "official")
    table = pd.read_csv(task.path("images.csv")).set_index("relative_path")
    shard, row = table.loc["train/00003.png", ["shard", "row"]]
    image = np.load(task.path(shard))[row]
    assert image.shape == (3, 32, 32)  # 28 px digits are upscaled, like any image below image_size
    assert np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2])
    expected = np.asarray(Image.fromarray(train[3]).resize((32, 32), Image.Resampling.LANCZOS))
    # Pillow's Lanczos-3 or the SIMD one: on noise their overshoots clip apart by a few levels.
    assert np.abs(image[0].astype(int) - expected).mean() <= 1
    config = storage.read_json(task.path("manifest.json"))["config"]["dataset_settings"]
    assert config["train_images_url"] == server.url("/mnist/train_images.gz")


def test_celeba_from_files_downloaded_by_hand_keeps_the_official_partition(artifact_root, settings, tmp_path):
    members = {f"img_align_celeba/{number:06d}.jpg": jpeg_bytes(number) for number in range(1, 6)}
    members["img_align_celeba/000006.jpg"] = members["img_align_celeba/000002.jpg"]
    archive = zip_bytes(members)
    partition = b"000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n000004.jpg 1\n000005.jpg 2\n000006.jpg 2\n"
    manual = tmp_path / "by-hand"
    manual.mkdir()
    (manual / "img_align_celeba.zip").write_bytes(archive)
    (manual / "list_eval_partition.txt").write_bytes(partition)
    settings("celeba", md5=md5_of(archive), partition_md5=md5_of(partition), file_id="never-used")

    _, summary, splits, reasons = prepare(dataset="celeba", source=str(manual))
    assert splits == {"000001.jpg": "train", "000002.jpg": "train", "000003.jpg": "train",
                      "000004.jpg": "val", "000005.jpg": "test"}
    assert reasons == {"000006.jpg": "duplicate: same bytes as 000002.jpg"}
    assert (summary["kept"], summary["rejected"], summary["rejected_by_kind"]) == (5, 1, {"duplicate": 1})

    # Shares at which these five names give every split at least one image.
    _, summary, splits, _ = prepare(dataset="celeba", source=str(manual), official_split=False,
                                    val_fraction=0.2, test_fraction=0.2)
    assert summary["split"] == "path hash"
    assert splits == {path: sources.hash_split(path, 0.2, 0.2) for path in splits}


def test_paintings_from_zips_downloaded_by_hand_use_only_the_chosen_parts(artifact_root, tmp_path):
    manual = tmp_path / "by-hand"
    manual.mkdir()
    for part in (1, 2, 3):
        members = {f"train_{part}/{part}{number}.jpg": jpeg_bytes(10 * part + number) for number in range(4)}
        (manual / f"train_{part}.zip").write_bytes(zip_bytes(members))

    first, summary, splits, _ = prepare(dataset="paintings", source=str(manual), paintings_parts=[1, 3])
    assert sorted(splits) == [f"train_{part}/{part}{number}.jpg" for part in (1, 3) for number in range(4)]
    assert splits == {path: sources.hash_split(path, 0.1, 0.1) for path in splits}
    assert summary["split"] == "path hash"

    second, _, more_splits, _ = prepare(dataset="paintings", source=str(manual), paintings_parts=[1, 2, 3])
    assert second.directory != first.directory
    assert len(more_splits) == 12 and all(more_splits[path] == split for path, split in splits.items())


def test_paintings_without_kaggle_credentials_say_what_to_do(artifact_root, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [name for name in os.environ if name.startswith("KAGGLE_") or name == "XDG_CONFIG_HOME"]:
        monkeypatch.delenv(name)
    log = failure(PrepareImages(dataset="paintings", image_size=16), caplog)
    assert re.search("DownloadError: No Kaggle credentials.*kaggle.json.*by hand", log)


def test_the_offline_sample_is_split_by_photograph(artifact_root):
    _, summary, splits, _ = prepare(dataset="sample", image_size=32)
    photo_splits = {}
    for path, split in splits.items():
        photo_splits.setdefault(path.split("/")[0], set()).add(split)
    assert all(len(found) == 1 for found in photo_splits.values())  # no photograph is in two splits
    assert {photo for photo, found in photo_splits.items() if found != {"train"}} == set(sources.SAMPLE_SPLIT)
    assert {photo: found.pop() for photo, found in photo_splits.items() if photo in sources.SAMPLE_SPLIT} == \
        sources.SAMPLE_SPLIT
    assert summary["split"] == "official"
    crops = sources.SAMPLE_CROPS_PER_PHOTO
    assert summary["split_counts"] == {"train": crops * (len(sources.SAMPLE_PHOTOS) - 3), "val": crops,
                                       "test": 2 * crops}


def test_source_is_refused_where_the_dataset_takes_none(tmp_path):
    with pytest.raises(ValueError, match="dataset=flowers takes no source"):
        PrepareImages(dataset="flowers", source=str(tmp_path))


def test_awkward_files_are_each_kept_or_rejected_with_a_reason(artifact_root, tmp_path):
    folder = tmp_path / "awkward"
    (folder / "repeats").mkdir(parents=True)
    for name, data in awkward_files().items():
        (folder / name).write_bytes(data)
    (folder / "repeats" / "photo.jpg").write_bytes((folder / "photo.jpg").read_bytes())
    # In the workers Pillow's own check fires first at the task's limit, and says so.
    expected = {**REJECTION_REASONS, "bomb_header.png": "decompression bomb",
                "repeats/photo.jpg": "duplicate: same bytes as photo.jpg"}

    _, summary, splits, reasons = prepare(dataset="folder", source=str(folder), max_pixels=10_000_000)
    assert set(splits) == KEPT
    assert set(reasons) == set(expected)
    assert all(reasons[name].startswith(prefix) for name, prefix in expected.items()), reasons
    assert (summary["files"], summary["kept"], summary["rejected"]) == (len(KEPT) + len(expected), len(KEPT),
                                                                        len(expected))
    assert summary["rejected_by_kind"] == dict(Counter(prefix.split(":")[0] for prefix in expected.values()))

    _, _, splits, reasons = prepare(dataset="folder", source=str(folder), max_pixels=10_000_000, reject_smaller=True)
    assert set(splits) == KEPT - {"tiny.png"}
    assert reasons["tiny.png"].startswith("too small: 8x8")


@pytest.mark.parametrize("max_pixels, reason", [(100_000_000, "cannot decode"), (99_999_999, "decompression bomb")])
def test_pixel_limit_in_the_workers_is_exactly_max_pixels(tmp_path, max_pixels, reason):
    # 10,000 x 10,000 is above Pillow's default limit (about 89M pixels); the header-only
    # file fails as truncated once a limit lets it through to decoding.
    (tmp_path / "huge.png").write_bytes(png_header_only(10_000, 10_000))
    limit_here = Image.MAX_IMAGE_PIXELS
    [result] = ingest_folder(str(tmp_path), ["huge.png"], DecodeSettings(16, max_pixels), workers=1)
    assert result.reason.startswith(reason), result.reason
    assert Image.MAX_IMAGE_PIXELS == limit_here


@pytest.mark.parametrize("broken, limit, message", [
    (2, 0.3, r"2 of 5 files rejected \(40%\), above max_rejected_fraction=0.3"),
    (2, 0.5, None),
    (3, 1.0, "no usable images among 3 files"),
])
def test_rejections_fail_the_task_above_the_threshold_or_when_nothing_is_left(artifact_root, tmp_path, caplog,
                                                                               broken, limit, message):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for number in range(5 - broken if broken < 3 else 0):
        (folder / f"good-{number}.jpg").write_bytes(jpeg_bytes(number))
    for number in range(broken):
        (folder / f"notes-{number}.txt").write_text("not a picture")
    task = PrepareImages(dataset="folder", source=str(folder), image_size=16, decode_workers=1,
                         max_rejected_fraction=limit, val_fraction=0, test_fraction=0)  # five files: train only
    if message is None:
        assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    else:
        assert re.search(message, failure(task, caplog))
    assert len(pd.read_csv(task.path("rejected.csv"))) == broken


def folder_of_good_and_bad_files(folder, count):
    """count files, every third one not an image; the good ones' expected pixels by name."""
    folder.mkdir()
    expected = {}
    for number in range(count):
        name = f"file-{number:02d}.jpg"
        if number % 3 == 2:
            (folder / name).write_text("not a picture")
            continue
        data = jpeg_bytes(number, size=(30 + number, 20))
        (folder / name).write_bytes(data)
        expected[name] = decode_image(data, 16, 10_000_000).transpose(2, 0, 1)
    return sorted(os.listdir(folder)), expected


def assert_ingested(results, paths, expected):
    assert [result.relative_path for result in results] == paths
    for result in results:
        if result.relative_path in expected:
            assert not result.reason
            np.testing.assert_array_equal(result.image, expected[result.relative_path])
        else:
            assert result.image is None and result.reason.startswith("not an image"), result


def test_results_keep_their_order_and_pixels_when_the_shared_slots_are_reused(tmp_path, monkeypatch):
    # Two blocks of two slots for eleven files: every block is written over several times.
    monkeypatch.setattr(ingest, "CHUNK_SIZE", 2)
    monkeypatch.setattr(ingest, "CHUNKS_IN_FLIGHT_PER_WORKER", 1)
    paths, expected = folder_of_good_and_bad_files(tmp_path / "files", 11)
    results = list(ingest_folder(str(tmp_path / "files"), paths, DecodeSettings(16, 10_000_000), workers=2))
    assert_ingested(results, paths, expected)


def test_spawned_workers_where_there_is_no_fork(tmp_path, monkeypatch):
    # Windows has no fork: the shared slots must then be inherited by spawned workers.
    monkeypatch.setattr(ingest, "_pool_context", lambda: multiprocessing.get_context("spawn"))
    paths, expected = folder_of_good_and_bad_files(tmp_path / "files", 5)
    results = list(ingest_folder(str(tmp_path / "files"), paths, DecodeSettings(16, 10_000_000), workers=1))
    assert_ingested(results, paths, expected)
