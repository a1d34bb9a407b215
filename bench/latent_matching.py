"""Does latent matching (stdm 2016, "Experimenting with GANs") help a DCGAN? The same run with and without.

Trains train_dcgan on a folder of face crops at 32 px for the same number of steps with
latent_match_steps=0 (plain DCGAN) and with the experimental option, for a few seeds,
then measures each final generator against held-out images with feature-free measures
(no Inception weights needed):

- swd: sliced Wasserstein-1 distance between samples and held-out images, on pixels in
  [-1, 1], averaged over random unit directions. Lower is better.
- nn_sample_to_real: mean distance from each sample to its nearest held-out image (RMS
  per pixel): are samples close to some real face? Lower is better.
- nn_real_to_sample: mean distance from each held-out image to its nearest sample: are
  all kinds of face covered? Lower is better; a collapsed generator scores badly here.
- diversity: ganmodels.collapse.sample_diversity of the samples (held-out images give the target).

The `real (train vs held-out)` row scores training images against the held-out ones: the
best a generator can reach with this many samples.

    python -m bench.latent_matching --faces ../shared/data/faces --steps 1500 --seeds 0 1
"""
import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from ganmodels.collapse import sample_diversity
from ganmodels.dcgan.config import DCGANConfig
from ganmodels.dcgan.sampling import generate, generator_from_state
from ganmodels.dcgan.training import train_dcgan
from ganmodels.feeding import ImageBank
from ganmodels.rendering import image_grid
from ganmodels.runtime import Runtime
from pipeline.ingestion.decode import decode_image

IMAGE_SIZE = 32


def load_faces(folder: str, held_out: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) train and held-out images; the held-out ones are the last files by name."""
    names = sorted(os.listdir(folder))
    images = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as file:
            images.append(decode_image(file.read(), IMAGE_SIZE, max_pixels=10**8).transpose(2, 0, 1))
    stacked = np.stack(images)
    return stacked[:-held_out], stacked[-held_out:]


def signed_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(127.5).sub(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 512, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections (equal counts)."""
    a, b = a.flatten(1), b.flatten(1)
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal counts, got {len(a)} and {len(b)}")
    units = torch.nn.functional.normalize(torch.randn(a.shape[1], directions, generator=torch.Generator().manual_seed(seed)), dim=0)
    return ((a @ units).sort(0).values - (b @ units).sort(0).values).abs().mean().item()


def mean_nearest_distance(queries: torch.Tensor, references: torch.Tensor) -> float:
    """Mean over queries of the RMS per-pixel distance to the nearest reference."""
    queries, references = queries.flatten(1), references.flatten(1)
    return (torch.cdist(queries, references).min(1).values.mean() / queries.shape[1] ** 0.5).item()


def quality(samples: torch.Tensor, held_out: torch.Tensor) -> dict:
    return {"swd": sliced_wasserstein(samples, held_out),
            "nn_sample_to_real": mean_nearest_distance(samples, held_out),
            "nn_real_to_sample": mean_nearest_distance(held_out, samples),
            "diversity": sample_diversity(samples)}


def train_and_measure(config: DCGANConfig, train: ImageBank, held_out: torch.Tensor, samples_dir: str | None) -> dict:
    logs = []
    started = time.perf_counter()
    state = train_dcgan(config, train, None, Runtime(), on_log=logs.append)
    seconds = time.perf_counter() - started
    generator = generator_from_state(state)
    latents = torch.randn(len(held_out), config.latent_size, generator=torch.Generator().manual_seed(12345))
    samples = generate(generator, latents) * 2 - 1  # in the held-out images' [-1, 1]
    if samples_dir:
        os.makedirs(samples_dir, exist_ok=True)
        image_grid(samples[:64].add(1).div(2), nrow=8).save(
            os.path.join(samples_dir, f"match{config.latent_match_steps}-seed{config.seed}.png"))
    last = pd.DataFrame(logs).tail(5).mean()  # the last 5 logs: single logs are noisy
    return {"latent_match_steps": config.latent_match_steps, "seed": config.seed, "s_per_step": seconds / config.steps,
            **{f"final_{key}": last[key] for key in ("loss_d", "loss_g", "d_real", "d_fake")},
            **quality(samples, held_out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", required=True, help="Folder of face images")
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--match-steps", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samples-dir", help="Write a grid of each run's samples here")
    parser.add_argument("--out", help="Write the table as CSV here")
    args = parser.parse_args()

    train_images, held_out_images = load_faces(args.faces, args.held_out)
    train, held_out = ImageBank([train_images], "cpu"), signed_float(held_out_images)
    print(f"{len(train)} train and {len(held_out)} held-out faces at {IMAGE_SIZE} px; "
          f"{args.steps} steps, base_channels {args.base_channels}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    reference = {"latent_match_steps": "real (train vs held-out)",
                 **quality(signed_float(train_images[:len(held_out)]), held_out)}
    rows = [reference]
    for seed in args.seeds:
        for match_steps in args.match_steps:
            config = DCGANConfig(image_size=IMAGE_SIZE, steps=args.steps, base_channels=args.base_channels,
                                 batch_size=args.batch_size,
                                 latent_match_steps=match_steps, seed=seed, log_every=max(1, args.steps // 50))
            rows.append(train_and_measure(config, train, held_out, args.samples_dir))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.4f"), flush=True)
    table = pd.DataFrame(rows, columns=list(rows[-1]))
    means = table.iloc[1:].groupby("latent_match_steps").mean(numeric_only=True).drop(columns="seed")
    print("\nAll runs:\n" + table.to_string(index=False, float_format="%.4f"))
    print("\nMean over seeds:\n" + means.to_string(float_format="%.4f"))
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
