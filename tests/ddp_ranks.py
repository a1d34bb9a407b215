"""The body of each rank in test_distributed's DDP test, in a module light enough to start fast."""
import os

import numpy as np
import torch

from ganmodels.config import MaskConfig, ModelConfig, PhaseConfig
from ganmodels.data import ImageBank
from ganmodels.distributed import join_world, leave_world
from ganmodels.networks import build_networks
from ganmodels.runtime import Runtime
from ganmodels.training import train_phase


def train_two_ranks(rank: int, port: int, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = join_world("cpu")
    bank = ImageBank([np.random.default_rng(0).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)], "cpu")
    state = None
    for phase in (1, 2, 3):
        config = PhaseConfig(phase=phase, steps=3, batch_size=4, checkpoint_every=2, log_every=3, alpha=0.1)
        state = train_phase(config, ModelConfig(image_size=32, width=0.125), MaskConfig(image_size=32), bank,
                            torch.tensor([0.5, 0.4, 0.3]), state, Runtime(device="cpu"), world=world)
    completion, discriminator = build_networks(ModelConfig(image_size=32, width=0.125))
    parameters = {f"{net}.{name}": state[net][name] for net, module in (("completion", completion),
                                                                         ("discriminator", discriminator))
                  for name, _ in module.named_parameters()}
    first_batch, _ = next(bank.batches(2, (0, 3, world.rank)))  # the stream train_phase draws from on this rank
    results[rank] = {"parameters": parameters, "history": state["history"], "samplers": state["rng"]["rank_samplers"],
                     "batch": first_batch}
    leave_world(world)


def train_dcgan_two_ranks(rank: int, port: int, results):
    from ganmodels.dcgan import DCGANConfig
    from ganmodels.dcgan_training import train_dcgan

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = join_world("cpu")
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batches = []

    def sample_real(count: int, rng: torch.Generator) -> torch.Tensor:
        batches.append(images[torch.randint(len(images), (count,), generator=rng)])
        return batches[-1]

    config = DCGANConfig(image_size=32, latent_size=8, width=4, batch_size=8, steps=4, log_every=2,
                         checkpoint_every=2, fixed_latent_count=4, ema_decay=0.5)
    checkpoints, logs = [], []
    state = train_dcgan(config, sample_real, None, "cpu", checkpoints.append, logs.append, world=world)
    results[rank] = {"generator": state["generator"], "discriminator": state["discriminator"],
                     "ema_generator": state["ema_generator"], "logs": logs, "first_batch": batches[0],
                     "rng_ranks": checkpoints[-1]["rng"]["ranks"]}
    leave_world(world)
