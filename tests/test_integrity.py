"""Fault injection: one random byte changed in each kind of artifact a task reads.

Each change must be refused by the read that a task or a training process makes, with a
message naming the file, or be provably harmless: the read gives exactly what it gave
before the change. Every trial starts with an empty hash cache, as a new process would.
"""
import os
from contextlib import contextmanager

import luigi
import numpy as np
import pytest
import torch

import pipeline
from pipeline.artifacts import storage
from pipeline.artifacts.checkpoints import FINAL_STATE, checksum_name, latest_checkpoint, list_checkpoints, load_state
from pipeline.settings import cache_dir
from tests.test_s3 import WriteBlob, _blob, s3_root  # noqa: F401 (s3_root is a fixture)

TRIALS = 16


@contextmanager
def changed_byte(path: str, rng: np.random.Generator):
    """The file with the byte at a random place replaced by another value; restored afterwards."""
    with open(path, "rb") as file:
        original = file.read()
    position = int(rng.integers(len(original)))
    changed = bytearray(original)
    changed[position] = (changed[position] + int(rng.integers(1, 256))) % 256
    mode = os.stat(path).st_mode
    os.chmod(path, 0o644)  # cached copies are read-only
    with open(path, "wb") as file:
        file.write(changed)
    try:
        yield position
    finally:
        with open(path, "wb") as file:
            file.write(original)
        os.chmod(path, mode)


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    return a == b


def inject(path: str, read, rng: np.random.Generator, monkeypatch) -> dict[str, int]:
    """Change a random byte of `path` TRIALS times; each time `read()` must refuse, naming `path`, or give
    what it gave before. Returns how often each happened."""
    expected = read()
    outcomes = {"refused": 0, "harmless": 0}
    for _ in range(TRIALS):
        monkeypatch.setattr(storage, "_digests", {})
        with changed_byte(path, rng) as position:
            try:
                result = read()
            except storage.ArtifactError as error:
                assert path in str(error), (position, str(error))
                outcomes["refused"] += 1
            else:
                assert equal(result, expected), f"byte {position} of {path} changed what was read"
                outcomes["harmless"] += 1
    monkeypatch.setattr(storage, "_digests", {})
    assert equal(read(), expected)  # restored
    return outcomes


@pytest.fixture
def trained(artifact_root, image_folder):
    task = pipeline.PretrainCompletion(dataset="folder", source=image_folder, image_size=32, width=0.125,
                                       batch_size=4, shard_size=16, decode_workers=1, phase1_steps=6,
                                       checkpoint_every=2, log_every=2)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    return task


def test_a_changed_byte_in_any_file_a_task_reads_is_refused_by_name(trained, monkeypatch):
    rng = np.random.default_rng(16)
    shards = trained.requires()["shards"]
    shard = shards.split_paths("train")[0]
    checkpoints = [trained.path(name) for _, name in list_checkpoints(trained.directory)]
    reads = {  # path: what the task or its training process does with it
        shard: lambda: np.array(storage.load_array(shard, cache_dir())),
        shards.path("images.csv"): lambda: shards.split_paths("train"),
        shards.path("mean_pixel.json"): shards.mean_pixel,
        trained.path(FINAL_STATE): lambda: load_state(trained.path(FINAL_STATE)),
        checkpoints[-1]: lambda: load_state(checkpoints[-1]),
    }
    for path, read in reads.items():
        assert inject(path, read, rng, monkeypatch) == {"refused": TRIALS, "harmless": 0}, path
    # Resuming never starts from a changed checkpoint: it falls back to the one before.
    with changed_byte(checkpoints[-1], rng):
        assert latest_checkpoint(trained.directory, trained.get_task_family()) == checkpoints[-2]


def test_a_changed_byte_in_a_manifest_or_a_checksum_file_is_refused_or_harmless(trained, monkeypatch):
    rng = np.random.default_rng(17)
    shards = trained.requires()["shards"]
    shard = shards.split_paths("train")[0]
    manifest = shards.path("manifest.json")

    def read_through_manifest():
        # What a downstream task does: check that its input is complete, then read a file it lists.
        complete = shards.complete()
        return complete, storage.read_manifest(shards.directory), np.array(storage.load_array(shard, cache_dir()))

    outcomes = inject(manifest, read_through_manifest, rng, monkeypatch)
    assert outcomes["refused"] >= TRIALS - 2, outcomes  # only a whitespace byte turned into another can pass

    checkpoint = trained.path(list_checkpoints(trained.directory)[-1][1])
    sidecar = checksum_name(checkpoint)
    outcomes = inject(sidecar, lambda: load_state(checkpoint), rng, monkeypatch)
    assert outcomes["refused"] >= 1, outcomes  # the name after the digest is not read: changing it is harmless


def test_a_changed_byte_in_a_cached_s3_object_is_downloaded_again(s3_root, monkeypatch):  # noqa: F811
    rng = np.random.default_rng(18)
    task = WriteBlob(size=5000)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    cached = storage.local_path(task.path("data/blob.bin"), cache_dir())

    def read():
        with open(storage.local_path(task.path("data/blob.bin"), cache_dir()), "rb") as file:
            return file.read()

    assert inject(cached, read, rng, monkeypatch) == {"refused": 0, "harmless": TRIALS}
    assert read() == _blob(5000)
