"""Tasks that train, render and evaluate the GLCIC inpainter, and the end task TrainInpainter."""
import cv2
import luigi
import luigi.util
import numpy as np
import pandas as pd
import torch

from ganmodels.config import ARCHITECTURES, COLLAPSE_ACTIONS, MaskConfig, ModelConfig, PhaseConfig
from ganmodels.data import to_float
from ganmodels.masks import holes_to_mask, sample_holes
from ganmodels.metrics import inpainting_metrics
from ganmodels.monitoring import inpainting_grid
from ganmodels.networks import complete, fill_holes
from ganmodels.runtime import DATA_PLACEMENTS
from ganmodels.training import load_completion

from . import storage
from .base import ArtifactTask, configured, log
from .checkpoints import FINAL_STATE, latest_checkpoint, load_state
from .data import PrepareImages, splits_by_fraction
from .distributed import TrainingJob, TrainingProcesses


@luigi.util.inherits(PrepareImages)
class PretrainCompletion(TrainingProcesses, ArtifactTask):
    """Phase 1: the completion network learns to fill holes under MSE inside the hole."""

    phase = 1
    arch = luigi.ChoiceParameter(default="glcic", choices=ARCHITECTURES, description="glcic (paper) or infill (small)")
    width = luigi.FloatParameter(default=0.25, description="Channel multiplier; 1.0 is the paper's width")
    hole_min = luigi.FloatParameter(default=0.25, description="Smallest hole side, as a fraction of image_size")
    hole_max = luigi.FloatParameter(default=0.5, description="Largest hole side, as a fraction of image_size")
    hole_margin = luigi.FloatParameter(default=0.0, description="Holes keep this fraction of image_size from borders")
    batch_size = luigi.IntParameter(default=16)
    lr_completion = luigi.FloatParameter(default=1e-3)
    lr_discriminator = luigi.FloatParameter(default=1e-4)
    seed = luigi.IntParameter(default=0)
    phase1_steps = luigi.IntParameter(default=3000)
    checkpoint_every = luigi.IntParameter(default=100, significant=False)
    log_every = luigi.IntParameter(default=50, significant=False)
    keep_checkpoints = luigi.IntParameter(default=2, significant=False)
    # Like the device, these change how fast a model trains, not which model: bf16 autocast
    # rounds activations, never the fp32 weights, as cuDNN's kernel choices already differ.
    precision = luigi.ChoiceParameter(default="auto", choices=("auto", "fp32", "bf16"), significant=False,
                                      description="auto: bf16 autocast on CUDA, fp32 on the CPU")
    compile = luigi.ChoiceParameter(default="auto", choices=("auto", "yes", "no"), significant=False,
                                    description="torch.compile the networks; auto: on CUDA only")
    data_on_device = luigi.ChoiceParameter(default="auto", choices=DATA_PLACEMENTS, significant=False,
                                           description="Hold the train split on the device (yes), stream it "
                                                       "from the memory-mapped shards (no), or yes if it fits (auto)")
    data_workers = luigi.IntParameter(default=4, significant=False, description="DataLoader workers when streaming")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_config = ModelConfig(arch=self.arch, image_size=self.image_size, width=self.width)
        self.mask_config = configured(MaskConfig, {"margin": "hole_margin"}, image_size=self.image_size,
                                      hole_min=self.hole_min, hole_max=self.hole_max, margin=self.hole_margin)
        self.phase_config = configured(
            PhaseConfig, {"steps": f"phase{self.phase}_steps", "learning rates": "lr_completion and lr_discriminator"},
            phase=self.phase, batch_size=self.batch_size, lr_completion=self.lr_completion,
            lr_discriminator=self.lr_discriminator, checkpoint_every=self.checkpoint_every,
            log_every=self.log_every, seed=self.seed, **self.phase_settings())
        # The grids show val images and the evaluation measures the test split: refuse before any training.
        if splits_by_fraction(self.dataset, self.official_split):
            for name in ("val_fraction", "test_fraction"):
                if getattr(self, name) <= 0:
                    raise ValueError(f"{name} must be > 0 for the inpainter, whose grids show val images and whose "
                                     f"evaluation uses the test split; got {getattr(self, name)}")
        if self.data_workers < 0:
            raise ValueError(f"data_workers must be >= 0, got {self.data_workers}")

    def runtime_settings(self) -> dict:
        """How to train; each training process resolves these for its device (the luigi worker never touches CUDA)."""
        return {"precision": self.precision, "compile": {"yes": True, "no": False}.get(self.compile, "auto"),
                "data_on_device": self.data_on_device, "data_workers": self.data_workers}

    def phase_settings(self) -> dict:
        """The PhaseConfig fields that differ between phases."""
        return {"steps": self.phase1_steps}

    def requires(self):
        return {"shards": self.clone(PrepareImages)}

    def resolved_config(self) -> dict:
        return {"model": self.model_config.to_dict(), "mask": self.mask_config.to_dict(),
                "phase": self.phase_config.to_dict(), "runtime": {"device": self.device, **self.runtime_settings()}}

    def start_path(self) -> str | None:
        """This phase's latest checkpoint if an earlier attempt left one, else the previous phase's result."""
        if path := latest_checkpoint(self):
            return path
        previous = self.requires().get("previous")
        return previous.path(FINAL_STATE) if previous else None

    def log_row(self, row: dict) -> None:
        losses = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k in ("mse", "loss_d", "loss_adv") and v is not None)
        message = (f"phase {row['phase']} step {row['step']}/{row['steps']}: {losses}, "
                   f"{row['images_per_s']:.1f} images/s, waiting for data {row['data_wait']:.1%}")
        log.info("%s %s", self.get_task_family(), message)
        self.report_progress(row["step"] / row["steps"], message)

    def build(self):
        shards = self.requires()["shards"]
        for split in ("val", "test"):  # shards prepared before PrepareImages refused empty splits
            if not shards.split_paths(split):
                raise ValueError(f"{shards.directory} has no {split} images, which the grids and the evaluation "
                                 f"need; raise {split}_fraction or add images")
        config = {"phase": self.phase_config.to_dict(), "model": self.model_config.to_dict(),
                  "mask": self.mask_config.to_dict(), "mean_pixel": shards.mean_pixel(),
                  "runtime": self.runtime_settings()}
        job = TrainingJob(task=self.task_id, directory=self.directory, kind="inpainting", config=config,
                          train_shards=shards.split_paths("train"), val_shards=shards.split_paths("val"),
                          start=self.start_path(),
                          keep_checkpoints=self.keep_checkpoints, final_state=FINAL_STATE)
        result = self.train(job)
        with self.open_write("history.csv") as file:
            pd.DataFrame(result["history"]).to_csv(file, index=False)
        last = result["history"][-1] if result["history"] else {}
        return {"steps": result["step"], "device": result["device"], "world_size": result["world_size"],
                "runtime": result["runtime"], "data_on_device": result["data_on_device"],
                "last_log": last}


