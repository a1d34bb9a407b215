import collections
import io
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.functional import l1_loss

from ganmodels.collapse import TrainingCollapsed
from ganmodels.dcgan import training as dcgan_training
from ganmodels.dcgan.config import SUPPORTED_IMAGE_SIZES, DCGANConfig
from ganmodels.dcgan.networks import Discriminator, Generator, init_dcgan_weights
from ganmodels.dcgan.sampling import generate, generator_from_state
from ganmodels.dcgan.training import match_latents, train_dcgan
from ganmodels.feeding import ImageBank, StreamedImages
from ganmodels.runtime import Runtime

TINY = dict(image_size=32, base_channels=8, latent_size=16, batch_size=8, fixed_latent_count=4)


def coloured_squares(count: int, seed: int = 0, image_size: int = 32) -> np.ndarray:
    """uint8 images of one square of random colour at a random place on a random background."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 3, image_size, image_size), dtype=np.uint8)
    side = image_size // 2
    for image in images:
        image[:] = rng.integers(0, 256, (3, 1, 1))
        top, left = rng.integers(0, image_size - side + 1, 2)
        image[:, top:top + side, left:left + side] = rng.integers(0, 256, (3, 1, 1))
    return images


SQUARES = ImageBank([coloured_squares(64)], "cpu")


def roundtrip(state):
    """A state as a checkpoint file gives it back: a copy, loaded with weights_only."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def run(config, state=None, images=SQUARES, runtime=Runtime()):
    logs, checkpoints = [], []
    final = train_dcgan(config, images, state, runtime, on_checkpoint=lambda s: checkpoints.append(roundtrip(s)),
                        on_log=logs.append)
    return final, logs, checkpoints


