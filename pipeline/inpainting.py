"""Tasks that train, render and evaluate the GLCIC inpainter, and the end task TrainInpainter."""
import luigi
import luigi.util
import numpy as np
import pandas as pd
import torch

from ganmodels.config import (ARCHITECTURES, COLLAPSE_ACTIONS, HOLE_FILLS, LR_SCHEDULES, MASK_KINDS, RECONSTRUCTION_LOSSES,
                              UPSAMPLING, MaskConfig, ModelConfig, PhaseConfig)
from ganmodels.data import to_float
from ganmodels.monitoring import inpainting_grid
from ganmodels.networks import complete
from ganmodels.runtime import DATA_PLACEMENTS
from ganmodels.training import load_completion

from . import storage
from .base import ArtifactTask, configured, log
from .checkpoints import FINAL_STATE, latest_checkpoint, load_state
from .data import PrepareImages, splits_by_fraction
from .distributed import TrainingJob, TrainingProcesses
from .evaluation import EVALUATION_KINDS, baseline_fills, evaluate_fills, grid_masks, summarise, weighted_measures


@luigi.util.inherits(PrepareImages)
class PretrainCompletion(TrainingProcesses, ArtifactTask):
    """Phase 1: the completion network learns to fill holes under the reconstruction loss inside the hole."""

    phase = 1
    arch = luigi.ChoiceParameter(default="glcic", choices=ARCHITECTURES, description="glcic (paper) or infill (small)")
    width = luigi.FloatParameter(default=0.25, description="Channel multiplier; 1.0 is the paper's width")
    upsample = luigi.ChoiceParameter(default="resize", choices=UPSAMPLING,
                                     description="Decoder upsampling: resize (nearest + conv, no checkerboard) or "
                                                 "transpose (paper)")
    skips = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                description="glcic: skip connections from the encoder to the decoder (U-Net)")
    hole_fill = luigi.ChoiceParameter(default="smooth", choices=HOLE_FILLS,
                                      description="What the network sees in the holes: the mean pixel (paper) or "
                                                  "a smooth fill from the known pixels around them")
    mask_kind = luigi.ChoiceParameter(default="mixed", choices=MASK_KINDS,
                                      description="Training holes: box, strokes (free-form) or mixed")
    hole_min = luigi.FloatParameter(default=0.25, description="Smallest box side, as a fraction of image_size")
    hole_max = luigi.FloatParameter(default=0.5, description="Largest box side, as a fraction of image_size")
    hole_margin = luigi.FloatParameter(default=0.0, description="Boxes keep this fraction of image_size from borders")
    stroke_area_min = luigi.FloatParameter(default=0.1, description="Smallest share of the image brush strokes cover")
    stroke_area_max = luigi.FloatParameter(default=0.4, description="Largest share of the image brush strokes cover")
    batch_size = luigi.IntParameter(default=16)
    lr_completion = luigi.FloatParameter(default=1e-3, description="Adam learning rate of the completion network")
    loss = luigi.ChoiceParameter(default="l1", choices=RECONSTRUCTION_LOSSES,
                                 description="Reconstruction loss of the completion network: l1 or mse (paper)")
    known_weight = luigi.FloatParameter(default=0.0, description="Weight of the reconstruction loss on known pixels")
    lr_schedule = luigi.ChoiceParameter(default="cosine", choices=LR_SCHEDULES,
                                        description="Learning rates over each phase: cosine or constant (paper)")
    lr_final = luigi.FloatParameter(default=0.01, description="cosine: the share of the rates left at the end")
    warmup_steps = luigi.IntParameter(default=0, description="Steps of linear learning-rate warm-up per phase")
    max_zoom = luigi.FloatParameter(default=1.5, description="Train on random squares of 1/z of each image's side, "
                                                             "z uniform in [1, max_zoom], resized back (1: off)")
    seed = luigi.IntParameter(default=0)
    phase1_steps = luigi.IntParameter(default=2400)
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
        self.model_config = configured(ModelConfig, {}, arch=self.arch, image_size=self.image_size, width=self.width,
                                       upsample=self.upsample, skips=self.skips, hole_fill=self.hole_fill)
        self.mask_config = configured(MaskConfig, {"margin": "hole_margin", "mask kind": "mask_kind"},
                                      image_size=self.image_size, kind=self.mask_kind, hole_min=self.hole_min,
                                      hole_max=self.hole_max, margin=self.hole_margin,
                                      stroke_area_min=self.stroke_area_min, stroke_area_max=self.stroke_area_max)
        common = dict(phase=self.phase, batch_size=self.batch_size, lr_completion=self.lr_completion,
                      loss=self.loss, known_weight=self.known_weight, lr_schedule=self.lr_schedule,
                      lr_final=self.lr_final, warmup_steps=self.warmup_steps, max_zoom=self.max_zoom,
                      checkpoint_every=self.checkpoint_every, log_every=self.log_every, seed=self.seed)
        self.phase_config = configured(PhaseConfig, {"steps": f"phase{self.phase}_steps", **self.renamed_settings()},
                                       **{**common, **self.phase_settings()})
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

    def renamed_settings(self) -> dict:
        """PhaseConfig fields that this phase's parameters call otherwise, for messages."""
        return {}

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
        losses = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k in ("loss_rec", "loss_d", "loss_adv") and v is not None)
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
    phase2_steps = luigi.IntParameter(default=100)
    lr_discriminator = luigi.FloatParameter(default=1e-4, description="Adam learning rate of the discriminator")

    def phase_settings(self) -> dict:
        return {"steps": self.phase2_steps, "lr_discriminator": self.lr_discriminator}

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainCompletion)}


