"""The layout of a training state, shared by every training loop, and its random streams.

A state is what a checkpoint holds and what a finished run saves: everything needed to
use the model or to resume the run exactly. Every loop writes the same keys:

    config      the run's options (asdict form), which also rebuild its networks
    step        updates done
    networks    {name: state dict}
    optimizers  {name: state dict}
    rng         the random streams in use (random_state)
    history     the log rows so far
    collapse_watch  the collapse watch's counters

plus what a loop needs beyond these (the GLCIC hole fill's mean pixel, the DCGAN's fixed
latents). Only tensors, numbers, strings, None, lists and dicts: torch.load reads it
back with weights_only=True.
"""
import logging

import torch
from torch import nn

from .world import World

log = logging.getLogger(__name__)


def training_state(config: dict, step: int, networks: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   rng: dict, history: list[dict], collapse_watch: dict, **extra) -> dict:
    """A state in the shared layout; its tensors are the live ones, so persist it before training on."""
    return {"config": config, "step": step,
            "networks": {name: net.state_dict() for name, net in networks.items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
            "rng": rng, "history": history, "collapse_watch": collapse_watch, **extra}


def load_training_state(state: dict, networks: dict[str, nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Load the named networks and optimizers that the state holds."""
    for name, net in networks.items():
        net.load_state_dict(state["networks"][name])
    for name, optimizer in optimizers.items():
        if name in state["optimizers"]:
            load_optimizer(optimizer, state["optimizers"][name])


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load optimizer state, laying each moment out like its parameter.

    A state saved in another memory format (NCHW from a CPU run, say) would otherwise keep
    it, and fused Adam on CUDA refuses moments whose layout differs from the parameter's.
    """
    optimizer.load_state_dict(state)
    for parameter, moments in optimizer.state.items():
        for key, value in moments.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                moments[key] = torch.empty_like(parameter).copy_(value)


def random_state(sampler: torch.Generator, world: World) -> dict:
    """The global torch streams and every rank's sampling stream (gathered: call it on every rank)."""
    state = {"torch": torch.get_rng_state(), "samplers": world.gather(sampler.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict, sampler: torch.Generator, world: World, fresh_seed: int) -> None:
    """Put back the streams of random_state; a run with another number of processes reseeds its samplers."""
    torch.set_rng_state(state["torch"])
    if len(state["samplers"]) == world.size:
        sampler.set_state(state["samplers"][world.rank])
    else:
        log.warning("the checkpoint was written by %d processes and this run has %d: every process's "
                    "sampling stream is reseeded", len(state["samplers"]), world.size)
        sampler.manual_seed(fresh_seed)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
