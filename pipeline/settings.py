"""The `[artifacts]` section of luigi.cfg: where the tasks write, read by the task layer and the commands.

The one place the artifact root is read from the configuration; everything below the tasks
and commands (storage, checkpoints, runs, training processes) is given it as an argument.
"""
import luigi

from .artifacts import storage


class artifacts(luigi.Config):
    """`[artifacts]` section of luigi.cfg (or --artifacts-root on the command line)."""

    root = luigi.Parameter(default="./artifacts",
                           description="Directory or s3://bucket/prefix under which every task writes its output")
    cache_dir = luigi.Parameter(default="~/.cache/gan-pipeline",
                                description="Local copies of files read from S3, checked against their manifest")


def artifact_root() -> str:
    """The artifact root in force, the one place the task layer reads it; everything below is given it."""
    return storage.resolve_root(artifacts().root)


def cache_dir() -> str:
    return artifacts().cache_dir
