"""Extracting downloaded zip and tar archives without letting them write outside their folder.

Every member is checked before the first byte is written, so a refused archive leaves the
target folder as it was.
"""
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import UserError


class ArchiveError(UserError):
    """An archive that cannot be read; the message says what to do about it."""


class UnsafeArchive(ArchiveError):
    """An archive member that would write outside the target folder or create a special file."""

    def __init__(self, archive_path, member_name: str, problem: str):
        super().__init__(
            f"Refusing to extract {archive_path}: member {member_name!r} {problem}. "
            "Nothing was extracted; the archive is damaged or malicious, so delete it and "
            "download it again from a trusted source."
        )
        self.member_name = member_name


# Windows-made archives may use backslashes or drive letters; they must not count as
# harmless characters when deciding whether a name escapes.
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_extract(archive_path, target_dir) -> list[str]:
    """Extract a zip or tar (plain, gz, bz2, xz) archive into target_dir.

    Raises UnsafeArchive, naming the member, before writing anything if any member has an
    absolute path, escapes target_dir through `..` or an existing symlink, is a symlink or
    hardlink, or is a device, fifo or other special file. Raises ArchiveError for a file
    that is not a readable archive.

    Returns the relative (POSIX-style) paths of the regular files extracted, in archive order.
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive_path):
            return _extract_zip(archive_path, target_dir)
        if tarfile.is_tarfile(archive_path):
            return _extract_tar(archive_path, target_dir)
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError, OSError, RuntimeError) as error:
        # RuntimeError: zipfile's answer to encrypted members. Any of these mid-way means a
        # truncated or corrupt download.
        raise ArchiveError(
            f"Cannot extract {archive_path}: {error}. The file is probably truncated or corrupt; "
            "delete it and download it again."
        ) from error
    raise ArchiveError(
        f"{archive_path} is neither a zip nor a tar archive. Delete it and download it again, "
        "or check that the configured URL or source folder points at the right file."
    )


def _escape_problem(name: str, target_dir: Path) -> str | None:
    """Why writing member `name` under target_dir would be unsafe, or None if it is fine."""
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        return "has an absolute path"
    destination = os.path.realpath(target_dir / name.replace("\\", "/"))
    root = os.path.realpath(target_dir)
    if os.path.commonpath([destination, root]) != root:
        return f"would be written outside the target folder (to {destination})"
    return None


def _extract_tar(archive_path, target_dir: Path) -> list[str]:
    with tarfile.open(archive_path, "r:*") as archive:
        members = archive.getmembers()
        for member in members:
            problem = _escape_problem(member.name, target_dir)
            if problem is None and (member.issym() or member.islnk()):
                problem = f"is a link to {member.linkname!r}"
            if problem is None and not (member.isfile() or member.isdir()):
                problem = "is a device, fifo or other special file"
            if problem:
                raise UnsafeArchive(archive_path, member.name, problem)
        if hasattr(tarfile, "data_filter"):
            # The stdlib filter is a second line of defence and also drops setuid bits
            # and foreign ownership.
            archive.extractall(target_dir, members=members, filter="data")
        else:
            archive.extractall(target_dir, members=members)
    return [PurePosixPath(os.path.normpath(member.name)).as_posix()
            for member in members if member.isfile()]


def _extract_zip(archive_path, target_dir: Path) -> list[str]:
    with zipfile.ZipFile(archive_path) as archive:
        members = archive.infolist()
        for member in members:
            problem = _escape_problem(member.filename, target_dir)
            # Many zip writers store permission bits without a file type; only an explicit
            # non-regular type counts. zipfile would write a symlink or device entry as a
            # plain file holding its target, so refuse rather than silently change its meaning.
            file_type = stat.S_IFMT(member.external_attr >> 16) if member.create_system == 3 else 0
            if problem is None and file_type == stat.S_IFLNK:
                problem = "is a symlink"
            elif problem is None and file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                problem = "is a device, fifo or other special file"
            if problem:
                raise UnsafeArchive(archive_path, member.filename, problem)
        extracted = []
        for member in members:
            written = archive.extract(member, target_dir)
            if not member.is_dir():
                extracted.append(Path(os.path.relpath(written, target_dir)).as_posix())
    return extracted
