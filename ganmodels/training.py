"""The three GLCIC training phases as one readable loop.

Phase 1 trains the completion network on hole MSE; phase 2 trains the discriminator
against the frozen completion network; phase 3 trains both, the completion network on
MSE + alpha * adversarial loss. Each phase starts from the previous phase's state and
can resume from its own checkpoint: a state dict holds the networks, the optimizers,
the step and every random number generator in use, so a resumed run continues exactly.
"""
import logging
import time
from typing import Callable

import torch
from torch import nn

from .config import MaskConfig, ModelConfig, PhaseConfig
from .data import ImageBank
from .distributed import World
from .losses import discriminator_loss, generator_adversarial_loss, hole_mse
from .masks import holes_to_mask, patch_origins, sample_holes
from .networks import build_networks, complete

log = logging.getLogger(__name__)


def _optimizers(completion, discriminator, config: PhaseConfig):
    return (torch.optim.Adam(completion.parameters(), lr=config.lr_completion),
            torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=(0.5, 0.999)))


def _rng_state(generator: torch.Generator, world: World) -> dict:
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if world.size > 1:
        state["rank_samplers"] = world.gather(generator.get_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, generator: torch.Generator, world: World, fresh_seed: int) -> None:
    torch.set_rng_state(state["torch"])
    samplers = state.get("rank_samplers", [state["sampler"]])
    if len(samplers) == world.size:
        generator.set_state(samplers[world.rank])
    else:
        log.warning("the checkpoint was written by %d processes and this run has %d: every process's "
                    "sampling stream is reseeded", len(samplers), world.size)
        generator.manual_seed(fresh_seed)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def discriminator_step(discriminator: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                       completed: torch.Tensor, origins: torch.Tensor) -> torch.Tensor:
    """One discriminator update on real images against completions; returns the detached loss."""
    loss = discriminator_loss(discriminator(real, origins), discriminator(completed.detach(), origins))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def completion_step(optimizer: torch.optim.Optimizer, completed: torch.Tensor, real: torch.Tensor,
                    mask: torch.Tensor, origins: torch.Tensor, discriminator: nn.Module | None,
                    alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One completion-network update: hole MSE, plus alpha * adversarial loss when a discriminator is given.

    The discriminator is frozen during this step so it receives no gradient from it.
    Returns the detached (mse, adversarial) losses.
    """
    mse = hole_mse(completed, real, mask)
    adversarial = torch.zeros((), device=mse.device)
    if discriminator is not None:
        trainable = [p.requires_grad for p in discriminator.parameters()]
        discriminator.requires_grad_(False)
        adversarial = generator_adversarial_loss(discriminator(completed, origins))
        for parameter, flag in zip(discriminator.parameters(), trainable):
            parameter.requires_grad_(flag)
    optimizer.zero_grad(set_to_none=True)
    (mse + alpha * adversarial).backward()
    optimizer.step()
    return mse.detach(), adversarial.detach()


def train_phase(config: PhaseConfig, model_config: ModelConfig, mask_config: MaskConfig,
                images: ImageBank, mean_pixel: torch.Tensor, start: dict | None,
                device: torch.device | str,
                on_checkpoint: Callable[[dict], None] = lambda state: None,
                on_log: Callable[[dict], None] = lambda row: None, world: World = World()) -> dict:
    """Train one phase and return its final state.

    `start` is either None (fresh networks, phase 1 only), the previous phase's final
    state, or a checkpoint of this same phase to resume from. `on_checkpoint` must
    persist the state it is given before returning: its tensors are the live ones.
    Under torchrun every rank calls this with its `world`: each trains on its share of
    every batch, and all ranks call the callbacks with the same values.
    """
    device = torch.device(device)
    if start is None and config.phase != 1:
        raise ValueError(f"phase {config.phase} needs the state of phase {config.phase - 1} to start from")
    torch.manual_seed(config.seed + config.phase)  # fresh weights are seeded; loaded ones overwrite them
    completion, discriminator = (net.to(device).train() for net in build_networks(model_config))
    opt_completion, opt_discriminator = _optimizers(completion, discriminator, config)
    sampler = torch.Generator(device=device).manual_seed(world.seed(config.seed + config.phase))
    mean_pixel = mean_pixel.to(device)

    history, first_step = [], 0
    if start is not None:
        completion.load_state_dict(start["completion"])
        discriminator.load_state_dict(start["discriminator"])
        # Optimizer moments carry across phases, so phase 3 continues where 1 and 2 left each network.
        if "opt_completion" in start:
            opt_completion.load_state_dict(start["opt_completion"])
        if "opt_discriminator" in start:
            opt_discriminator.load_state_dict(start["opt_discriminator"])
        history = [row for row in start.get("history", []) if row["phase"] <= config.phase]
        if start["phase"] == config.phase:
            _restore_rng(start["rng"], sampler, world, world.seed(config.seed + config.phase, start["step"]))
            first_step = start["step"]
            log.info("phase %d: resuming from step %d of %d", config.phase, first_step, config.steps)

    def state(step: int) -> dict:
        return {
            "phase": config.phase, "step": step,
            "completion": completion.state_dict(), "discriminator": discriminator.state_dict(),
            "opt_completion": opt_completion.state_dict(), "opt_discriminator": opt_discriminator.state_dict(),
            "rng": _rng_state(sampler, world), "history": history,
            "model_config": model_config.to_dict(), "mask_config": mask_config.to_dict(),
            "phase_config": config.to_dict(),
        }

    if first_step >= config.steps:
        return state(first_step)

    discriminator.requires_grad_(config.phase != 1)
    if config.phase == 2:
        completion.eval()  # frozen: not even its batch-norm statistics move
    # Only the networks a phase trains go under DDP. Phase 3's completion step calls the plain
    # discriminator, so DDP never waits for gradients that the frozen discriminator does not get.
    trained_completion = world.wrap(completion) if config.phase != 2 else completion
    trained_discriminator = world.wrap(discriminator) if config.phase != 1 else discriminator
    batch_size = world.local_batch(config.batch_size)
    totals = torch.zeros(3, device=device)  # running sums of (mse, d loss, g adversarial) between log lines
    window_start, window_steps = time.perf_counter(), 0
    for step in range(first_step, config.steps):
        real = images.sample(batch_size, sampler)
        holes = sample_holes(batch_size, mask_config, sampler)
        mask = holes_to_mask(holes, model_config.image_size)
        origins = patch_origins(holes, model_config.image_size, model_config.local_size)

        with torch.set_grad_enabled(config.phase != 2):
            completed = complete(trained_completion, real, mask, mean_pixel)
        if config.phase in (2, 3):
            totals[1] += discriminator_step(trained_discriminator, opt_discriminator, real, completed, origins)
        if config.phase in (1, 3):
            adversary = discriminator if config.phase == 3 else None
            losses = completion_step(opt_completion, completed, real, mask, origins, adversary, config.alpha)
            totals[0] += losses[0]
            totals[2] += losses[1]

        window_steps += 1
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            means = world.mean(totals / window_steps).tolist()  # the one host synchronisation, every log_every steps
            elapsed = time.perf_counter() - window_start
            row = {"phase": config.phase, "step": done, "steps": config.steps,
                   "mse": means[0] if config.phase != 2 else None,
                   "loss_d": means[1] if config.phase != 1 else None,
                   "loss_adv": means[2] if config.phase == 3 else None,
                   "images_per_s": window_steps * config.batch_size / max(elapsed, 1e-9)}
            history.append(row)
            on_log(row)
            totals.zero_()
            window_start, window_steps = time.perf_counter(), 0
        if done % config.checkpoint_every == 0 and done < config.steps:
            on_checkpoint(state(done))
    return state(config.steps)


def load_completion(state: dict, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The completion network of a saved state, in eval mode."""
    completion, _ = build_networks(ModelConfig(**state["model_config"]))
    completion.load_state_dict(state["completion"])
    return completion.to(device).eval()
