"""Tasks that turn a source collection into resized images and training shards."""
import contextlib
import dataclasses

import luigi
import luigi.util
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import sources, storage
from .base import ArtifactTask, log
from .ingest import DecodeSettings, ingest_folder, usable_cores

SPLITS = ("train", "val", "test")
PART_SIZE = 4096  # images per file written by PrepareImages


def _read_csv(path: str) -> pd.DataFrame:
    with storage.open_read(path) as file:
        return pd.read_csv(file, keep_default_na=False)


def load_array(path: str) -> np.ndarray:
    """A stored uint8 array, memory-mapped so only the rows used are read."""
    return np.load(storage.local_path(path), mmap_mode="r", allow_pickle=False)


class _ImageParts:
    """Kept images, buffered per split and written PART_SIZE at a time to images/<split>-NNNNN.npy."""

    def __init__(self, task: ArtifactTask):
        self.task = task
        self.buffers: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
        self.written = {split: 0 for split in SPLITS}

    def add(self, split: str, image: np.ndarray) -> tuple[str, int]:
        """(file, row) where the image will be."""
        place = (self._name(split), len(self.buffers[split]))
        self.buffers[split].append(image)
        if len(self.buffers[split]) == PART_SIZE:
            self._flush(split)
        return place

    def flush_all(self) -> None:
        for split in SPLITS:
            if self.buffers[split]:
                self._flush(split)

    def _name(self, split: str) -> str:
        return f"images/{split}-{self.written[split]:05d}.npy"

    def _flush(self, split: str) -> None:
        with self.task.open_write(self._name(split)) as file:
            np.save(file, np.stack(self.buffers[split]), allow_pickle=False)
        self.buffers[split].clear()
        self.written[split] += 1


class PrepareImages(ArtifactTask):
    """Decode, convert to RGB, centre-crop and resize every source image on all cores.

    Each file is kept or rejected with a reason (rejected.csv); byte-identical duplicates
    are kept once. Splits follow the dataset's official partition where it has one, else
    a hash of the file's path, so adding files never moves earlier ones.
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
        kept_rows, rejected_rows, seen = [], [], {}
        parts = _ImageParts(self)
        decoded = ingest_folder(source.folder, paths, self.decode_settings, self.decode_workers or usable_cores())
        with contextlib.closing(decoded):  # stops the workers at once if anything here fails
            for count, item in enumerate(tqdm(decoded, total=len(paths), desc="PrepareImages", unit="img"), 1):
                if item.image is None:
                    rejected_rows.append((item.relative_path, item.reason))
                elif item.sha256 in seen:
                    rejected_rows.append((item.relative_path, f"duplicate: same bytes as {seen[item.sha256]}"))
                else:
                    seen[item.sha256] = item.relative_path
                    split = official_split.get(item.relative_path) or sources.hash_split(
                        item.relative_path, self.val_fraction, self.test_fraction)
                    kept_rows.append((item.relative_path, split, *parts.add(split, item.image), item.sha256))
                if count % 256 == 0 or count == len(paths):
                    self.report_progress(count / len(paths), f"decoded {count}/{len(paths)} files")
        parts.flush_all()

        with self.open_write("images.csv") as file:
            pd.DataFrame(kept_rows, columns=["relative_path", "split", "file", "row", "sha256"]).to_csv(file, index=False)
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
        counts = pd.Series([row[1] for row in kept_rows]).value_counts().to_dict()
        log.info("PrepareImages: kept %d, rejected %d of %d files", len(kept_rows), len(rejected_rows), len(paths))
        return {"source_folder": source.folder, "files": len(paths), "kept": len(kept_rows),
                "rejected": len(rejected_rows),
                "rejected_by_kind": rejected["reason"].str.split(":").str[0].value_counts().to_dict(),
                "split": "official" if official_split else "path hash",
                "split_counts": {s: counts.get(s, 0) for s in SPLITS}}


@luigi.util.requires(PrepareImages)
class BuildShards(ArtifactTask):
    """uint8 N x 3 x H x W shards per split (train shuffled), an index table and the train mean pixel."""

    shard_size = luigi.IntParameter(default=1024, description="Images per shard file")
    shuffle_seed = luigi.IntParameter(default=0, description="Seed of the train split's shard order")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    def build(self):
        prepared = self.requires()
        table = _read_csv(prepared.path("images.csv"))
        arrays = {name: load_array(prepared.path(name)) for name in table["file"].unique()}
        index_rows, channel_sum, train_pixels = [], np.zeros(3), 0
        for split in SPLITS:
            rows = table[table["split"] == split].sort_values("relative_path")
            if split == "train":
                rows = rows.sample(frac=1, random_state=self.shuffle_seed)
            for shard, start in enumerate(range(0, len(rows), self.shard_size)):
                chunk = rows.iloc[start:start + self.shard_size]
                images = np.stack([arrays[file][row] for file, row in zip(chunk["file"], chunk["row"])])
                name = f"shards/{split}-{shard:05d}.npy"
                with self.open_write(name) as file:
                    np.save(file, images, allow_pickle=False)
                index_rows += [(split, name, i, path) for i, path in enumerate(chunk["relative_path"])]
                if split == "train":
                    channel_sum += images.sum(axis=(0, 2, 3), dtype=np.float64)
                    train_pixels += images.shape[0] * images.shape[2] * images.shape[3]
            self.report_progress((SPLITS.index(split) + 1) / len(SPLITS), f"wrote {split} shards")
        if train_pixels == 0:
            raise RuntimeError("the train split is empty; add images or lower val_fraction/test_fraction")
        with self.open_write("index.csv") as file:
            pd.DataFrame(index_rows, columns=["split", "shard", "row", "relative_path"]).to_csv(file, index=False)
        mean_pixel = (channel_sum / train_pixels / 255).tolist()
        self.write_json("mean_pixel.json", {"mean_pixel": mean_pixel, "range": "[0, 1], RGB"})
        counts = pd.Series([row[0] for row in index_rows]).value_counts().to_dict()
        return {"mean_pixel": mean_pixel, "split_counts": {s: counts.get(s, 0) for s in SPLITS}}

    def split_paths(self, split: str) -> list[str]:
        """The shard files of one split, in shard order."""
        index = _read_csv(self.path("index.csv"))
        return [self.path(name) for name in sorted(index.loc[index["split"] == split, "shard"].unique())]

    def split_arrays(self, split: str) -> list[np.ndarray]:
        """The memory-mapped shards of one split, in shard order."""
        return [load_array(path) for path in self.split_paths(split)]

    def mean_pixel(self) -> list[float]:
        return storage.read_json(self.path("mean_pixel.json"))["mean_pixel"]
