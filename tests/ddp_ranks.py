"""The body of each rank in test_distributed's DDP test, in a module light enough to start fast."""
import os

import numpy as np
import torch

from ganmodels.feeding import ImageBank
from ganmodels.glcic.config import ModelConfig, PhaseOptions
from ganmodels.glcic.networks import build_networks
from ganmodels.glcic.training import train_phase
from ganmodels.runtime import Runtime
from ganmodels.world import join_world, leave_world


def _rank_of_two(rank: int, port: int):
    """Join a gloo world of two processes as `rank`; with the images both ranks train on."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    bank = ImageBank([np.random.default_rng(0).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)], "cpu")
    return join_world("cpu"), bank


def train_two_ranks(rank: int, port: int, results):
    world, bank = _rank_of_two(rank, port)
    state = None
    for phase in (1, 2, 3):
        options = PhaseOptions.from_settings(phase, image_size=32, width=0.125, batch_size=4, checkpoint_every=2,
                                             log_every=3, **{f"phase{earlier}_steps": 3 for earlier in range(1, phase + 1)},
                                             **({"alpha": 0.1} if phase == 3 else {}))
        state = train_phase(options, bank, torch.tensor([0.5, 0.4, 0.3]), state, Runtime(device="cpu"), world=world)
    completion, discriminator = build_networks(ModelConfig(image_size=32, width=0.125))
    parameters = {f"{net}.{name}": state["networks"][net][name] for net, module in (("completion", completion),
                                                                                     ("discriminator", discriminator))
                  for name, _ in module.named_parameters()}
    first_batch, _ = next(bank.batches(2, (0, 3, world.rank)))  # the stream train_phase draws from on this rank
    results[rank] = {"parameters": parameters, "history": state["history"], "samplers": state["rng"]["samplers"],
                     "batch": first_batch}
    leave_world(world)


def train_dcgan_two_ranks(rank: int, port: int, results):
    from ganmodels.dcgan.config import DCGANConfig
    from ganmodels.dcgan.training import train_dcgan

    world, bank = _rank_of_two(rank, port)
    config = DCGANConfig(image_size=32, latent_size=8, base_channels=4, batch_size=8, steps=4, log_every=2,
                         checkpoint_every=2, fixed_latent_count=4, ema_decay=0.5)
    samplers, logs = [], []
    state = train_dcgan(config, bank, None, Runtime(device="cpu"),
                        on_checkpoint=lambda state: samplers.extend(state["rng"]["samplers"]), on_log=logs.append,
                        world=world)
    first_batch, _ = next(bank.batches(4, (config.seed, world.rank)))  # the stream train_dcgan draws from here
    results[rank] = {**state["networks"], "logs": logs, "first_batch": first_batch, "samplers": samplers}
    leave_world(world)
