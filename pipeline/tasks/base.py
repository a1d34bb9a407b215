"""Base class of every pipeline task: hashed output directories, atomic files, manifests.

A task writes into `<root>/<TaskFamily>-<hash>` where the hash covers its significant
parameters and the hashes of its upstream tasks, so a change anywhere upstream gives
new directories and never overwrites an earlier run. A run first marks the directory as
the pipeline's own, then writes its data files and `manifest.json` last; a task is
complete exactly when its manifest exists and is intact.
"""
import datetime
import hashlib
import importlib.metadata
import json
import logging
import platform
from contextlib import contextmanager

import luigi
from luigi.task import flatten

from ..artifacts import storage
from ..errors import OneLineErrors, UserError, explain, explained_as_user_errors
from ..settings import artifact_root

log = logging.getLogger("luigi-interface")
log.addFilter(OneLineErrors())  # luigi logs every failure through this logger, with its traceback

MANIFEST = storage.MANIFEST
_RECORDED_PACKAGES = ("torch", "torchvision", "luigi", "numpy", "pillow", "pandas", "torchmetrics", "boto3")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _name_refusals(parameter: luigi.Parameter, name: str) -> None:
    """Make `parameter` refuse a value that does not parse with a UserError naming it.

    luigi's parsers raise a bare ValueError ("invalid literal for int()", "foo is not a valid
    choice") that names neither the parameter nor the task, on the command line and in luigi.cfg.
    """
    if getattr(parameter, "refusals_named", False):
        return

    def naming(method):
        def call(value):
            try:
                return method(value)
            except ValueError as error:  # int(), float(), choices, booleans, JSON all raise ValueError
                raise UserError(f"bad value for {name}: {error}") from None
        return call

    parameter.parse, parameter.normalize = naming(parameter.parse), naming(parameter.normalize)
    parameter.refusals_named = True


class ArtifactTask(luigi.Task):
    """Subclasses implement `build()`, writing their files with `self.open_write(name)`."""

    @classmethod
    def get_params(cls):
        """luigi's list of (name, parameter); each parameter refuses a value that does not parse naming itself."""
        params = super().get_params()
        for name, parameter in params:
            _name_refusals(parameter, name)
        return params

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        """luigi's, but a value from luigi.cfg that does not parse stays the UserError it raised."""
        try:
            return super().get_param_values(params, args, kwargs)
        except ValueError as error:  # luigi wraps what reading a luigi.cfg value raises in a ValueError
            if isinstance(error.__cause__, UserError):
                raise error.__cause__ from None
            raise

    def upstream(self) -> list["ArtifactTask"]:
        return flatten(self.requires())

    def deps(self):
        with explained_as_user_errors():  # an upstream task's refused option surfaces here
            return super().deps()

    def source_fingerprint(self) -> str | None:
        """For tasks that read data outside the pipeline: changes whenever that data changes."""
        return None

    def full_hash(self) -> str:
        """The sha256 of the task's identity; its directory name holds the first digits."""
        if "_full_hash" not in self.__dict__:  # parameters are immutable, so compute once
            identity = {
                "family": self.get_task_family(),
                "params": self.to_str_params(only_significant=True),
                "upstream": sorted(task.artifact_hash() for task in self.upstream()),
                "source": self.source_fingerprint(),
            }
            self._full_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self._full_hash

    def artifact_hash(self) -> str:
        return self.full_hash()[:storage.HASH_LENGTH]

    @property
    def directory(self) -> str:
        return storage.join(artifact_root(), f"{self.get_task_family()}-{self.artifact_hash()}")

    def path(self, name: str) -> str:
        return storage.join(self.directory, name)

    def output(self):
        return storage.target(self.path(MANIFEST))

    def complete(self) -> bool:
        """A manifest that parses and holds what the pipeline writes; a broken one means run again."""
        with explained_as_user_errors():  # the hash builds the upstream tasks, whose options may be refused
            try:
                return storage.read_manifest(self.directory) is not None
            except storage.BrokenManifest as error:
                log.warning("%s: %s", self.get_task_family(), error)
                return False

    def on_failure(self, exception: BaseException) -> str:
        """What the scheduler (and luigid's page) shows: the message alone for a user's error."""
        return explain(exception) or super().on_failure(exception)

    def resolved_config(self) -> dict:
        """The validated configuration this task runs with, saved in its manifest."""
        return {}

    def build(self) -> dict:
        """Produce the task's files; return a summary dict for the manifest."""
        raise NotImplementedError

    @contextmanager
    def open_write(self, name: str):
        with storage.open_write(self.path(name)) as file:
            yield file
        self._written[name] = (file.size, file.sha256.hexdigest())

    def write_json(self, name: str, value) -> None:
        self._written[name] = storage.write_json(self.path(name), value)

    def adopt_file(self, name: str, size: int, sha256: str) -> None:
        """Record a file another process wrote into this directory, so the manifest need not read it back."""
        self._written[name] = (size, sha256)

    def report_progress(self, fraction: float, message: str) -> None:
        self.set_progress_percentage(round(100 * fraction, 1))
        self.set_status_message(message)

    def run(self):
        self._written: dict[str, tuple[int, str]] = {}
        started = datetime.datetime.now(datetime.timezone.utc)
        storage.write_marker(self.directory, self.get_task_family(), self.full_hash())
        if not self.complete() and storage.exists(self.path(MANIFEST)):
            # Broken: it would refuse this run's own reads of its files until it is rewritten at the end.
            log.warning("%s: removing the broken %s before running again", self.get_task_family(), self.path(MANIFEST))
            storage.remove(self.path(MANIFEST))
        summary = self.build()
        files = {}
        for name in storage.list_files(self.directory):
            if name == MANIFEST:
                continue
            # Files left by an earlier, interrupted attempt (checkpoints) are hashed by reading them back.
            size, sha = self._written.get(name) or storage.sha256_of(self.path(name))
            files[name] = {"size": size, "sha256": sha}
        manifest = {
            "task_family": self.get_task_family(),
            "task_id": self.task_id,
            "hash": self.artifact_hash(),
            "parameters": self.to_str_params(only_significant=True),
            "config": self.resolved_config(),
            "upstream": {task.task_id: task.directory for task in self.upstream()},
            "packages": package_versions(),
            "started": started.isoformat(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "summary": summary or {},
            "files": files,
        }
        storage.write_manifest(self.directory, manifest)
