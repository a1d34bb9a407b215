"""The training loops a training process runs, by `TrainingJob.kind`.

Each loads its inputs, trains through ganmodels, writes through `JobOutput` and TensorBoard's
event files (rank 0 only) and returns the summary that rank 0 reports to the task. They run in the child
processes of pipeline.distributed, never in the luigi worker.
"""
import math

import numpy as np
import torch

from ganmodels.data import ImageBank, to_float, training_images
from ganmodels.distributed import World

from .checkpoints import load_state
from .data import load_array
from .distributed import JobOutput, TrainingJob
from .tensorboard import TrainingBoard

SNAPSHOT_DIRECTORY = "snapshots/"
GRID_TAG = "fixed-mask grid"  # masked input | completion | original, of the first val images
SAMPLES_TAG = "fixed-latent samples"
GRID_IMAGES = 8  # RenderEvalGrid's default grid_images


def snapshot_name(step: int) -> str:
    return f"{SNAPSHOT_DIRECTORY}step-{step:07d}.png"


def _start(job: TrainingJob, world: World) -> dict | None:
    return load_state(job.start, world.device) if job.start else None


def train_inpainting(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """One GLCIC phase. config: phase, model, mask (ganmodels.config dicts), mean_pixel, runtime.

    TensorBoard gets every log row and, at each checkpoint and at the end, the grid of the
    fixed validation images under the evaluation's fixed masks.
    """
    from ganmodels.config import MaskConfig, ModelConfig, PhaseConfig
    from ganmodels.runtime import Runtime
    from ganmodels.training import train_phase

    config = job.config
    phase = PhaseConfig(**config["phase"])
    runtime = Runtime.resolve(device=str(world.device), **config["runtime"])
    images = training_images([load_array(path) for path in job.train_shards], runtime)
    start = _start(job, world)
    board = TrainingBoard(output, start["step"] if start and start["phase"] == phase.phase else 0)
    draw_grid = _grid_drawer(job, MaskConfig(**config["mask"]), world) if board.active else None

    def on_checkpoint(state: dict) -> None:
        if draw_grid:
            board.image(GRID_TAG, state["step"], draw_grid(state))
        board.flush()
        output.checkpoint(state)

    def on_log(row: dict) -> None:
        board.log(row)
        output.log(row)

    try:
        state = train_phase(phase, ModelConfig(**config["model"]), MaskConfig(**config["mask"]), images,
                            torch.tensor(config["mean_pixel"]), start, runtime, on_checkpoint=on_checkpoint,
                            on_log=on_log, world=world)
    except BaseException:
        board.close(failed=True)
        raise
    if draw_grid:
        board.image(GRID_TAG, state["step"], draw_grid(state))
    board.close()
    output.save(job.final_state, state)
    return {"step": state["step"], "history": state["history"], "runtime": runtime.to_dict(),
            "data_on_device": isinstance(images, ImageBank)}


def _grid_drawer(job: TrainingJob, mask_config, world: World):
    """A function from a training state to its grid of fixed validation images, as (H, W, 3) uint8."""
    from ganmodels.monitoring import inpainting_grid
    from ganmodels.training import load_completion

    # The evaluation's fixed masks, so that the last grid is the one RenderEvalGrid draws.
    from .evaluation import EVALUATION_KINDS, grid_masks

    images = to_float(np.concatenate([load_array(path)[:GRID_IMAGES] for path in job.val_shards])[:GRID_IMAGES],
                      world.device)
    mask = grid_masks(len(images), mask_config, seed=0).to(world.device)
    images = images.repeat(len(EVALUATION_KINDS), 1, 1, 1)
    mean_pixel = torch.tensor(job.config["mean_pixel"], device=world.device)

    def draw(state: dict) -> np.ndarray:
        grid = inpainting_grid(load_completion(state, world.device), images, mask, mean_pixel)
        return grid.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return draw


def train_dcgan(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """A DCGAN. config: dcgan (a DCGANConfig dict) and random_flip.

    The logged rows travel with the checkpoints, so a resumed run's history starts at
    step 0. A run the collapse watch stops saves no final state.
    """
    from ganmodels.dcgan import DCGANConfig
    from ganmodels.dcgan_training import signed_batches, train_dcgan as train
    from ganmodels.monitoring import grid_png, image_grid

    config = DCGANConfig(**job.config["dcgan"])
    images = ImageBank([load_array(path) for path in job.train_shards], world.device)
    start = _start(job, world)
    history = start.pop("history") if start else []
    board = TrainingBoard(output, start["step"] if start else 0)

    def on_log(row: dict) -> None:
        history.append(row)
        board.log(row, {"lr": config.lr})
        output.log(row)

    def on_snapshot(step: int, samples: torch.Tensor) -> None:
        output.write(snapshot_name(step), grid_png(samples))
        board.image(SAMPLES_TAG, step, np.asarray(image_grid(samples, nrow=math.ceil(math.sqrt(len(samples))))))

    def on_checkpoint(state: dict) -> None:
        board.flush()
        output.checkpoint({**state, "history": list(history)})

    try:
        state = train(config, signed_batches(images, job.config["random_flip"]), start, world.device,
                      on_checkpoint=on_checkpoint, on_log=on_log, on_snapshot=on_snapshot if world.is_main else None,
                      world=world)
    except BaseException:
        board.close(failed=True)
        raise
    board.close()
    if not state["stopped_reason"]:
        output.save(job.final_state, state)
    return {"step": state["step"], "history": history, "stopped_reason": state["stopped_reason"],
            "ema": state["ema_generator"] is not None}


TRAINERS = {"inpainting": train_inpainting, "dcgan": train_dcgan}
