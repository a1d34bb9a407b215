"""The task that turns a source collection into training shards."""
import collections
import dataclasses
import io

import luigi
import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import datasets
from ..artifacts import storage
from ..datasets import SPLITS
from ..datasets.registry import scoring_subset
from ..errors import UserError
from ..ingestion.pool import DecodeSettings, usable_cores
from ..ingestion.shards import write_scoring_shards, write_shards
from ..settings import cache_dir
from .base import ArtifactTask, log


def _read_csv(path: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(path)), keep_default_na=False)


def splits_by_fraction(dataset: str, official_split: bool) -> bool:
    """Whether val_fraction and test_fraction decide the split, rather than the dataset's own."""
    return not (official_split and datasets.get(dataset).official_split)


class PrepareImages(ArtifactTask):
    """Decode, convert to RGB, centre-crop and resize every source image on all cores, into
    uint8 N x 3 x H x W shards per split, with a table of the images and the train mean pixel.

    Each file is kept or rejected with a reason (rejected.csv). Splits follow the dataset's
    official partition where it has one, else a hash of the file's path, so adding files
    never moves earlier ones. Byte-identical duplicates are kept once: in train if a copy
    is there, else val, else test, and within a split the first in path order. Shards hold
    their split's images in path order: training draws random rows from all of them, so no
    shuffled copy is needed.
    """

    # A plain Parameter checked when the task is created: a registry lookup accepts datasets
    # registered after this class is defined, which fixed choices would not.
    dataset = luigi.Parameter(default="sample", description=datasets.describe())
    source = luigi.Parameter(default="", description=datasets.describe_sources())
    paintings_parts = luigi.ListParameter(default=[1], description="Which of Painter by Numbers' train_1.zip "
                                                                   "... train_9.zip to use, e.g. [1,2]")
    image_size = luigi.IntParameter(default=64, description="Side in pixels of the square training images")
    eval_sizes = luigi.ListParameter(default=[256], description="Sides in pixels at which the val and test splits "
                                     "are also kept and scored, besides image_size; a source image with a shorter "
                                     "short side is kept at its own size, e.g. [256,512]")
    eval_images = luigi.IntParameter(default=300, description="Val and test images kept at eval_sizes, per split: a "
                                                              "fixed subset chosen by a hash of their paths; the "
                                                              "evaluation scores these test images at every size")
    val_fraction = luigi.FloatParameter(default=0.1, description="Share of files for val without an official split")
    test_fraction = luigi.FloatParameter(default=0.1, description="Share of files for test without an official split")
    official_split = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                         description="Use the dataset's own train/val/test split where it has one")
    reject_smaller = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                         description="Reject images with a short side below image_size "
                                                     "instead of upscaling them")
    max_pixels = luigi.IntParameter(default=200_000_000, description="Reject source images with more pixels")
    max_rejected_fraction = luigi.FloatParameter(default=0.5, description="Fail if more of the files are rejected")
    shard_size = luigi.IntParameter(default=1024, description="Images per shard file")
    decode_workers = luigi.IntParameter(default=0, significant=False,
                                        description="Decoding processes; 0 = one per usable core")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        datasets.check(self.dataset, self.source)
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise UserError(f"need val_fraction, test_fraction >= 0 with a sum below 1, "
                            f"got {self.val_fraction} and {self.test_fraction}")
        self.decode_settings = DecodeSettings(self.image_size, self.max_pixels, self.reject_smaller)
        if not 0 <= self.max_rejected_fraction <= 1:
            raise UserError(f"max_rejected_fraction must lie in [0, 1], got {self.max_rejected_fraction}")
        if self.decode_workers < 0:
            raise UserError(f"decode_workers must be >= 0 (0 = all cores), got {self.decode_workers}")
        if self.shard_size < 1:
            raise UserError(f"shard_size must be >= 1, got {self.shard_size}")
        if not all(isinstance(size, int) and size >= 8 for size in self.eval_sizes):
            raise UserError(f"eval_sizes must be a list of sides of at least 8 pixels, e.g. [256,512], "
                            f"got {list(self.eval_sizes)}")
        if self.eval_images < 1:
            raise UserError(f"eval_images must be >= 1, got {self.eval_images}")

    def scoring_sizes(self) -> list[int]:
        """Every side the held-out splits are scored at: image_size and eval_sizes, ascending."""
        return sorted({self.image_size, *self.eval_sizes})

    def source_fingerprint(self) -> str | None:
        # A user's folder can gain or lose files under the same path, and a mirror can serve
        # other files: a new listing or checksum means a new run.
        return datasets.fingerprint(self.dataset, self.source, self.paintings_parts)

    def resolved_config(self) -> dict:
        return {"decode": dataclasses.asdict(self.decode_settings), "dataset_settings": datasets.settings(self.dataset)}

    def build(self):
        source = datasets.resolve(self.dataset, self.source, self.paintings_parts)
        paths = source.files
        if not paths:
            raise UserError(f"no files found in {source.folder}")
        official_split = (source.official_split or {}) if self.official_split else {}
        split_of = {path: official_split.get(path) or datasets.hash_split(path, self.val_fraction, self.test_fraction)
                    for path in paths}
        self.check_splits(collections.Counter(split_of.values()), "files", bool(official_split))
        with tqdm(total=len(paths), desc="PrepareImages", unit="img") as bar:
            def progress(done: int) -> None:
                bar.update()
                if done % 256 == 0 or done == len(paths):
                    self.report_progress(done / len(paths), f"decoded {done}/{len(paths)} files")

            written = write_shards(source.folder, split_of, self.decode_settings,
                                   self.decode_workers or usable_cores(), self.shard_size, self.open_write, progress)

        with self.open_write("images.csv") as file:
            pd.DataFrame(written.kept, columns=["relative_path", "split", "shard", "row", "sha256"]).to_csv(
                file, index=False)
        rejected = pd.DataFrame(written.rejected, columns=["relative_path", "reason"])
        with self.open_write("rejected.csv") as file:
            rejected.to_csv(file, index=False)

        if not written.kept:
            raise UserError(f"no usable images among {len(paths)} files in {source.folder}; "
                            f"see {self.path('rejected.csv')}")
        rejected_share = len(written.rejected) / len(paths)
        if rejected_share > self.max_rejected_fraction:
            raise UserError(f"{len(written.rejected)} of {len(paths)} files rejected ({rejected_share:.0%}), above "
                            f"max_rejected_fraction={self.max_rejected_fraction}; see {self.path('rejected.csv')}")
        scored = {split: set(scoring_subset([row[0] for row in written.kept if row[1] == split], self.eval_images))
                  for split in ("val", "test")}
        held_out = [(path, split, sha256) for path, split, _, _, sha256 in written.kept if path in scored.get(split, ())]
        other_sizes = tuple(size for size in self.scoring_sizes() if size != self.image_size)
        scoring = []
        if other_sizes:  # the training size's images are the shards above
            log.info("PrepareImages: decoding %d val and test images again at %s px", len(held_out), other_sizes)
            scoring = write_scoring_shards(source.folder, held_out, other_sizes, self.max_pixels,
                                           self.decode_workers or usable_cores(), self.shard_size, self.open_write)
        with self.open_write("scoring_images.csv") as file:
            pd.DataFrame(scoring, columns=["relative_path", "split", "size", "side", "shard", "row"]).to_csv(
                file, index=False)
        counts = written.split_counts
        self.check_splits(counts, "kept images", bool(official_split))
        mean_pixel = written.mean_pixel()
        self.write_json("mean_pixel.json", {"mean_pixel": mean_pixel, "range": "[0, 1], RGB"})
        log.info("PrepareImages: kept %d, rejected %d of %d files",
                 len(written.kept), len(written.rejected), len(paths))
        return {"source_folder": source.folder, "files": len(paths), "kept": len(written.kept),
                "rejected": len(written.rejected),
                "rejected_by_kind": rejected["reason"].str.split(":").str[0].value_counts().to_dict(),
                "split": "official" if official_split else "path hash",
                "split_counts": {s: counts.get(s, 0) for s in SPLITS}, "mean_pixel": mean_pixel}

    def check_splits(self, counts: collections.Counter, what: str, official: bool) -> None:
        """Fail when a split that is asked for would be empty: train always, val and test when
        their fraction is above 0 or the dataset's official split is used."""
        shares = "/".join(str(counts[name]) for name in SPLITS)
        setting = ("the official split" if official
                   else f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}")
        for split, fraction in {"train": 1.0, "val": self.val_fraction, "test": self.test_fraction}.items():
            if counts[split] or not (official or fraction > 0):
                continue
            if official:
                change = "use --official-split false to split by val_fraction and test_fraction"
            elif split == "train":
                change = "add images or lower val_fraction and test_fraction"
            else:
                change = f"add images or raise {split}_fraction (or set it to 0 to do without a {split} split)"
            raise UserError(f"the {split} split would be empty: the {what} split {shares} (train/val/test) "
                            f"with {setting}; {change}")

    def split_paths(self, split: str) -> list[str]:
        """The shard files of one split, in shard order."""
        table = _read_csv(self.path("images.csv"))
        return [self.path(name) for name in sorted(table.loc[table["split"] == split, "shard"].unique())]

    def split_arrays(self, split: str) -> list[np.ndarray]:
        """The memory-mapped shards of one split, in shard order."""
        return [storage.load_array(path, cache_dir()) for path in self.split_paths(split)]

    def scoring_images(self, split: str, size: int) -> dict[int, tuple[list[str], np.ndarray]]:
        """The split's scoring_files at one scoring size, grouped by the side they were kept at (the size,
        or a smaller source's own): {side: (relative paths, (N, 3, side, side) uint8)}."""
        if size == self.image_size:
            table, side_of = _read_csv(self.path("images.csv")), lambda row: size
        else:
            table = _read_csv(self.path("scoring_images.csv"))
            table = table[table["size"] == size]
            side_of = lambda row: int(row.side)  # noqa: E731
        table = table[(table["split"] == split)].set_index("relative_path").loc[self.scoring_files(split)]
        groups: dict[int, tuple[list[str], list[np.ndarray]]] = {}
        shards = {}
        for path, row in table.iterrows():
            if row.shard not in shards:
                shards[row.shard] = storage.load_array(self.path(row.shard), cache_dir())
            paths, images = groups.setdefault(side_of(row), ([], []))
            paths.append(path)
            images.append(shards[row.shard][int(row.row)])
        return {side: (paths, np.stack(images)) for side, (paths, images) in sorted(groups.items())}

    def scoring_files(self, split: str) -> list[str]:
        """The relative paths of the val or test images kept at every scoring size, in path order."""
        table = _read_csv(self.path("images.csv"))
        return scoring_subset(list(table.loc[table["split"] == split, "relative_path"]), self.eval_images)

    def mean_pixel(self) -> list[float]:
        return storage.read_json(self.path("mean_pixel.json"))["mean_pixel"]
