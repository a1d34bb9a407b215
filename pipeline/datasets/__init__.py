"""The image collections PrepareImages can ingest, one file each, found by name in a registry.

A collection is a DatasetSpec: what it is, whether it reads source=, whether it has its own
train/val/test split, the luigi.cfg settings it reads with their defaults, how it is fetched
into a folder on local disk and what identifies its content before anything is fetched.
Adding a dataset means writing one spec and registering it.
"""
from . import celeba, digits, flowers, folder, paintings, sample
from .registry import (NO_SOURCE, OPTIONAL_SOURCE, REQUIRED_SOURCE, SPLITS, DatasetSpec, Request, Source, check,
                       describe, describe_sources, files_below, fingerprint, get, hash_split, names, register, resolve,
                       settings, unregister)

__all__ = ["NO_SOURCE", "OPTIONAL_SOURCE", "REQUIRED_SOURCE", "SPLITS", "DatasetSpec", "Request", "Source", "check",
           "describe", "describe_sources", "files_below", "fingerprint", "get", "hash_split", "names", "register",
           "resolve", "settings", "unregister"]

for builtin in (sample.Sample, folder.Folder, flowers.Flowers, celeba.CelebA, paintings.Paintings, digits.Digits):
    register(builtin())
