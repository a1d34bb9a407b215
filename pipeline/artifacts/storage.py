"""The one place that knows where artifacts live: a local directory or an S3 prefix.

Every task reads and writes through these functions with full paths: local ones, or
`s3://bucket/prefix/...`. The artifact root they lie under is chosen by the task layer
(`[artifacts] root`, pipeline.tasks.base) and passed down; nothing here reads it.
Writes are atomic: data goes to a temporary local file that is renamed into place, or
uploaded to S3 (multipart, streamed from that file), only when it is closed without
error. S3 access goes through luigi.contrib.s3 (boto3), configured by the `[s3]`
section (`endpoint_url`, `region_name`) and boto3's usual credential chain.

A task directory holds a marker written when a task starts (`.task.json`, so that only
directories the pipeline made are ever cleaned up) and, once complete, a manifest that
records every file's size and sha256 and closes with a checksum of its own. Files of a
complete task are read back only after their bytes match the manifest.
"""
import datetime
import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator

import luigi
import luigi.format
import numpy as np
from botocore.exceptions import ClientError
from luigi.contrib.s3 import S3Client, S3Target

log = logging.getLogger("luigi-interface")

S3_SCHEME = "s3://"
MANIFEST = "manifest.json"  # lists the size and sha256 of every file of a task directory
MARKER = ".task.json"  # written when a task starts: this directory is the pipeline's own
MANIFEST_FORMAT = 2
# What a manifest held before it carried a format and a checksum; such manifests are still
# accepted (by their schema alone), so that runs made before then are not run again.
_LEGACY_MANIFEST_KEYS = frozenset({"task_family", "task_id", "hash", "parameters", "config", "upstream", "packages",
                                   "started", "finished", "summary", "files"})
