"""The one place that knows where artifacts live: a local directory or an S3 prefix.

Every task reads and writes through these functions with paths under the artifact
root from `[artifacts] root` in luigi.cfg, either a directory or `s3://bucket/prefix`.
Writes are atomic: data goes to a temporary local file that is renamed into place, or
uploaded to S3 (multipart, streamed from that file), only when it is closed without
error. S3 access goes through luigi.contrib.s3 (boto3), configured by the `[s3]`
section (`endpoint_url`, `region_name`) and boto3's usual credential chain.
"""
import datetime
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import IO, Iterator

import luigi
import luigi.format
from luigi.contrib.s3 import S3Client, S3Target
from luigi.task_register import Register

S3_SCHEME = "s3://"
MANIFEST = "manifest.json"  # lists the size and sha256 of every file of a task directory


class artifacts(luigi.Config):
    """`[artifacts]` section of luigi.cfg."""

    root = luigi.Parameter(default="./artifacts",
                           description="Directory or s3://bucket/prefix under which every task writes its output")
    cache_dir = luigi.Parameter(default="~/.cache/gan-pipeline",
                                description="Local copies of files read from S3, checked against their manifest")


class IntegrityError(RuntimeError):
    """A file read from S3 does not match the sha256 its task's manifest records."""


def is_remote(path: str) -> bool:
    return path.startswith(S3_SCHEME)


def root() -> str:
    configured = artifacts().root
    if is_remote(configured):
        if not configured[len(S3_SCHEME):].split("/")[0]:
            raise ValueError(f"[artifacts] root must look like s3://bucket/prefix, got {configured!r}")
        return configured.rstrip("/")
    return os.path.abspath(os.path.expanduser(configured))


def cache_dir() -> str:
    return os.path.abspath(os.path.expanduser(artifacts().cache_dir))


def use_root(path: str) -> None:
    """Adopt the artifact root of another process (a training child of a luigi worker)."""
    config = luigi.configuration.get_config()
    if not config.has_section("artifacts"):
        config.add_section("artifacts")
    config.set("artifacts", "root", path)
    Register.clear_instance_cache()  # luigi.Config objects read the config once


def join(*parts: str) -> str:
    return posixpath.join(*parts) if is_remote(parts[0]) else os.path.join(*parts)


_clients: dict[tuple, S3Client] = {}


def _s3() -> S3Client:
    """A client for the `[s3]` settings in force; boto3 resources must not be shared between processes or threads."""
    config = luigi.configuration.get_config()
    options = tuple(sorted(config.items("s3"))) if config.has_section("s3") else ()
    key = (os.getpid(), threading.get_ident(), options)
    if key not in _clients:
        _clients[key] = S3Client()
    return _clients[key]


def target(path: str) -> luigi.target.FileSystemTarget:
    """A luigi target for a file; binary, atomic on write."""
    if is_remote(path):
        return S3Target(path, format=luigi.format.Nop, client=_s3())
    return luigi.LocalTarget(path, format=luigi.format.Nop)


class _HashingWriter:
    """Wraps a binary file, counting and hashing bytes as they are written."""

    def __init__(self, file: IO[bytes]):
        self._file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def __getattr__(self, name):
        return getattr(self._file, name)


@contextmanager
def open_write(path: str) -> Iterator[_HashingWriter]:
    """Write a file atomically; the yielded writer knows the size and sha256 when done.

    On S3 the bytes go to a local temporary file first and are uploaded when the block
    ends, in parts for large files, so nothing is visible under `path` before that.
    """
    with target(path).open("w") as file:
        writer = _HashingWriter(file)
        yield writer
        if not is_remote(path):  # on disk before the rename, so a crash of the machine leaves no torn file
            file.flush()
            os.fsync(file.fileno())


def open_read(path: str) -> IO[bytes]:
    """A binary stream; from S3 it is read as it arrives and cannot seek."""
    return target(path).open("r")


def exists(path: str) -> bool:
    return target(path).exists()


def remove(path: str) -> None:
    target(path).remove()


