"""Tasks that train, render and evaluate the GLCIC inpainter, and the end task TrainInpainter.

The three phase tasks take their options from ganmodels.glcic.config's dataclasses: each
phase declares the options it uses and inherits those of the phases before it, which it
starts from. Each builds its PhaseOptions once, and saves them as training_options.json;
the grid and the evaluation read the masks back from the trained state.
"""
import luigi
import luigi.util
import numpy as np
import pandas as pd
import torch

from ganmodels.feeding import to_float
from ganmodels.glcic.config import OPTION_CLASSES, PhaseOptions
from ganmodels.glcic.inference import load_completion

from ..artifacts import storage
from ..artifacts.checkpoints import FINAL_STATE, latest_checkpoint, load_state
from ..errors import UserError
from ..evaluation import (EVALUATION_KINDS, GRID_IMAGES, baseline_fills, evaluate_sizes, grid_masks, summarise_sizes,
                          weighted_measures)
from ..infill import inpaint
from .base import ArtifactTask, log
from .options import build_options, takes_options
from .prepare import PrepareImages, splits_by_fraction
from .training import TrainingTask


@takes_options(*OPTION_CLASSES[1])
@luigi.util.inherits(PrepareImages)
class PretrainCompletion(TrainingTask):
    """Phase 1: the completion network learns to fill holes under the reconstruction loss inside the hole."""

    phase = 1
    training_kind = "inpainting"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options = self.phase_options()
        # The grids show val images and the evaluation measures the test split: refuse before any training.
        if splits_by_fraction(self.dataset, self.official_split):
            for name in ("val_fraction", "test_fraction"):
                if getattr(self, name) <= 0:
                    raise UserError(f"{name} must be > 0 for the inpainter, whose grids show val images and whose "
                                    f"evaluation uses the test split; got {getattr(self, name)}")

    def phase_options(self) -> PhaseOptions:
        """The options of this phase and of the phases before it, in PhaseOptions' order."""
        return PhaseOptions(self.phase, *(build_options(option_class, self) for phase in range(1, self.phase + 1)
                                          for option_class in OPTION_CLASSES[phase]))

    def requires(self):
        return {"shards": self.clone(PrepareImages)}

    def start_path(self) -> str | None:
        """This phase's latest checkpoint if an earlier attempt left one, else the previous phase's result."""
        if path := latest_checkpoint(self.directory, self.get_task_family()):
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
                raise UserError(f"{shards.directory} has no {split} images, which the grids and the evaluation "
                                f"need; raise {split}_fraction or add images")
        result = self.train(train_shards=shards.split_paths("train"), val_shards=shards.split_paths("val"),
                            mean_pixel=shards.mean_pixel(), start=self.start_path(), final_state=FINAL_STATE)
        with self.open_write("history.csv") as file:
            pd.DataFrame(result["history"]).to_csv(file, index=False)
        self.stop_if_collapsed(result)
        return self.summary(result)


@takes_options(*OPTION_CLASSES[2])
class PretrainDiscriminator(PretrainCompletion):
    """Phase 2: the global and local discriminators learn against the frozen completion network."""

    phase = 2

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainCompletion)}


@takes_options(*OPTION_CLASSES[3])
class TrainJoint(PretrainDiscriminator):
    """Phase 3: both networks together, the completion network on reconstruction + alpha * adversarial loss."""

    phase = 3

    def requires(self):
        return {"shards": self.clone(PrepareImages), "previous": self.clone(PretrainDiscriminator)}


PHASE_TASKS = {1: PretrainCompletion, 2: PretrainDiscriminator, 3: TrainJoint}


def trained_model(task: ArtifactTask) -> tuple[torch.nn.Module, PhaseOptions]:
    """The completion network of a phase task's final state, and the options it was trained with."""
    state = load_state(task.path(FINAL_STATE))
    return load_completion(state), PhaseOptions.from_dict(state["config"])


class EvaluationParameters:
    """Parameters shared by the grid, the evaluation and the end task."""

    eval_seed = luigi.IntParameter(default=0, description="Seed of the fixed evaluation masks")
    grid_images = luigi.IntParameter(default=GRID_IMAGES, description="Validation images in each grid")
    eval_batch_size = luigi.IntParameter(default=64, significant=False,
                                         description="Images filled at once in the evaluation; memory, not results")


@luigi.util.inherits(TrainJoint)
class RenderEvalGrid(EvaluationParameters, ArtifactTask):
    """A PNG grid of fixed validation images under fixed masks, boxes then strokes:
    each row is masked input | completion | original."""

    phase = luigi.ChoiceParameter(default=3, choices=(1, 2, 3), var_type=int,
                                  description="Which phase's final network fills the grid")

    def requires(self):
        return {"shards": self.clone(PrepareImages), "model": self.clone(PHASE_TASKS[self.phase])}

    def build(self):
        shards, model_task = self.requires()["shards"], self.requires()["model"]
        val = shards.split_arrays("val")
        images = to_float(np.concatenate([shard[: self.grid_images] for shard in val])[: self.grid_images], "cpu")
        mean_pixel = torch.tensor(shards.mean_pixel())
        completion, options = trained_model(model_task)
        mask = grid_masks(len(images), options.masks, self.eval_seed)
        from ganmodels.rendering import inpainting_grid
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
        completion, options = trained_model(model_task)
        training_size = options.masks.image_size
        # The path `infill` and the studio fill a user's image with, at every size.
        fills = {"model": lambda images, mask: inpaint(completion, images, mask, mean_pixel, training_size),
                 **baseline_fills(mean_pixel)}
        sets = {size: {side: images for side, (_, images) in shards.scoring_images("test", size).items()}
                for size in shards.scoring_sizes()}
        per_image, realism = evaluate_sizes(sets, fills, options.masks, self.eval_seed, self.eval_batch_size,
                                            measures=weighted_measures())
        with self.open_write("metrics.csv") as file:
            per_image.to_csv(file, index=False)
        with self.open_write("realism.csv") as file:
            realism.to_csv(file, index=False)
        metrics = summarise_sizes(per_image, realism, training_size)
        self.write_json("metrics.json", metrics)
        for size, summary in metrics["sizes"].items():
            log.info("EvaluateInpainter at %s px (%d images, %d at their own smaller size):\n%s", size,
                     summary["n_images"], summary["n_at_own_size"], pd.DataFrame(summary["methods"]).T.to_string())
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
