"""Training runs in child processes: one process, or data-parallel under torchrun.

The luigi worker never initialises CUDA and holds no training state. A training task
describes its run as a `TrainingJob`, and `run_training` starts this module's `train`
command for one process, or torchrun for N processes on each of M machines. Rank 0
reads the job on its standard input (no file is left behind when the worker is killed),
writes checkpoints and the final state straight into the task's directory through
`storage`, and reports log rows, written files and errors as JSON lines on its standard
output, which the task turns into luigi progress.

The other machines of a multi-machine job run `gan-pipeline-distributed join` (see the
README); they receive the job from rank 0 over torch.distributed.

Every process of the tree asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG, Linux), so killing the luigi worker, even with kill -9, stops the
training instead of leaving it running unattended.
"""
import argparse
import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import luigi

from . import storage
from .checkpoints import checkpoint_name, checksum_line, checksum_name, prune_checkpoints, save_state

log = logging.getLogger("luigi-interface")

COMMAND = "gan-pipeline-distributed"  # this module's main() as installed by setup.py
# How children start main(): with `pipeline` bound to a bare package over this folder, so
# that they import only what training needs and not every task module (OpenCV, pandas,
# matplotlib); and not with `python -m`, which would import this
# module a second time, as __main__, after the package's own import of it.
_BOOTSTRAP = ("import sys, types; package = types.ModuleType('pipeline'); package.__path__ = [{folder!r}]; "
              "sys.modules['pipeline'] = package; from pipeline.distributed import main; main()")
ENTRY = [sys.executable, "-c", _BOOTSTRAP.format(folder=os.path.dirname(os.path.abspath(__file__)))]
EVENT_PREFIX = "@pipeline-event "
PARENT_PID_VARIABLE = "PIPELINE_TRAINING_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class distributed(luigi.Config):
    """`[distributed]` section: where the other machines of a multi-machine training job meet this one."""

    master_addr = luigi.Parameter(default="", description="Address of this machine as the others reach it; "
                                                          "empty: its fully qualified host name")
    master_port = luigi.IntParameter(default=29500, description="Port on this machine for torch.distributed")


class TrainingFailed(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """Everything a training process needs, as JSON: which loop, its configuration, where to write."""

    task: str  # the task id, for messages
    directory: str  # the task's directory; rank 0 writes checkpoints and `final_state` there
    kind: str  # the training loop: a key of pipeline.trainers.TRAINERS
    config: dict  # that loop's settings (pipeline.trainers says which)
    train_shards: list[str]
    start: str | None  # state to start from: the task's checkpoint or an upstream task's result
    keep_checkpoints: int
    final_state: str
    val_shards: list[str] = dataclasses.field(default_factory=list)  # images of the fixed grids some loops draw
    root: str = dataclasses.field(default_factory=storage.root)  # the artifact root, wherever it was set

    def __post_init__(self):
        from .trainers import TRAINERS

        if self.kind not in TRAINERS:
            raise ValueError(f"unknown training kind {self.kind!r}; one of {sorted(TRAINERS)}")


class TrainingProcesses:
    """Parameters of a task whose training runs in child processes, and the call that runs it.

    The task needs a `batch_size` parameter (split over the processes), a
    `keep_checkpoints` parameter and a `log_row(row)` method (the log rows of rank 0).
    """

    device = luigi.Parameter(default="auto", significant=False, description="auto, cpu, cuda or cuda:N")
    processes = luigi.IntParameter(default=1, significant=False,
                                   description="Training processes on this machine (DDP through torchrun; one per GPU)")
    nodes = luigi.IntParameter(default=1, significant=False,
                               description="Machines in each training job; the others run "
                                           "`gan-pipeline-distributed join`")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processes < 1 or self.nodes < 1:
            raise ValueError(f"processes and nodes must be >= 1, got {self.processes} and {self.nodes}")
        if self.batch_size % (self.processes * self.nodes):
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over "
                             f"{self.processes * self.nodes} training processes")
        if self.keep_checkpoints < 2:
            raise ValueError(f"keep_checkpoints must be >= 2, so that a damaged newest checkpoint leaves one to "
                             f"resume from; got {self.keep_checkpoints}")

    @property
    def resources(self):
        """One unit of `[resources] gpu` per process on this machine, so the scheduler never overbooks GPUs."""
        return {"gpu": self.processes}

    def train(self, job: TrainingJob) -> dict:
        """Run the job in child processes (this luigi worker never initialises CUDA); rank 0's final report."""
        return run_training(job, self.processes, self.nodes, self.device, on_log=self.log_row, on_file=self.adopt_file)