_MANIFEST_KEYS = _LEGACY_MANIFEST_KEYS | {"format", "checksum"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_LENGTH = 10  # hex digits of a task's hash in its directory name
TASK_DIRECTORY = re.compile(r"^(?P<family>[A-Za-z_]\w*)-(?P<hash>[0-9a-f]+)$")


class ArtifactError(RuntimeError):
    """An artifact that cannot be used as it is; the message names the file and what to do."""


class IntegrityError(ArtifactError):
    """A file whose bytes differ from the size and sha256 recorded for it."""


class BrokenManifest(IntegrityError):
    """A manifest.json that does not parse or does not hold what the pipeline writes."""


class RootNotWritable(ArtifactError):
    """The artifact root cannot be written to (read-only, not creatable, access denied)."""


class MalformedRoot(ArtifactError):
    """An [artifacts] root that names an S3 location without its bucket."""


def is_remote(path: str) -> bool:
    return path.startswith(S3_SCHEME)


def resolve_root(configured: str) -> str:
    """An artifact root as written by a user, checked and made absolute (local) or normalised (S3)."""
    if is_remote(configured):
        if not configured[len(S3_SCHEME):].split("/")[0]:
            raise MalformedRoot(f"[artifacts] root must look like s3://bucket/prefix, got {configured!r}")
        return configured.rstrip("/")
    return os.path.abspath(os.path.expanduser(configured))


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


def is_link(path: str) -> bool:
    """A symbolic link on local disk; S3 has none."""
    return not is_remote(path) and os.path.islink(path)


def last_modified(directory: str) -> datetime.datetime:
    """When anything below `directory` was last written (UTC): its newest file, or itself if empty."""
    if is_remote(directory):
        times = [key.last_modified for key in _s3().list(directory, return_key=True)]
        if not times:
            raise FileNotFoundError(f"nothing stored under {directory}")
        return max(times).astimezone(datetime.timezone.utc)
    # lstat: a link is dated by itself, and a dangling one has no target to date.
    times = [os.lstat(os.path.join(directory, name)).st_mtime for name in list_files(directory)]
    newest = max(times, default=os.lstat(directory).st_mtime)
    return datetime.datetime.fromtimestamp(newest, datetime.timezone.utc)


@dataclass(frozen=True)
class Recorded:
    """What was recorded about a file when it was written, and where."""

    sha256: str
    size: int | None  # None where only the sha256 is recorded
    where: str  # the file holding the record, for messages


def recorded(path: str) -> Recorded | None:
    """The size and sha256 that the manifest of the task directory holding `path` records for it.

    None for a file outside any complete task directory (a user's own file, the checkpoint
    of a task still running) and for the manifest itself, which carries its own checksum.
    """
    found = _task_directory_and_name(path)
    if found is None or found[1] == MANIFEST:
        return None
    directory, name = found
    if (manifest := read_manifest(directory)) is None:
        return None
    manifest_path = join(directory, MANIFEST)
    if name not in manifest["files"]:
        raise IntegrityError(f"{path} is not listed in {manifest_path}, which lists every file its task wrote")
    entry = manifest["files"][name]
    return Recorded(entry["sha256"], entry["size"], manifest_path)


def _check(path: str, size: int, sha256: str, record: Recorded) -> None:
    if sha256 != record.sha256 or record.size not in (None, size):
        recorded_size = "" if record.size is None else f"{record.size} bytes with "
        raise IntegrityError(f"{path} has {size} bytes with sha256 {sha256}, but {record.where} records "
                             f"{recorded_size}sha256 {record.sha256}: it changed after it was written")


# The sha256 of local files already read in this process, by path, size and modification
# time: a file is hashed once per process however often it is opened (every task that
# reads the shards memory-maps them).
_digests: dict[tuple[str, int, int], str] = {}


def _local_digest(path: str) -> tuple[int, str]:
    info = os.stat(path)
    key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    if key not in _digests:
        _digests[key] = _hash_local(path)[1]
    return info.st_size, _digests[key]


def local_path(path: str, cache_dir: str) -> str:
    """A path on local disk holding the bytes that `path`'s task recorded in its manifest,
    for reading in place (memory maps); the file must belong to a complete task.

    A local file is hashed once per process. A file on S3 is downloaded once into
    `cache_dir`, named by its sha256; a cached copy is checked once per process, and one
    that no longer matches is deleted and downloaded again.
    """
    record = recorded(path)
    if record is None:
        raise FileNotFoundError(f"no manifest records {path}: its task has not completed")
    if not is_remote(path):
        _check(path, *_local_digest(path), record)
        return path
    cached = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), "sha256", record.sha256[:2], record.sha256)
    if os.path.exists(cached):
        if _local_digest(cached) == (record.size, record.sha256):
            return cached
        log.warning("the cached copy %s of %s does not match %s: downloading it again", cached, path, record.where)
        os.remove(cached)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(cached), prefix=".download-")
    os.close(handle)
    try:
        _s3().get(path, partial)
        _check(path, *_hash_local(partial), record)
        os.chmod(partial, 0o444)  # cached files are shared by every run that reads them
        os.replace(partial, cached)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return cached


def load_array(path: str, cache_dir: str) -> np.ndarray:
    """A stored uint8 array, memory-mapped so only the rows used are read, once its bytes
    have matched its task's manifest (local_path)."""
    return np.load(local_path(path, cache_dir), mmap_mode="r", allow_pickle=False)


def _task_directory_and_name(path: str) -> tuple[str, str] | None:
    """Split a path into the nearest enclosing directory named like a task's and the name below it."""
    parts = path.rstrip("/").split("/")
    for index in range(len(parts) - 2, -1, -1):
        if TASK_DIRECTORY.match(parts[index]):
            return "/".join(parts[:index + 1]), "/".join(parts[index + 1:])
    return None


def _name(directory: str) -> str:
    return directory.rstrip("/").rsplit("/", 1)[-1]


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


def read_bytes(path: str, record: Recorded | None = None) -> bytes:
    """The whole file, checked against `record` or else against its task's manifest, if it
    belongs to a complete task; raises IntegrityError naming the file when it differs."""
    with open_read(path) as file:
        data = file.read()
    if record := record or recorded(path):
        _check(path, len(data), hashlib.sha256(data).hexdigest(), record)
    return data


def write_json(path: str, value) -> tuple[int, str]:
    with open_write(path) as file:
        file.write(json.dumps(value, indent=2, sort_keys=True, default=str).encode())
    return file.size, file.sha256.hexdigest()


def read_json(path: str):
    """A JSON file, checked like read_bytes."""
    return json.loads(read_bytes(path))


def copy_to_local(path: str, destination: str) -> None:
    with open(destination, "wb") as out:
        out.write(read_bytes(path))


