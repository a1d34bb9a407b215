"""TensorBoard event files of a training run, in `<task directory>/tensorboard/`, written by rank 0.

`tensorboard --logdir <root>` then shows every run side by side. On a local root the events
are written in place, so a run shows while it trains. On an S3 root they are written to a
local temporary folder and uploaded through the job's output, like the task's other files
(and so recorded in its manifest), before every checkpoint and at the end.

Events are flushed before each checkpoint, so a checkpoint never lies beyond what was
logged. A writer starts with purge_step at the first step its run will log, one past the
step it resumes from (1 for a fresh start): TensorBoard's reader then drops whatever an
interrupted attempt logged after its checkpoint, so a resumed run shows every step once.
"""
import os
import shutil
import tempfile

import numpy as np

from ..artifacts import storage
from .output import JobOutput

DIRECTORY = "tensorboard"
NOT_SCALARS = ("phase", "step", "steps")  # what places a log row, rather than measures it


class TrainingBoard:
    """The event files of one training process's run; everything is a no-op off rank 0."""

    def __init__(self, output: JobOutput, resumed_from: int):
        """resumed_from: the step of the checkpoint the run resumes from, 0 when it starts afresh."""
        self.output, self.active = output, output.is_main
        if not self.active:
            return
        from torch.utils.tensorboard import SummaryWriter  # here: only rank 0 of a training process needs it

        directory = output.job.directory
        self.upload = storage.is_remote(directory)
        self.folder = tempfile.mkdtemp(prefix="tensorboard-") if self.upload else storage.join(directory, DIRECTORY)
        self.writer = SummaryWriter(self.folder, purge_step=resumed_from + 1)

    def log(self, row: dict, constants: dict | None = None) -> None:
        """Every number of a training log row as a scalar at the row's step; `constants`
        (settings such as learning rates) alongside, where the row has no value of its own."""
        if self.active:
            for tag, value in {**(constants or {}), **row}.items():
                if tag not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(tag, value, row["step"])

    def image(self, tag: str, step: int, pixels: np.ndarray) -> None:
        """An (H, W, 3) uint8 image."""
        if self.active:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def flush(self) -> None:
        if self.active:
            self.writer.flush()
            self._upload()

    def close(self, failed: bool = False) -> None:
        """Write out the events; on S3 upload them, unless the run `failed`: then what was
        uploaded at its last checkpoint stands, and a rerun resumes from there."""
        if self.active:
            self.writer.close()
            if not failed:
                self._upload()
            if self.upload:
                shutil.rmtree(self.folder, ignore_errors=True)

    def _upload(self) -> None:
        if self.upload:
            for name in sorted(os.listdir(self.folder)):
                with open(os.path.join(self.folder, name), "rb") as file:
                    self.output.write(f"{DIRECTORY}/{name}", file.read())
