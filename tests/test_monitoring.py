import io

import matplotlib.pyplot as plt
import numpy
import pandas
import pytest
import torch
from PIL import Image
from torch import nn

from ganmodels.monitoring import (CollapseWatch, animated_gif, image_grid, latent_walk,
                                  loss_curve_png, sample_diversity, slerp)


# CollapseWatch

def test_collapse_watch_fires_after_window_consecutive_low_losses():
    watch = CollapseWatch(window=3, d_loss_floor=0.5, diversity_floor=0.1)
    assert [watch.update(loss, 0.4) for loss in (0.3, 0.3, 0.9, 0.3, 0.3)] == [None] * 5
    message = watch.update(0.2, 0.4)
    assert "discriminator loss below 0.5 for 3 consecutive checks" in message
    assert watch.update(0.2, 0.4) is not None  # keeps warning while it lasts


def test_collapse_watch_fires_on_low_diversity_and_ignores_missing_measurements():
    watch = CollapseWatch(window=2, d_loss_floor=0.5, diversity_floor=0.1)
    assert watch.update(1.0, 0.01) is None
    assert watch.update(1.0, None) is None  # not measured: neither counts nor resets
    assert "sample diversity below 0.1 for 2 consecutive checks" in watch.update(1.0, 0.02)
    assert watch.update(1.0, 0.5) is None


def test_collapse_watch_floors_of_zero_switch_checks_off():
    watch = CollapseWatch(window=1, d_loss_floor=0, diversity_floor=0)
    assert watch.update(0.0, 0.0) is None


def test_collapse_watch_state_round_trips():
    watch = CollapseWatch(window=3, d_loss_floor=0.5, diversity_floor=0.1)
    watch.update(0.1, 0.01)
    watch.update(0.1, 0.01)
    restored = CollapseWatch(window=3, d_loss_floor=0.5, diversity_floor=0.1)
    restored.load_state_dict(watch.state_dict())
    assert restored.update(0.1, 0.5) is not None


def test_sample_diversity_is_mean_pairwise_rms_difference():
    white, black = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
    assert sample_diversity(torch.cat([white, white])) == pytest.approx(0.0, abs=1e-6)
    assert sample_diversity(torch.cat([white, black])) == pytest.approx(2.0)
    # Pairs: (white, white) = 0, (white, black) = 2 twice.
    assert sample_diversity(torch.cat([white, white, black])) == pytest.approx(4 / 3)
    large = torch.cat([torch.ones(1, 3, 32, 32), -torch.ones(1, 3, 32, 32)])
    assert sample_diversity(large) == pytest.approx(2.0)  # independent of image size
    with pytest.raises(ValueError, match="at least 2"):
        sample_diversity(white)


# Rendering

def test_image_grid_tiles_images_with_borders():
    images = torch.stack([torch.full((3, 8, 8), value) for value in (-1.0, 0.0, 1.0, 1.0, -1.0, 0.0)])
    grid = image_grid(images, nrow=3)
    assert grid.mode == "RGB" and grid.size == (3 * 10 + 2, 2 * 10 + 2)
    assert grid.getpixel((2 + 4, 2 + 4)) == (0, 0, 0)  # first image, -1
    assert grid.getpixel((12 + 4, 2 + 4)) == (128, 128, 128)  # second image, 0
    assert grid.getpixel((22 + 4, 2 + 4)) == (255, 255, 255)  # third image, +1


def test_animated_gif_decodes_to_every_frame():
    frames = [Image.new("RGB", (16, 16), (40 * index, 0, 255 - 40 * index)) for index in range(5)]
    data = animated_gif(frames, duration_ms=80)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
        assert gif.info["loop"] == 0 and gif.info["duration"] == 80


def test_slerp_hits_endpoints_and_keeps_norm_where_lerp_shrinks():
    torch.manual_seed(0)
    a, b = torch.randn(4, 32), torch.randn(4, 32)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    torch.testing.assert_close(middle.norm(dim=-1), a.norm(dim=-1))
    assert torch.all((0.5 * (a + b)).norm(dim=-1) < 0.9 * a.norm(dim=-1))


def test_slerp_of_orthogonal_unit_vectors_follows_the_circle():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(x, y, 1 / 3), torch.tensor([3**0.5 / 2, 0.5]))


def test_slerp_falls_back_to_lerp_for_parallel_vectors():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    for b in (2 * a, -a):
        result = slerp(a, b, 0.25)
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result, 0.75 * a + 0.25 * b)


class LatentAsImage(nn.Module):
    """Shows the latent itself as a 2x2 image, so frames reveal the latents of the walk."""

    def __init__(self):
        super().__init__()
        self.device_anchor = nn.Parameter(torch.zeros(()))
        self.modes_seen = set()

    def forward(self, latents):
        self.modes_seen.add(self.training)
        return (latents / 4).clamp(-1, 1).view(-1, 3, 2, 2)


def frame_latents(frames):
    pixels = torch.stack([torch.from_numpy(numpy.array(frame)) for frame in frames])
    return pixels.permute(0, 3, 1, 2).flatten(1).float() / 127.5 - 1


def test_latent_walk_loops_back_through_keyframes_in_eval_mode():
    generator = LatentAsImage()
    frames = latent_walk(generator, n_keyframes=3, steps_between=4, latent_size=12, seed=7)

    assert len(frames) == 12 and frames[0].size == (2, 2) and frames[0].mode == "RGB"
    assert generator.modes_seen == {False} and generator.training
    latents = frame_latents(frames)
    keyframes = latents[::4]
    quantisation = 1 / 127.5
    # The last segment heads from the last keyframe back to the first one.
    expected_last = slerp(keyframes[2], keyframes[0], 3 / 4)
    torch.testing.assert_close(latents[-1], expected_last, atol=2 * quantisation, rtol=0)
    expected_second = slerp(keyframes[0], keyframes[1], 1 / 4)
    torch.testing.assert_close(latents[1], expected_second, atol=2 * quantisation, rtol=0)
    assert latent_walk(generator, 3, 4, 12, seed=7)[5].tobytes() == frames[5].tobytes()


def test_latent_walk_refuses_a_single_keyframe():
    with pytest.raises(ValueError, match="n_keyframes"):
        latent_walk(LatentAsImage(), n_keyframes=1, steps_between=4, latent_size=12, seed=0)


def test_loss_curve_png_is_a_png_and_leaves_pyplot_alone():
    frame = pandas.DataFrame({"step": [10, 20, 30], "loss_d": [1.3, 1.1, 0.9],
                              "loss_g": [0.7, 0.9, 1.4]}).set_index("step")
    figures_before = plt.get_fignums()
    data = loss_curve_png(frame, ["loss_d", "loss_g"])
    assert plt.get_fignums() == figures_before
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (800, 400)


def test_loss_curve_png_names_missing_columns():
    with pytest.raises(ValueError, match="loss_x"):
        loss_curve_png(pandas.DataFrame({"loss_d": [1.0]}), ["loss_d", "loss_x"])
