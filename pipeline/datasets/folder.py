"""folder: every file below a folder of the user's, source=."""
import hashlib
import os

from .registry import REQUIRED_SOURCE, DatasetSpec, Request, Source, files_below


class Folder(DatasetSpec):
    name = "folder"
    description = "every file below source="
    source = REQUIRED_SOURCE
    source_help = "an existing directory of images"

    def resolve(self, request: Request) -> Source:
        return Source(str(request.source_dir), files_below(request.source_dir), None)

    def fingerprint(self, request: Request) -> str:
        """sha256 over every file's relative path, size and modification time, so that a folder
        that gains or loses files under the same path means a new run; empty if no such folder."""
        digest = hashlib.sha256()
        folder = request.source_dir
        for relative_path in files_below(folder) if folder else []:
            info = os.stat(os.path.join(folder, relative_path))
            digest.update(f"{relative_path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        return digest.hexdigest()
