"""PrepareImages on each dataset, built from small generated files: flowers and digits over
a local HTTP server, CelebA and Painter by Numbers from archives "downloaded by hand", and a
folder of broken and awkward files."""
import io
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

from pipeline import PrepareImages, datasets
from pipeline.artifacts import storage
from pipeline.datasets import sample
from pipeline.errors import UserError
from tests.test_decode import KEPT, REJECTION_REASONS, awkward_files
from tests.test_downloads import mat_bytes, md5_of, serve_digits, tar_gz, zip_bytes


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
    assert splits == {path: datasets.hash_split(path, 0.2, 0.2) for path in splits}


def test_paintings_from_zips_downloaded_by_hand_use_only_the_chosen_parts(artifact_root, tmp_path):
    manual = tmp_path / "by-hand"
    manual.mkdir()
    for part in (1, 2, 3):
        members = {f"train_{part}/{part}{number}.jpg": jpeg_bytes(10 * part + number) for number in range(4)}
        (manual / f"train_{part}.zip").write_bytes(zip_bytes(members))

    first, summary, splits, _ = prepare(dataset="paintings", source=str(manual), paintings_parts=[1, 3])
    assert sorted(splits) == [f"train_{part}/{part}{number}.jpg" for part in (1, 3) for number in range(4)]
    assert splits == {path: datasets.hash_split(path, 0.1, 0.1) for path in splits}
    assert summary["split"] == "path hash"

    second, _, more_splits, _ = prepare(dataset="paintings", source=str(manual), paintings_parts=[1, 2, 3])
    assert second.directory != first.directory
    assert len(more_splits) == 12 and all(more_splits[path] == split for path, split in splits.items())


def test_paintings_without_kaggle_credentials_say_what_to_do(artifact_root, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [name for name in os.environ if name.startswith("KAGGLE_") or name == "XDG_CONFIG_HOME"]:
        monkeypatch.delenv(name)
    log = failure(PrepareImages(dataset="paintings", image_size=16), caplog)
    assert re.search("No Kaggle credentials.*kaggle.json.*by hand", log) and "Traceback" not in log


def test_the_offline_sample_is_split_by_photograph(artifact_root):
    _, summary, splits, _ = prepare(dataset="sample", image_size=32)
    photo_splits = {}
    for path, split in splits.items():
        photo_splits.setdefault(path.split("/")[0], set()).add(split)
    assert all(len(found) == 1 for found in photo_splits.values())  # no photograph is in two splits
    assert {photo for photo, found in photo_splits.items() if found != {"train"}} == set(sample.SPLIT)
    assert {photo: found.pop() for photo, found in photo_splits.items() if photo in sample.SPLIT} == \
        sample.SPLIT
    assert "leaves" in photo_splits  # the dead-leaves images train only
    assert summary["split"] == "official"
    crops = sample.CROPS_PER_PHOTO
    assert summary["split_counts"] == {"train": crops * (len(sample.PHOTOS) - 3) + sample.LEAVES, "val": crops,
                                       "test": 2 * crops}


def test_dead_leaves_cover_the_canvas_with_palette_colours_at_every_scale():
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [20, 20, 20]], np.uint8)
    drawn = [np.asarray(sample.dead_leaves(np.random.default_rng(seed), palette, blur=(0, 0))) for seed in range(4)]
    for pixels in drawn:
        assert pixels.shape == (sample.CROP_SIZE, sample.CROP_SIZE, 3)
        # every pixel belongs to a disc, and no pixel is black, a colour the palette lacks
        assert (pixels[:, :, None, :] == palette).all(-1).any(-1).all()
        # edges at every scale: neighbours differ somewhere, yet large areas are one colour
        assert 0.02 < (pixels[1:] != pixels[:-1]).any(-1).mean() < 0.5
    again = np.asarray(sample.dead_leaves(np.random.default_rng(0), palette, blur=(0, 0)))
    assert (again == drawn[0]).all() and not (drawn[0] == drawn[1]).all()
    blurred = np.asarray(sample.dead_leaves(np.random.default_rng(0), palette))
    assert (blurred != drawn[0]).any()  # the optics' soft edges


def test_source_is_refused_where_the_dataset_takes_none(tmp_path):
    with pytest.raises(UserError, match="dataset=flowers takes no source"):
        PrepareImages(dataset="flowers", source=str(tmp_path))


def test_an_unknown_dataset_is_refused_with_the_known_names():
    with pytest.raises(UserError, match="unknown dataset='flower'; choose one of sample, folder, flowers, .*register"):
        PrepareImages(dataset="flower")


def test_a_setting_the_dataset_does_not_read_is_refused(settings):
    settings("flowers", image_url="https://mirror.example/102flowers.tgz")
    with pytest.raises(UserError, match=r"luigi.cfg \[flowers\] has an unknown setting 'image_url'; .*images_url"):
        PrepareImages(dataset="flowers")


class Toy(datasets.DatasetSpec):
    """A few generated images with a split of their own: all that a new dataset needs."""

    name = "toy"
    description = "generated pictures"
    official_split = True
    settings = {"count": "5"}

    def resolve(self, request):
        folder = request.download_dir / "toy"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(int(request.settings["count"])):
            (folder / f"{number}.jpg").write_bytes(jpeg_bytes(number))
        files = datasets.files_below(folder)
        return datasets.Source(str(folder), files, {name: datasets.SPLITS[int(name[0]) % 3] for name in files})

    def fingerprint(self, request):
        return f"toy v1, {request.settings['count']} pictures"


@pytest.fixture
def toy_dataset():
    datasets.register(Toy())
    yield
    datasets.unregister("toy")


def test_a_new_dataset_is_one_registered_spec(artifact_root, settings, toy_dataset):
    settings("toy", count=7)
    task, summary, splits, reasons = prepare(dataset="toy", shard_size=2)
    assert splits == {f"{number}.jpg": ("train", "val", "test")[number % 3] for number in range(7)}
    assert not reasons
    assert (summary["files"], summary["kept"], summary["split"]) == (7, 7, "official")
    assert summary["split_counts"] == {"train": 3, "val": 2, "test": 2}
    shards = sorted(pd.read_csv(task.path("images.csv"))["shard"].unique())
    assert shards == ["shards/test-00000.npy", "shards/train-00000.npy", "shards/train-00001.npy",
                      "shards/val-00000.npy"]
    assert [len(array) for array in task.split_arrays("train")] == [2, 1]
    assert storage.read_json(task.path("manifest.json"))["config"]["dataset_settings"] == {"count": "7"}


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
