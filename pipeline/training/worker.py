"""A training process: `python -m pipeline.training.worker` (installed as gan-pipeline-distributed).

`train` runs one process of a job, alone or as one rank under torchrun: rank 0 reads the
job on its standard input, the other ranks receive it from rank 0. `torchrun` is torchrun
itself, ending with its parent. `join` lends this machine's processes to the jobs a luigi
worker on another machine starts, one after another.

Every process of the tree asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG, Linux), so killing the luigi worker, even with kill -9, stops the
training instead of leaving it running unattended.
"""
import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from .launch import COMMAND, PARENT_PID_VARIABLE, child_environment, worker_command
from .output import emit

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected and os.getppid() != int(expected):
        sys.exit("the process that started this one has exited")


def _train(device: str) -> None:
    from ganmodels.world import join_world, leave_world

    from .job import TrainingJob
    from .loops import LOOPS
    from .output import JobOutput

    # Before joining: the task writes the job into a pipe and waits until it is read.
    payload = sys.stdin.buffer.read() if os.environ.get("RANK", "0") == "0" else None
    if payload == b"":
        sys.exit("error: rank 0 reads its job on its standard input, from the luigi task that starts it")
    world = join_world(device)
    job = TrainingJob.from_json(world.broadcast_bytes(payload))
    summary = LOOPS[job.kind](job, world, JobOutput(job, world.is_main))
    if world.is_main:
        emit("done", device=str(world.device), world_size=world.size, **summary)
    leave_world(world)


def _torchrun(arguments: list[str]) -> None:
    from torch.distributed.run import main

    os.environ[PARENT_PID_VARIABLE] = str(os.getpid())  # the workers' parent is this agent
    main(arguments)


def _join(options: argparse.Namespace) -> None:
    """Serve the training jobs of a luigi worker on another machine, one after another."""
    while True:
        arguments = [f"--nproc-per-node={options.nproc_per_node}", f"--nnodes={options.nnodes}",
                     f"--node-rank={options.node_rank}", f"--master-addr={options.master_addr}",
                     f"--master-port={options.master_port}", "--max-restarts=0",
                     "--no-python", *worker_command("train", "--device", options.device)]
        code = subprocess.call(worker_command("torchrun", *arguments), env=child_environment())
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
    if options.command == "join" and options.node_rank < 1:
        parser.error("--node-rank must be >= 1: node 0 is the machine running the luigi task")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(levelname)s: [{options.command} rank {os.environ.get('RANK', '0')}] %(message)s")
    if options.command == "join":
        _join(options)
    else:
        try:
            _train(options.device)
        except BaseException as error:
            emit("error", rank=int(os.environ.get("RANK", "0")), message=f"{type(error).__name__}: {error}")
            raise
        _exit_without_finalizing()


def _exit_without_finalizing() -> None:
    """Exit 0 at once, skipping the interpreter's finalization.

    The job's artifacts are written and the process group is destroyed by now. Gloo's threads can
    still hold references to Python objects, and freeing them while the interpreter is torn down
    aborts the process ("terminate called without an active exception", no Python frame) in about
    one exit in twenty of two CPU processes, which torchrun then reports as a failed job.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
