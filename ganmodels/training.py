"""The three GLCIC training phases as one readable loop.

Phase 1 trains the completion network on hole MSE; phase 2 trains the discriminator
against the frozen completion network; phase 3 trains both, the completion network on
MSE + alpha * adversarial loss. Each phase starts from the previous phase's state and
can resume from its own checkpoint: a state dict holds the networks, the optimizers,
the step and every random number generator in use, so a resumed run continues exactly.
"""
import contextlib
import logging
import time
from typing import Callable

import torch
from torch import nn

from .config import MaskConfig, ModelConfig, PhaseConfig
from .data import TrainingImages, augment
from .distributed import World
from .losses import discriminator_loss, generator_adversarial_loss, reconstruction_loss
from .masks import patch_origins, sample_masks
from .monitoring import CollapseWatch
from .networks import build_networks, fill_holes
from .runtime import Runtime

log = logging.getLogger(__name__)


class TrainingCollapsed(RuntimeError):
    """The collapse watch ended a phase (on_collapse=stop); the last checkpoint holds the last good state."""


def _optimizers(completion, discriminator, runtime: Runtime):
    # Learning rates and betas are set at every step from the phase's own config (set_learning_rates),
    # so a state loaded from another phase never carries its settings into this one.
    return runtime.adam(completion.parameters(), lr=0.0), runtime.adam(discriminator.parameters(), lr=0.0)


