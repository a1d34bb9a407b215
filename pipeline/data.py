"""The task that turns a source collection into training shards."""
import collections
import contextlib
import dataclasses
import io

import luigi
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import sources
from .artifacts import storage
from .tasks.base import ArtifactTask, cache_dir, log
from .ingest import DecodeSettings, ingest_folder, usable_cores

SPLITS = ("train", "val", "test")


def _read_csv(path: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(path)), keep_default_na=False)


def splits_by_fraction(dataset: str, official_split: bool) -> bool:
    """Whether val_fraction and test_fraction decide the split, rather than the dataset's own."""
    return not (official_split and dataset in sources.OFFICIAL_SPLIT_DATASETS)


class _Shards:
    """Kept images gathered per split and written shard_size at a time to shards/<split>-NNNNN.npy.

    Each image is copied into its split's buffer as it arrives from the decoding workers,
    so a shard is written from there without another copy, while the workers go on decoding.
    """

    def __init__(self, task: ArtifactTask, shard_size: int, image_shape: tuple[int, ...]):
        self.task = task
        self.buffers = {split: np.empty((shard_size, *image_shape), dtype=np.uint8) for split in SPLITS}
        self.filled = dict.fromkeys(SPLITS, 0)
        self.written = dict.fromkeys(SPLITS, 0)
        self.train_channel_sums = np.zeros(image_shape[0], dtype=np.uint64)  # exact, for the mean pixel
        self.train_pixels = 0

    def add(self, split: str, image: np.ndarray) -> tuple[str, int]:
        """(shard, row) where the image will be."""
        place = (self._name(split), self.filled[split])
        self.buffers[split][self.filled[split]] = image
        self.filled[split] += 1
        if self.filled[split] == len(self.buffers[split]):
            self.flush(split)
        return place

    def flush(self, split: str) -> None:
        """Write the split's images not yet written, if any, as a shard."""
        if not self.filled[split]:
            return
        images = self.buffers[split][:self.filled[split]]
        with self.task.open_write(self._name(split)) as file:
            # What np.save writes; np.save itself copies the array into a bytes object first
            # when the file is not a plain one (here it hashes as it writes).
            np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(images))
            file.write(memoryview(images).cast("B"))
        if split == "train":
            self.train_channel_sums += images.sum(axis=(0, 2, 3), dtype=np.uint64)
            self.train_pixels += images.shape[0] * images.shape[2] * images.shape[3]
        self.filled[split] = 0
        self.written[split] += 1

    def _name(self, split: str) -> str:
        return f"shards/{split}-{self.written[split]:05d}.npy"


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

    dataset = luigi.ChoiceParameter(default="sample", choices=sources.DATASETS,
                                    description="sample (offline), folder (source=DIR), flowers, celeba, "
                                                "paintings or digits")
    source = luigi.Parameter(default="", description="dataset=folder: directory of images; celeba, paintings: "
                                                     "optional folder of archives downloaded by hand")
    paintings_parts = luigi.ListParameter(default=[1], description="Which of Painter by Numbers' train_1.zip "
                                                                   "... train_9.zip to use, e.g. [1,2]")
    image_size = luigi.IntParameter(default=64, description="Side in pixels of the square training images")
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
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"need val_fraction, test_fraction >= 0 with a sum below 1, "
                             f"got {self.val_fraction} and {self.test_fraction}")
        self.decode_settings = DecodeSettings(self.image_size, self.max_pixels, self.reject_smaller)
        sources.check_source(self.dataset, self.source)
        if not 0 <= self.max_rejected_fraction <= 1:
            raise ValueError(f"max_rejected_fraction must lie in [0, 1], got {self.max_rejected_fraction}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0 (0 = all cores), got {self.decode_workers}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    def source_fingerprint(self) -> str | None:
        # A user's folder can gain or lose files under the same path, and a mirror can serve
        # other files: a new listing or checksum means a new run.
        return sources.fingerprint(self.dataset, self.source, self.paintings_parts)

    def resolved_config(self) -> dict:
        return {"decode": dataclasses.asdict(self.decode_settings), "dataset_settings": sources.settings(self.dataset)}

    def build(self):
        source = sources.resolve(self.dataset, self.source, self.paintings_parts)
        paths = source.files
        if not paths:
            raise ValueError(f"no files found in {source.folder}")
        official_split = (source.official_split or {}) if self.official_split else {}
        split_of = {path: official_split.get(path) or sources.hash_split(path, self.val_fraction, self.test_fraction)
                    for path in paths}
        self.check_splits(collections.Counter(split_of.values()), "files", bool(official_split))
        # Split by split, so that a split's last shard is written while the workers go on
        # decoding the next split rather than after the last file.
        paths = sorted(paths, key=lambda path: (SPLITS.index(split_of[path]), path))
        kept_rows, rejected_rows, seen, previous_split = [], [], {}, None
        shards = _Shards(self, self.shard_size, (3, self.image_size, self.image_size))
        decoded = ingest_folder(source.folder, paths, self.decode_settings, self.decode_workers or usable_cores())
        with contextlib.closing(decoded):  # stops the workers at once if anything here fails
            for count, item in enumerate(tqdm(decoded, total=len(paths), desc="PrepareImages", unit="img"), 1):
                split = split_of[item.relative_path]
                if previous_split not in (None, split):
                    shards.flush(previous_split)
                previous_split = split
                if item.image is None:
                    rejected_rows.append((item.relative_path, item.reason))
                elif item.sha256 in seen:
                    rejected_rows.append((item.relative_path, f"duplicate: same bytes as {seen[item.sha256]}"))
                else:
                    seen[item.sha256] = item.relative_path
                    kept_rows.append((item.relative_path, split, *shards.add(split, item.image), item.sha256))
                if count % 256 == 0 or count == len(paths):
                    self.report_progress(count / len(paths), f"decoded {count}/{len(paths)} files")
        for split in SPLITS:
            shards.flush(split)

        with self.open_write("images.csv") as file:
            pd.DataFrame(kept_rows, columns=["relative_path", "split", "shard", "row", "sha256"]).to_csv(file, index=False)
        rejected = pd.DataFrame(rejected_rows, columns=["relative_path", "reason"])
        with self.open_write("rejected.csv") as file:
            rejected.to_csv(file, index=False)

        if not kept_rows:
            raise RuntimeError(f"no usable images among {len(paths)} files in {source.folder}; "
                               f"see {self.path('rejected.csv')}")
        rejected_share = len(rejected_rows) / len(paths)
        if rejected_share > self.max_rejected_fraction:
            raise RuntimeError(f"{len(rejected_rows)} of {len(paths)} files rejected ({rejected_share:.0%}), above "
                               f"max_rejected_fraction={self.max_rejected_fraction}; see {self.path('rejected.csv')}")
        counts = collections.Counter(row[1] for row in kept_rows)
        self.check_splits(counts, "kept images", bool(official_split))
        mean_pixel = (shards.train_channel_sums / shards.train_pixels / 255).tolist()
        self.write_json("mean_pixel.json", {"mean_pixel": mean_pixel, "range": "[0, 1], RGB"})
        log.info("PrepareImages: kept %d, rejected %d of %d files", len(kept_rows), len(rejected_rows), len(paths))
        return {"source_folder": source.folder, "files": len(paths), "kept": len(kept_rows),
                "rejected": len(rejected_rows),
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
            raise ValueError(f"the {split} split would be empty: the {what} split {shares} (train/val/test) "
                             f"with {setting}; {change}")

    def split_paths(self, split: str) -> list[str]:
        """The shard files of one split, in shard order."""
        table = _read_csv(self.path("images.csv"))
        return [self.path(name) for name in sorted(table.loc[table["split"] == split, "shard"].unique())]

    def split_arrays(self, split: str) -> list[np.ndarray]:
        """The memory-mapped shards of one split, in shard order."""
        return [storage.load_array(path, cache_dir()) for path in self.split_paths(split)]

    def mean_pixel(self) -> list[float]:
        return storage.read_json(self.path("mean_pixel.json"))["mean_pixel"]