def list_files(directory: str) -> list[str]:
    """Paths relative to `directory` of every file below it, sorted; empty if it does not exist."""
    if is_remote(directory):
        # "" and names ending in "/" are folder markers that some S3 tools create.
        return sorted(name for name in _s3().list(directory) if name and not name.endswith("/"))
    if not os.path.isdir(directory):
        return []
    found = []
    for dirpath, _, filenames in os.walk(directory):
        for name in filenames:
            if "-luigi-tmp-" not in name:  # unfinished atomic writes
                found.append(os.path.relpath(os.path.join(dirpath, name), directory))
    return sorted(found)


def list_dirs(directory: str) -> list[str]:
    """Names of the directories directly under `directory`, sorted; empty if it does not exist."""
    if is_remote(directory):  # S3 has no folders: the first part of every key below the prefix
        return sorted({name.split("/", 1)[0] for name in list_files(directory) if "/" in name})
    if not os.path.isdir(directory):
        return []
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def last_modified(directory: str) -> datetime.datetime:
    """When anything below `directory` was last written (UTC): its newest file, or itself if empty."""
    if is_remote(directory):
        times = [key.last_modified for key in _s3().list(directory, return_key=True)]
        if not times:
            raise FileNotFoundError(f"nothing stored under {directory}")
        return max(times).astimezone(datetime.timezone.utc)
    times = [os.path.getmtime(os.path.join(directory, name)) for name in list_files(directory)]
    newest = max(times, default=os.path.getmtime(directory))
    return datetime.datetime.fromtimestamp(newest, datetime.timezone.utc)


def local_path(path: str) -> str:
    """A path on local disk from which the file can be read (memory-mapped, torch.load).

    A file on S3 must belong to a complete task: it is downloaded once into the cache
    folder, named by its sha256 from the task's manifest and checked against it.
    """
    if not is_remote(path):
        return path
    directory, name = _task_directory_and_name(path)
    manifest_path = join(directory, MANIFEST)
    if not exists(manifest_path):
        raise FileNotFoundError(f"{path} has no manifest at {manifest_path}: its task has not completed")
    entry = read_json(manifest_path)["files"].get(name)
    if entry is None:
        raise FileNotFoundError(f"{path} is not listed in {manifest_path}")
    cached = os.path.join(cache_dir(), "sha256", entry["sha256"][:2], entry["sha256"])
    if os.path.exists(cached) and os.path.getsize(cached) == entry["size"]:
        return cached
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(cached), prefix=".download-")
    os.close(handle)
    try:
        _s3().get(path, partial)
        size, sha = _hash_local(partial)
        if (size, sha) != (entry["size"], entry["sha256"]):
            raise IntegrityError(f"{path} has {size} bytes with sha256 {sha}, but {manifest_path} records "
                                 f"{entry['size']} bytes with sha256 {entry['sha256']}")
        os.chmod(partial, 0o444)  # cached files are shared by every run that reads them
        os.replace(partial, cached)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return cached


def _task_directory_and_name(path: str) -> tuple[str, str]:
    """Split `<root>/<task directory>/<name>` into the task directory and the name inside it."""
    prefix = root() + "/"
    task_dir, _, name = path[len(prefix):].partition("/") if path.startswith(prefix) else ("", "", "")
    if not (task_dir and name):
        raise ValueError(f"{path} is not a file of a task directory under the artifact root {root()}")
    return join(root(), task_dir), name


def _hash_stream(stream: IO[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _hash_local(path: str) -> tuple[int, str]:
    with open(path, "rb") as file:
        return _hash_stream(file)


def sha256_of(path: str) -> tuple[int, str]:
    """(size, sha256 hex) of a stored file, read in chunks."""
    with open_read(path) as file:
        return _hash_stream(file)


def write_json(path: str, value) -> tuple[int, str]:
    with open_write(path) as file:
        file.write(json.dumps(value, indent=2, sort_keys=True, default=str).encode())
    return file.size, file.sha256.hexdigest()


def read_json(path: str):
    with open_read(path) as file:
        return json.load(file)


def copy_to_local(path: str, destination: str) -> None:
    with open_read(path) as source, open(destination, "wb") as out:
        shutil.copyfileobj(source, out)
