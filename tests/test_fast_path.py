"""The fast training path computes what the plain one does, and its data sources agree with each other."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from bench.plain import PLAIN_RUNTIME_SETTINGS, reference_holes, reference_mask
from ganmodels.feeding import ImageBank, ShardRows, StreamedImages, augment, random_zoom, training_images
from ganmodels.glcic.config import ModelConfig, PhaseOptions
from ganmodels.glcic.networks import build_networks, fill_holes
from ganmodels.glcic.training import train_phase, train_step
from ganmodels.masks import MaskConfig, holes_to_mask, patch_origins, sample_holes
from ganmodels import runtime as runtime_module
from ganmodels.runtime import Runtime, RuntimeOptions

SIZE, BATCH = 32, 4
MEAN = torch.tensor([0.5, 0.4, 0.3])


@pytest.fixture
def shards(tmp_path):
    """Two memory-mapped uint8 shards, as PrepareImages leaves them."""
    rng = np.random.default_rng(0)
    arrays = []
    for index, count in enumerate((7, 5)):
        path = tmp_path / f"train-{index:05d}.npy"
        np.save(path, rng.integers(0, 256, (count, 3, SIZE, SIZE), dtype=np.uint8))
        arrays.append(np.load(path, mmap_mode="r"))
    return arrays


def _train_steps(runtime: Runtime, phase: int, real, mask, origins, steps=2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    networks = build_networks(ModelConfig(image_size=SIZE, width=0.125))
    completion, discriminator = (runtime.place(net).train() for net in networks)
    optimizers = (runtime.adam(completion.parameters(), lr=1e-3), runtime.adam(discriminator.parameters(), lr=1e-3))
    discriminator.requires_grad_(phase != 1)
    if phase == 2:
        completion.eval()
    real, mask = (t.contiguous(memory_format=runtime.memory_format) for t in (real, mask))
    options = PhaseOptions.from_settings(phase, image_size=SIZE, width=0.125, **({"alpha": 0.5} if phase == 3 else {}))
    filled = fill_holes(real, mask, MEAN)
    return [train_step(options, completion, discriminator, optimizers, real, mask, origins, filled, runtime)
            for _ in range(steps)]


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_fast_and_plain_steps_give_the_same_losses_on_the_same_batch(phase):
    real = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(phase))
    holes = reference_holes(BATCH, MaskConfig(image_size=SIZE), random.Random(phase))
    plain_mask = reference_mask(holes, SIZE)
    fast_mask = holes_to_mask(torch.tensor(holes), SIZE)
    assert torch.equal(plain_mask, fast_mask)
    origins = patch_origins(torch.tensor(holes), SIZE, SIZE // 2)

    fast = _train_steps(Runtime(channels_last=True, fused_optimizer=True), phase, real, fast_mask, origins)
    plain = _train_steps(Runtime(**PLAIN_RUNTIME_SETTINGS), phase, real, plain_mask, origins)
    for fast_losses, plain_losses in zip(fast, plain):  # the second step also compares the first update
        assert fast_losses.abs().sum() > 0
        torch.testing.assert_close(fast_losses, plain_losses, rtol=1e-4, atol=1e-6)


def _same_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Chi-squared test of two samples of small integers; True unless they differ at the 0.1% level."""
    values = np.union1d(a, b)
    table = np.stack([(a[:, None] == values).sum(0), (b[:, None] == values).sum(0)])
    return chi2_contingency(table).pvalue > 1e-3


def test_on_device_holes_match_the_reference_generator_in_size_and_position():
    config = MaskConfig(image_size=48, hole_min=0.2, hole_max=0.45, hole_margin=0.1)
    count = 20000
    fast = sample_holes(count, config, torch.Generator().manual_seed(0)).numpy()
    reference = np.array(reference_holes(count, config, random.Random(0)))
    for name, column in (("top", 0), ("left", 1), ("height", 2), ("width", 3)):
        assert _same_distribution(fast[:, column], reference[:, column]), name
    bottoms = [holes[:, 0] + holes[:, 2] for holes in (fast, reference)]
    assert _same_distribution(*bottoms), "bottom edge: position given size"
    # The test has the power to notice a hole one pixel lower than it should be.
    assert not _same_distribution(reference[:, 0] + 1, fast[:, 0])