def set_learning_rates(optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], config: PhaseConfig,
                       step: int) -> None:
    factor = config.lr_factor(step)
    for optimizer, lr, betas in zip(optimizers, (config.lr_completion, config.lr_discriminator),
                                    ((0.9, 0.999), (0.5, 0.999))):
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr * factor, betas


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load optimizer state, laying each moment out like its parameter.

    A state saved in another memory format (NCHW from a CPU run, say) would otherwise keep
    it, and fused Adam on CUDA refuses moments whose layout differs from the parameter's.
    """
    optimizer.load_state_dict(state)
    for parameter, moments in optimizer.state.items():
        for key, value in moments.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                moments[key] = torch.empty_like(parameter).copy_(value)


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
                       completed: torch.Tensor, origins: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """One discriminator update on real images against completions.

    Returns the detached (loss, D(real), D(fake)): the loss and the mean probabilities the
    discriminator gave real images and completions before the update.
    """
    with runtime.autocast():
        real_logits, fake_logits = discriminator(real, origins), discriminator(completed.detach(), origins)
        loss = discriminator_loss(real_logits, fake_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return torch.stack([loss.detach(), *(logits.detach().float().sigmoid().mean() for logits in (real_logits, fake_logits))])


def completion_step(optimizer: torch.optim.Optimizer, output: torch.Tensor, completed: torch.Tensor,
                    real: torch.Tensor, mask: torch.Tensor, origins: torch.Tensor, discriminator: nn.Module | None,
                    config: PhaseConfig, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """One completion-network update: the reconstruction loss of its raw `output`, plus alpha times
    the adversarial loss of the `completed` images when a discriminator is given.

    The discriminator is frozen during this step so it receives no gradient from it.
    Returns the detached (reconstruction, adversarial) losses.
    """
    reconstruction = reconstruction_loss(output.float(), real, mask, config.loss, config.known_weight)
    adversarial = torch.zeros((), device=reconstruction.device)
    if discriminator is not None:
        trainable = [p.requires_grad for p in discriminator.parameters()]
        discriminator.requires_grad_(False)
        with runtime.autocast():
            adversarial = generator_adversarial_loss(discriminator(completed, origins))
        for parameter, flag in zip(discriminator.parameters(), trainable):
            parameter.requires_grad_(flag)
    optimizer.zero_grad(set_to_none=True)
    (reconstruction + config.alpha * adversarial).backward()
    optimizer.step()
    return reconstruction.detach(), adversarial.detach()


def train_step(config: PhaseConfig, completion: nn.Module, discriminator: nn.Module,
               optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], real: torch.Tensor,
               mask: torch.Tensor, origins: torch.Tensor, filled: torch.Tensor,
               runtime: Runtime, adversary: nn.Module | None = None) -> torch.Tensor:
    """One update of a phase on one batch; returns the detached (reconstruction, discriminator, adversarial)
    losses and D(real), D(fake).

    `filled` is `real` with its holes filled as the completion network expects (fill_holes).

    Phase 1 updates the completion network, phase 2 the discriminator, phase 3 the
    discriminator and then the completion network against it. A loss a phase does not
    compute is 0. `adversary` is the discriminator the completion step is judged by
    (default: `discriminator`); under DDP it is the plain module, outside the wrapper.
    """
    phase, (opt_completion, opt_discriminator) = config.phase, optimizers
    with runtime.autocast(), torch.set_grad_enabled(phase != 2):
        output = completion(torch.cat([filled, mask], dim=1))
    completed = torch.lerp(real, output.to(real.dtype), mask)  # the known pixels are always the input's
    zero = torch.zeros((), device=real.device)
    reconstruction, adversarial, judged = zero, zero, torch.zeros(3, device=real.device)
    if phase in (2, 3):
        judged = discriminator_step(discriminator, opt_discriminator, real, completed, origins, runtime)
    if phase in (1, 3):
        judge = (adversary or discriminator) if phase == 3 else None
        reconstruction, adversarial = completion_step(opt_completion, output, completed, real, mask, origins, judge,
                                                      config, runtime)
    return torch.stack([reconstruction, judged[0], adversarial, judged[1], judged[2]])


def train_phase(config: PhaseConfig, model_config: ModelConfig, mask_config: MaskConfig,
                images: TrainingImages, mean_pixel: torch.Tensor, start: dict | None, runtime: Runtime,
                on_checkpoint: Callable[[dict], None] = lambda state: None,
                on_log: Callable[[dict], None] = lambda row: None, world: World = World()) -> dict:
    """Train one phase and return its final state.

    `start` is either None (fresh networks, phase 1 only), the previous phase's final
    state, or a checkpoint of this same phase to resume from. `on_checkpoint` must
    persist the state it is given before returning: its tensors are the live ones.
    The device reads back results only every `log_every` steps; each log row also
    says which share of the time the loop spent waiting for its next batch.
    Under torchrun every rank calls this with its `world`: each trains on its share of
    every batch, and all ranks call the callbacks with the same values.
    """
    if start is None and config.phase != 1:
        raise ValueError(f"phase {config.phase} needs the state of phase {config.phase - 1} to start from")
    if min(images.image_shape[1:]) < model_config.image_size:
        raise ValueError(f"training images of {images.image_shape} are smaller than image_size {model_config.image_size}")
    with runtime.active():
        return _train_phase(config, model_config, mask_config, images, mean_pixel, start, runtime, on_checkpoint,
                            on_log, world)


def _train_phase(config, model_config, mask_config, images, mean_pixel, start, runtime, on_checkpoint, on_log, world):
    device = runtime.torch_device
    torch.manual_seed(config.seed + config.phase)  # fresh weights are seeded; loaded ones overwrite them
    completion, discriminator = (runtime.place(net).train() for net in build_networks(model_config))
    opt_completion, opt_discriminator = _optimizers(completion, discriminator, runtime)
    sampler = torch.Generator(device=device).manual_seed(world.seed(config.seed + config.phase))
    mean_pixel = mean_pixel.to(device)

    # Inpainting has no sample diversity to watch: the holes are filled from their context.
    watch = CollapseWatch(config.collapse_window, config.collapse_d_loss_floor, diversity_floor=0)
    history, first_step = [], 0
    if start is not None:
        completion.load_state_dict(start["completion"])
        discriminator.load_state_dict(start["discriminator"])
        # Optimizer moments carry across phases, so phase 3 continues where 1 and 2 left each network.
        if "opt_completion" in start:
            _load_optimizer(opt_completion, start["opt_completion"])
        if "opt_discriminator" in start:
            _load_optimizer(opt_discriminator, start["opt_discriminator"])
        history = [row for row in start.get("history", []) if row["phase"] <= config.phase]
        if start["phase"] == config.phase:
            _restore_rng(start["rng"], sampler, world, world.seed(config.seed + config.phase, start["step"]))
            first_step = start["step"]
            watch.load_state_dict(start["collapse_watch"])
            log.info("phase %d: resuming from step %d of %d", config.phase, first_step, config.steps)

    def state(step: int) -> dict:
        return {
            "phase": config.phase, "step": step,
            "completion": completion.state_dict(), "discriminator": discriminator.state_dict(),
            "opt_completion": opt_completion.state_dict(), "opt_discriminator": opt_discriminator.state_dict(),
            "rng": _rng_state(sampler, world), "history": history,
            "model_config": model_config.to_dict(), "mask_config": mask_config.to_dict(),
            "mean_pixel": mean_pixel.tolist(),  # the hole fill the network was trained with, needed to use it
            "phase_config": config.to_dict(), "collapse_watch": watch.state_dict(),
        }

    if first_step >= config.steps:
        return state(first_step)

    discriminator.requires_grad_(config.phase != 1)
    if config.phase == 2:
        completion.eval()  # frozen: not even its batch-norm statistics move
    completion, discriminator = runtime.finish(completion), runtime.finish(discriminator)
    # Only the networks a phase trains go under DDP. Phase 3's completion step calls the plain
    # discriminator, so DDP never waits for gradients that the frozen discriminator does not get.
    trained_completion = world.wrap(completion) if config.phase != 2 else completion
    trained_discriminator = world.wrap(discriminator) if config.phase != 1 else discriminator
    size, optimizers = model_config.image_size, (opt_completion, opt_discriminator)
    batch_size = world.local_batch(config.batch_size)
    totals = torch.zeros(5, device=device)  # running sums of train_step's figures between log lines
    window_start, window_steps, waited = time.perf_counter(), 0, 0.0
    stream_seed = (config.seed, config.phase, world.rank)  # each rank draws its own share of every batch
    with contextlib.closing(images.batches(batch_size, stream_seed, first_step)) as batches:
        for step in range(first_step, config.steps):
            stored, seconds_waited = next(batches)
            waited += seconds_waited
            real = augment(stored, size, sampler, runtime.memory_format, config.max_zoom)
            mask, boxes = sample_masks(batch_size, mask_config, sampler)
            mask = mask.contiguous(memory_format=runtime.memory_format)
            origins = patch_origins(boxes, size, model_config.local_size)
            set_learning_rates(optimizers, config, step)
            filled = fill_holes(real, mask, mean_pixel, model_config.hole_fill)
            totals += train_step(config, trained_completion, trained_discriminator, optimizers, real, mask,
                                 origins, filled, runtime, adversary=discriminator)

            window_steps += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                means = world.mean(totals / window_steps).tolist()  # the one host synchronisation, every log_every steps
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                row = {"phase": config.phase, "step": done, "steps": config.steps,
                       "loss_rec": means[0] if config.phase != 2 else None,
                       "loss_d": means[1] if config.phase != 1 else None,
                       "loss_adv": means[2] if config.phase == 3 else None,
                       "d_real": means[3] if config.phase != 1 else None,
                       "d_fake": means[4] if config.phase != 1 else None,
                       "lr_completion": opt_completion.param_groups[0]["lr"] if config.phase != 2 else None,
                       "lr_discriminator": opt_discriminator.param_groups[0]["lr"] if config.phase != 1 else None,
                       "images_per_s": window_steps * config.batch_size / elapsed,
                       "data_wait": waited / elapsed}
                history.append(row)
                on_log(row)
                if config.phase == 3 and (warning := watch.update(row["loss_d"], None)):
                    log.warning("phase 3 step %d: %s", done, warning)
                    if config.on_collapse == "stop":
                        raise TrainingCollapsed(f"phase 3 stopped by the collapse watch at step {done}: {warning}. "
                                                f"The last checkpoint before it is kept; change alpha or the "
                                                f"learning rates, or set on_collapse=warn")
                totals.zero_()
                window_start, window_steps, waited = time.perf_counter(), 0, 0.0
            if done % config.checkpoint_every == 0 and done < config.steps:
                on_checkpoint(state(done))
    return state(config.steps)


def load_completion(state: dict, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The completion network of a saved state, in eval mode."""
    completion, _ = build_networks(ModelConfig(**state["model_config"]))
    completion.load_state_dict(state["completion"])
    return completion.to(device).eval()
