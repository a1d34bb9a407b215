"""TrainDCGAN: an unconditional DCGAN on a prepared dataset, its progress rendered as grids and GIFs."""
import dataclasses
import io

import luigi
import luigi.util
import numpy as np
import pandas as pd
import torch
from PIL import Image

from ganmodels.dcgan import COLLAPSE_ACTIONS, PROJECTIONS, DCGANConfig
from ganmodels.dcgan_training import generator_from_state
from ganmodels.data import to_float
from ganmodels.inference import generate
from ganmodels.metrics import patch_swd
from ganmodels.monitoring import animated_gif, grid_png, latent_walk, loss_curve_png

from . import storage
from .base import ArtifactTask, configured, log
from .checkpoints import FINAL_STATE, latest_checkpoint, list_checkpoints, load_state
from .data import PrepareImages
from .distributed import TrainingJob, TrainingProcesses
from .trainers import SNAPSHOT_DIRECTORY

PLOTTED_METRICS = ["loss_d", "loss_g", "d_real", "d_fake"]
SWD_IMAGES = 1024  # held-out images (and as many samples) the sliced Wasserstein distance compares


def _default(field: str):
    """DCGANConfig's default, so that the task and the library never disagree."""
    return DCGANConfig.__dataclass_fields__[field].default


def _explicit_bool(default: bool, description: str, significant: bool = True) -> luigi.BoolParameter:
    # Explicit parsing lets the command line switch a True default off: --separate-batches false.
    return luigi.BoolParameter(default=default, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                               description=description, significant=significant)


class CollapseStopped(RuntimeError):
    """The collapse watch ended the run (on_collapse=stop)."""


