"""Data-parallel training over several processes with torch.distributed (DDP).

A `World` says where this process sits: its rank among `size` processes and its
device. With one process every method is a no-op, so the same training loop runs
alone or under torchrun. Each rank draws its own share of every batch from its own
random stream and DDP averages the gradients, so one step sees the whole batch
whatever the number of processes.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .options import require


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present; without an index each process takes GPU `local_rank`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job; the default is a job of one."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes artifacts and reports progress."""
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a batch of `batch_size` images."""
        require(batch_size % self.size == 0, f"batch_size {batch_size} does not split evenly over {self.size} processes")
        return batch_size // self.size

    def seed(self, base: int, step: int = 0) -> int:
        """A seed for this rank's random stream, distinct for every (base, rank, step)."""
        return int(np.random.SeedSequence([base, self.rank, step]).generate_state(1, np.uint64)[0])

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DDP, which averages its gradients over the processes; itself when alone."""
        if self.size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of `tensor` over all processes."""
        if self.size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.size

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor, in rank order, on the CPU."""
        if self.size == 1:
            return [tensor.cpu()]
        local = tensor.to(self.device)  # NCCL only moves GPU tensors
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(parts, local)
        return [part.cpu() for part in parts]

    def broadcast_bytes(self, data: bytes | None, source: int = 0) -> bytes:
        """`data` from rank `source` on every rank (ranks other than `source` pass None)."""
        if self.size == 1:
            return data
        length = torch.tensor([len(data) if self.rank == source else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(length, source)
        if self.rank == source:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        else:
            buffer = torch.empty(int(length.item()), dtype=torch.uint8, device=self.device)
        dist.broadcast(buffer, source)
        return buffer.cpu().numpy().tobytes()


def join_world(device_name: str) -> World:
    """Join the process group torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK, if there is one.

    GPUs use NCCL, CPUs gloo. An explicit GPU index cannot be shared by several processes.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    require(size == 1 or device_name == "auto" or torch.device(device_name).index is None,
            f"device={device_name} would put {size} processes on one GPU; use device=cuda or auto")
    device = resolve_device(device_name, local_rank)
    if size == 1:
        return World(0, 1, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return World(rank, size, device)


def leave_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()  # no rank tears down its connections while another still sends on them
        dist.destroy_process_group()