def assert_same(expected, actual, path="state"):
    """Recursive equality for nested dicts/lists of tensors, exact for tensors."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), f"{path} differs"
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), f"{path} keys differ"
        for key in expected:
            assert_same(expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), f"{path} lengths differ"
        for index, (left, right) in enumerate(zip(expected, actual)):
            assert_same(left, right, f"{path}[{index}]")
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


# Networks

@pytest.mark.parametrize("projection", ["linear", "conv"])
@pytest.mark.parametrize("image_size", SUPPORTED_IMAGE_SIZES)
def test_networks_map_latents_to_images_to_logits(image_size, projection):
    generator = Generator(image_size, latent_size=16, base_channels=4, projection=projection)
    discriminator = Discriminator(image_size, base_channels=4)
    images = generator(torch.randn(3, 16))
    assert images.shape == (3, 3, image_size, image_size)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (3,)

    upsamplers = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)]
    downsamplers = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(upsamplers) == len(downsamplers) == math.log2(image_size // 4)
    assert all(m.kernel_size == (4, 4) for m in upsamplers + downsamplers)


def test_discriminator_has_no_batchnorm_after_first_conv_and_no_sigmoid():
    layers = list(Discriminator(64, base_channels=4).net)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)
    assert layers[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 3  # one per later strided conv
    assert not any(isinstance(m, nn.Sigmoid) for m in layers)


def test_conv_projection_starts_with_a_4x4_transposed_conv_from_1x1():
    first = next(m for m in Generator(32, latent_size=16, base_channels=4, projection="conv").modules()
                 if isinstance(m, (nn.ConvTranspose2d, nn.Linear)))
    assert isinstance(first, nn.ConvTranspose2d)
    assert (first.in_channels, first.kernel_size, first.stride) == (16, (4, 4), (1, 1))


@pytest.mark.parametrize("build", [lambda: Generator(48, 16, 4), lambda: Discriminator(100, 4),
                                   lambda: DCGANConfig(image_size=512, steps=1)])
def test_unsupported_image_size_is_refused(build):
    with pytest.raises(ValueError, match=r"image_size must be one of \(32, 64, 128, 256\)"):
        build()


def test_init_follows_the_dcgan_paper():
    network = nn.Sequential(Generator(64, 100, 32), Discriminator(64, 32))
    layers = list(network.modules())
    weights = torch.cat([m.weight.flatten() for m in layers
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    scales = torch.cat([m.weight for m in layers if isinstance(m, nn.BatchNorm2d)])
    biases = torch.cat([m.bias for m in layers if getattr(m, "bias", None) is not None])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert scales.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert scales.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(biases) == 0


def test_init_dcgan_weights_reaches_nested_layers():
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64)))
    init_dcgan_weights(nested)
    conv, norm = nested[0]
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert norm.weight.std().item() > 0.005 and torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps"),
    ("projection", "dense", "projection"),
    ("batch_size", 1, "batch_size"),
    ("real_label_high", 1.1, "real_label_low and real_label_high"),
    ("fake_label_low", 0.5, "fake_label_low and fake_label_high"),
    ("label_flip_prob", 0.5, "label_flip_prob"),
    ("ema_decay", 1.0, "ema_decay"),
    ("latent_match_steps", -1, "latent_match_steps"),
    ("collapse_window", 0, "collapse_window"),
    ("on_collapse", "explode", "on_collapse"),
])
def test_config_refuses_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DCGANConfig(**{"image_size": 32, "steps": 10, field: value})


# Training

VARIANTS = {
    "defaults": ({}, Runtime()),
    "every_option": (dict(projection="conv", separate_batches=False, latent_match_steps=2, ema_decay=0.9,
                          random_flip=False), Runtime(channels_last=False, precision="bf16", fused_optimizer=False)),
}


@pytest.mark.parametrize("options, runtime", VARIANTS.values(), ids=VARIANTS.keys())
def test_training_logs_finite_metrics_and_checkpoints(options, runtime):
    config = DCGANConfig(**TINY, steps=6, log_every=2, checkpoint_every=2, **options)
    final, logs, checkpoints = run(config, runtime=runtime)

    assert [record["step"] for record in logs] == [2, 4, 6]
    for record in logs:
        assert set(record) == {"step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g",
                               "grad_norm_d", "diversity", "images_per_s", "data_wait"}
        assert all(math.isfinite(value) for value in record.values())
        assert 0 < record["d_real"] < 1 and 0 < record["d_fake"] < 1
        assert record["grad_norm_g"] > 0 and record["grad_norm_d"] > 0
    assert [state["step"] for state in checkpoints] == [2, 4]  # the final state is the caller's to save
    assert final["step"] == 6 and final["history"] == logs
    assert ("ema_generator" in final["networks"]) == ("ema_decay" in options)


def test_state_has_the_shared_layout_and_survives_a_weights_only_load():
    config = DCGANConfig(**TINY, steps=2, ema_decay=0.5)
    final, _, _ = run(config)
    loaded = roundtrip(final)
    assert_same(final, loaded)
    assert {"config", "step", "networks", "optimizers", "rng", "history", "collapse_watch"} <= set(loaded)
    assert DCGANConfig.from_dict(loaded["config"]) == config
    assert loaded["fixed_latents"].shape == (4, 16)


@pytest.mark.parametrize("streamed", [False, True], ids=["on the device", "streamed"])
def test_resumed_run_matches_uninterrupted_run(streamed):
    images = StreamedImages([coloured_squares(64)], "cpu", workers=1) if streamed else SQUARES
    config = DCGANConfig(**TINY, steps=8, log_every=2, checkpoint_every=4, ema_decay=0.9, latent_match_steps=1)
    uninterrupted, full_logs, checkpoints = run(config, images=images)

    halfway = checkpoints[0]
    assert halfway["step"] == 4
    torch.manual_seed(12345)  # whatever ran in between must not matter
    resumed, resumed_logs, _ = run(config, state=halfway, images=images)

    assert resumed["step"] == 8
    # A DataLoader draws its workers' seed from the global stream, which training uses for nothing else.
    comparable = lambda state: {**state, "rng": {**state["rng"], "torch": None if streamed else state["rng"]["torch"]},
                                "history": [{**row, "images_per_s": None, "data_wait": None} for row in state["history"]]}
    assert_same(comparable(roundtrip(uninterrupted)), comparable(roundtrip(resumed)))
    assert [record["step"] for record in resumed_logs] == [6, 8]


def test_images_held_on_the_device_and_streamed_train_the_same_model():
    config = DCGANConfig(**TINY, steps=4, log_every=2)
    on_device, _, _ = run(config)
    streamed, _, _ = run(config, images=StreamedImages([coloured_squares(64)], "cpu", workers=1))
    assert_same(roundtrip(on_device)["networks"], roundtrip(streamed)["networks"])


def counting_gradient_accumulations(network_class, instances):
    """A subclass of network_class counting, per parameter, backward passes that reach it."""
    class Counting(network_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.accumulations = collections.Counter()
            for name, parameter in self.named_parameters():
                parameter.register_post_accumulate_grad_hook(
                    lambda _, name=name: self.accumulations.update([name]))
            instances.append(self)
    return Counting


def test_each_network_gets_exactly_one_gradient_per_step(monkeypatch):
    """G's loss must leave no gradient in D, and latent matching none in G."""
    generators, discriminators = [], []
    monkeypatch.setattr(dcgan_training, "Generator", counting_gradient_accumulations(Generator, generators))
    monkeypatch.setattr(dcgan_training, "Discriminator",
                        counting_gradient_accumulations(Discriminator, discriminators))
    run(DCGANConfig(**TINY, steps=3, latent_match_steps=2))

    for network in (generators[0], discriminators[0]):
        assert set(network.accumulations.values()) == {3}
        assert len(network.accumulations) == len(list(network.parameters()))


def test_match_latents_moves_fakes_towards_targets_with_generator_frozen():
    torch.manual_seed(0)
    generator = Generator(32, latent_size=16, base_channels=8)
    with torch.no_grad():
        targets = generator(torch.randn(8, 16))
    before = {name: tensor.clone() for name, tensor in generator.state_dict().items()}
    start = torch.randn(8, 16)

    matched = match_latents(generator, start, targets, steps=20, lr=0.1)

    assert_same(before, generator.state_dict())  # weights and BatchNorm statistics untouched
    assert all(parameter.grad is None for parameter in generator.parameters())
    assert all(parameter.requires_grad for parameter in generator.parameters())
    with torch.no_grad():
        assert l1_loss(generator(matched), targets) < 0.9 * l1_loss(generator(start), targets)