@luigi.util.requires(PrepareImages)
class TrainDCGAN(TrainingProcesses, ArtifactTask):
    """The end task of the generation branch: a DCGAN trained on the train split, with its progress.

    The training runs in child processes (one, or DDP under torchrun), like the
    inpainting phases; the renders are drawn here, on the CPU, from the final state.

    Writes model.pt (the final state; EMA weights inside when ema_decay > 0), metrics.csv,
    loss_curves.png, snapshots/step-NNNNNNN.png (the fixed latents' samples), progress.gif
    (those snapshots in order), latent_walk.gif and samples.png.
    """

    steps = luigi.IntParameter(default=5000, description="Training steps (one D and one G update each)")
    latent_size = luigi.IntParameter(default=_default("latent_size"))
    width = luigi.IntParameter(default=_default("width"), description="Channels of the first D / last G layer")
    projection = luigi.ChoiceParameter(default=_default("projection"), choices=PROJECTIONS,
                                       description="How G maps the latent to 4x4 features: linear or conv")
    batch_size = luigi.IntParameter(default=_default("batch_size"))
    lr = luigi.FloatParameter(default=_default("lr"), description="Adam learning rate of both networks")
    beta1 = luigi.FloatParameter(default=_default("beta1"))
    beta2 = luigi.FloatParameter(default=_default("beta2"))
    real_label_low = luigi.FloatParameter(default=_default("real_label_low"),
                                          description="D's targets for real images are uniform in [low, high]")
    real_label_high = luigi.FloatParameter(default=_default("real_label_high"))
    fake_label_low = luigi.FloatParameter(default=_default("fake_label_low"),
                                          description="D's targets for fakes are uniform in [low, high]")
    fake_label_high = luigi.FloatParameter(default=_default("fake_label_high"))
    label_flip_prob = luigi.FloatParameter(default=_default("label_flip_prob"),
                                           description="Share of D's targets mirrored to the other class")
    separate_batches = _explicit_bool(_default("separate_batches"), "D sees real and fake images in separate batches")
    latent_match_steps = luigi.IntParameter(default=_default("latent_match_steps"),
                                            description="Experimental: Adam steps fitting each fake's latent to a "
                                                        "real image under L1 before D's step; 0 = off")
    latent_match_lr = luigi.FloatParameter(default=_default("latent_match_lr"))
    ema_decay = luigi.FloatParameter(default=_default("ema_decay"),
                                     description="Keep an EMA of G's weights for sampling; 0 = off (e.g. 0.999)")
    seed = luigi.IntParameter(default=_default("seed"))
    fixed_latent_count = luigi.IntParameter(default=_default("fixed_latent_count"),
                                            description="Latents of the snapshot grids")
    snapshot_every = luigi.IntParameter(default=_default("snapshot_every"),
                                        description="Steps between snapshot grids (and at the last step)")
    collapse_window = luigi.IntParameter(default=_default("collapse_window"),
                                         description="Consecutive log checks below a floor that count as collapse")
    collapse_d_loss_floor = luigi.FloatParameter(default=_default("collapse_d_loss_floor"),
                                                 description="D loss (mean since the last log) under which D has won; 0 = off")
    collapse_diversity_floor = luigi.FloatParameter(default=_default("collapse_diversity_floor"),
                                                    description="RMS difference between samples under which G "
                                                                "has collapsed; 0 = off")
    on_collapse = luigi.ChoiceParameter(default=_default("on_collapse"), choices=COLLAPSE_ACTIONS,
                                        description="warn: log and go on; stop: fail, keeping the last good checkpoint")
    random_flip = _explicit_bool(True, "Flip real images left-right at random (turn off for digits, text)")
    sample_count = luigi.IntParameter(default=64, description="Samples in samples.png")
    walk_keyframes = luigi.IntParameter(default=8, description="Random latents the latent walk passes through")
    walk_frames_between = luigi.IntParameter(default=16, description="Frames between two keyframes of the walk")
    gif_frame_ms = luigi.IntParameter(default=100, description="Display time of each GIF frame")
    render_seed = luigi.IntParameter(default=0, description="Seed of the latents of samples.png and the walk")
    # These change how fast a model trains or how often it is saved, not which model.
    log_every = luigi.IntParameter(default=_default("log_every"), significant=False)
    checkpoint_every = luigi.IntParameter(default=_default("checkpoint_every"), significant=False)
    keep_checkpoints = luigi.IntParameter(default=2, significant=False)
    channels_last = _explicit_bool(_default("channels_last"), "channels-last memory format", significant=False)
    mixed_precision = _explicit_bool(_default("mixed_precision"), "bfloat16 autocast", significant=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        fields = [field.name for field in dataclasses.fields(DCGANConfig) if field.name != "image_size"]
        self.config = configured(DCGANConfig, {f"{kind} label range": f"{kind}_label_low and {kind}_label_high"
                                               for kind in ("real", "fake")},
                                 image_size=self.image_size, **{name: getattr(self, name) for name in fields})
        for name in ("sample_count", "walk_frames_between", "gif_frame_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.walk_keyframes < 2:
            raise ValueError(f"walk_keyframes must be at least 2, got {self.walk_keyframes}")

    def resolved_config(self) -> dict:
        return {"dcgan": dataclasses.asdict(self.config)}

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
        metrics = pd.DataFrame(history, columns=["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g",
                                                 "grad_norm_d", "diversity", "images_per_s"])
        with self.open_write("metrics.csv") as file:
            metrics.to_csv(file, index=False)
        with self.open_write("loss_curves.png") as file:
            file.write(loss_curve_png(metrics.set_index("step"), PLOTTED_METRICS))

    def write_renders(self, generator: torch.nn.Module) -> None:
        """progress.gif of the snapshots, and latent_walk.gif and samples.png from the final generator."""
        frames = []
        for name in self.snapshot_names():
            with storage.open_read(self.path(name)) as file:
                frames.append(Image.open(io.BytesIO(file.read())).convert("RGB"))
        with self.open_write("progress.gif") as file:
            file.write(animated_gif(frames, self.gif_frame_ms))

        walk = latent_walk(generator, self.walk_keyframes, self.walk_frames_between, self.config.latent_size,
                           self.render_seed)
        with self.open_write("latent_walk.gif") as file:
            file.write(animated_gif(walk, self.gif_frame_ms))
        latents = torch.randn(self.sample_count, self.config.latent_size,
                              generator=torch.Generator().manual_seed(self.render_seed))
        with torch.no_grad():
            samples = generator(latents)
        with self.open_write("samples.png") as file:
            file.write(grid_png(samples))

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
        latents = torch.randn(count, self.config.latent_size, generator=torch.Generator().manual_seed(self.render_seed + 1))
        samples = generate(generator, latents)
        return {"swd_samples": patch_swd(real, samples), "swd_train_images": patch_swd(real, train),
                "swd_images": count}

    def build(self):
        job = TrainingJob(task=self.task_id, directory=self.directory, kind="dcgan",
                          config={"dcgan": dataclasses.asdict(self.config), "random_flip": self.random_flip},
                          train_shards=self.requires().split_paths("train"), start=latest_checkpoint(self),
                          keep_checkpoints=self.keep_checkpoints, final_state=FINAL_STATE)
        result = self.train(job)
        history = result["history"]
        self.write_metrics(history)
        if result["stopped_reason"]:
            kept = list_checkpoints(self.directory)
            checkpoint = f"kept {self.path(kept[-1][1])}" if kept else "no checkpoint had been written"
            raise CollapseStopped(
                f"{self.get_task_family()} stopped by the collapse watch (on_collapse=stop): {result['stopped_reason']}. "
                f"Last good checkpoint: {checkpoint}; metrics.csv and loss_curves.png in {self.directory} show the "
                f"run. Running again resumes from that checkpoint and meets the same collapse: change the training "
                f"parameters (lr, labels, width) or set on_collapse=warn.")
        generator = generator_from_state(load_state(self.path(FINAL_STATE)))  # the EMA weights, if any
        self.write_renders(generator)
        quality = self.sample_quality(generator)
        if quality:
            log.info("%s: patch SWD of %d samples against held-out images %.2f (training images: %.2f)",
                     self.get_task_family(), quality["swd_images"], quality["swd_samples"], quality["swd_train_images"])
        return {"steps": result["step"], "device": result["device"], "world_size": result["world_size"],
                "ema": result["ema"], "snapshots": len(self.snapshot_names()),
                "last_log": history[-1] if history else {}, **quality}
