"""Decoding a folder's files in worker processes: results in order, pixels through shared
memory, Pillow's limit set in the workers only."""
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from pipeline.ingestion import pool
from pipeline.ingestion.decode import decode_image
from pipeline.ingestion.pool import DecodeSettings, ingest_folder
from tests.test_datasets import jpeg_bytes
from tests.test_decode import png_header_only


@pytest.mark.parametrize("max_pixels, reason", [(100_000_000, "cannot decode"), (99_999_999, "decompression bomb")])
def test_pixel_limit_in_the_workers_is_exactly_max_pixels(tmp_path, max_pixels, reason):
    # 10,000 x 10,000 is above Pillow's default limit (about 89M pixels); the header-only
    # file fails as truncated once a limit lets it through to decoding.
    (tmp_path / "huge.png").write_bytes(png_header_only(10_000, 10_000))
    limit_here = Image.MAX_IMAGE_PIXELS
    [result] = ingest_folder(str(tmp_path), ["huge.png"], DecodeSettings(16, max_pixels), workers=1)
    assert result.reason.startswith(reason), result.reason
    assert Image.MAX_IMAGE_PIXELS == limit_here


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
    monkeypatch.setattr(pool, "CHUNK_SIZE", 2)
    monkeypatch.setattr(pool, "CHUNKS_IN_FLIGHT_PER_WORKER", 1)
    paths, expected = folder_of_good_and_bad_files(tmp_path / "files", 11)
    results = list(ingest_folder(str(tmp_path / "files"), paths, DecodeSettings(16, 10_000_000), workers=2))
    assert_ingested(results, paths, expected)


def test_spawned_workers_where_there_is_no_fork(tmp_path, monkeypatch):
    # Windows has no fork: the shared slots must then be inherited by spawned workers.
    monkeypatch.setattr(pool, "_pool_context", lambda: multiprocessing.get_context("spawn"))
    paths, expected = folder_of_good_and_bad_files(tmp_path / "files", 5)
    results = list(ingest_folder(str(tmp_path / "files"), paths, DecodeSettings(16, 10_000_000), workers=1))
    assert_ingested(results, paths, expected)
