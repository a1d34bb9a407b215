"""Saving, listing, verifying and resuming the training checkpoints of a task's directory.

A training task writes `checkpoints/step-NNNNNNN.pt` as it goes, each followed by its
sha256 in `step-NNNNNNN.pt.sha256` (the format of `sha256sum`, so `sha256sum -c` checks it
too), and its final state as `model.pt`; a later attempt of the same task resumes from
the newest checkpoint whose bytes match their checksum. States hold only tensors and
plain values, so they load with `weights_only=True`.
"""
import io
import logging
import pickle
import re
import warnings

import torch

from . import storage

log = logging.getLogger("luigi-interface")

CHECKPOINT_PATTERN = re.compile(r"checkpoints/step-(\d+)\.pt$")
CHECKSUM_SUFFIX = ".sha256"
FINAL_STATE = "model.pt"
# Lines of torch's message on refusing to unpickle that advise rather than say what was refused.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def checkpoint_name(step: int) -> str:
    return f"checkpoints/step-{step:07d}.pt"


def checksum_name(name: str) -> str:
    return name + CHECKSUM_SUFFIX


def checksum_line(sha256: str, name: str) -> bytes:
    """A checkpoint's checksum file, as `sha256sum` writes it."""
    return f"{sha256}  {name.rsplit('/', 1)[-1]}\n".encode()


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, name) of the checkpoints in a task directory, oldest first."""
    found = [(int(m.group(1)), name) for name in storage.list_files(directory) if (m := CHECKPOINT_PATTERN.match(name))]
    return sorted(found)


def save_state(path: str, state: dict) -> tuple[int, str]:
    """Write a state dict atomically; returns its (size, sha256)."""
    with storage.open_write(path) as file:
        torch.save(state, file)
    return file.size, file.sha256.hexdigest()


def recorded_checksum(path: str) -> storage.Recorded | None:
    """The sha256 saved next to a checkpoint, or None if it has no checksum file."""
    sidecar = checksum_name(path)
    if not storage.exists(sidecar):
        return None
    with storage.open_read(sidecar) as file:
        text = file.read(256).decode("ascii", errors="replace")
    sha256 = text.split(" ", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise storage.IntegrityError(f"{sidecar} does not hold a sha256")
    return storage.Recorded(sha256, None, sidecar)


def load_state(path: str, device: torch.device | str = "cpu") -> dict:
    """A saved state, read once and checked as it is read: a checkpoint against its checksum
    file, a final state against its task's manifest. A user's own file outside any task
    directory is loaded as it is. Raises storage.ArtifactError naming the file when the
    bytes do not match or do not hold a state that loads with weights_only=True."""
    record = recorded_checksum(path) if CHECKPOINT_PATTERN.search(path) else None
    data = storage.read_bytes(path, record)
    try:
        with warnings.catch_warnings():
            # Said of any pickle that torch.save did not write, just before it is refused or loaded.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as error:  # on bad bytes torch.load fails in many ways: KeyError, EOFError, UnpicklingError...
        raise storage.ArtifactError(_refusal(path, error)) from error
    if not isinstance(state, dict):
        raise storage.ArtifactError(f"{path} holds a {type(state).__name__}, not a training state")
    return state


def _refusal(path: str, error: Exception) -> str:
    """One line on why torch.load failed; its refusals of unsafe content come in paragraphs of advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError) and lines and lines[0].startswith(_TORCH_ADVICE):
        detail = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), "")
        return f"{path} holds objects that a weights-only load refuses to build, such as code ({detail})"
    cause = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return f"cannot load {path} as a training state ({cause})"


def prune_checkpoints(directory: str, keep: int, newest_step: int) -> None:
    """Keep the newest `keep` checkpoints up to `newest_step`, the one just written.

    Checkpoints of later steps are left from an attempt whose newest checkpoints were
    refused at resume; this attempt replaces them, so they go first. A checksum file goes
    before its checkpoint: a crash in between leaves a checkpoint without a checksum,
    which resume refuses, never a checksum without its checkpoint.
    """
    checkpoints = list_checkpoints(directory)
    current = [name for step, name in checkpoints if step <= newest_step]
    stale = [name for step, name in checkpoints if step > newest_step] + current[:-keep]
    for name in stale:
        sidecar = storage.join(directory, checksum_name(name))
        if storage.exists(sidecar):
            storage.remove(sidecar)
        storage.remove(storage.join(directory, name))


def _problem(path: str, checked: bool) -> str | None:
    """Why a checkpoint cannot be resumed from, or None; unchecked ones predate checksums."""
    record = recorded_checksum(path)
    if record is None:
        return "it has no checksum file (its save was interrupted)" if checked else None
    _, sha256 = storage.sha256_of(path)
    return None if sha256 == record.sha256 else f"its sha256 {sha256} differs from {record.where}"


def latest_checkpoint(directory: str, label: str) -> str | None:
    """The newest checkpoint an earlier, interrupted attempt left in a task's directory whose
    bytes match their checksum, or None. Refused ones are logged by name, newest first,
    after `label` (the task's name).

    A directory whose checkpoints all lack checksum files was written before checksums
    were recorded: its newest checkpoint is used as it is, with a warning.
    """
    checkpoints = list_checkpoints(directory)
    checked = any(storage.exists(storage.join(directory, checksum_name(name))) for _, name in checkpoints)
    for step, name in reversed(checkpoints):
        path = storage.join(directory, name)
        if problem := _problem(path, checked):
            log.warning("%s: refusing checkpoint %s: %s", label, path, problem)
            continue
        if not checked:
            log.warning("%s: checkpoint %s has no checksum (saved before checksums were recorded); "
                        "resuming from it unchecked", label, path)
        log.info("%s: resuming from checkpoint %s (step %d)", label, name, step)
        return path
    if checkpoints:
        log.warning("%s: no checkpoint can be resumed from; the phase starts over", label)
    return None