class TrainJoint(PretrainDiscriminator):
    """Phase 3: both networks together, the completion network on reconstruction + alpha * adversarial loss."""

    phase = 3
    phase3_steps = luigi.IntParameter(default=800)
    lr_joint = luigi.FloatParameter(default=1e-3, description="Adam learning rate of the completion network in "
                                                              "phase 3 (phase 1's is lr_completion)")
    alpha = luigi.FloatParameter(default=1e-2, description="Weight of the adversarial loss (paper: 0.0004, with MSE)")

    on_collapse = luigi.ChoiceParameter(default="warn", choices=COLLAPSE_ACTIONS, significant=False,
                                        description="When the discriminator has won: warn, or stop the phase")
    collapse_window = luigi.IntParameter(default=10, significant=False,
                                         description="Consecutive log lines of a winning discriminator that count as collapse")
    collapse_d_loss_floor = luigi.FloatParameter(default=0.05, significant=False,
                                                 description="Discriminator loss below which it is winning")

    def phase_settings(self) -> dict:
        return {"steps": self.phase3_steps, "lr_discriminator": self.lr_discriminator, "lr_completion": self.lr_joint,
                "alpha": self.alpha, "on_collapse": self.on_collapse, "collapse_window": self.collapse_window,
                "collapse_d_loss_floor": self.collapse_d_loss_floor}

    def renamed_settings(self) -> dict:
        return {"lr_completion": "lr_joint"}

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainDiscriminator)}


PHASE_TASKS = {1: PretrainCompletion, 2: PretrainDiscriminator, 3: TrainJoint}


class EvaluationParameters:
    """Parameters shared by the grid, the evaluation and the end task."""

    eval_seed = luigi.IntParameter(default=0, description="Seed of the fixed evaluation masks")
    grid_images = luigi.IntParameter(default=8, description="Validation images in each grid")
    eval_batch_size = luigi.IntParameter(default=64, significant=False)


@luigi.util.inherits(TrainJoint)
class RenderEvalGrid(EvaluationParameters, ArtifactTask):
    """A PNG grid of fixed validation images under fixed masks, boxes then strokes:
    each row is masked input | completion | original."""

    phase = luigi.ChoiceParameter(default=3, choices=(1, 2, 3), var_type=int)

    def requires(self):
        return {"shards": self.clone(PrepareImages), "model": self.clone(PHASE_TASKS[self.phase])}

    def build(self):
        shards, model_task = self.requires()["shards"], self.requires()["model"]
        val = shards.split_arrays("val")
        images = to_float(np.concatenate([shard[: self.grid_images] for shard in val])[: self.grid_images], "cpu")
        mean_pixel = torch.tensor(shards.mean_pixel())
        completion = load_completion(load_state(model_task.path(FINAL_STATE)))
        mask = grid_masks(len(images), model_task.mask_config, self.eval_seed)
        from torchvision.utils import save_image  # here: its import takes seconds (torch._dynamo)

        with self.open_write("grid.png") as file:
            save_image(inpainting_grid(completion, images.repeat(len(EVALUATION_KINDS), 1, 1, 1), mask, mean_pixel),
                       file, format="png")
        return {"phase": self.phase, "images": len(images), "kinds": list(EVALUATION_KINDS)}


@luigi.util.inherits(TrainJoint)
class EvaluateInpainter(EvaluationParameters, ArtifactTask):
    """The model against the floor (mean fill) and OpenCV's Telea and Navier-Stokes on the test split,
    under seeded boxes and brush strokes: pixel metrics per image, realism measures per set,
    reported per mask kind and hole-area bucket (pipeline.evaluation)."""

    def requires(self):
        return {"shards": self.clone(PrepareImages), "model": self.clone(TrainJoint)}

    def build(self):
        shards, model_task = self.requires()["shards"], self.requires()["model"]
        mean_pixel = torch.tensor(shards.mean_pixel())
        completion = load_completion(load_state(model_task.path(FINAL_STATE)))
        fills = {"model": lambda images, mask: complete(completion, images, mask, mean_pixel),
                 **baseline_fills(mean_pixel)}
        per_image, realism = evaluate_fills(shards.split_arrays("test"), fills, model_task.mask_config,
                                            self.eval_seed, self.eval_batch_size, measures=weighted_measures())
        with self.open_write("metrics.csv") as file:
            per_image.to_csv(file, index=False)
        with self.open_write("realism.csv") as file:
            realism.to_csv(file, index=False)
        metrics = summarise(per_image, realism)
        self.write_json("metrics.json", metrics)
        log.info("EvaluateInpainter:\n%s", pd.DataFrame(metrics["methods"]).T.to_string())
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
