"""What passes between a training task and its training processes: the job, and the events they report.

A job travels as JSON on rank 0's standard input (and from rank 0 to the other ranks over
torch.distributed); the processes report back as JSON lines on their standard output,
each starting with EVENT_PREFIX, so that other output passes through untouched.
"""
import dataclasses
import json

KINDS = ("inpainting", "dcgan")  # the training loops of pipeline.training.loops
EVENT_PREFIX = "@pipeline-event "


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """Everything a training process needs: which loop, its options, its data, where to write."""

    task: str  # the task id, for messages
    directory: str  # the task's directory; rank 0 writes checkpoints and `final_state` there
    kind: str  # the training loop, one of KINDS
    options: dict  # the task's training_options.json: {"training": ..., "runtime": ...}
    train_shards: list[str]
    start: str | None  # state to start from: the task's checkpoint or an upstream task's result
    keep_checkpoints: int
    final_state: str
    cache_dir: str  # local copies of shards read from S3
    val_shards: list[str] = dataclasses.field(default_factory=list)  # images of the fixed grids some loops draw
    mean_pixel: list[float] | None = None  # the train split's mean pixel, where a loop fills holes with it

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown training kind {self.kind!r}; one of {KINDS}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "TrainingJob":
        return cls(**json.loads(text))


def event_line(event: str, **fields) -> str:
    return EVENT_PREFIX + json.dumps({"event": event, **fields})


def parse_event(line: str) -> dict | None:
    """The event of a line a training process printed, or None for any other output."""
    return json.loads(line[len(EVENT_PREFIX):]) if line.startswith(EVENT_PREFIX) else None