def test_streamed_batches_are_the_device_batches(shards):
    bank = ImageBank(shards, "cpu")
    streamed = StreamedImages(shards, "cpu", workers=1)
    expected = bank.batches(BATCH, (3, 1), first_step=5)
    for (batch, waited), _ in zip(streamed.batches(BATCH, (3, 1), first_step=5), range(4)):
        assert batch.dtype == torch.uint8 and torch.equal(batch, next(expected)[0]) and waited >= 0
    everything = np.concatenate(shards)
    first, _ = next(ImageBank(shards, "cpu").batches(len(everything) * 4, (0,)))
    assert {bytes(image.numpy()) for image in first} <= {bytes(image) for image in everything}


def test_shard_rows_travel_to_workers_as_memory_maps_not_copies(shards):
    rows = ShardRows(shards)
    payload = pickle.dumps(rows)
    assert len(payload) < 2000 < sum(a.nbytes for a in shards)
    copy = pickle.loads(payload)
    assert all(isinstance(a, np.memmap) for a in copy.arrays)
    index = np.array([0, 6, 7, 11])
    assert torch.equal(copy[index], rows[index])
    assert torch.equal(rows[index][2], torch.from_numpy(np.array(shards[1][0])))


def test_training_streamed_gives_the_same_model_as_training_on_the_device(shards):
    options = PhaseOptions.from_settings(1, arch="infill", image_size=SIZE, width=0.125, phase1_steps=3,
                                         batch_size=BATCH, log_every=3, checkpoint_every=10)
    states = [train_phase(options, images, MEAN, None, Runtime())
              for images in (ImageBank(shards, "cpu"), StreamedImages(shards, "cpu", workers=1))]
    for name, value in states[0]["networks"]["completion"].items():
        assert torch.equal(value, states[1]["networks"]["completion"][name]), name
    row = states[1]["history"][-1]
    assert 0 <= row["data_wait"] <= 1 and row["images_per_s"] > 0


def test_optimizer_moments_follow_the_parameter_layout_when_resuming_across_layouts(shards):
    """A phase saved in NCHW continues in channels_last (fused Adam on CUDA refuses mixed layouts)."""
    state = None
    for phase, runtime in ((1, Runtime(channels_last=False)), (2, Runtime(channels_last=False)), (3, Runtime())):
        steps = {f"phase{earlier}_steps": 1 for earlier in range(1, phase + 1)}
        options = PhaseOptions.from_settings(phase, image_size=SIZE, width=0.125, batch_size=BATCH, **steps)
        state = train_phase(options, ImageBank(shards, "cpu"), MEAN, state, runtime)
    _, discriminator = build_networks(ModelConfig(image_size=SIZE, width=0.125))
    parameters = [Runtime().place(discriminator).get_parameter(name) for name, _ in discriminator.named_parameters()]
    moments = state["optimizers"]["discriminator"]["state"]
    convolutions = [i for i, p in enumerate(parameters) if p.dim() == 4]
    assert convolutions and all(moments[i]["exp_avg"].stride() == parameters[i].stride() for i in convolutions)


def test_auto_placement_streams_only_what_does_not_fit(shards, monkeypatch):
    size = sum(a.nbytes for a in shards)
    monkeypatch.setattr(Runtime, "data_budget_bytes", lambda self: size)
    assert isinstance(training_images(shards, Runtime()), ImageBank)
    monkeypatch.setattr(Runtime, "data_budget_bytes", lambda self: size - 1)
    assert isinstance(training_images(shards, Runtime()), StreamedImages)
    assert isinstance(training_images(shards, Runtime(data_on_device="yes")), ImageBank)
    assert isinstance(training_images(shards, Runtime(data_on_device="no")), StreamedImages)


