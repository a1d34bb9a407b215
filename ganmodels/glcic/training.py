"""The three GLCIC training phases as one readable loop.

Phase 1 trains the completion network on the reconstruction loss; phase 2 trains the
discriminator against the frozen completion network; phase 3 trains both, the completion
network on reconstruction + alpha * adversarial loss. Each phase starts from the previous
phase's state and can resume from its own checkpoint; states follow ganmodels.state's
layout, so a resumed run continues exactly.
"""
import contextlib
import logging
import time
from typing import Callable

import torch
from torch import nn

from ..collapse import CollapseWatch, TrainingCollapsed
from ..feeding import TrainingImages, augment
from ..losses import detail_gradient_only, discriminator_loss, generator_adversarial_loss, reconstruction_loss
from ..masks import patch_origins, sample_masks
from ..runtime import Runtime
from ..state import load_training_state, random_state, restore_random_state, training_state
from ..world import World
from .config import COMPLETION_BETAS, DISCRIMINATOR_BETAS, PhaseOptions
from .networks import build_networks, fill_holes

log = logging.getLogger(__name__)


def set_learning_rates(optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], options: PhaseOptions,
                       step: int) -> None:
    """This phase's rates and betas, set at every step: a state loaded from another phase never carries its own."""
    for optimizer, lr, betas in zip(optimizers, options.learning_rates(step), (COMPLETION_BETAS, DISCRIMINATOR_BETAS)):
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr, betas


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
                    options: PhaseOptions, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """One completion-network update: the reconstruction loss of its raw `output`, plus alpha times
    the adversarial loss of the `completed` images when a discriminator is given.

    The discriminator is frozen during this step so it receives no gradient from it. With
    `adversarial_block`, the adversarial loss's gradient reaches only the completions' detail
    (detail_gradient_only); their coarse colours follow the reconstruction loss alone.
    Returns the detached (reconstruction, adversarial) losses.
    """
    reconstruction = reconstruction_loss(output.float(), real, mask, options.completion.loss,
                                         options.completion.known_weight)
    adversarial = torch.zeros((), device=reconstruction.device)
    if discriminator is not None:
        trainable = [p.requires_grad for p in discriminator.parameters()]
        discriminator.requires_grad_(False)
        if block := options.joint.adversarial_block:
            completed = detail_gradient_only(completed, block)
        with runtime.autocast():
            adversarial = generator_adversarial_loss(discriminator(completed, origins))
        for parameter, flag in zip(discriminator.parameters(), trainable):
            parameter.requires_grad_(flag)
    optimizer.zero_grad(set_to_none=True)
    (reconstruction + options.alpha * adversarial).backward()
    optimizer.step()
    return reconstruction.detach(), adversarial.detach()


