"""The DCGAN training loop, from options and a feed of real images to a trained state.

It runs on the same pieces as the GLCIC loop: `Runtime` for the device, `feeding` for the
images (held on the device or streamed, the same batches either way), one sampling stream
per rank, the collapse watch, and ganmodels.state's layout for checkpoints.
"""
import contextlib
import copy
import logging
import time
from contextlib import contextmanager
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits, l1_loss

from ..collapse import CollapseWatch, TrainingCollapsed, sample_diversity
from ..feeding import TrainingImages, random_flip
from ..runtime import Runtime
from ..state import load_training_state, random_state, restore_random_state, training_state
from ..world import World
from .config import DCGANConfig
from .networks import Discriminator, Generator
from .sampling import generate, standing_statistics_copy

log = logging.getLogger(__name__)


def train_dcgan(config: DCGANConfig, images: TrainingImages, start: dict | None, runtime: Runtime,
                on_checkpoint: Callable[[dict], None] = lambda state: None,
                on_log: Callable[[dict], None] = lambda row: None,
                on_snapshot: Callable[[int, Tensor], None] | None = None, world: World = World()) -> dict:
    """Train until config.steps, starting fresh (start None) or from a checkpoint state; return the final state.

    on_checkpoint gets the state every config.checkpoint_every steps before the last; it must
    persist it before returning, since its tensors are the live ones. on_log gets a row every
    config.log_every steps: step; loss_d, loss_g, d_real and d_fake (mean discriminator
    probabilities) averaged since the previous row; grad_norm_g, grad_norm_d and diversity
    of the logged step; images_per_s and data_wait (the share of the time spent waiting for
    images). on_snapshot, if given, gets (step, images) every config.snapshot_every steps
    and at the end: the samples of the fixed latents, CPU float in [0, 1], from the
    generator in eval mode or, with ema_decay > 0, from the EMA generator with standing
    statistics; taking them changes nothing in the training.

    Under torchrun every rank calls this with its `world`: each draws its share of every
    batch from its own streams, DDP averages the gradients, and every rank gets the same
    log rows and collapse decisions. Only the rank that writes should pass on_snapshot.
    Raises TrainingCollapsed when the collapse watch stops the run (on_collapse=stop).
    """
    if tuple(images.image_shape[1:]) != (config.image_size, config.image_size):
        raise ValueError(f"training images of {images.image_shape} are not {config.image_size} px squares")
    with runtime.active():
        return _train(config, images, start, runtime, on_checkpoint, on_log, on_snapshot, world)


