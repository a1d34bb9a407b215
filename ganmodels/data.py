"""Training images held as uint8 tensors and sampled as float batches on the device."""
from typing import Sequence

import numpy as np
import torch


class ImageBank:
    """All images of a split in one uint8 (N, 3, H, W) tensor on the training device.

    Keeping uint8 on the device costs a quarter of float32 memory and turns each step's
    batch into a gather plus a cast, with no host work.
    """

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device | str):
        if not arrays or sum(len(a) for a in arrays) == 0:
            raise ValueError("no images to train on: the split is empty")
        self.images = torch.from_numpy(np.concatenate(arrays)).to(device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch_size: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
        """A random float batch in [0, 1], each image flipped left-right with probability 1/2."""
        index = torch.randint(len(self), (batch_size,), generator=generator, device=generator.device)
        batch = self.images[index.to(self.images.device)].float().div_(255)
        if flip:
            flips = torch.rand(batch_size, generator=generator, device=generator.device) < 0.5
            batch = torch.where(flips.to(batch.device)[:, None, None, None], batch.flip(3), batch)
        return batch


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 images to a float tensor in [0, 1] on the device."""
    tensor = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    return tensor.to(device).float().div_(255)