class PretrainDiscriminator(PretrainCompletion):
    """Phase 2: the global and local discriminators learn against the frozen completion network."""

    phase = 2
    phase2_steps = luigi.IntParameter(default=200)

    def phase_settings(self) -> dict:
        return {"steps": self.phase2_steps}

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainCompletion)}


class TrainJoint(PretrainDiscriminator):
    """Phase 3: both networks together, the completion network on MSE + alpha * adversarial loss."""

    phase = 3
    phase3_steps = luigi.IntParameter(default=400)
    alpha = luigi.FloatParameter(default=4e-4, description="Weight of the adversarial loss (paper: 0.0004)")

    on_collapse = luigi.ChoiceParameter(default="warn", choices=COLLAPSE_ACTIONS, significant=False,
                                        description="When the discriminator has won: warn, or stop the phase")
    collapse_window = luigi.IntParameter(default=10, significant=False,
                                         description="Consecutive log lines of a winning discriminator that count as collapse")
    collapse_d_loss_floor = luigi.FloatParameter(default=0.05, significant=False,
                                                 description="Discriminator loss below which it is winning")

    def phase_settings(self) -> dict:
        return {"steps": self.phase3_steps, "alpha": self.alpha, "on_collapse": self.on_collapse,
                "collapse_window": self.collapse_window, "collapse_d_loss_floor": self.collapse_d_loss_floor}

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainDiscriminator)}


PHASE_TASKS = {1: PretrainCompletion, 2: PretrainDiscriminator, 3: TrainJoint}


class EvaluationParameters:
    """Parameters shared by the grid, the evaluation and the end task."""

    eval_seed = luigi.IntParameter(default=0, description="Seed of the fixed evaluation masks")
    grid_images = luigi.IntParameter(default=8, description="Validation images in each grid")
    eval_batch_size = luigi.IntParameter(default=64, significant=False)


