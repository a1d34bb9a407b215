"""Fetching the source datasets into local folders.

Plain functions: the Luigi tasks read the settings from luigi.cfg and pass them in. Every
fetcher can be rerun: a file that is already present and verified is not fetched again,
and an archive is extracted again only if it changed. A file under its final name is
always complete; downloads go to a temporary name first.
"""
import contextlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.archives import safe_extract

# torchvision is imported where it is used: its import loads torch._dynamo, about 1.5 s
# for every process that imports the pipeline.

logger = logging.getLogger(__name__)

FLOWERS_IMAGES = "102flowers.tgz"
FLOWERS_LABELS = "imagelabels.mat"
FLOWERS_SPLITS = "setid.mat"
_FLOWERS_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}

CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_IMAGES = "img_align_celeba.zip"
CELEBA_PARTITION = "list_eval_partition.txt"
# The Google Drive files and checksums torchvision's CelebA dataset uses.
CELEBA_IMAGES_FILE_ID = "0B7EVK8r0v71pZjFTYXZWM3FlRnM"
CELEBA_IMAGES_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
CELEBA_PARTITION_FILE_ID = "0B7EVK8r0v71pY0NSMzRuSXJEVkk"
CELEBA_PARTITION_MD5 = "d32c9cbf5e040fd4025c592c306e6668"
_CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}

# MNIST's handwritten digits, from the mirror torchvision's MNIST tries first, with its md5s.
DIGITS_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DIGITS_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
DIGITS_TRAIN_IMAGES_MD5 = "f68b3c2dcbeaaa9fbdd348bbdeb94873"
DIGITS_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
DIGITS_TEST_IMAGES_MD5 = "9fb629c4189551a2d022fa330f9573f3"
# MNIST publishes train and test only; the customary validation set is the last 10,000 of
# the 60,000 training digits (the 50,000 / 10,000 / 10,000 split).
DIGITS_VAL_SHARE = 1 / 6

PAINTINGS_PARTS = range(1, 10)
KAGGLE_TOKEN_PAGE = "https://www.kaggle.com/settings/api"

