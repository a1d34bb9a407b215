"""Saving, listing and resuming the training checkpoints of a task's directory.

A training task writes `checkpoints/step-NNNNNNN.pt` as it goes and its final state as
`model.pt`; a later attempt of the same task resumes from the newest checkpoint. States
hold only tensors and plain values, so they load with `weights_only=True`.
"""
import io
import re

import torch

from . import storage
from .base import ArtifactTask, log

CHECKPOINT_PATTERN = re.compile(r"checkpoints/step-(\d+)\.pt$")
FINAL_STATE = "model.pt"


def checkpoint_name(step: int) -> str:
    return f"checkpoints/step-{step:07d}.pt"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, name) of the checkpoints in a task directory, oldest first."""
    found = [(int(m.group(1)), name) for name in storage.list_files(directory) if (m := CHECKPOINT_PATTERN.match(name))]
    return sorted(found)


def save_state(path: str, state: dict) -> tuple[int, str]:
    """Write a state dict atomically; returns its (size, sha256)."""
    with storage.open_write(path) as file:
        torch.save(state, file)
    return file.size, file.sha256.hexdigest()


def load_state(path: str, device: torch.device | str = "cpu") -> dict:
    with storage.open_read(path) as file:
        return torch.load(io.BytesIO(file.read()), map_location=device, weights_only=True)


def prune_checkpoints(directory: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints of a task directory."""
    for _, name in list_checkpoints(directory)[:-keep]:
        storage.remove(storage.join(directory, name))


def latest_checkpoint(task: ArtifactTask) -> str | None:
    """The path of the newest checkpoint an earlier, interrupted attempt of the task left, or None."""
    if not (checkpoints := list_checkpoints(task.directory)):
        return None
    step, name = checkpoints[-1]
    log.info("%s: resuming from checkpoint %s (step %d)", task.get_task_family(), name, step)
    return task.path(name)

