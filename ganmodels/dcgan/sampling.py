"""Using a trained DCGAN generator: the generator of a saved state, samples, latent walks."""
import copy

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from .config import DCGANConfig
from .networks import Generator

STANDING_STATISTICS_LATENTS = 512
STANDING_STATISTICS_BATCH = 64


def generator_from_state(state: dict, use_ema: bool = True) -> Generator:
    """The trained generator of a saved training state, on the CPU in eval mode.

    With use_ema and EMA weights in the state, those weights with standing statistics.
    """
    config = DCGANConfig.from_dict(state["config"])
    generator = Generator(config.image_size, config.latent_size, config.base_channels, config.projection)
    use_ema = use_ema and "ema_generator" in state["networks"]
    generator.load_state_dict(state["networks"]["ema_generator" if use_ema else "generator"])
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


def standing_statistics_copy(ema_generator: nn.Module, config: DCGANConfig) -> nn.Module:
    """A copy of the EMA generator to sample from, leaving the training copy untouched."""
    return with_standing_statistics(copy.deepcopy(ema_generator), config.latent_size, config.seed)


def slerp(a: Tensor, b: Tensor, t: float, parallel_eps: float = 1e-6) -> Tensor:
    """Spherical interpolation between latents along the last dimension (White 2016).

    Gaussian latents concentrate near a sphere, and a straight line between two of them
    passes through the improbable low-norm interior; slerp stays near that sphere.
    Falls back to linear interpolation where a and b are (anti)parallel: the great circle
    is then undefined, and the angle, from acos near +-1, is mostly rounding error.
    """
    cos_angle = (nn.functional.normalize(a, dim=-1) * nn.functional.normalize(b, dim=-1)).sum(-1, keepdim=True)
    near_parallel = cos_angle.abs() > 1 - parallel_eps
    angle = torch.acos(cos_angle.clamp(-1.0, 1.0))
    sin_angle = torch.sin(angle).masked_fill(near_parallel, 1.0)
    spherical = (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / sin_angle
    linear = (1 - t) * a + t * b
    return torch.where(near_parallel, linear, spherical)


def latent_walks(walks: int, steps: int, latent_size: int, generator: torch.Generator) -> Tensor:
    """`walks` great-circle walks of `steps` latents each between random pairs, flattened walk by walk."""
    if steps < 2:
        raise ValueError(f"a walk needs at least 2 steps, got {steps}")
    ends = torch.randn(2, walks, latent_size, generator=generator)
    return torch.stack([slerp(ends[0], ends[1], t) for t in torch.linspace(0, 1, steps)], dim=1).flatten(0, 1)


def closed_tour(n_keyframes: int, steps_between: int, latent_size: int, seed: int) -> Tensor:
    """Latents of a closed slerp tour through n_keyframes random latents, n_keyframes * steps_between of them.

    The last segment heads back to the first keyframe and stops one step short of it, so
    an animation of the tour loops without a repeated frame.
    """
    if n_keyframes < 2 or steps_between < 1:
        raise ValueError(f"a tour needs n_keyframes >= 2 and steps_between >= 1, got {n_keyframes} and {steps_between}")
    keyframes = torch.randn(n_keyframes, latent_size, generator=torch.Generator().manual_seed(seed))
    next_keyframes = keyframes.roll(-1, dims=0)
    return torch.stack([slerp(keyframes, next_keyframes, step / steps_between)
                        for step in range(steps_between)], dim=1).flatten(0, 1)


def generate(generator_net: nn.Module, latents: Tensor, batch_size: int = 256) -> Tensor:
    """Images in [0, 1] on the CPU from a generator whose output is in [-1, 1], in eval mode, batch by batch.

    The generator gets its previous mode back afterwards.
    """
    device = next(generator_net.parameters()).device
    was_training = generator_net.training
    generator_net.eval()
    try:
        with torch.no_grad():
            batches = [generator_net(chunk.to(device)).float().cpu() for chunk in latents.split(batch_size)]
    finally:
        generator_net.train(was_training)
    return torch.cat(batches).add(1).div(2).clamp(0, 1)