def _train(config: DCGANConfig, images, start, runtime: Runtime, on_checkpoint, on_log, on_snapshot, world):
    device = runtime.torch_device
    torch.manual_seed(config.seed)  # fresh weights and fixed latents are seeded; a start overwrites them
    generator = runtime.place(Generator(config.image_size, config.latent_size, config.base_channels, config.projection))
    discriminator = runtime.place(Discriminator(config.image_size, config.base_channels))
    fixed_latents = torch.randn(config.fixed_latent_count, config.latent_size)
    networks = {"generator": generator, "discriminator": discriminator}
    if config.ema_decay > 0:
        networks["ema_generator"] = copy.deepcopy(generator).requires_grad_(False)
    optimizers = {name: runtime.adam(networks[name].parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
                  for name in ("generator", "discriminator")}
    sampler = torch.Generator(device).manual_seed(world.seed(config.seed))
    watch = CollapseWatch(config.collapse_window, config.collapse_d_loss_floor, config.collapse_diversity_floor)
    history, first_step = [], 0
    if start is not None:
        load_training_state(start, networks, optimizers)
        restore_random_state(start["rng"], sampler, world, world.seed(config.seed, start["step"]))
        watch.load_state_dict(start["collapse_watch"])
        fixed_latents, history, first_step = start["fixed_latents"], list(start["history"]), start["step"]
        log.info("resuming from step %d of %d", first_step, config.steps)

    def state(step: int) -> dict:
        return training_state(config.to_dict(), step, networks, optimizers, random_state(sampler, world), history,
                              watch.state_dict(), fixed_latents=fixed_latents)

    generator, discriminator = runtime.finish(generator), runtime.finish(discriminator)
    # The generator's forward and the discriminator's step go through DDP; the generator's
    # step calls the plain, frozen discriminator, so DDP never waits for its gradients.
    trained_generator, trained_discriminator = world.wrap(generator), world.wrap(discriminator)
    batch_size = world.local_batch(config.batch_size)
    # Sums of loss_d, loss_g, d_real, d_fake since the last log, kept on the device. Their
    # means are far steadier than single-step values, which the label noise makes jumpy.
    metric_sums = torch.zeros(4, device=device)
    window_start, window_steps, waited = time.perf_counter(), 0, 0.0
    with contextlib.closing(images.batches(batch_size, (config.seed, world.rank), first_step)) as batches:
        for step in range(first_step, config.steps):
            stored, seconds_waited = next(batches)
            waited += seconds_waited
            if config.random_flip:
                stored = random_flip(stored, sampler)
            real = stored.float().div_(127.5).sub_(1).contiguous(memory_format=runtime.memory_format)
            latents = torch.randn(batch_size, config.latent_size, generator=sampler, device=device)
            if config.latent_match_steps > 0:
                latents = match_latents(generator, latents, real, config.latent_match_steps, config.latent_match_lr)
            figures, fake = _step(config, trained_generator, trained_discriminator, discriminator, optimizers, real,
                            latents, sampler, runtime)
            if "ema_generator" in networks:
                _update_ema(networks["ema_generator"], generator, config.ema_decay)
            metric_sums += figures
            window_steps += 1
            done = step + 1

            if done % config.log_every == 0:
                # Only logged steps wait for the device; the others queue work without syncing.
                loss_d, loss_g, d_real, d_fake, grad_norm_g, grad_norm_d, diversity = world.mean(torch.cat([
                    metric_sums / window_steps,
                    torch.stack([_grad_norm(generator), _grad_norm(discriminator)]),
                    torch.tensor([sample_diversity(fake)], device=device),
                ])).tolist()
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                row = {"step": done, "loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake,
                       "grad_norm_g": grad_norm_g, "grad_norm_d": grad_norm_d, "diversity": diversity,
                       "images_per_s": window_steps * config.batch_size / elapsed, "data_wait": waited / elapsed}
                history.append(row)
                on_log(row)
                metric_sums.zero_()
                window_start, window_steps, waited = time.perf_counter(), 0, 0.0
                if warning := watch.update(loss_d, diversity):
                    log.warning("step %d: %s", done, warning)
                    if config.on_collapse == "stop":
                        raise TrainingCollapsed(done, warning, history)

            if on_snapshot is not None and (done % config.snapshot_every == 0 or done == config.steps):
                sampling = networks.get("ema_generator")
                sampling = generator if sampling is None else standing_statistics_copy(sampling, config)
                on_snapshot(done, generate(sampling, fixed_latents))
            if done % config.checkpoint_every == 0 and done < config.steps:
                on_checkpoint(state(done))
    return state(max(first_step, config.steps))


def _step(config: DCGANConfig, trained_generator: nn.Module, trained_discriminator: nn.Module,
          discriminator: nn.Module, optimizers: dict, real: Tensor, latents: Tensor, sampler: torch.Generator,
          runtime: Runtime) -> tuple[Tensor, Tensor]:
    """One discriminator and one generator update: the detached (loss_d, loss_g, D(real), D(fake)) and fakes."""
    with runtime.autocast():
        fake = trained_generator(latents)
        real_logits, fake_logits = _discriminate(trained_discriminator, real, fake.detach(), config.separate_batches)
        real_targets = _soft_targets(real_logits, config.real_label_low, config.real_label_high,
                                     config.label_flip_prob, sampler)
        fake_targets = _soft_targets(fake_logits, config.fake_label_low, config.fake_label_high,
                                     config.label_flip_prob, sampler)
        loss_d = (binary_cross_entropy_with_logits(real_logits, real_targets)
                  + binary_cross_entropy_with_logits(fake_logits, fake_targets))
    optimizers["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers["discriminator"].step()

    # The generator's step on the same fakes. Autograd records which tensors need gradients at
    # forward time, so freezing D just for its forward keeps G's loss out of D's gradients.
    discriminator.requires_grad_(False)
    with runtime.autocast():
        fooled_logits = discriminator(fake)
        loss_g = binary_cross_entropy_with_logits(fooled_logits, torch.ones_like(fooled_logits))
    discriminator.requires_grad_(True)
    optimizers["generator"].zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers["generator"].step()
    figures = torch.stack([loss_d.detach(), loss_g.detach(), real_logits.detach().float().sigmoid().mean(),
                           fake_logits.detach().float().sigmoid().mean()])
    return figures, fake.detach()


def match_latents(generator: nn.Module, latents: Tensor, targets: Tensor, steps: int, lr: float) -> Tensor:
    """Latents after `steps` Adam steps pulling generator(latents[i]) towards targets[i] under L1.

    The generator is frozen: no parameter gradients and no BatchNorm statistics updates.
    """
    latents = latents.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=lr)
    with _frozen(generator):
        for _ in range(steps):
            loss = l1_loss(generator(latents), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return latents.detach()


def _discriminate(discriminator: nn.Module, real: Tensor, fake: Tensor,
                  separate_batches: bool) -> tuple[Tensor, Tensor]:
    # Separate batches keep each BatchNorm statistic pure real or pure fake (Vink's trick);
    # a mixed batch lets the discriminator compare both kinds through those statistics.
    if separate_batches:
        return discriminator(real), discriminator(fake)
    return discriminator(torch.cat([real, fake])).split([len(real), len(fake)])


def _soft_targets(logits: Tensor, low: float, high: float, flip_prob: float, sampler: torch.Generator) -> Tensor:
    """Per-sample targets uniform in [low, high], a flip_prob share mirrored to 1 - target."""
    targets = torch.empty(logits.shape, device=logits.device).uniform_(low, high, generator=sampler)
    flips = torch.rand(logits.shape, device=logits.device, generator=sampler) < flip_prob
    return torch.where(flips, 1 - targets, targets)


def _grad_norm(module: nn.Module) -> Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])


@torch.no_grad()
def _update_ema(ema_generator: nn.Module, generator: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema_generator.parameters(), generator.parameters()):
        ema_param.lerp_(param, 1 - decay)
    # Stand-ins only: these statistics belong to the training weights, so sampling replaces
    # them with standing statistics; averaging them would not help.
    for ema_buffer, buffer in zip(ema_generator.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)


@contextmanager
def _frozen(module: nn.Module):
    """Inside the block, module gets no parameter gradients and keeps its BatchNorm statistics."""
    saved_buffers = [buffer.clone() for buffer in module.buffers()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)
        with torch.no_grad():
            for buffer, saved in zip(module.buffers(), saved_buffers):
                buffer.copy_(saved)
