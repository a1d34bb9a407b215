"""Saving, listing and resuming the training checkpoints of a task's directory.

A training task writes `checkpoints/step-NNNNNNN.pt` as it goes and its final state as
`model.pt`; a later attempt of the same task resumes from the newest checkpoint.
"""
import io
import re

import torch

from . import storage
from .base import ArtifactTask, log

CHECKPOINT_PATTERN = re.compile(r"checkpoints/step-(\d+)\.pt$")
FINAL_STATE = "model.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_state(task: ArtifactTask, name: str, state: dict) -> None:
    with task.open_write(name) as file:
        torch.save(state, file)


def load_state(path: str, device: torch.device | str = "cpu") -> dict:
    with storage.open_read(path) as file:
        return torch.load(io.BytesIO(file.read()), map_location=device, weights_only=True)


def checkpoint_name(step: int) -> str:
    return f"checkpoints/step-{step:07d}.pt"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, name) of the checkpoints in a task directory, oldest first."""
    found = [(int(m.group(1)), name) for name in storage.list_files(directory) if (m := CHECKPOINT_PATTERN.match(name))]
    return sorted(found)


def write_checkpoint(task: ArtifactTask, state: dict, keep: int) -> None:
    """Save state as the checkpoint of its step, then delete all but the newest `keep`."""
    save_state(task, checkpoint_name(state["step"]), state)
    for _, name in list_checkpoints(task.directory)[:-keep]:
        storage.remove(task.path(name))


def resume_state(task: ArtifactTask, device: torch.device | str) -> dict | None:
    """The newest checkpoint an earlier, interrupted attempt of the task left, or None."""
    if not (checkpoints := list_checkpoints(task.directory)):
        return None
    step, name = checkpoints[-1]
    log.info("%s: resuming from checkpoint %s (step %d)", task.get_task_family(), name, step)
    return load_state(task.path(name), device)