_SOCKET_TIMEOUT_S = 60
# Some servers refuse urllib's default agent string.
_USER_AGENT = "gan-pipeline (dataset fetcher)"
_CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A dataset could not be fetched; the message says what the user should do."""


def fetch_url(url: str, dest_dir, filename: str, md5: str) -> Path:
    """Download url to dest_dir/filename and return that path.

    Does nothing if the file is already there with the right md5; a file with the wrong
    md5 is deleted and downloaded again. The body goes to a temporary name and is renamed
    only after its md5 matches, so a failed, short or corrupt download leaves no file
    under the final name.
    """
    destination = Path(dest_dir) / filename
    if _keep_if_verified(destination, md5):
        return destination
    with _staging_file(destination) as partial:
        _stream_to_file(url, partial)
        _require_md5(partial, md5, described_as=url,
                     remedy="Rerun to download it again; if that keeps failing, check the URL "
                            "and md5 in luigi.cfg.")
        os.replace(partial, destination)
    logger.info("Downloaded %s to %s", url, destination)
    return destination


def fetch_flowers(dest_dir, images_url: str, images_md5: str, labels_url: str, labels_md5: str,
                  splits_url: str, splits_md5: str) -> Path:
    """Fetch Oxford 102 Flowers into dest_dir and return dest_dir/jpg with the images.

    102flowers.tgz, imagelabels.mat and setid.mat are kept in dest_dir; pass
    dest_dir/setid.mat to read_flowers_splits for the official split.
    """
    dest_dir = Path(dest_dir)
    archive = fetch_url(images_url, dest_dir, FLOWERS_IMAGES, images_md5)
    fetch_url(labels_url, dest_dir, FLOWERS_LABELS, labels_md5)
    fetch_url(splits_url, dest_dir, FLOWERS_SPLITS, splits_md5)
    _extract_once(archive, dest_dir, marker_dir=dest_dir)
    return _require_folder(dest_dir / "jpg", archive)


def read_flowers_splits(setid_path) -> dict[str, str]:
    """Map each image file name in the flowers jpg folder to 'train', 'val' or 'test'."""
    try:
        # Lazy: only this .mat file needs scipy, as in torchvision's Flowers102.
        from scipy.io import loadmat
    except ImportError:
        raise DownloadError("Reading setid.mat needs scipy: run `pip install scipy`.") from None
    try:
        image_ids = loadmat(setid_path, squeeze_me=True)
        splits = {}
        for split, key in _FLOWERS_SPLIT_KEYS.items():
            for image_id in np.atleast_1d(image_ids[key]).tolist():
                splits[f"image_{int(image_id):05d}.jpg"] = split
    except (KeyError, ValueError, OSError) as error:
        raise DownloadError(f"{setid_path} is not the Oxford flowers split file ({error}). "
                            "Delete it and rerun to download it again.") from error
    return splits


def fetch_digits(dest_dir, train_images_url: str, train_images_md5: str, test_images_url: str,
                 test_images_md5: str) -> Path:
    """Fetch MNIST's digits into dest_dir and return dest_dir/images, one PNG file per digit.

    The gzipped IDX files of the training and test images are kept in dest_dir (the labels
    are not fetched: the pipeline trains unconditional generators). Their digits are
    written once, as images/train/NNNNN.png and images/test/NNNNN.png (28x28 greyscale),
    and again only when an IDX file is replaced; pass the files below images/ to
    digits_split for the split.
    """
    dest_dir = Path(dest_dir)
    archives = {"train": fetch_url(train_images_url, dest_dir, DIGITS_TRAIN_IMAGES, train_images_md5),
                "test": fetch_url(test_images_url, dest_dir, DIGITS_TEST_IMAGES, test_images_md5)}
    images_dir, marker = dest_dir / "images", dest_dir / ".images.written"
    identity = _files_identity(*archives.values())
    if images_dir.is_dir() and _marked(marker, identity):
        return images_dir
    logger.info("Writing the MNIST digits as PNG files into %s", images_dir)
    staging = Path(tempfile.mkdtemp(prefix=".images-", dir=dest_dir))
    try:
        for split, archive in archives.items():
            (staging / split).mkdir()
            for index, digit in enumerate(_read_idx_images(archive)):
                Image.fromarray(digit).save(staging / split / f"{index:05d}.png")
        marker.unlink(missing_ok=True)
        shutil.rmtree(images_dir, ignore_errors=True)  # digits of replaced IDX files
        os.replace(staging, images_dir)  # atomic: the folder is either complete or absent
        marker.write_text(identity)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return images_dir


def digits_split(files) -> dict[str, str]:
    """Map each path below the digits' images/ folder to 'train', 'val' or 'test': the
    test digits are the test split, the last sixth of the training digits the val split."""
    training = sorted(path for path in files if path.startswith("train/"))
    first_val = round(len(training) * (1 - DIGITS_VAL_SHARE))
    split = {path: "train" if index < first_val else "val" for index, path in enumerate(training)}
    split.update((path, "test") for path in files if path.startswith("test/"))
    return split


def _read_idx_images(archive: Path) -> np.ndarray:
    """The (N, H, W) uint8 images of a gzipped IDX file, read with torchvision's MNIST reader."""
    from torchvision.datasets.mnist import read_image_file
    from torchvision.datasets.utils import extract_archive

    with tempfile.TemporaryDirectory(prefix=".idx-", dir=archive.parent) as scratch:
        try:
            images = read_image_file(extract_archive(str(archive), scratch)).numpy()
        except (AssertionError, OSError, EOFError, ValueError, KeyError) as error:
            raise DownloadError(f"{archive} is not a gzipped IDX file of MNIST images ({error!r}), although its "
                                "md5 is the one configured. Check the digits URLs and md5s in luigi.cfg.") from error
    return images


