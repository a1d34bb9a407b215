"""Starting a training job's processes from the luigi worker, and relaying what they report.

`run_training` starts `python -m pipeline.training.worker train` for one process, or
torchrun (through the same module, so that it ends with its parent) for N processes on
each of M machines. Rank 0 reads the job on its standard input, so no file is left behind
when the worker is killed; the processes report log rows, written files and errors as
event lines on their standard output (pipeline.training.job), which the task turns into
luigi progress. The other machines of a multi-machine job run `gan-pipeline-distributed
join` (docs/scaling.md, "Many GPUs").
"""
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from .job import TrainingJob, parse_event

log = logging.getLogger("luigi-interface")

WORKER_MODULE = "pipeline.training.worker"
COMMAND = "gan-pipeline-distributed"  # the worker module's main() as installed by setup.py
PARENT_PID_VARIABLE = "PIPELINE_TRAINING_PARENT_PID"
# The folder holding the `pipeline` package, so that children find it from any working directory.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TrainingFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Placement:
    """Where a job's processes run: `processes` on each of `nodes` machines, this one holding rank 0."""

    processes: int = 1
    nodes: int = 1
    device: str = "auto"
    master_addr: str = ""  # how the other machines reach this one (nodes > 1)
    master_port: int = 29500


def worker_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE, *arguments]


def run_training(job: TrainingJob, placement: Placement, on_log: Callable[[dict], None],
                 on_file: Callable[[str, int, str], None]) -> dict:
    """Run `job` in child processes, relaying their reports; return rank 0's final report.

    Raises TrainingFailed naming the cause when any process fails; the children are
    stopped if this function is left early (an exception, KeyboardInterrupt).
    """
    process = subprocess.Popen(_command(placement), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=child_environment())
    errors, result = [], None
    try:
        try:  # rank 0 reads it first thing (torchrun's workers inherit this pipe)
            process.stdin.write(job.to_json())
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child exited before reading it; its exit status says why
        for line in process.stdout:
            event = parse_event(line)
            if event is None:
                sys.stdout.write(line)
            elif event["event"] == "log":
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


def child_environment() -> dict[str, str]:
    """This environment for a child of this process, which imports the packages this one did."""
    path = os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **{PARENT_PID_VARIABLE: str(os.getpid())})


def _command(placement: Placement) -> list[str]:
    train = ["train", "--device", placement.device]
    if placement.processes == 1 and placement.nodes == 1:
        return worker_command(*train)
    launch = [f"--nproc-per-node={placement.processes}", f"--nnodes={placement.nodes}", "--max-restarts=0"]
    if placement.nodes > 1:  # a static rendezvous hosted here, so this machine holds rank 0
        address, port = placement.master_addr, placement.master_port
        launch += ["--node-rank=0", f"--master-addr={address}", f"--master-port={port}"]
        log.info("training waits for %d more machine(s); on each, with the same luigi.cfg, run: "
                 "%s join --nnodes %d --node-rank K --nproc-per-node %d --master-addr %s --master-port %d "
                 "(K = 1 .. %d)", placement.nodes - 1, COMMAND, placement.nodes, placement.processes, address, port,
                 placement.nodes - 1)
    return worker_command("torchrun", *launch, "--no-python", *worker_command(*train))


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
