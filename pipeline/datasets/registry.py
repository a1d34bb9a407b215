"""DatasetSpec, the registry of specs and what PrepareImages asks of them: the collection-independent part."""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import luigi
import luigi.configuration

from ..errors import UserError

SPLITS = ("train", "val", "test")

# Whether a dataset reads its files from source=.
NO_SOURCE, OPTIONAL_SOURCE, REQUIRED_SOURCE = "none", "optional", "required"


class datasets(luigi.Config):
    """`[datasets]` section of luigi.cfg (luigi names a Config's section after its class)."""

    download_dir = luigi.Parameter(default="./downloads",
                                   description="Local folder for downloaded and generated source images")


@dataclass(frozen=True)
class Source:
    folder: str  # absolute
    files: list[str]  # relative paths (with '/') below folder that make up the dataset, sorted
    official_split: Mapping[str, str] | None  # "train"/"val"/"test" by relative path, if the dataset has one


@dataclass(frozen=True)
class Request:
    """What PrepareImages asks of a dataset."""

    source: str  # source= as typed; "" when not given
    settings: Mapping[str, str]  # the spec's settings, with its luigi.cfg section over the defaults
    download_dir: Path  # absolute; each dataset keeps its files in a folder of its own below it
    paintings_parts: tuple[int, ...]  # for dataset=paintings: which train_N.zip to use

    @property
    def source_dir(self) -> Path | None:
        return Path(os.path.abspath(os.path.expanduser(self.source))) if self.source else None


class DatasetSpec:
    """One image collection. Subclasses set the attributes and implement resolve."""

    name: str
    description: str  # one line: what the images are, for the dataset parameter's help
    source = NO_SOURCE  # whether source= is refused, optional or required
    source_help = ""  # what source= holds, for the source parameter's help and its errors
    official_split = False  # whether resolve gives the collection's own train/val/test split
    # Every key of the luigi.cfg section named after the dataset, with its default: the one
    # place the URLs, ids and checksums live, so that luigi.cfg need only name a mirror.
    settings: Mapping[str, str] = {}

    def resolve(self, request: Request) -> Source:
        """Fetch the collection where needed and say which files make it up."""
        raise NotImplementedError

    def fingerprint(self, request: Request) -> str:
        """What identifies the content and split beyond the task's own parameters, known
        before anything is fetched: here the md5s among the settings, so that a mirror
        serving other files means a new run."""
        return " ".join(value for key, value in sorted(request.settings.items()) if key.endswith("md5"))


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"a dataset named {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def describe() -> str:
    """Every dataset with its description, on one line."""
    return "; ".join(f"{spec.name}: {spec.description}" for spec in _REGISTRY.values())


def describe_sources() -> str:
    """What source= holds for each dataset that reads it, on one line."""
    return "; ".join(f"dataset={spec.name}: {'optional ' if spec.source == OPTIONAL_SOURCE else ''}{spec.source_help}"
                     for spec in _REGISTRY.values() if spec.source != NO_SOURCE)


def get(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset={name!r}; choose one of {', '.join(names())}, "
                        "or register a DatasetSpec for it with pipeline.datasets.register")
    return _REGISTRY[name]


def settings(name: str) -> dict[str, str]:
    """The spec's settings with the luigi.cfg section named after the dataset over them."""
    defaults = get(name).settings
    config = luigi.configuration.get_config()
    configured = dict(config.items(name)) if config.has_section(name) else {}
    for key in configured:
        if key not in defaults:
            raise UserError(f"luigi.cfg [{name}] has an unknown setting {key!r}; dataset={name} reads "
                            f"{', '.join(defaults) if defaults else 'no settings'}")
    return {**defaults, **configured}


def check(name: str, source: str) -> None:
    """Refuse, before anything runs, an unknown dataset, a source where it takes none, and
    a luigi.cfg section with keys it does not read."""
    if source and get(name).source == NO_SOURCE:
        taking = [other.name for other in _REGISTRY.values() if other.source != NO_SOURCE]
        raise UserError(f"dataset={name} takes no source (got {source!r}); source is for {', '.join(taking)}")
    settings(name)


def resolve(name: str, source: str = "", paintings_parts=(1,)) -> Source:
    """Fetch the dataset where needed and say which files make it up."""
    check(name, source)
    request = _request(name, source, paintings_parts)
    dataset = get(name)
    if dataset.source == REQUIRED_SOURCE and not (request.source_dir and request.source_dir.is_dir()):
        raise UserError(f"dataset={name} needs source= {dataset.source_help}, got {source!r}")
    return dataset.resolve(request)


def fingerprint(name: str, source: str = "", paintings_parts=(1,)) -> str:
    """What identifies the dataset's content and split beyond the task's own parameters, known
    before anything is fetched."""
    return get(name).fingerprint(_request(name, source, paintings_parts))


def _request(name: str, source: str, paintings_parts) -> Request:
    download_dir = Path(os.path.abspath(os.path.expanduser(datasets().download_dir)))
    return Request(source, settings(name), download_dir, tuple(paintings_parts))


def files_below(folder) -> list[str]:
    """Relative paths (with '/') of every regular file below folder, sorted, hidden ones
    included, symbolic links left out; empty if there is no such folder."""
    if not os.path.isdir(folder):
        return []
    found, pending = [], [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(os.path.join(folder, prefix)) as entries:  # file types without a stat per file
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(f"{prefix}{entry.name}/")
                elif entry.is_file(follow_symlinks=False):
                    found.append(prefix + entry.name)
    return sorted(found)


def scoring_subset(paths: list[str], count: int) -> list[str]:
    """A fixed subset of `count` of the paths (all of them if fewer), in path order: those whose
    hash ranks first, so the same files are chosen in every run and adding files changes few."""
    rank = lambda path: hashlib.sha256(f"scoring subset:{path}".encode()).digest()  # noqa: E731
    return sorted(sorted(paths, key=rank)[:count])


def hash_split(relative_path: str, val_fraction: float, test_fraction: float) -> str:
    """A split that depends on the file's path alone, so adding files never moves old ones."""
    position = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2 ** 64
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"