# --- in the luigi worker -------------------------------------------------------------------------

def run_training(job: TrainingJob, processes: int, nodes: int, device: str,
                 on_log: Callable[[dict], None], on_file: Callable[[str, int, str], None]) -> dict:
    """Run `job` in child processes, relaying their reports; return rank 0's final report.

    Raises TrainingFailed naming the cause when any process fails; the children are
    stopped if this function is left early (an exception, KeyboardInterrupt).
    """
    process = subprocess.Popen(_command(processes, nodes, device), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=_child_environment())
    errors, result = [], None
    try:
        try:  # rank 0 reads it first thing (torchrun's workers inherit this pipe)
            process.stdin.write(json.dumps(dataclasses.asdict(job)))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child exited before reading it; its exit status says why
        for line in process.stdout:
            if not line.startswith(EVENT_PREFIX):
                sys.stdout.write(line)
                continue
            event = json.loads(line[len(EVENT_PREFIX):])
            if event["event"] == "log":
                on_log(event["row"])
            elif event["event"] == "file":
                on_file(event["name"], event["size"], event["sha256"])
            elif event["event"] == "error":
                errors.append(f"rank {event['rank']}: {event['message']}")
            elif event["event"] == "done":
                result = event
        returncode = process.wait()
    finally:
        _stop(process)
    if returncode != 0 or result is None:
        cause = errors[0] if errors else (f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0
                                          else f"exit code {returncode}")
        raise TrainingFailed(f"training of {job.task} failed: {cause}")
    return result


def _child_environment() -> dict[str, str]:
    """This environment for a child of this process, which imports the packages this one did."""
    path = os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **{PARENT_PID_VARIABLE: str(os.getpid())})


