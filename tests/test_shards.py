"""Writing decoded images as shards through a writer callback, without a task."""
import contextlib
import io

import numpy as np
from PIL import Image

from pipeline.ingestion.pool import DecodeSettings
from pipeline.ingestion.shards import write_shards


def png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_shards_per_split_in_path_order_with_duplicates_and_rejections(tmp_path):
    files = {"a.png": png((255, 0, 0)), "b.png": png((0, 0, 255)), "c.png": png((0, 255, 0)),
             "d.png": png((255, 255, 255)), "e.png": png((255, 0, 0)), "f.txt": b"not a picture"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    split_of = {"e.png": "train", "a.png": "val", "b.png": "train", "c.png": "train", "d.png": "test",
                "f.txt": "train"}
    written, done = {}, []

    @contextlib.contextmanager
    def open_write(name):
        buffer = io.BytesIO()
        yield buffer
        written[name] = np.load(io.BytesIO(buffer.getvalue()))

    result = write_shards(str(tmp_path), split_of, DecodeSettings(16, 10_000_000), workers=1, shard_size=2,
                          open_write=open_write, progress=done.append)
    assert done == [1, 2, 3, 4, 5, 6]
    assert [row[:4] for row in result.kept] == [
        ("b.png", "train", "shards/train-00000.npy", 0), ("c.png", "train", "shards/train-00000.npy", 1),
        ("e.png", "train", "shards/train-00001.npy", 0), ("d.png", "test", "shards/test-00000.npy", 0)]
    (not_an_image, reason), duplicate = result.rejected
    assert not_an_image == "f.txt" and reason.startswith("not an image")
    assert duplicate == ("a.png", "duplicate: same bytes as e.png")  # train keeps the copy
    assert result.split_counts == {"train": 3, "test": 1}
    assert {name: array.shape for name, array in written.items()} == {
        "shards/train-00000.npy": (2, 3, 16, 16), "shards/train-00001.npy": (1, 3, 16, 16),
        "shards/test-00000.npy": (1, 3, 16, 16)}
    train = np.concatenate([written["shards/train-00000.npy"], written["shards/train-00001.npy"]])
    assert np.allclose(result.mean_pixel(), train.mean(axis=(0, 2, 3)) / 255)
