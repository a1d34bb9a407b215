"""celeba: aligned CelebA faces from Google Drive (as torchvision fetches them), or from the
files downloaded by hand, with the published train/val/test partition."""
import os
from pathlib import Path

from .fetch import DownloadError, copy_verified, extract_once, keep_if_verified, require_folder, require_md5
from .registry import OPTIONAL_SOURCE, DatasetSpec, Request, Source, files_below

PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGES = "img_align_celeba.zip"
PARTITION = "list_eval_partition.txt"
_SPLITS = {"0": "train", "1": "val", "2": "test"}


class CelebA(DatasetSpec):
    name = "celeba"
    description = "aligned CelebA faces, from Google Drive or source="
    source = OPTIONAL_SOURCE
    source_help = f"folder holding {IMAGES} and {PARTITION} downloaded by hand"
    official_split = True
    # The Google Drive files and checksums torchvision's CelebA dataset uses.
    settings = {"file_id": "0B7EVK8r0v71pZjFTYXZWM3FlRnM", "md5": "00d2c5bc6d35e252742224ab0c1e8fcb",
                "partition_file_id": "0B7EVK8r0v71pY0NSMzRuSXJEVkk",
                "partition_md5": "d32c9cbf5e040fd4025c592c306e6668"}

    def resolve(self, request: Request) -> Source:
        destination = request.download_dir / "celeba"
        images = fetch_celeba(destination, request.source_dir, **request.settings)
        return Source(str(images), files_below(images), read_celeba_partition(destination / PARTITION))


def fetch_celeba(dest_dir, source=None, *, file_id: str, md5: str, partition_file_id: str, partition_md5: str) -> Path:
    """Fetch aligned CelebA into dest_dir and return dest_dir/img_align_celeba with the images.

    With source=None both files come from Google Drive via gdown. Otherwise source is a
    folder holding img_align_celeba.zip and list_eval_partition.txt downloaded by hand;
    they are verified, the zip is extracted from there and the partition file copied.
    Either way list_eval_partition.txt ends up in dest_dir (see read_celeba_partition).
    """
    dest_dir = Path(dest_dir)
    if source is None:
        archive = _fetch_from_drive(file_id, dest_dir, IMAGES, md5)
        _fetch_from_drive(partition_file_id, dest_dir, PARTITION, partition_md5)
    else:
        archive, partition = _from_source(Path(source), md5, partition_md5)
        copy_verified(partition, dest_dir / PARTITION, partition_md5)
    extract_once(archive, dest_dir, marker_dir=dest_dir)
    return require_folder(dest_dir / "img_align_celeba", archive)


def read_celeba_partition(path) -> dict[str, str]:
    """Map each image path relative to img_align_celeba/ to 'train', 'val' or 'test'."""
    partition = {}
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in _SPLITS:
            raise DownloadError(f"{path} line {line_number} is not '<image> <0|1|2>': {line!r}. "
                                f"Replace it with {PARTITION} from {PAGE}.")
        partition[fields[0]] = _SPLITS[fields[1]]
    return partition


def _manual_steps(folder_hint: str) -> str:
    return (f"Download {IMAGES} ('Align&Cropped Images') and {PARTITION} "
            f"('Evaluation partitions') by hand from {PAGE}, put both in {folder_hint} "
            "and pass that folder as source (the CelebA source setting in luigi.cfg).")


def _from_source(source: Path, md5: str, partition_md5: str) -> tuple[Path, Path]:
    archive, partition = source / IMAGES, source / PARTITION
    missing = [path.name for path in (archive, partition) if not path.is_file()]
    if missing:
        raise DownloadError(f"The CelebA source folder {source} lacks {' and '.join(missing)}. "
                            + _manual_steps(str(source)))
    for path, expected in ((archive, md5), (partition, partition_md5)):
        require_md5(path, expected, described_as=str(path), remedy=f"Download it again from {PAGE}.")
    return archive, partition


def _fetch_from_drive(file_id: str, dest_dir: Path, filename: str, md5: str) -> Path:
    destination = dest_dir / filename
    if keep_if_verified(destination, md5):
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
                            + _manual_steps("one folder")
                            + f" Google Drive said: {error}") from error
    except (gdown.exceptions.DownloadError, OSError) as error:
        raise DownloadError(f"Downloading {filename} from Google Drive failed: {error}. Rerun to "
                            "resume the download, or: " + _manual_steps("one folder")) from error
    try:
        require_md5(staging, md5, described_as=f"{filename} from Google Drive",
                    remedy="Rerun to download it again, or: " + _manual_steps("one folder"))
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)
    return destination