def fetch_celeba(dest_dir, source=None, file_id: str = CELEBA_IMAGES_FILE_ID,
                 md5: str = CELEBA_IMAGES_MD5, partition_file_id: str = CELEBA_PARTITION_FILE_ID,
                 partition_md5: str = CELEBA_PARTITION_MD5) -> Path:
    """Fetch aligned CelebA into dest_dir and return dest_dir/img_align_celeba with the images.

    With source=None both files come from Google Drive via gdown. Otherwise source is a
    folder holding img_align_celeba.zip and list_eval_partition.txt downloaded by hand;
    they are verified, the zip is extracted from there and the partition file copied.
    Either way list_eval_partition.txt ends up in dest_dir (see read_celeba_partition).
    """
    dest_dir = Path(dest_dir)
    if source is None:
        archive = _fetch_celeba_from_drive(file_id, dest_dir, CELEBA_IMAGES, md5)
        _fetch_celeba_from_drive(partition_file_id, dest_dir, CELEBA_PARTITION, partition_md5)
    else:
        archive, partition = _celeba_from_source(Path(source), md5, partition_md5)
        _copy_verified(partition, dest_dir / CELEBA_PARTITION, partition_md5)
    _extract_once(archive, dest_dir, marker_dir=dest_dir)
    return _require_folder(dest_dir / "img_align_celeba", archive)


def read_celeba_partition(path) -> dict[str, str]:
    """Map each image path relative to img_align_celeba/ to 'train', 'val' or 'test'."""
    partition = {}
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in _CELEBA_SPLITS:
            raise DownloadError(f"{path} line {line_number} is not '<image> <0|1|2>': {line!r}. "
                                f"Replace it with {CELEBA_PARTITION} from {CELEBA_PAGE}.")
        partition[fields[0]] = _CELEBA_SPLITS[fields[1]]
    return partition


def fetch_paintings(dest_dir, source=None, parts=(1,), competition: str = "painter-by-numbers") -> Path:
    """Fetch Kaggle Painter by Numbers training parts and return the folder with the images.

    parts picks which of train_1.zip ... train_9.zip to use. With source=None they are
    downloaded with the kaggle package and the user's own Kaggle credentials; otherwise
    source is a folder holding the zips downloaded by hand. Images end up anywhere below
    the returned folder dest_dir/paintings, in the folders each zip brings.
    """
    dest_dir = Path(dest_dir)
    names = _painting_archive_names(parts)
    if source is None:
        archives = _fetch_from_kaggle(competition, names, dest_dir)
    else:
        archives = _paintings_from_source(Path(source), names, competition)
    images_dir = dest_dir / "paintings"
    for archive in archives:
        _extract_once(archive, images_dir, marker_dir=dest_dir)
    return images_dir


def _keep_if_verified(path: Path, md5: str) -> bool:
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
def _staging_file(destination: Path):
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


def _require_md5(path: Path, md5: str, described_as: str, remedy: str) -> None:
    from torchvision.datasets.utils import calculate_md5

    actual = calculate_md5(path)
    if actual != md5:
        raise DownloadError(f"{described_as} has md5 {actual}, expected {md5}: it is corrupt, "
                            f"incomplete or a different file. {remedy}")


def _extract_once(archive: Path, target_dir: Path, marker_dir: Path) -> None:
    """Extract archive into target_dir unless this same archive file was extracted before.

    The marker records the archive's size and modification time, so a replaced archive
    is extracted again and an interrupted extraction (no marker yet) is redone.
    """
    marker = marker_dir / f".{archive.name}.extracted"
    identity = _files_identity(archive)
    if _marked(marker, identity):
        return
    logger.info("Extracting %s into %s", archive, target_dir)
    extracted = safe_extract(archive, target_dir)
    marker.write_text(identity)
    logger.info("Extracted %d files from %s", len(extracted), archive)


def _files_identity(*paths: Path) -> str:
    """Sizes and modification times, a line per file: what changes when a downloaded file is replaced."""
    return "".join(f"{path.stat().st_size} {path.stat().st_mtime_ns}\n" for path in paths)


def _marked(marker: Path, identity: str) -> bool:
    """Whether the work a marker file stands for was done for files of this identity."""
    return marker.is_file() and marker.read_text() == identity