def fixed_masks(count: int, mask_config: MaskConfig, seed: int) -> torch.Tensor:
    """The same masks on every device and run: drawn on the CPU from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return holes_to_mask(sample_holes(count, mask_config, generator), mask_config.image_size)


@luigi.util.inherits(TrainJoint)
class RenderEvalGrid(EvaluationParameters, ArtifactTask):
    """A PNG grid of fixed validation images with fixed masks: masked input | completion | original."""

    phase = luigi.ChoiceParameter(default=3, choices=(1, 2, 3), var_type=int)

    def requires(self):
        return {"shards": self.clone(PrepareImages), "model": self.clone(PHASE_TASKS[self.phase])}

    def build(self):
        shards, model_task = self.requires()["shards"], self.requires()["model"]
        val = shards.split_arrays("val")
        images = to_float(np.concatenate([shard[: self.grid_images] for shard in val])[: self.grid_images], "cpu")
        mean_pixel = torch.tensor(shards.mean_pixel())
        mask = fixed_masks(len(images), model_task.mask_config, self.eval_seed)
        completion = load_completion(load_state(model_task.path(FINAL_STATE)))
        from torchvision.utils import save_image  # here: its import takes seconds (torch._dynamo)

        with self.open_write("grid.png") as file:
            save_image(inpainting_grid(completion, images, mask, mean_pixel), file, format="png")
        return {"phase": self.phase, "images": len(images)}


CLASSICAL_METHODS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}
CLASSICAL_RADIUS = 3  # neighbourhood, in pixels, that OpenCV's inpainting draws each hole pixel from


def classical_inpaint(images: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    """OpenCV's inpainting of each image (CPU, float in [0, 1]), pasted into the known pixels like the model's."""
    pixels = np.ascontiguousarray(images.mul(255).round().byte().permute(0, 2, 3, 1).numpy())
    holes = mask[:, 0].byte().numpy()
    filled = np.stack([cv2.inpaint(image, hole, CLASSICAL_RADIUS, CLASSICAL_METHODS[method])
                       for image, hole in zip(pixels, holes)])
    return torch.lerp(images, to_float(filled, "cpu").permute(0, 3, 1, 2), mask)


@luigi.util.inherits(TrainJoint)
class EvaluateInpainter(EvaluationParameters, ArtifactTask):
    """PSNR and L1 inside the holes and SSIM of the whole image over the test split.

    The model is measured next to the mean-fill input (the floor) and OpenCV's Telea and
    Navier-Stokes inpainting (classical baselines) on the same images and masks.
    """

    def requires(self):
        return {"shards": self.clone(PrepareImages), "model": self.clone(TrainJoint)}

    def build(self):
        shards, model_task = self.requires()["shards"], self.requires()["model"]
        test = shards.split_arrays("test")
        if not test:
            raise RuntimeError("the test split is empty; raise test_fraction or add images")
        mean_pixel = torch.tensor(shards.mean_pixel())
        completion = load_completion(load_state(model_task.path(FINAL_STATE)))
        frames, offset = [], 0
        for shard in test:
            masks = fixed_masks(len(shard), model_task.mask_config, self.eval_seed + offset)
            for start in range(0, len(shard), self.eval_batch_size):
                images = to_float(shard[start:start + self.eval_batch_size], "cpu")
                mask = masks[start:start + len(images)]
                with torch.no_grad():
                    candidates = {"model": complete(completion, images, mask, mean_pixel),
                                  "mean_fill": fill_holes(images, mask, mean_pixel),
                                  **{name: classical_inpaint(images, mask, name) for name in CLASSICAL_METHODS}}
                for method, predicted in candidates.items():
                    values = {k: v.numpy() for k, v in inpainting_metrics(predicted, images, mask).items()}
                    frames.append(pd.DataFrame({"method": method, "image": range(offset + start, offset + start + len(images)),
                                                **values}))
            offset += len(shard)
        per_image = pd.concat(frames, ignore_index=True)
        summary = per_image.groupby("method")[["psnr_hole", "l1_hole", "ssim"]].mean()
        with self.open_write("metrics.csv") as file:
            per_image.to_csv(file, index=False)
        metrics = {"n_images": offset, "methods": summary.to_dict(orient="index")}
        self.write_json("metrics.json", metrics)
        log.info("EvaluateInpainter:\n%s", summary.to_string())
        return metrics


@luigi.util.inherits(TrainJoint)
class TrainInpainter(EvaluationParameters, ArtifactTask):
    """The end task: the final checkpoint, the grid of each phase and the test metrics."""

    def requires(self):
        return {"grids": {phase: self.clone(RenderEvalGrid, phase=phase) for phase in PHASE_TASKS},
                "metrics": self.clone(EvaluateInpainter)}

    def build(self):
        needs = self.requires()
        result = {
            "checkpoint": self.clone(TrainJoint).path(FINAL_STATE),
            "grids": {f"phase{phase}": task.path("grid.png") for phase, task in needs["grids"].items()},
            "metrics": needs["metrics"].path("metrics.json"),
            "metrics_summary": storage.read_json(needs["metrics"].path("metrics.json")),
        }
        self.write_json("result.json", result)
        return result
