"""The DCGAN training loop, from a config and a sampler of real images to a trained state."""
import copy
import dataclasses
import logging
import time
from contextlib import contextmanager
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits, l1_loss
from torch.optim.swa_utils import update_bn

from ganmodels.data import ImageBank, random_flip
from ganmodels.dcgan import DCGANConfig, Discriminator, Generator
from ganmodels.distributed import World
from ganmodels.monitoring import CollapseWatch, sample_diversity

logger = logging.getLogger(__name__)

STANDING_STATISTICS_LATENTS = 512
STANDING_STATISTICS_BATCH = 64


def signed_batches(images: ImageBank, flip: bool) -> Callable[[int, torch.Generator], Tensor]:
    """train_dcgan's sampler of real batches: random rows of the bank as floats in the generator's [-1, 1]."""
    def sample(batch_size: int, rng: torch.Generator) -> Tensor:
        rows = torch.randint(len(images), (batch_size,), generator=rng, device=rng.device)
        batch = images.images[rows.to(images.images.device)]
        if flip:
            batch = random_flip(batch, rng)
        return batch.float().div_(127.5).sub_(1)
    return sample


def train_dcgan(config: DCGANConfig, sample_real: Callable[[int, torch.Generator], Tensor],
                state: dict | None, device: torch.device | str,
                on_checkpoint: Callable[[dict], None], on_log: Callable[[dict], None],
                on_snapshot: Callable[[int, Tensor], None] | None = None, world: World = World()) -> dict:
    """Train until config.steps, starting fresh (state None) or from a checkpoint state.

    sample_real(batch_size, generator) must return a float batch in [-1, 1] on `device`;
    `generator` is a CPU torch.Generator whose state is part of the checkpoint, so a
    sampler that draws only from it makes resumed runs repeat uninterrupted ones.

    Under torchrun every rank calls this with its `world`: each draws its share of every
    batch from its own random streams, DDP averages the gradients, and every rank gets
    the same log rows (means over the ranks) and collapse decisions. Only the ranks that
    write should pass on_snapshot; every rank must call on_checkpoint, which gathers
    the ranks' random streams.

    on_checkpoint gets a CPU copy of the full state every config.checkpoint_every steps
    and at the end. The state holds only tensors, numbers, strings, None, lists and dicts,
    so torch.load(weights_only=True) reads it back.

    on_log gets a dict every config.log_every steps: step; loss_d, loss_g, d_real and
    d_fake (mean discriminator probabilities) averaged over the steps since the previous
    log; grad_norm_g, grad_norm_d and diversity of the logged step; images_per_s.

    on_snapshot, if given, gets (step, images) every config.snapshot_every steps and at the
    end: the samples of the fixed latents, CPU float in [-1, 1], in eval mode, from the
    generator or, if there is one, from the EMA generator with standing statistics (as
    generator_from_state gives it). Taking them changes nothing in the training.

    Returns the final state. If the collapse watch stops the run (on_collapse="stop"), it
    returns the last state given to on_checkpoint instead (the starting state if none
    was), with state["stopped_reason"] saying why.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    mixed_precision = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_precision)

    if state is None:
        torch.manual_seed(config.seed)  # network initialisation and the fixed latents
    generator = Generator(config.image_size, config.latent_size, config.width, config.projection)
    discriminator = Discriminator(config.image_size, config.width)
    if state is None:
        fixed_latents, step = torch.randn(config.fixed_latent_count, config.latent_size), 0
    else:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        fixed_latents, step = state["fixed_latents"], state["step"]
    data_rng = torch.Generator().manual_seed(world.seed(config.seed))
    # Offset so that on CPU the noise stream is not a replay of the data stream.
    noise_rng = torch.Generator(device).manual_seed(world.seed(config.seed + 1))
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    ema_generator = None
    if config.ema_decay > 0:
        ema_generator = copy.deepcopy(generator).requires_grad_(False)
        if state is not None and state["ema_generator"] is not None:
            ema_generator.load_state_dict(state["ema_generator"])
    betas = (config.beta1, config.beta2)
    optimizer_g = torch.optim.Adam(generator.parameters(), config.lr, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), config.lr, betas=betas)
    watch = CollapseWatch(config.collapse_window, config.collapse_d_loss_floor,
                          config.collapse_diversity_floor)
    if state is not None:
        optimizer_g.load_state_dict(state["optimizer_g"])
        optimizer_d.load_state_dict(state["optimizer_d"])
        watch.load_state_dict(state["collapse_watch"])
        _restore_rng(state["rng"], data_rng, noise_rng, device, world,
                     fresh_seeds=(world.seed(config.seed, step), world.seed(config.seed + 1, step)))
    # The generator's forward and the discriminator's step go through DDP; the generator's
    # step calls the plain, frozen discriminator, so DDP never waits for its gradients.
    trained_generator, trained_discriminator = world.wrap(generator), world.wrap(discriminator)
    batch_size = world.local_batch(config.batch_size)

    def snapshot() -> dict:
        rng = {"torch_cpu": torch.get_rng_state(), "data": data_rng.get_state(), "noise": noise_rng.get_state()}
        if world.size > 1:
            rng["ranks"] = [{"data": data, "noise": noise} for data, noise in
                            zip(world.gather(data_rng.get_state()), world.gather(noise_rng.get_state()))]
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return _cpu_copy({
            "step": step,
            "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(),
            "ema_generator": ema_generator.state_dict() if ema_generator is not None else None,
            "optimizer_g": optimizer_g.state_dict(),
            "optimizer_d": optimizer_d.state_dict(),
            "fixed_latents": fixed_latents,
            "rng": rng,
            "collapse_watch": watch.state_dict(),
            "config": dataclasses.asdict(config),
            "stopped_reason": None,
        })

    last_good_state = snapshot()
    last_checkpoint_step = step
    # Sums of loss_d, loss_g, d_real, d_fake since the last log, kept on the device. Their
    # means are far steadier than single-step values, which the label noise makes jumpy.
    metric_sums = torch.zeros(4, device=device)
    interval_start, interval_start_step = time.perf_counter(), step
    while step < config.steps:
        real = sample_real(batch_size, data_rng).contiguous(memory_format=memory_format)
        latents = torch.randn(batch_size, config.latent_size, generator=noise_rng, device=device)
        if config.latent_match_steps > 0:
            latents = match_latents(generator, latents, real, config.latent_match_steps, config.latent_match_lr)

        # Discriminator step.
        with mixed_precision:
            fake = trained_generator(latents)
            real_logits, fake_logits = _discriminate(trained_discriminator, real, fake.detach(),
                                                     config.separate_batches)
            real_targets = _soft_targets(real_logits, config.real_label_low, config.real_label_high,
                                         config.label_flip_prob, noise_rng)
            fake_targets = _soft_targets(fake_logits, config.fake_label_low, config.fake_label_high,
                                         config.label_flip_prob, noise_rng)
            loss_d = (binary_cross_entropy_with_logits(real_logits, real_targets)
                      + binary_cross_entropy_with_logits(fake_logits, fake_targets))
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()

        # Generator step on the same fakes. Autograd records which tensors need gradients at
        # forward time, so freezing D just for its forward keeps G's loss out of D's gradients.
        discriminator.requires_grad_(False)
        with mixed_precision:
            fooled_logits = discriminator(fake)
            loss_g = binary_cross_entropy_with_logits(fooled_logits, torch.ones_like(fooled_logits))
        discriminator.requires_grad_(True)
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()
        if ema_generator is not None:
            _update_ema(ema_generator, generator, config.ema_decay)
        step += 1
        metric_sums += torch.stack([loss_d.detach(), loss_g.detach(),
                                    real_logits.detach().float().sigmoid().mean(),
                                    fake_logits.detach().float().sigmoid().mean()])

        if step % config.log_every == 0:
            # Only logged steps wait for the device; the others queue work without syncing.
            interval_steps = step - interval_start_step
            loss_d_mean, loss_g_mean, d_real, d_fake, grad_norm_g, grad_norm_d, diversity = world.mean(torch.cat([
                metric_sums / interval_steps,
                torch.stack([_grad_norm(generator), _grad_norm(discriminator)]),
                torch.tensor([sample_diversity(fake)], device=device),
            ])).tolist()
            now = time.perf_counter()
            on_log({"step": step, "loss_d": loss_d_mean, "loss_g": loss_g_mean,
                    "d_real": d_real, "d_fake": d_fake, "grad_norm_g": grad_norm_g,
                    "grad_norm_d": grad_norm_d, "diversity": diversity,
                    "images_per_s": interval_steps * config.batch_size / (now - interval_start)})
            metric_sums.zero_()
            interval_start, interval_start_step = now, step
            warning = watch.update(loss_d_mean, diversity)
            if warning is not None:
                logger.warning("step %d: %s", step, warning)
                if config.on_collapse == "stop":
                    # The weights are already collapsed: keep them out of the checkpoints.
                    return {**last_good_state, "stopped_reason": f"collapse at step {step}: {warning}"}

        if on_snapshot is not None and (step % config.snapshot_every == 0 or step == config.steps):
            sampler = generator if ema_generator is None else with_standing_statistics(
                copy.deepcopy(ema_generator), config.latent_size, config.seed)
            on_snapshot(step, _generate(sampler, fixed_latents))

        if step % config.checkpoint_every == 0:
            last_good_state = snapshot()
            last_checkpoint_step = step
            on_checkpoint(last_good_state)

    if last_checkpoint_step != step:
        last_good_state = snapshot()
        on_checkpoint(last_good_state)
    return last_good_state


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


def generator_from_state(state: dict, use_ema: bool = True) -> Generator:
    """The trained generator of a checkpoint state, on CPU in eval mode.

    With use_ema and EMA weights in the state, those weights with standing statistics.
    """
    config = DCGANConfig(**state["config"])
    generator = Generator(config.image_size, config.latent_size, config.width, config.projection)
    use_ema = use_ema and state["ema_generator"] is not None
    generator.load_state_dict(state["ema_generator"] if use_ema else state["generator"])
    if use_ema:
        with_standing_statistics(generator, config.latent_size, config.seed)
    return generator.eval()


def with_standing_statistics(generator: nn.Module, latent_size: int, seed: int) -> nn.Module:
    """generator with its BatchNorm statistics recomputed as plain means over seeded random latents.

    EMA weights need statistics of their own ("standing statistics", as in BigGAN): the
    running statistics belong to the training weights, and with them EMA samples come
    out washed out.
    """
    latents = torch.randn(STANDING_STATISTICS_LATENTS, latent_size, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    update_bn(latents.to(device).split(STANDING_STATISTICS_BATCH), generator)
    return generator


@torch.no_grad()
def _generate(generator: nn.Module, latents: Tensor) -> Tensor:
    """Samples on the CPU, with BatchNorm in eval mode so that its statistics stay untouched."""
    generator.eval()
    try:
        return generator(latents.to(next(generator.parameters()).device)).float().cpu()
    finally:
        generator.train()


def _discriminate(discriminator: nn.Module, real: Tensor, fake: Tensor,
                  separate_batches: bool) -> tuple[Tensor, Tensor]:
    # Separate batches keep each BatchNorm statistic pure real or pure fake (Vink's trick);
    # a mixed batch lets the discriminator compare both kinds through those statistics.
    if separate_batches:
        return discriminator(real), discriminator(fake)
    return discriminator(torch.cat([real, fake])).split([len(real), len(fake)])


def _soft_targets(logits: Tensor, low: float, high: float, flip_prob: float,
                  noise_rng: torch.Generator) -> Tensor:
    """Per-sample targets uniform in [low, high], a flip_prob share mirrored to 1 - target."""
    targets = torch.empty(logits.shape, device=logits.device).uniform_(low, high, generator=noise_rng)
    flips = torch.rand(logits.shape, device=logits.device, generator=noise_rng) < flip_prob
    return torch.where(flips, 1 - targets, targets)


def _grad_norm(module: nn.Module) -> Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])


@torch.no_grad()
def _update_ema(ema_generator: nn.Module, generator: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema_generator.parameters(), generator.parameters()):
        ema_param.lerp_(param, 1 - decay)
    # Stand-ins only: these statistics belong to the training weights, so sampling replaces
    # them with standing statistics (with_standing_statistics); averaging them would not help.
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


def _restore_rng(rng: dict, data_rng: torch.Generator, noise_rng: torch.Generator,
                 device: torch.device, world: World, fresh_seeds: tuple[int, int]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    streams = rng.get("ranks", [{"data": rng["data"], "noise": rng["noise"]}])
    if len(streams) == world.size:
        data_rng.set_state(streams[world.rank]["data"])
        noise_rng.set_state(streams[world.rank]["noise"])
    else:
        logger.warning("the checkpoint was written by %d processes and this run has %d: every process's "
                       "random streams are reseeded", len(streams), world.size)
        data_rng.manual_seed(fresh_seeds[0])
        noise_rng.manual_seed(fresh_seeds[1])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


def _cpu_copy(value):
    """Deep copy with every tensor detached onto the CPU, so later training can't alter it."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(item) for item in value)
    return value