def train_step(options: PhaseOptions, completion: nn.Module, discriminator: nn.Module,
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
    opt_completion, opt_discriminator = optimizers
    with runtime.autocast(), torch.set_grad_enabled(options.trains_completion):
        output = completion(torch.cat([filled, mask], dim=1))
    completed = torch.lerp(real, output.to(real.dtype), mask)  # the known pixels are always the input's
    zero = torch.zeros((), device=real.device)
    reconstruction, adversarial, judged = zero, zero, torch.zeros(3, device=real.device)
    if options.trains_discriminator:
        judged = discriminator_step(discriminator, opt_discriminator, real, completed, origins, runtime)
    if options.trains_completion:
        judge = (adversary or discriminator) if options.phase == 3 else None
        reconstruction, adversarial = completion_step(opt_completion, output, completed, real, mask, origins, judge,
                                                      options, runtime)
    return torch.stack([reconstruction, judged[0], adversarial, judged[1], judged[2]])


def train_phase(options: PhaseOptions, images: TrainingImages, mean_pixel: torch.Tensor, start: dict | None,
                runtime: Runtime, on_checkpoint: Callable[[dict], None] = lambda state: None,
                on_log: Callable[[dict], None] = lambda row: None, world: World = World()) -> dict:
    """Train one phase and return its final state.

    `start` is either None (fresh networks, phase 1 only), the previous phase's final
    state, or a checkpoint of this same phase to resume from. `on_checkpoint` must
    persist the state it is given before returning: its tensors are the live ones.
    The device reads back results only every `log_every` steps; each log row also
    says which share of the time the loop spent waiting for its next batch.
    Under torchrun every rank calls this with its `world`: each trains on its share of
    every batch, and all ranks call the callbacks with the same values.
    Raises TrainingCollapsed when the collapse watch stops phase 3 (on_collapse=stop).
    """
    if start is None and options.phase != 1:
        raise ValueError(f"phase {options.phase} needs the state of phase {options.phase - 1} to start from")
    if min(images.image_shape[1:]) < options.model.image_size:
        raise ValueError(f"training images of {images.image_shape} are smaller than image_size "
                         f"{options.model.image_size}")
    with runtime.active():
        return _train_phase(options, images, mean_pixel, start, runtime, on_checkpoint, on_log, world)


def _train_phase(options: PhaseOptions, images, mean_pixel, start, runtime, on_checkpoint, on_log, world):
    device, phase, training = runtime.torch_device, options.phase, options.completion
    seed = training.seed + phase
    torch.manual_seed(seed)  # fresh weights are seeded; loaded ones overwrite them
    completion, discriminator = (runtime.place(net).train() for net in build_networks(options.model))
    networks = {"completion": completion, "discriminator": discriminator}
    # The rates are set at every step (set_learning_rates).
    optimizers = {name: runtime.adam(net.parameters(), lr=0.0) for name, net in networks.items()}
    sampler = torch.Generator(device=device).manual_seed(world.seed(seed))
    mean_pixel = mean_pixel.to(device)

    # Inpainting has no sample diversity to watch: the holes are filled from their context.
    joint = options.joint
    watch = CollapseWatch(joint.collapse_window, joint.collapse_d_loss_floor, 0) if joint else None
    history, first_step = [], 0
    if start is not None:
        # Optimizer moments carry across phases, so phase 3 continues where 1 and 2 left each network.
        load_training_state(start, networks, optimizers)
        history = [row for row in start["history"] if row["phase"] <= phase]
        if start["config"]["phase"] == phase:
            restore_random_state(start["rng"], sampler, world, world.seed(seed, start["step"]))
            first_step = start["step"]
            if watch:
                watch.load_state_dict(start["collapse_watch"])
            log.info("phase %d: resuming from step %d of %d", phase, first_step, options.steps)

    def state(step: int) -> dict:
        return training_state(options.to_dict(), step, networks, optimizers, random_state(sampler, world), history,
                              watch.state_dict() if watch else None,
                              mean_pixel=mean_pixel.tolist())  # the hole fill the network was trained with

    if first_step >= options.steps:
        return state(first_step)

    discriminator.requires_grad_(options.trains_discriminator)
    if not options.trains_completion:
        completion.eval()  # frozen: not even its batch-norm statistics move
    completion, discriminator = runtime.finish(completion), runtime.finish(discriminator)
    # Only the networks a phase trains go under DDP. Phase 3's completion step calls the plain
    # discriminator, so DDP never waits for gradients that the frozen discriminator does not get.
    trained_completion = world.wrap(completion) if options.trains_completion else completion
    trained_discriminator = world.wrap(discriminator) if options.trains_discriminator else discriminator
    size, optimizer_pair = options.model.image_size, (optimizers["completion"], optimizers["discriminator"])
    batch_size = world.local_batch(training.batch_size)
    totals = torch.zeros(5, device=device)  # running sums of train_step's figures between log lines
    window_start, window_steps, waited = time.perf_counter(), 0, 0.0
    stream_seed = (training.seed, phase, world.rank)  # each rank draws its own share of every batch
    with contextlib.closing(images.batches(batch_size, stream_seed, first_step)) as batches:
        for step in range(first_step, options.steps):
            stored, seconds_waited = next(batches)
            waited += seconds_waited
            real = augment(stored, size, sampler, runtime.memory_format, training.max_zoom)
            mask, boxes = sample_masks(batch_size, options.masks, sampler)
            mask = mask.contiguous(memory_format=runtime.memory_format)
            origins = patch_origins(boxes, size, options.model.local_size)
            set_learning_rates(optimizer_pair, options, step)
            filled = fill_holes(real, mask, mean_pixel, options.model.hole_fill)
            totals += train_step(options, trained_completion, trained_discriminator, optimizer_pair, real, mask,
                                 origins, filled, runtime, adversary=discriminator)

            window_steps += 1
            done = step + 1
            if done % training.log_every == 0 or done == options.steps:
                means = world.mean(totals / window_steps).tolist()  # the one host synchronisation, every log_every steps
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                row = _log_row(options, done, means, optimizer_pair, window_steps * training.batch_size / elapsed,
                               waited / elapsed)
                history.append(row)
                on_log(row)
                if watch and (warning := watch.update(row["loss_d"], None)):
                    log.warning("phase 3 step %d: %s", done, warning)
                    if joint.on_collapse == "stop":
                        raise TrainingCollapsed(done, warning, history)
                totals.zero_()
                window_start, window_steps, waited = time.perf_counter(), 0, 0.0
            if done % training.checkpoint_every == 0 and done < options.steps:
                on_checkpoint(state(done))
    return state(options.steps)


def _log_row(options: PhaseOptions, step: int, means: list[float], optimizers, images_per_s: float,
             data_wait: float) -> dict:
    """A log line: the means since the last one of what the phase computes (None for the rest)."""
    completes, discriminates = options.trains_completion, options.trains_discriminator
    return {"phase": options.phase, "step": step, "steps": options.steps,
            "loss_rec": means[0] if completes else None,
            "loss_d": means[1] if discriminates else None,
            "loss_adv": means[2] if options.phase == 3 else None,
            "d_real": means[3] if discriminates else None,
            "d_fake": means[4] if discriminates else None,
            "lr_completion": optimizers[0].param_groups[0]["lr"] if completes else None,
            "lr_discriminator": optimizers[1].param_groups[0]["lr"] if discriminates else None,
            "images_per_s": images_per_s, "data_wait": data_wait}
