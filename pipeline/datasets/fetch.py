"""Fetching files into a dataset's folder: downloads checked against their md5, archives
extracted once.

Every fetcher can be rerun: a file that is already present and verified is not fetched
again, and an archive is extracted again only if it changed. A file under its final name
is always complete; downloads go to a temporary name first.
"""
import contextlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError
from .archives import safe_extract

# torchvision is imported where it is used: its import loads torch._dynamo, about 1.5 s
# for every process that imports the pipeline.

logger = logging.getLogger(__name__)

_SOCKET_TIMEOUT_S = 60
# Some servers refuse urllib's default agent string.
_USER_AGENT = "gan-pipeline (dataset fetcher)"
_CHUNK_BYTES = 1 << 20


class DownloadError(UserError):
    """A dataset could not be fetched; the message says what the user should do."""


def fetch_url(url: str, dest_dir, filename: str, md5: str) -> Path:
    """Download url to dest_dir/filename and return that path.

    Does nothing if the file is already there with the right md5; a file with the wrong
    md5 is deleted and downloaded again. The body goes to a temporary name and is renamed
    only after its md5 matches, so a failed, short or corrupt download leaves no file
    under the final name.
    """
    destination = Path(dest_dir) / filename
    if keep_if_verified(destination, md5):
        return destination
    with staging_file(destination) as partial:
        _stream_to_file(url, partial)
        require_md5(partial, md5, described_as=url,
                    remedy="Rerun to download it again; if that keeps failing, check the URL "
                           "and md5 in luigi.cfg.")
        os.replace(partial, destination)
    logger.info("Downloaded %s to %s", url, destination)
    return destination


def keep_if_verified(path: Path, md5: str) -> bool:
    """Whether path already holds the expected file; a wrong one is deleted so that it
    is never taken for a complete download."""
    from torchvision.datasets.utils import check_integrity

    if check_integrity(path, md5):
        logger.info("%s is present and verified; not fetching it again", path)
        return True
    if path.exists():
        logger.warning("%s has the wrong md5; fetching it again", path)
        path.unlink()
    return False


@contextlib.contextmanager
def staging_file(destination: Path):
    """A temporary file next to destination (so os.replace is atomic), removed on exit."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def _stream_to_file(url: str, path: Path) -> None:
    # Not torchvision's download_url: it writes straight to the final name and silently
    # accepts a body shorter than the announced Content-Length.
    logger.info("Downloading %s", url)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=_SOCKET_TIMEOUT_S) as response, open(path, "wb") as out:
            announced = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _CHUNK_BYTES)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url} answered HTTP {error.code} ({error.reason}). Check the URL in "
                            "luigi.cfg; if the server is temporarily down, rerun later.") from None
    except (http.client.HTTPException, OSError) as error:
        raise DownloadError(f"Downloading {url} failed: {error}. Check the network connection and "
                            f"the free space in {path.parent}, then rerun; nothing was kept.") from error
    received = path.stat().st_size
    if announced is not None and received != int(announced):
        raise DownloadError(f"The download of {url} was cut off after {received} of {announced} bytes. "
                            "Rerun to try again; the partial file was discarded.")


def require_md5(path: Path, md5: str, described_as: str, remedy: str) -> None:
    from torchvision.datasets.utils import calculate_md5

    actual = calculate_md5(path)
    if actual != md5:
        raise DownloadError(f"{described_as} has md5 {actual}, expected {md5}: it is corrupt, "
                            f"incomplete or a different file. {remedy}")


def copy_verified(source_file: Path, destination: Path, md5: str) -> None:
    """Copy source_file to destination unless it is there already; never half a file under that name."""
    if source_file.resolve() == destination.resolve() or keep_if_verified(destination, md5):
        return
    with staging_file(destination) as partial:
        shutil.copyfile(source_file, partial)
        os.replace(partial, destination)


def extract_once(archive: Path, target_dir: Path, marker_dir: Path) -> None:
    """Extract archive into target_dir unless this same archive file was extracted before.

    The marker records the archive's size and modification time, so a replaced archive
    is extracted again and an interrupted extraction (no marker yet) is redone.
    """
    marker = marker_dir / f".{archive.name}.extracted"
    identity = files_identity(archive)
    if marked(marker, identity):
        return
    logger.info("Extracting %s into %s", archive, target_dir)
    extracted = safe_extract(archive, target_dir)
    marker.write_text(identity)
    logger.info("Extracted %d files from %s", len(extracted), archive)


def files_identity(*paths: Path) -> str:
    """Sizes and modification times, a line per file: what changes when a downloaded file is replaced."""
    return "".join(f"{path.stat().st_size} {path.stat().st_mtime_ns}\n" for path in paths)


def marked(marker: Path, identity: str) -> bool:
    """Whether the work a marker file stands for was done for files of this identity."""
    return marker.is_file() and marker.read_text() == identity


def require_folder(folder: Path, archive: Path) -> Path:
    if not folder.is_dir():
        raise DownloadError(f"{archive} has no {folder.name}/ folder, so it is not the expected "
                            "archive. Check the URL, file id, md5 or source folder in luigi.cfg.")
    return folder
