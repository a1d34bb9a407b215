"""Downloading Kaggle competition files with the user's own Kaggle credentials: the kaggle
package reads them; here they are only looked for, never read, logged or written."""
import logging
import os
import tempfile
import zipfile
from pathlib import Path

from .fetch import DownloadError

logger = logging.getLogger(__name__)

TOKEN_PAGE = "https://www.kaggle.com/settings/api"


def download_competition_files(competition: str, names: list[str], dest_dir: Path) -> list[Path]:
    """dest_dir/name for each of the competition's zip files named, downloaded unless complete there."""
    archives = [dest_dir / name for name in names]
    # Only a complete download is ever renamed to its final name, so a readable zip
    # directory (at the end of the file) means it is done.
    missing = [path for path in archives if not (path.is_file() and zipfile.is_zipfile(path))]
    if missing:
        api = _authenticated_api(competition, names)
        dest_dir.mkdir(parents=True, exist_ok=True)
        for archive in missing:
            _download_competition_file(api, competition, archive)
    return archives


def _manual_steps(competition: str, names: list[str]) -> str:
    return (f"Alternatively download {', '.join(names)} by hand from "
            f"https://www.kaggle.com/c/{competition}/data and pass their folder as source.")


def _credentials_present() -> bool:
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


def _authenticated_api(competition: str, names: list[str]):
    if not _credentials_present():
        raise DownloadError(
            f"No Kaggle credentials found. Create an API token at {TOKEN_PAGE}, save the "
            "downloaded kaggle.json as ~/.kaggle/kaggle.json (chmod 600) or set KAGGLE_USERNAME "
            "and KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment, then rerun. "
            + _manual_steps(competition, names))
    # Lazy: importing kaggle authenticates at once, printing help and swallowing the
    # failure when no credentials exist.
    import kaggle

    api = kaggle.KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # kaggle's way of saying no credential worked
        raise DownloadError(
            f"Kaggle did not accept the credentials found. Create a new API token at "
            f"{TOKEN_PAGE} and replace ~/.kaggle/kaggle.json (or KAGGLE_USERNAME/KAGGLE_KEY, "
            "KAGGLE_API_TOKEN), then rerun. " + _manual_steps(competition, names)) from None
    return api


def _download_competition_file(api, competition: str, destination: Path) -> None:
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".kaggle-") as staging:
        try:
            api.competition_download_file(competition, destination.name, path=staging, quiet=False)
        except Exception as error:  # kaggle raises many types; their text may carry request details
            raise _failure(error, competition, destination.name) from None
        downloaded = Path(staging) / destination.name
        if not (downloaded.is_file() and zipfile.is_zipfile(downloaded)):
            raise DownloadError(f"Kaggle did not deliver a complete {destination.name} for {competition} "
                                f"(received: {sorted(os.listdir(staging))}). Rerun to try again. "
                                + _manual_steps(competition, [destination.name]))
        os.replace(downloaded, destination)
    logger.info("Downloaded %s from Kaggle competition %s", destination, competition)


def _failure(error: Exception, competition: str, filename: str) -> DownloadError:
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
            f"{TOKEN_PAGE}, replace ~/.kaggle/kaggle.json (or KAGGLE_USERNAME/KAGGLE_KEY), then rerun.")
    if status == 404:
        return DownloadError(
            f"Kaggle has no {filename} in competition {competition} (HTTP 404). Check the competition "
            "and parts settings in luigi.cfg.")
    reason = type(error).__name__ + (f", HTTP {status}" if status else "")
    return DownloadError(
        f"Downloading {filename} of {competition} from Kaggle failed ({reason}). Check the network "
        "connection and rerun. " + _manual_steps(competition, [filename]))
