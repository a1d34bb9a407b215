"""The training loops a training process runs, by `TrainingJob.kind`.

Each loads its inputs, trains through ganmodels, writes through `JobOutput` and TensorBoard's
event files (rank 0 only) and returns the summary that rank 0 reports to the task. Both
feed their images the same way, resolve the same `Runtime`, and report a collapse the
same way: the run stops with the last checkpoint kept, and the summary says why.
"""
import numpy as np
import torch

from ganmodels.collapse import TrainingCollapsed
from ganmodels.feeding import ImageBank, to_float, training_images
from ganmodels.runtime import Runtime, RuntimeOptions
from ganmodels.world import World

from ..artifacts import storage
from ..artifacts.checkpoints import load_state
from .job import TrainingJob
from .output import JobOutput
from .tensorboard import TrainingBoard

SNAPSHOT_DIRECTORY = "snapshots/"
GRID_TAG = "fixed-mask grid"  # masked input | completion | original, of the first val images
SAMPLES_TAG = "fixed-latent samples"


def snapshot_name(step: int) -> str:
    return f"{SNAPSHOT_DIRECTORY}step-{step:07d}.png"


def train_inpainting(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """One GLCIC phase (options: training = ganmodels.glcic.config.PhaseOptions).

    TensorBoard gets every log row and, at each checkpoint and at the end, the grid of the
    fixed validation images under the evaluation's fixed masks.
    """
    from ganmodels.glcic.config import PhaseOptions
    from ganmodels.glcic.training import train_phase

    options = PhaseOptions.from_dict(job.options["training"])
    start = _start(job, world)
    resumed_from = start["step"] if start and start["config"]["phase"] == options.phase else 0
    draw_grid = _grid_drawer(job, options, world) if world.is_main else None

    def train(runtime: Runtime, images, callbacks: dict) -> dict:
        return train_phase(options, images, torch.tensor(job.mean_pixel), start, runtime, world=world, **callbacks)

    def show_grid(board: TrainingBoard, state: dict) -> None:
        if draw_grid:
            board.image(GRID_TAG, state["step"], draw_grid(state))

    return _run(job, world, output, resumed_from, train, at_checkpoint=show_grid)


def train_dcgan(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """A DCGAN (options: training = ganmodels.dcgan.config.DCGANConfig); rank 0 writes the snapshot grids."""
    from ganmodels.dcgan.config import DCGANConfig
    from ganmodels.dcgan.training import train_dcgan as train_dcgan_loop
    from ganmodels.rendering import grid_png, square_grid

    config = DCGANConfig.from_dict(job.options["training"])
    start = _start(job, world)

    def train(runtime: Runtime, images, callbacks: dict) -> dict:
        return train_dcgan_loop(config, images, start, runtime, world=world, **callbacks)

    def snapshot(board: TrainingBoard, step: int, samples: torch.Tensor) -> None:
        output.write(snapshot_name(step), grid_png(samples))
        board.image(SAMPLES_TAG, step, np.asarray(square_grid(samples)))

    return _run(job, world, output, start["step"] if start else 0, train,
                on_snapshot=snapshot if world.is_main else None, constants={"lr": config.lr})


def _run(job: TrainingJob, world: World, output: JobOutput, resumed_from: int, train, at_checkpoint=None,
         on_snapshot=None, constants: dict | None = None) -> dict:
    """Feed the job's images to `train(runtime, images, callbacks)` with logging, checkpoints and
    TensorBoard wired up, `at_checkpoint(board, state)` at each checkpoint and at the end; save the
    final state. A collapse stop keeps the last checkpoint, saves no final state, and is reported in
    the summary with the history so far."""
    runtime = Runtime.resolve(str(world.device), RuntimeOptions(**job.options["runtime"]))
    images = training_images([storage.load_array(path, job.cache_dir) for path in job.train_shards], runtime)
    board = TrainingBoard(output, resumed_from)

    def checkpoint(state: dict) -> None:
        if at_checkpoint:
            at_checkpoint(board, state)
        board.flush()
        output.checkpoint(state)

    def log_row(row: dict) -> None:
        board.log(row, constants)
        output.log(row)

    callbacks = {"on_checkpoint": checkpoint, "on_log": log_row}
    if on_snapshot:
        callbacks["on_snapshot"] = lambda step, samples: on_snapshot(board, step, samples)
    summary = {"runtime": runtime.to_dict(), "data_on_device": isinstance(images, ImageBank), "stopped_reason": None}
    try:
        state = train(runtime, images, callbacks)
    except TrainingCollapsed as collapse:
        board.close(failed=True)
        return {**summary, "step": collapse.step, "history": collapse.history, "stopped_reason": str(collapse)}
    except BaseException:
        board.close(failed=True)
        raise
    if at_checkpoint:
        at_checkpoint(board, state)
    board.close()
    output.save(job.final_state, state)
    return {**summary, "step": state["step"], "history": state["history"]}


def _start(job: TrainingJob, world: World) -> dict | None:
    return load_state(job.start, world.device) if job.start else None


def _grid_drawer(job: TrainingJob, options, world: World):
    """A function from a training state to its grid of fixed validation images, as (H, W, 3) uint8."""
    from ganmodels.glcic.inference import load_completion
    from ganmodels.rendering import inpainting_grid, to_uint8

    # The evaluation's fixed masks, so that the last grid is the one RenderEvalGrid draws.
    from ..evaluation import EVALUATION_KINDS, GRID_IMAGES, grid_masks

    images = to_float(np.concatenate([storage.load_array(path, job.cache_dir)[:GRID_IMAGES]
                                      for path in job.val_shards])[:GRID_IMAGES], world.device)
    mask = grid_masks(len(images), options.masks, seed=0).to(world.device)
    images = images.repeat(len(EVALUATION_KINDS), 1, 1, 1)
    mean_pixel = torch.tensor(job.mean_pixel, device=world.device)

    def draw(state: dict) -> np.ndarray:
        grid = inpainting_grid(load_completion(state, world.device), images, mask, mean_pixel)
        return to_uint8(grid).permute(1, 2, 0).numpy()
    return draw


LOOPS = {"inpainting": train_inpainting, "dcgan": train_dcgan}