def _require_folder(folder: Path, archive: Path) -> Path:
    if not folder.is_dir():
        raise DownloadError(f"{archive} has no {folder.name}/ folder, so it is not the expected "
                            "archive. Check the URL, file id, md5 or source folder in luigi.cfg.")
    return folder


def _copy_verified(source_file: Path, destination: Path, md5: str) -> None:
    if source_file.resolve() == destination.resolve() or _keep_if_verified(destination, md5):
        return
    with _staging_file(destination) as partial:
        shutil.copyfile(source_file, partial)
        os.replace(partial, destination)


def _celeba_manual_steps(folder_hint: str) -> str:
    return (f"Download {CELEBA_IMAGES} ('Align&Cropped Images') and {CELEBA_PARTITION} "
            f"('Evaluation partitions') by hand from {CELEBA_PAGE}, put both in {folder_hint} "
            "and pass that folder as source (the CelebA source setting in luigi.cfg).")


def _celeba_from_source(source: Path, md5: str, partition_md5: str) -> tuple[Path, Path]:
    archive, partition = source / CELEBA_IMAGES, source / CELEBA_PARTITION
    missing = [path.name for path in (archive, partition) if not path.is_file()]
    if missing:
        raise DownloadError(f"The CelebA source folder {source} lacks {' and '.join(missing)}. "
                            + _celeba_manual_steps(str(source)))
    for path, expected in ((archive, md5), (partition, partition_md5)):
        _require_md5(path, expected, described_as=str(path),
                     remedy=f"Download it again from {CELEBA_PAGE}.")
    return archive, partition


def _fetch_celeba_from_drive(file_id: str, dest_dir: Path, filename: str, md5: str) -> Path:
    destination = dest_dir / filename
    if _keep_if_verified(destination, md5):
        return destination
    import gdown  # lazy: only the Google Drive route needs it

    # A fixed staging name lets gdown resume its own partial file after an interruption;
    # gdown skips the download if this name already exists, so clear it first.
    staging = dest_dir / f".{filename}.gdown"
    staging.unlink(missing_ok=True)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download(id=file_id, output=str(staging), quiet=False, resume=True)
    except gdown.exceptions.FileURLRetrievalError as error:
        raise DownloadError(f"Google Drive would not serve {filename} (file id {file_id}), usually "
                            "because the file's daily download quota is used up. "
                            + _celeba_manual_steps("one folder")
                            + f" Google Drive said: {error}") from error
    except (gdown.exceptions.DownloadError, OSError) as error:
        raise DownloadError(f"Downloading {filename} from Google Drive failed: {error}. Rerun to "
                            "resume the download, or: " + _celeba_manual_steps("one folder")) from error
    try:
        _require_md5(staging, md5, described_as=f"{filename} from Google Drive",
                     remedy="Rerun to download it again, or: " + _celeba_manual_steps("one folder"))
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)
    return destination


def _painting_archive_names(parts) -> list[str]:
    parts = list(parts)
    if not parts or any(part not in PAINTINGS_PARTS for part in parts):
        raise DownloadError(f"Painter by Numbers training parts are numbered 1 to 9, got {parts!r}. "
                            "Fix the parts setting in luigi.cfg.")
    return [f"train_{part}.zip" for part in parts]


def _paintings_from_source(source: Path, names: list[str], competition: str) -> list[Path]:
    archives = [source / name for name in names]
    missing = [path.name for path in archives if not path.is_file()]
    if missing:
        raise DownloadError(f"The paintings source folder {source} lacks {', '.join(missing)}. "
                            f"Download them from https://www.kaggle.com/c/{competition}/data "
                            f"(accept the rules first) into {source}, or drop the source setting "
                            "to download them with your Kaggle credentials.")
    return archives


def _fetch_from_kaggle(competition: str, names: list[str], dest_dir: Path) -> list[Path]:
    archives = [dest_dir / name for name in names]
    # Only a complete download is ever renamed to its final name, so a readable zip
    # directory (at the end of the file) means it is done.
    missing = [path for path in archives if not (path.is_file() and zipfile.is_zipfile(path))]
    if missing:
        api = _kaggle_api(competition, names)
        dest_dir.mkdir(parents=True, exist_ok=True)
        for archive in missing:
            _download_competition_file(api, competition, archive)
    return archives


