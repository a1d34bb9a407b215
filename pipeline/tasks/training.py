"""What every training task shares: where and how its processes run, its training_options.json,
and how a run that the collapse watch stopped ends."""
import dataclasses
import socket

import luigi

from ganmodels.runtime import RuntimeOptions

from ..artifacts.checkpoints import list_checkpoints
from ..errors import UserError
from ..settings import cache_dir
from ..training.job import TrainingJob
from ..training.launch import Placement, run_training
from .base import ArtifactTask
from .options import build_options, takes_options

TRAINING_OPTIONS = "training_options.json"


class distributed(luigi.Config):
    """`[distributed]` section: where the other machines of a multi-machine training job meet this one."""

    master_addr = luigi.Parameter(default="", description="Address of this machine as the others reach it; "
                                                          "empty: its fully qualified host name")
    master_port = luigi.IntParameter(default=29500, description="Port on this machine for torch.distributed")


class TrainingStopped(UserError):
    """The collapse watch ended the run (on_collapse=stop)."""


@takes_options(RuntimeOptions)
class TrainingTask(ArtifactTask):
    """A task whose training runs in child processes (one, or DDP under torchrun).

    Subclasses set `training_kind` and build their frozen options once, as `self.options`
    (with `to_dict()`), in `__init__`; they need a `batch_size` parameter (split over the
    processes) and a `log_row(row)` method (the log rows of rank 0).
    """

    training_kind: str
    device = luigi.Parameter(default="auto", significant=False, description="auto, cpu, cuda or cuda:N")
    processes = luigi.IntParameter(default=1, significant=False,
                                   description="Training processes on this machine (DDP through torchrun; one per GPU)")
    nodes = luigi.IntParameter(default=1, significant=False,
                               description="Machines in each training job; the others run "
                                           "`gan-pipeline-distributed join`")
    keep_checkpoints = luigi.IntParameter(default=2, significant=False, description="Newest checkpoints kept")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime_options = build_options(RuntimeOptions, self)
        if self.processes < 1 or self.nodes < 1:
            raise UserError(f"processes and nodes must be >= 1, got {self.processes} and {self.nodes}")
        if self.batch_size % (self.processes * self.nodes):
            raise UserError(f"batch_size {self.batch_size} does not split evenly over "
                            f"{self.processes * self.nodes} training processes")
        if self.keep_checkpoints < 2:
            raise UserError(f"keep_checkpoints must be >= 2, so that a damaged newest checkpoint leaves one to "
                            f"resume from; got {self.keep_checkpoints}")

    @property
    def resources(self):
        """One unit of `[resources] gpu` per process on this machine, so the scheduler never overbooks GPUs."""
        return {"gpu": self.processes}

    def training_options(self) -> dict:
        """Everything the run is given, as saved in training_options.json and in the manifest."""
        return {"training": self.options.to_dict(), "runtime": dataclasses.asdict(self.runtime_options)}

    def resolved_config(self) -> dict:
        return self.training_options()

    def train(self, **job_fields) -> dict:
        """Save training_options.json, run the job in child processes (this luigi worker never
        initialises CUDA) and return rank 0's final report."""
        options = self.training_options()
        self.write_json(TRAINING_OPTIONS, options)
        job = TrainingJob(task=self.task_id, directory=self.directory, kind=self.training_kind,
                          options=options, keep_checkpoints=self.keep_checkpoints,
                          cache_dir=cache_dir(), **job_fields)
        settings = distributed()
        placement = Placement(self.processes, self.nodes, self.device, settings.master_addr or socket.getfqdn(),
                              settings.master_port)
        return run_training(job, placement, on_log=self.log_row, on_file=self.adopt_file)

    @staticmethod
    def summary(result: dict) -> dict:
        """What the manifest records of a finished training: where and how it ran, and its last log row."""
        history = result["history"]
        return {"steps": result["step"], "device": result["device"], "world_size": result["world_size"],
                "runtime": result["runtime"], "data_on_device": result["data_on_device"],
                "last_log": history[-1] if history else {}}

    def stop_if_collapsed(self, result: dict) -> None:
        """Fail, naming the checkpoint kept, when the collapse watch stopped the run."""
        if not result["stopped_reason"]:
            return
        kept = list_checkpoints(self.directory)
        checkpoint = f"kept {self.path(kept[-1][1])}" if kept else "no checkpoint had been written"
        raise TrainingStopped(
            f"{self.get_task_family()} stopped by the collapse watch (on_collapse=stop): {result['stopped_reason']}. "
            f"Last good checkpoint: {checkpoint}; the history in {self.directory} shows the run. Running again "
            f"resumes from that checkpoint and meets the same collapse: change the training parameters "
            f"(learning rates, alpha, labels, widths) or set on_collapse=warn.")