def _command(processes: int, nodes: int, device: str) -> list[str]:
    train = ["train", "--device", device]
    if processes == 1 and nodes == 1:
        return [*ENTRY, *train]
    launch = [f"--nproc-per-node={processes}", f"--nnodes={nodes}", "--max-restarts=0"]
    if nodes > 1:  # a static rendezvous hosted here, so this machine holds rank 0
        address, port = distributed().master_addr or socket.getfqdn(), distributed().master_port
        launch += ["--node-rank=0", f"--master-addr={address}", f"--master-port={port}"]
        log.info("training waits for %d more machine(s); on each, with the same luigi.cfg, run: "
                 "%s join --nnodes %d --node-rank K --nproc-per-node %d --master-addr %s --master-port %d "
                 "(K = 1 .. %d)", nodes - 1, COMMAND, nodes, processes, address, port, nodes - 1)
    return [*ENTRY, "torchrun", *launch, "--no-python", *ENTRY, *train]


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End a child that is still running: SIGTERM (torchrun passes it on to its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- in the training processes -------------------------------------------------------------------

def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected and os.getppid() != int(expected):
        sys.exit("the process that started this one has exited")


def _emit(event: str, **fields) -> None:
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


class JobOutput:
    """What a training process writes and reports: everything on rank 0, nothing on the others."""

    def __init__(self, job: TrainingJob, world):
        self.job, self.is_main = job, world.is_main

    def log(self, row: dict) -> None:
        if self.is_main:
            _emit("log", row=row)

    def write(self, name: str, data: bytes) -> None:
        """Write one file of the task's directory."""
        if self.is_main:
            with storage.open_write(storage.join(self.job.directory, name)) as file:
                file.write(data)
            _emit("file", name=name, size=file.size, sha256=file.sha256.hexdigest())

    def save(self, name: str, state: dict) -> str | None:
        """Save a state dict as one file of the task's directory; its sha256 on rank 0."""
        if self.is_main:
            size, sha256 = save_state(storage.join(self.job.directory, name), state)
            _emit("file", name=name, size=size, sha256=sha256)
            return sha256
        return None

    def checkpoint(self, state: dict) -> None:
        """Save a checkpoint of state's step and then its checksum file; then delete all but
        the newest `keep_checkpoints`, so the checkpoints kept are never only unchecked ones."""
        if self.is_main:
            name = checkpoint_name(state["step"])
            self.write(checksum_name(name), checksum_line(self.save(name, state), name))
            prune_checkpoints(self.job.directory, self.job.keep_checkpoints, state["step"])


def _train(device: str) -> None:
    from ganmodels.distributed import join_world, leave_world

    from .trainers import TRAINERS

    # Before joining: the task writes the job into a pipe and waits until it is read.
    payload = sys.stdin.buffer.read() if os.environ.get("RANK", "0") == "0" else None
    if payload == b"":
        raise ValueError("rank 0 reads its job on its standard input, from the luigi task that starts it")
    world = join_world(device)
    job = TrainingJob(**json.loads(world.broadcast_bytes(payload)))
    storage.use_root(job.root)
    summary = TRAINERS[job.kind](job, world, JobOutput(job, world))
    if world.is_main:
        _emit("done", device=str(world.device), world_size=world.size, **summary)
    leave_world(world)


def _torchrun(arguments: list[str]) -> None:
    from torch.distributed.run import main

    os.environ[PARENT_PID_VARIABLE] = str(os.getpid())  # the workers' parent is this agent
    main(arguments)


def _join(options: argparse.Namespace) -> None:
    """Serve the training jobs of a luigi worker on another machine, one after another."""
    if options.node_rank < 1:
        raise ValueError("--node-rank must be >= 1: node 0 is the machine running the luigi task")
    while True:
        arguments = [f"--nproc-per-node={options.nproc_per_node}", f"--nnodes={options.nnodes}",
                     f"--node-rank={options.node_rank}", f"--master-addr={options.master_addr}",
                     f"--master-port={options.master_port}", "--max-restarts=0",
                     "--no-python", *ENTRY, "train", "--device", options.device]
        code = subprocess.call([*ENTRY, "torchrun", *arguments], env=_child_environment())
        if options.once:
            sys.exit(code)
        log.info("training job ended with exit code %d; waiting for the next one", code)
        if code != 0:
            time.sleep(5)  # the launching machine may be between jobs; do not spin


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    if argv[:1] == ["torchrun"]:  # torchrun's own arguments follow
        _torchrun(argv[1:])
        return
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="one training process (started by a task, alone or by torchrun); "
                                               "rank 0 reads the job on its standard input, the others receive it")
    train.add_argument("--device", default="auto")
    commands.add_parser("torchrun", help="torchrun, given its own arguments, that ends with its parent")
    join = commands.add_parser("join", help="lend this machine's processes to training jobs started elsewhere")
    join.add_argument("--nnodes", type=int, required=True)
    join.add_argument("--node-rank", type=int, required=True)
    join.add_argument("--nproc-per-node", type=int, default=1)
    join.add_argument("--master-addr", required=True)
    join.add_argument("--master-port", type=int, default=29500)
    join.add_argument("--device", default="auto")
    join.add_argument("--once", action="store_true", help="serve one job, then exit with its status")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(levelname)s: [{options.command} rank {os.environ.get('RANK', '0')}] %(message)s")
    if options.command == "join":
        _join(options)
    else:
        try:
            _train(options.device)
        except BaseException as error:
            _emit("error", rank=int(os.environ.get("RANK", "0")), message=f"{type(error).__name__}: {error}")
            raise