def _content_digest(value) -> str:
    """sha256 of a JSON value's canonical form: sorted keys, no spaces."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(directory: str, manifest: dict) -> None:
    """Write a task's manifest, closed by a checksum of everything else in it."""
    # Checksummed as it will read back: values JSON cannot hold are written as strings.
    body = json.loads(json.dumps({**manifest, "format": MANIFEST_FORMAT}, default=str))
    write_json(join(directory, MANIFEST), {**body, "checksum": _content_digest(body)})


def read_manifest(directory: str) -> dict | None:
    """The manifest of a task directory, or None when it has none (its task has not completed).

    Raises BrokenManifest when it does not parse, does not hold what the pipeline writes,
    belongs to another directory, or no longer matches its closing checksum.
    """
    path = join(directory, MANIFEST)
    if not exists(path):
        return None
    with open_read(path) as file:
        data = file.read()
    try:
        manifest = json.loads(data)
    except ValueError as error:  # not JSON, or not text
        problem = f"it does not parse ({error})"
    else:
        problem = _manifest_problem(manifest, _name(directory))
    if problem:
        raise BrokenManifest(f"broken manifest {path}: {problem}; running its task again rewrites it")
    return manifest


def _manifest_problem(manifest, directory_name: str) -> str | None:
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    keys = set(manifest)
    if keys == _MANIFEST_KEYS:
        if manifest["format"] != MANIFEST_FORMAT:
            return f"format {manifest['format']!r}, where this version writes {MANIFEST_FORMAT}"
        if manifest["checksum"] != _content_digest({k: v for k, v in manifest.items() if k != "checksum"}):
            return "its content does not match its checksum"
    elif keys != _LEGACY_MANIFEST_KEYS:
        missing, unknown = sorted(_MANIFEST_KEYS - keys - {"format", "checksum"}), sorted(keys - _MANIFEST_KEYS)
        return f"missing keys {missing}, unknown keys {unknown}"
    for key in ("task_family", "task_id", "hash", "started", "finished"):
        if not isinstance(manifest[key], str):
            return f"{key} is not a string"
    for key in ("parameters", "config", "upstream", "packages", "summary", "files"):
        if not isinstance(manifest[key], dict):
            return f"{key} is not an object"
    if f"{manifest['task_family']}-{manifest['hash']}" != directory_name:
        return f"it describes {manifest['task_family']}-{manifest['hash']}, not {directory_name}"
    for name, entry in manifest["files"].items():
        if not (isinstance(entry, dict) and set(entry) == {"size", "sha256"} and type(entry["size"]) is int
                and entry["size"] >= 0 and isinstance(entry["sha256"], str) and _SHA256.match(entry["sha256"])):
            return f"the entry of {name} is not a size and a sha256"
    return None


def write_marker(directory: str, family: str, full_hash: str) -> None:
    """Mark `directory` as the pipeline's own, for the task `family` with the full sha256 `full_hash`.

    Every task run writes it before anything else, so an artifact root that cannot be
    written to fails here, before any work; the first run's creation time is kept.
    """
    path = join(directory, MARKER)
    created = (read_marker(directory) or {}).get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        write_json(path, {"task_family": family, "hash": full_hash, "created": created})
    except (OSError, ClientError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        # The reason is in the message; the cause would only add the name of a temporary file.
        raise RootNotWritable(f"the artifact root {_parent(directory)} is not writable: cannot write {path} "
                              f"({reason}); make it writable or set [artifacts] root elsewhere") from None


def _parent(directory: str) -> str:
    return posixpath.dirname(directory.rstrip("/")) if is_remote(directory) else os.path.dirname(directory)


def read_marker(directory: str) -> dict | None:
    """The marker of a directory the pipeline made; None unless it parses and names this directory."""
    path = join(directory, MARKER)
    if is_link(path) or not exists(path):
        return None
    with open_read(path) as file:
        data = file.read()
    try:
        marker = json.loads(data)
    except ValueError:
        return None
    if not (isinstance(marker, dict) and isinstance(marker.get("task_family"), str)
            and isinstance(marker.get("hash"), str) and _SHA256.match(marker["hash"])):
        return None
    return marker if _name(directory) == f"{marker['task_family']}-{marker['hash'][:HASH_LENGTH]}" else None