def _kaggle_manual_steps(competition: str, names: list[str]) -> str:
    return (f"Alternatively download {', '.join(names)} by hand from "
            f"https://www.kaggle.com/c/{competition}/data and pass their folder as source.")


def _kaggle_credentials_present() -> bool:
    """Whether any credential the kaggle package reads is set up (values are never read)."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    home_kaggle = Path.home() / ".kaggle"
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        config_dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    else:
        xdg_config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        config_dirs = [home_kaggle, xdg_config / "kaggle"]
    candidates = [folder / "kaggle.json" for folder in config_dirs]
    candidates += [home_kaggle / name for name in ("access_token", "access_token.txt", "credentials.json")]
    return any(path.is_file() for path in candidates)


def _kaggle_api(competition: str, names: list[str]):
    if not _kaggle_credentials_present():
        raise DownloadError(
            f"No Kaggle credentials found. Create an API token at {KAGGLE_TOKEN_PAGE}, save the "
            "downloaded kaggle.json as ~/.kaggle/kaggle.json (chmod 600) or set KAGGLE_USERNAME "
            "and KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment, then rerun. "
            + _kaggle_manual_steps(competition, names))
    # Lazy: importing kaggle authenticates at once, printing help and swallowing the
    # failure when no credentials exist.
    import kaggle

    api = kaggle.KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # kaggle's way of saying no credential worked
        raise DownloadError(
            f"Kaggle did not accept the credentials found. Create a new API token at "
            f"{KAGGLE_TOKEN_PAGE} and replace ~/.kaggle/kaggle.json (or KAGGLE_USERNAME/KAGGLE_KEY, "
            "KAGGLE_API_TOKEN), then rerun. " + _kaggle_manual_steps(competition, names)) from None
    return api


def _download_competition_file(api, competition: str, destination: Path) -> None:
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".kaggle-") as staging:
        try:
            api.competition_download_file(competition, destination.name, path=staging, quiet=False)
        except Exception as error:  # kaggle raises many types; their text may carry request details
            raise _kaggle_failure(error, competition, destination.name) from None
        downloaded = Path(staging) / destination.name
        if not (downloaded.is_file() and zipfile.is_zipfile(downloaded)):
            raise DownloadError(f"Kaggle did not deliver a complete {destination.name} for {competition} "
                                f"(received: {sorted(os.listdir(staging))}). Rerun to try again. "
                                + _kaggle_manual_steps(competition, [destination.name]))
        os.replace(downloaded, destination)
    logger.info("Downloaded %s from Kaggle competition %s", destination, competition)


def _kaggle_failure(error: Exception, competition: str, filename: str) -> DownloadError:
    """A DownloadError built from the error's type and HTTP status only, never its text,
    which could echo request headers or URLs holding credentials."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 403:
        return DownloadError(
            f"Kaggle refused {filename} of {competition} (HTTP 403), which means the competition "
            f"rules are not accepted. Accept them at https://www.kaggle.com/c/{competition}/rules "
            "while logged in as the account whose token you use, then rerun.")
    if status == 401:
        return DownloadError(
            f"Kaggle rejected your credentials (HTTP 401). Create a new API token at "
            f"{KAGGLE_TOKEN_PAGE}, replace ~/.kaggle/kaggle.json (or KAGGLE_USERNAME/KAGGLE_KEY), then rerun.")
    if status == 404:
        return DownloadError(
            f"Kaggle has no {filename} in competition {competition} (HTTP 404). Check the competition "
            "and parts settings in luigi.cfg.")
    reason = type(error).__name__ + (f", HTTP {status}" if status else "")
    return DownloadError(
        f"Downloading {filename} of {competition} from Kaggle failed ({reason}). Check the network "
        "connection and rerun. " + _kaggle_manual_steps(competition, [filename]))
