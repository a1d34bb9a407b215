"""Artifacts on S3, against moto's standalone server over HTTP: the storage functions, the
verified local cache, and an endpoint that disappears while a training task runs."""
import hashlib
import json
import os
import time

import luigi
import pytest

from pipeline.artifacts import storage
from pipeline.settings import cache_dir
from pipeline.tasks.base import ArtifactTask
from tests.conftest import cli_args, logged_steps, make_images, read_events
from tests.services import (BUCKET, CREDENTIALS, TEST_ENV, Relay, config_values, end_group, run_luigi,
                            s3_config, s3_key, s3_keys, start_luigi)


@pytest.fixture
def s3_root(moto, tmp_path, monkeypatch):
    """`[artifacts] root` on a fresh prefix of the moto bucket, for in-process use."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    root = f"s3://{BUCKET}/{tmp_path.name}"
    with config_values({("artifacts", "root"): root, ("artifacts", "cache_dir"): str(tmp_path / "cache"),
                        ("s3", "endpoint_url"): moto.url}):
        yield root


class WriteBlob(ArtifactTask):
    """Writes `size` pseudo-random bytes, then fails if asked to: a stand-in for any task."""

    size = luigi.IntParameter()
    fail = luigi.BoolParameter(default=False, significant=False)

    def build(self):
        with self.open_write("data/blob.bin") as file:
            file.write(_blob(self.size))
        if self.fail:
            raise RuntimeError("failing after the data was written")
        return {"bytes": self.size}


def _blob(size: int) -> bytes:
    return hashlib.shake_128(str(size).encode()).digest(size)


def test_files_round_trip_and_large_files_go_up_in_parts(s3_root, moto):
    path = storage.join(s3_root, "Example-0123456789", "part.bin")
    with storage.open_write(path) as file:
        file.write(b"hello")
    assert (file.size, file.sha256.hexdigest()) == (5, hashlib.sha256(b"hello").hexdigest())
    assert storage.exists(path) and storage.open_read(path).read() == b"hello"

    with pytest.raises(RuntimeError, match="interrupted"), storage.open_write(path + ".2") as file:
        file.write(b"partial")
        raise RuntimeError("interrupted")
    assert not storage.exists(path + ".2")  # an interrupted write uploads nothing

    big = _blob(9 << 20)  # above boto3's 8 MiB multipart threshold
    with storage.open_write(storage.join(s3_root, "Example-0123456789", "big.bin")) as file:
        file.write(big)
    head = moto.client().head_object(Bucket=BUCKET, Key=s3_key(s3_root, "Example-0123456789", "big.bin"))
    assert head["ContentLength"] == len(big) and head["ETag"].strip('"').endswith("-2")  # a two-part upload
    stored = storage.sha256_of(storage.join(s3_root, "Example-0123456789", "big.bin"))
    assert stored == (len(big), hashlib.sha256(big).hexdigest())

    moto.client().put_object(Bucket=BUCKET, Key=s3_key(s3_root, "Example-0123456789", "folder/"), Body=b"")
    assert storage.list_files(storage.join(s3_root, "Example-0123456789")) == ["big.bin", "part.bin"]
    storage.remove(path)
    assert not storage.exists(path)
    assert storage.list_files(storage.join(s3_root, "Missing-0000000000")) == []


def test_data_is_committed_before_the_manifest_and_a_failed_task_stays_incomplete(s3_root, moto):
    failing = WriteBlob(size=1000, fail=True)
    assert not luigi.build([failing], local_scheduler=True, log_level="WARNING")
    assert storage.list_files(failing.directory) == [".task.json", "data/blob.bin"] and not failing.complete()

    task = WriteBlob(size=1000)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING") and task.complete()
    manifest = storage.read_json(task.path("manifest.json"))
    assert manifest["files"]["data/blob.bin"] == {"size": 1000, "sha256": hashlib.sha256(_blob(1000)).hexdigest()}
    assert set(manifest["files"]) == {".task.json", "data/blob.bin"}
    client, directory = moto.client(), os.path.basename(task.directory)
    modified = {name: client.head_object(Bucket=BUCKET, Key=s3_key(s3_root, directory, name))["LastModified"]
                for name in ("data/blob.bin", "manifest.json")}
    assert modified["manifest.json"] >= modified["data/blob.bin"]
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in json.dumps(manifest)
    assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in json.dumps(manifest)


def test_local_path_downloads_once_into_the_cache_and_checks_the_manifest(s3_root, moto, tmp_path):
    task = WriteBlob(size=3000)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    local = storage.local_path(task.path("data/blob.bin"), cache_dir())
    assert local.startswith(str(tmp_path / "cache")) and open(local, "rb").read() == _blob(3000)

    key = s3_key(s3_root, os.path.basename(task.directory), "data/blob.bin")
    moto.client().put_object(Bucket=BUCKET, Key=key, Body=b"x" * 3000)  # the object changes behind the manifest
    assert storage.local_path(task.path("data/blob.bin"), cache_dir()) == local  # the verified copy is used, not downloaded again
    os.remove(local)
    with pytest.raises(storage.IntegrityError, match="data/blob.bin has 3000 bytes with sha256"):
        storage.local_path(task.path("data/blob.bin"), cache_dir())
    assert not os.path.exists(local) and not [name for _, _, names in os.walk(tmp_path / "cache") for name in names]

    with pytest.raises(FileNotFoundError, match="has not completed"):
        storage.local_path(WriteBlob(size=7).path("data/blob.bin"), cache_dir())


def test_a_damaged_cached_copy_is_deleted_and_downloaded_again(s3_root, moto, caplog):
    task = WriteBlob(size=3000)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    cached = storage.local_path(task.path("data/blob.bin"), cache_dir())
    os.chmod(cached, 0o644)
    with open(cached, "r+b") as file:  # same size, one byte changed
        file.seek(1500)
        byte = file.read(1)[0]
        file.seek(1500)
        file.write(bytes([byte ^ 0x40]))
    with caplog.at_level("WARNING", logger="luigi-interface"):
        again = storage.local_path(task.path("data/blob.bin"), cache_dir())
    assert again == cached and open(again, "rb").read() == _blob(3000)
    assert f"the cached copy {cached} of {task.path('data/blob.bin')} does not match" in caplog.text


def test_an_endpoint_outage_fails_the_task_clearly_and_a_rerun_resumes(moto, tmp_path):
    relay = Relay(moto.port)  # the endpoint the pipeline talks to; moto behind it keeps the data
    config, root = s3_config(tmp_path, f"http://127.0.0.1:{relay.port}")
    source = make_images(str(tmp_path / "source"), 40)
    args = ["PretrainCompletion", *cli_args(dataset="folder", source=source, image_size=32, width=0.125, batch_size=4,
                                            phase1_steps=100, checkpoint_every=5, log_every=5, decode_workers=1)]
    process = start_luigi(config, tmp_path / "first.log", *args, env=TEST_ENV)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not s3_keys(moto.client(), root, r"^PretrainCompletion-.*/checkpoints/"):
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        relay.stop()
        assert process.wait(120) == 30
    finally:
        end_group(process)
    log = (tmp_path / "first.log").read_text()
    assert "training of PretrainCompletion_" in log and "Could not connect to the endpoint URL" in log, log[-3000:]
    assert not s3_keys(moto.client(), root, r"^PretrainCompletion-.*/manifest.json")
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in log and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in log

    relay.start()
    result = run_luigi(config, *args, env=TEST_ENV)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PretrainCompletion: resuming from checkpoint" in result.stdout, result.stdout[-3000:]
    [manifest_name] = s3_keys(moto.client(), root, r"^PretrainCompletion-.*/manifest.json")
    manifest = json.loads(moto.client().get_object(Bucket=BUCKET, Key=s3_key(root, manifest_name))["Body"].read())
    assert manifest["summary"]["steps"] == 100
    relay.stop()
    # The event files went up with the task's other files; TensorBoard shows each step of both attempts once.
    event_files = [name for name in manifest["files"] if name.startswith("tensorboard/")]
    assert len(event_files) == 2
    (tmp_path / "tensorboard").mkdir()
    for name in event_files:
        moto.client().download_file(BUCKET, s3_key(root, manifest_name.split("/")[0], name), str(tmp_path / name))
    assert logged_steps(read_events(tmp_path / "tensorboard"), "loss_rec") == list(range(5, 101, 5))