class ConstantGenerator(nn.Module):
    """Always the same grey image: a generator the discriminator beats at once."""

    def __init__(self, image_size, latent_size, base_channels, projection):
        super().__init__()
        self.image_size = image_size
        self.unused = nn.Parameter(torch.zeros(()))  # Adam needs something to optimise

    def forward(self, latents):
        return torch.zeros(len(latents), 3, self.image_size, self.image_size) + 0 * self.unused


def test_collapse_stop_raises_after_the_last_good_checkpoint(monkeypatch, caplog):
    monkeypatch.setattr(dcgan_training, "Generator", ConstantGenerator)
    config = DCGANConfig(**{**TINY, "batch_size": 16}, steps=1000, log_every=10, checkpoint_every=20,
                         collapse_window=3, collapse_diversity_floor=0, on_collapse="stop")
    logs, checkpoints = [], []
    with caplog.at_level(logging.WARNING, logger="ganmodels.dcgan.training"):
        with pytest.raises(TrainingCollapsed) as stop:
            train_dcgan(config, SQUARES, None, Runtime(), on_checkpoint=lambda s: checkpoints.append(s["step"]),
                        on_log=logs.append)

    stop_step = logs[-1]["step"]
    assert stop.value.step == stop_step < config.steps and stop.value.history == logs
    assert [record["loss_d"] < config.collapse_d_loss_floor for record in logs[-3:]] == [True] * 3
    assert str(stop.value).startswith(f"collapse at step {stop_step}: discriminator loss below")
    assert "discriminator loss below" in caplog.text
    assert checkpoints and checkpoints[-1] < stop_step


def test_collapse_warn_flags_lost_diversity_and_keeps_training(monkeypatch, caplog):
    monkeypatch.setattr(dcgan_training, "Generator", ConstantGenerator)
    config = DCGANConfig(**TINY, steps=6, log_every=2, collapse_window=2, collapse_d_loss_floor=0)
    with caplog.at_level(logging.WARNING, logger="ganmodels.dcgan.training"):
        final, logs, checkpoints = run(config)

    assert final["step"] == 6
    warnings = [r.getMessage() for r in caplog.records if r.name == "ganmodels.dcgan.training"]
    assert len(warnings) == 2 and all("sample diversity below 0.05" in w for w in warnings)
    assert warnings[0].startswith("step 4:")


def test_generator_from_state_prefers_ema_weights():
    config = DCGANConfig(**TINY, steps=2, ema_decay=0.5)
    final = roundtrip(run(config)[0])
    ema = generator_from_state(final)
    raw = generator_from_state(final, use_ema=False)
    assert not ema.training
    assert_same({name: final["networks"]["ema_generator"][name] for name, _ in ema.named_parameters()},
                dict(ema.named_parameters()))  # the buffers are its standing statistics
    assert_same(final["networks"]["generator"], raw.state_dict())
    assert ema(final["fixed_latents"]).shape == (4, 3, 32, 32)


def test_snapshots_show_the_fixed_latents_and_change_nothing():
    config = DCGANConfig(**TINY, steps=5, snapshot_every=2, ema_decay=0.9)
    without_snapshots = roundtrip(run(config)[0])
    snapshots = []
    final = roundtrip(train_dcgan(config, SQUARES, None, Runtime(),
                                  on_snapshot=lambda step, images: snapshots.append((step, images))))

    timeless = lambda state: [{**row, "images_per_s": None, "data_wait": None} for row in state["history"]]
    assert_same({**without_snapshots, "history": timeless(without_snapshots)}, {**final, "history": timeless(final)})
    assert [step for step, _ in snapshots] == [2, 4, 5]  # every snapshot_every steps and the last
    expected = generate(generator_from_state(final), final["fixed_latents"])  # EMA weights, eval mode, in [0, 1]
    torch.testing.assert_close(snapshots[-1][1], expected, rtol=0, atol=1e-5)  # training ran channels-last


def test_ema_generator_samples_with_batchnorm_statistics_of_its_own_weights():
    final = roundtrip(run(DCGANConfig(**TINY, steps=2, ema_decay=0.5))[0])
    # EMA weights far from the training weights, whose running statistics the state carries.
    ema_weights = {name: value * 3 if name == "net.0.weight" else value
                   for name, value in final["networks"]["ema_generator"].items()}
    state = {**final, "networks": {**final["networks"], "ema_generator": ema_weights}}
    latents = torch.randn(512, 16, generator=torch.Generator().manual_seed(1))

    def eval_vs_batch_statistics(generator):
        with torch.no_grad():
            return (generator.eval()(latents) - generator.train()(latents)).abs().mean().item()

    carried = Generator(32, latent_size=16, base_channels=8)
    carried.load_state_dict(ema_weights)
    assert eval_vs_batch_statistics(generator_from_state(state)) < 0.2 * eval_vs_batch_statistics(carried)
