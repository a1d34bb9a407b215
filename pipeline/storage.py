"""The one place that knows where artifacts live.

Every task reads and writes through these functions with paths under the artifact
root from `[artifacts] root` in luigi.cfg. Writes are atomic: data goes to a temporary
name and is renamed into place when the file is closed without error.
"""
import datetime
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from typing import IO, Iterator

import luigi
import luigi.format


class artifacts(luigi.Config):
    """`[artifacts]` section of luigi.cfg."""

    root = luigi.Parameter(default="./artifacts", description="Directory under which every task writes its output")


def root() -> str:
    return os.path.abspath(os.path.expanduser(artifacts().root))


def join(*parts: str) -> str:
    return os.path.join(*parts)


def target(path: str) -> luigi.LocalTarget:
    """A luigi target for a file; binary, atomic on write."""
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
    """Write a file atomically; the yielded writer knows the size and sha256 when done."""
    with target(path).open("w") as file:
        writer = _HashingWriter(file)
        yield writer


def open_read(path: str) -> IO[bytes]:
    return target(path).open("r")


def exists(path: str) -> bool:
    return target(path).exists()


def remove(path: str) -> None:
    target(path).remove()


def list_files(directory: str) -> list[str]:
    """Paths relative to `directory` of every file below it, sorted; empty if it does not exist."""
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
    if not os.path.isdir(directory):
        return []
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def last_modified(directory: str) -> datetime.datetime:
    """When anything below `directory` was last written (UTC): its newest file, or itself if empty."""
    times = [os.path.getmtime(os.path.join(directory, name)) for name in list_files(directory)]
    newest = max(times, default=os.path.getmtime(directory))
    return datetime.datetime.fromtimestamp(newest, datetime.timezone.utc)


def local_path(path: str) -> str:
    """A path on local disk from which the file can be read (memory-mapped, torch.load)."""
    return path


def sha256_of(path: str) -> tuple[int, str]:
    """(size, sha256 hex) of a stored file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open_read(path) as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


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
