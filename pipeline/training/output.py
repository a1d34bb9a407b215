"""What a training process writes into its task's directory and reports to the task: everything on rank 0."""
from ..artifacts import storage
from ..artifacts.checkpoints import checkpoint_name, checksum_line, checksum_name, prune_checkpoints, save_state
from .job import TrainingJob, event_line


def emit(event: str, **fields) -> None:
    """Report an event to the task that started this process."""
    print(event_line(event, **fields), flush=True)


class JobOutput:
    """Files and reports of one training process; a no-op on every rank but 0."""

    def __init__(self, job: TrainingJob, is_main: bool):
        self.job, self.is_main = job, is_main

    def log(self, row: dict) -> None:
        if self.is_main:
            emit("log", row=row)

    def write(self, name: str, data: bytes) -> None:
        """Write one file of the task's directory."""
        if self.is_main:
            with storage.open_write(storage.join(self.job.directory, name)) as file:
                file.write(data)
            emit("file", name=name, size=file.size, sha256=file.sha256.hexdigest())

    def save(self, name: str, state: dict) -> str | None:
        """Save a state dict as one file of the task's directory; its sha256 on rank 0."""
        if self.is_main:
            size, sha256 = save_state(storage.join(self.job.directory, name), state)
            emit("file", name=name, size=size, sha256=sha256)
            return sha256
        return None

    def checkpoint(self, state: dict) -> None:
        """Save a checkpoint of state's step and then its checksum file; then delete all but
        the newest `keep_checkpoints`, so the checkpoints kept are never only unchecked ones."""
        if self.is_main:
            name = checkpoint_name(state["step"])
            self.write(checksum_name(name), checksum_line(self.save(name, state), name))
            prune_checkpoints(self.job.directory, self.job.keep_checkpoints, state["step"])