def test_augment_takes_whole_crops_flipped_about_half_the_time():
    stored = torch.randint(0, 256, (400, 3, 12, 10), dtype=torch.uint8)
    batch = augment(stored, 8, torch.Generator().manual_seed(0))
    assert batch.shape == (400, 3, 8, 8) and batch.dtype == torch.float32
    flipped, offsets = 0, set()
    for image, out in zip(stored.float() / 255, batch):
        found = [(top, left, flip) for top in range(5) for left in range(3) for flip in (False, True)
                 if torch.equal((image.flip(2) if flip else image)[:, top:top + 8, left:left + 8], out)]
        assert len(found) == 1
        offsets.add(found[0][:2])
        flipped += found[0][2]
    assert len(offsets) == 15 and 150 < flipped < 250
    with pytest.raises(ValueError, match="smaller than the training size"):
        augment(stored, 16, torch.Generator())


def test_random_zoom_shows_a_smaller_square_of_each_image_at_its_own_size():
    # a horizontal ramp: a zoomed-in view spans less of it, and is still a ramp
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(300, 3, 64, 64).contiguous()
    zoomed = random_zoom(ramp, 2.0, torch.Generator().manual_seed(0))
    assert zoomed.shape == ramp.shape
    spans = zoomed[:, 0, 32, -1] - zoomed[:, 0, 32, 0]
    assert (spans > 0.45).all() and (spans < 1.0).all() and spans.min() < 0.6 and spans.max() > 0.9
    assert (zoomed[:, 0, 32, 1:] >= zoomed[:, 0, 32, :-1] - 1e-6).all()
    assert torch.equal(random_zoom(ramp[:4], 2.0, torch.Generator().manual_seed(1)),
                       random_zoom(ramp[:4], 2.0, torch.Generator().manual_seed(1)))
    # off by default: the same draws and images as before zooming existed
    stored = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(augment(stored, 16, torch.Generator().manual_seed(2)),
                       augment(stored, 16, torch.Generator().manual_seed(2), max_zoom=1.0))


@pytest.mark.parametrize("native_bf16, precision", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_the_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native_bf16, precision):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: native_bf16)
    assert Runtime.resolve("cpu").precision == precision
    assert Runtime.resolve("cpu", RuntimeOptions(precision="fp32")).precision == "fp32"


def test_runtime_resolves_auto_for_the_device_and_puts_global_switches_back():
    runtime = Runtime.resolve("cpu")
    expected = ("bf16" if runtime_module.cpu_has_native_bf16() else "fp32", True, False, "cpu")
    assert (runtime.precision, runtime.channels_last, runtime.compile, runtime.device) == expected
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runtime.active():
            assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("settings", [dict(precision="fp16"), dict(data_on_device="maybe"), dict(data_workers=-1),
                                      dict(device="tpu")])
def test_bad_runtime_settings_raise_clear_errors(settings):
    with pytest.raises(ValueError, match="must be"):
        Runtime(**settings)


@pytest.mark.parametrize("settings", [dict(precision="fp16"), dict(compile="maybe"), dict(data_workers=-1)])
def test_bad_runtime_options_name_the_option(settings):
    with pytest.raises(ValueError, match=f"{next(iter(settings))} must be"):
        RuntimeOptions(**settings)


def test_speed_parameters_reach_the_runtime_without_changing_the_task_hash(artifact_root, image_folder):
    from pipeline.tasks.inpainting import PretrainCompletion

    fast = PretrainCompletion(dataset="folder", source=image_folder, device="cpu", precision="fp32", compile="yes",
                              data_on_device="no", data_workers=1)
    requested = RuntimeOptions(**fast.resolved_config()["runtime"])
    assert Runtime.resolve("cpu", requested) == Runtime(device="cpu", precision="fp32", compile=True, data_on_device="no",
                                                   data_workers=1)
    assert fast.artifact_hash() == PretrainCompletion(dataset="folder", source=image_folder).artifact_hash()
