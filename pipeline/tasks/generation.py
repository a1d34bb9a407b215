"""TrainDCGAN: an unconditional DCGAN on a prepared dataset, its progress rendered as grids and GIFs."""
import io

import luigi
import luigi.util
import numpy as np
import pandas as pd
import torch
from PIL import Image

from ganmodels.dcgan.config import DCGANConfig
from ganmodels.dcgan.sampling import closed_tour, generate, generator_from_state
from ganmodels.feeding import to_float
from ganmodels.metrics import patch_swd

from ..artifacts import storage
from ..artifacts.checkpoints import FINAL_STATE, latest_checkpoint, load_state
from ..errors import UserError
from ..training.loops import SNAPSHOT_DIRECTORY
from .base import log
from .prepare import PrepareImages
from .options import build_options, takes_options
from .training import TrainingTask

PLOTTED_METRICS = ["loss_d", "loss_g", "d_real", "d_fake"]
METRICS_COLUMNS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g", "grad_norm_d", "diversity",
                   "images_per_s", "data_wait"]
SWD_IMAGES = 1024  # held-out images (and as many samples) the sliced Wasserstein distance compares


@takes_options(DCGANConfig)
@luigi.util.requires(PrepareImages)
class TrainDCGAN(TrainingTask):
    """The end task of the generation branch: a DCGAN trained on the train split, with its progress.

    The training runs in child processes (one, or DDP under torchrun), like the
    inpainting phases; the renders are drawn here, on the CPU, from the final state.

    Writes model.pt (the final state; EMA weights inside when ema_decay > 0), metrics.csv,
    loss_curves.png, snapshots/step-NNNNNNN.png (the fixed latents' samples), progress.gif
    (those snapshots in order), latent_walk.gif and samples.png.
    """

    training_kind = "dcgan"
    sample_count = luigi.IntParameter(default=64, description="Samples in samples.png")
    walk_keyframes = luigi.IntParameter(default=8, description="Random latents the latent walk passes through")
    walk_frames_between = luigi.IntParameter(default=16, description="Frames between two keyframes of the walk")
    gif_frame_ms = luigi.IntParameter(default=100, description="Display time of each GIF frame")
    render_seed = luigi.IntParameter(default=0, description="Seed of the latents of samples.png and the walk")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options = build_options(DCGANConfig, self)
        for name in ("sample_count", "walk_frames_between", "gif_frame_ms"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.walk_keyframes < 2:
            raise UserError(f"walk_keyframes must be at least 2, got {self.walk_keyframes}")

    def snapshot_names(self) -> list[str]:
        """The snapshot grids on disk, earlier attempts' included, in step order."""
        return [name for name in storage.list_files(self.directory) if name.startswith(SNAPSHOT_DIRECTORY)]

    def log_row(self, row: dict) -> None:
        message = (f"step {row['step']}/{self.steps}: loss_d={row['loss_d']:.4f}, loss_g={row['loss_g']:.4f}, "
                   f"D(real)={row['d_real']:.3f}, D(fake)={row['d_fake']:.3f}, "
                   f"diversity={row['diversity']:.3f}, {row['images_per_s']:.1f} images/s")
        log.info("%s %s", self.get_task_family(), message)
        self.report_progress(row["step"] / self.steps, message)

    def write_metrics(self, history: list[dict]) -> None:
        from ganmodels.rendering import loss_curves_png

        metrics = pd.DataFrame(history, columns=METRICS_COLUMNS)
        with self.open_write("metrics.csv") as file:
            metrics.to_csv(file, index=False)
        with self.open_write("loss_curves.png") as file:
            file.write(loss_curves_png(metrics, PLOTTED_METRICS))

    def write_renders(self, generator: torch.nn.Module) -> None:
        """progress.gif of the snapshots, and latent_walk.gif and samples.png from the final generator."""
        from ganmodels.rendering import animated_gif, frames, grid_png

        snapshots = []
        for name in self.snapshot_names():
            with storage.open_read(self.path(name)) as file:
                snapshots.append(Image.open(io.BytesIO(file.read())).convert("RGB"))
        with self.open_write("progress.gif") as file:
            file.write(animated_gif(snapshots, self.gif_frame_ms))

        tour = closed_tour(self.walk_keyframes, self.walk_frames_between, self.options.latent_size, self.render_seed)
        with self.open_write("latent_walk.gif") as file:
            file.write(animated_gif(frames(generate(generator, tour)), self.gif_frame_ms))
        latents = torch.randn(self.sample_count, self.options.latent_size,
                              generator=torch.Generator().manual_seed(self.render_seed))
        with self.open_write("samples.png") as file:
            file.write(grid_png(generate(generator, latents)))

    def sample_quality(self, generator: torch.nn.Module) -> dict:
        """Patch SWD of samples against held-out real images (val and test), next to that of as many
        training images, the floor a generator that reproduced the training set would reach."""
        prepared = self.requires()
        held_out = [array for split in ("val", "test") for array in prepared.split_arrays(split)]
        count = min(SWD_IMAGES, sum(len(array) for array in held_out))
        if count < 2:
            log.info("%s: no held-out images (val and test are empty), so no sliced Wasserstein distance",
                     self.get_task_family())
            return {}
        real = to_float(np.concatenate(held_out)[:count], "cpu")
        train = to_float(np.concatenate(prepared.split_arrays("train"))[:count], "cpu")
        latents = torch.randn(count, self.options.latent_size,
                              generator=torch.Generator().manual_seed(self.render_seed + 1))
        samples = generate(generator, latents)
        return {"swd_samples": patch_swd(real, samples), "swd_train_images": patch_swd(real, train),
                "swd_images": count}

    def build(self):
        result = self.train(train_shards=self.requires().split_paths("train"),
                            start=latest_checkpoint(self.directory, self.get_task_family()), final_state=FINAL_STATE)
        self.write_metrics(result["history"])
        self.stop_if_collapsed(result)
        generator = generator_from_state(load_state(self.path(FINAL_STATE)))  # the EMA weights, if any
        self.write_renders(generator)
        quality = self.sample_quality(generator)
        if quality:
            log.info("%s: patch SWD of %d samples against held-out images %.2f (training images: %.2f)",
                     self.get_task_family(), quality["swd_images"], quality["swd_samples"], quality["swd_train_images"])
        return {**self.summary(result), "ema": self.options.ema_decay > 0, "snapshots": len(self.snapshot_names()),
                **quality}
