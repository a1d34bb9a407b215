"""The training loops a training process runs, by `TrainingJob.kind`.

Each loads its inputs, trains through ganmodels, writes through `JobOutput` (rank 0 only)
and returns the summary that rank 0 reports to the task. They run in the child
processes of pipeline.distributed, never in the luigi worker.
"""
import torch

from ganmodels.data import ImageBank, training_images
from ganmodels.distributed import World

from .checkpoints import load_state
from .data import load_array
from .distributed import JobOutput, TrainingJob

SNAPSHOT_DIRECTORY = "snapshots/"


def snapshot_name(step: int) -> str:
    return f"{SNAPSHOT_DIRECTORY}step-{step:07d}.png"


def _start(job: TrainingJob, world: World) -> dict | None:
    return load_state(job.start, world.device) if job.start else None


def train_inpainting(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """One GLCIC phase. config: phase, model, mask (ganmodels.config dicts), mean_pixel, runtime."""
    from ganmodels.config import MaskConfig, ModelConfig, PhaseConfig
    from ganmodels.runtime import Runtime
    from ganmodels.training import train_phase

    config = job.config
    runtime = Runtime.resolve(device=str(world.device), **config["runtime"])
    images = training_images([load_array(path) for path in job.train_shards], runtime)
    state = train_phase(PhaseConfig(**config["phase"]), ModelConfig(**config["model"]), MaskConfig(**config["mask"]),
                        images, torch.tensor(config["mean_pixel"]), _start(job, world), runtime,
                        on_checkpoint=output.checkpoint, on_log=output.log, world=world)
    output.save(job.final_state, state)
    return {"step": state["step"], "history": state["history"], "runtime": runtime.to_dict(),
            "data_on_device": isinstance(images, ImageBank)}


def train_dcgan(job: TrainingJob, world: World, output: JobOutput) -> dict:
    """A DCGAN. config: dcgan (a DCGANConfig dict) and random_flip.

    The logged rows travel with the checkpoints, so a resumed run's history starts at
    step 0. A run the collapse watch stops saves no final state.
    """
    from ganmodels.dcgan import DCGANConfig
    from ganmodels.dcgan_training import signed_batches, train_dcgan as train
    from ganmodels.monitoring import grid_png

    config = DCGANConfig(**job.config["dcgan"])
    images = ImageBank([load_array(path) for path in job.train_shards], world.device)
    start = _start(job, world)
    history = start.pop("history") if start else []

    def on_log(row: dict) -> None:
        history.append(row)
        output.log(row)

    def on_snapshot(step: int, samples: torch.Tensor) -> None:
        output.write(snapshot_name(step), grid_png(samples))

    state = train(config, signed_batches(images, job.config["random_flip"]), start, world.device,
                  on_checkpoint=lambda state: output.checkpoint({**state, "history": list(history)}),
                  on_log=on_log, on_snapshot=on_snapshot if world.is_main else None, world=world)
    if not state["stopped_reason"]:
        output.save(job.final_state, state)
    return {"step": state["step"], "history": history, "stopped_reason": state["stopped_reason"],
            "ema": state["ema_generator"] is not None}


TRAINERS = {"inpainting": train_inpainting, "dcgan": train_dcgan}
