"""paintings: Kaggle's Painter by Numbers training parts, fetched with the user's own Kaggle
credentials or taken from the zips downloaded by hand."""
from pathlib import Path

from .fetch import DownloadError, extract_once
from .kaggle_download import download_competition_files
from .registry import OPTIONAL_SOURCE, DatasetSpec, Request, Source, files_below

PARTS = range(1, 10)


class Paintings(DatasetSpec):
    name = "paintings"
    description = "Kaggle's Painter by Numbers, with your Kaggle token or source="
    source = OPTIONAL_SOURCE
    source_help = "folder of the train_N.zip files downloaded by hand"
    settings = {"competition": "painter-by-numbers"}

    def resolve(self, request: Request) -> Source:
        images = fetch_paintings(request.download_dir / "paintings", request.source_dir,
                                 parts=request.paintings_parts, competition=request.settings["competition"])
        return Source(str(images), _painting_files(images, request.paintings_parts), None)

    def fingerprint(self, request: Request) -> str:
        # No published checksums, so archives downloaded by hand are known by size and date.
        folder = request.source_dir
        archives = [folder / f"train_{part}.zip" for part in request.paintings_parts] if folder else []
        stats = [f"{path.name} {path.stat().st_size} {path.stat().st_mtime_ns}" for path in archives if path.is_file()]
        return " ".join([request.settings["competition"], *stats])


def fetch_paintings(dest_dir, source=None, parts=(1,), *, competition: str) -> Path:
    """Fetch Kaggle Painter by Numbers training parts and return the folder with the images.

    parts picks which of train_1.zip ... train_9.zip to use. With source=None they are
    downloaded with the kaggle package and the user's own Kaggle credentials; otherwise
    source is a folder holding the zips downloaded by hand. Images end up anywhere below
    the returned folder dest_dir/paintings, in the folders each zip brings.
    """
    dest_dir = Path(dest_dir)
    names = _archive_names(parts)
    if source is None:
        archives = download_competition_files(competition, names, dest_dir)
    else:
        archives = _from_source(Path(source), names, competition)
    images_dir = dest_dir / "paintings"
    for archive in archives:
        extract_once(archive, images_dir, marker_dir=dest_dir)
    return images_dir


def _painting_files(images: Path, parts) -> list[str]:
    """The files of the chosen parts only: train_N.zip unpacks into train_N/, and parts
    chosen by earlier runs stay unpacked next to them."""
    files = []
    for part in parts:
        found = [f"train_{part}/{path}" for path in files_below(images / f"train_{part}")]
        if not found:
            raise DownloadError(f"train_{part}.zip brought no files under train_{part}/ in {images}; "
                                "it is not the Painter by Numbers archive of that name.")
        files += found
    return sorted(files)


def _archive_names(parts) -> list[str]:
    parts = list(parts)
    if not parts or any(part not in PARTS for part in parts):
        raise DownloadError(f"Painter by Numbers training parts are numbered 1 to 9, got {parts!r}. "
                            "Fix the parts setting in luigi.cfg.")
    return [f"train_{part}.zip" for part in parts]


def _from_source(source: Path, names: list[str], competition: str) -> list[Path]:
    archives = [source / name for name in names]
    missing = [path.name for path in archives if not path.is_file()]
    if missing:
        raise DownloadError(f"The paintings source folder {source} lacks {', '.join(missing)}. "
                            f"Download them from https://www.kaggle.com/c/{competition}/data "
                            f"(accept the rules first) into {source}, or drop the source setting "
                            "to download them with your Kaggle credentials.")
    return archives
