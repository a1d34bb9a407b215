"""Rendering progress and results: grids, GIFs, loss curves, all from images in [0, 1]."""
import io

import matplotlib.pyplot as plt
import pandas
import pytest
import torch
from PIL import Image

from ganmodels.rendering import animated_gif, image_grid, loss_curves_png, steps_across_phases, to_uint8


def test_image_grid_tiles_images_with_borders():
    images = torch.stack([torch.full((3, 8, 8), value) for value in (0.0, 0.5, 1.0, 1.0, 0.0, 0.5)])
    grid = image_grid(images, nrow=3)
    assert grid.mode == "RGB" and grid.size == (3 * 10 + 2, 2 * 10 + 2)
    assert grid.getpixel((2 + 4, 2 + 4)) == (0, 0, 0)  # first image, 0
    assert grid.getpixel((12 + 4, 2 + 4)) == (128, 128, 128)  # second image, 0.5
    assert grid.getpixel((22 + 4, 2 + 4)) == (255, 255, 255)  # third image, 1


def test_animated_gif_decodes_to_every_frame():
    frames = [Image.new("RGB", (16, 16), (40 * index, 0, 255 - 40 * index)) for index in range(5)]
    data = animated_gif(frames, duration_ms=80)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
        assert gif.info["loop"] == 0 and gif.info["duration"] == 80


def test_to_uint8_rounds_and_clamps_images_in_0_1():
    images = torch.tensor([-0.5, 0.0, 0.6 / 255, 0.5, 1.0, 1.5]).view(1, 1, 1, 6)
    assert to_uint8(images).flatten().tolist() == [0, 0, 1, 128, 255, 255]


def test_loss_curves_png_is_a_png_of_one_panel_per_column_and_leaves_pyplot_alone():
    history = pandas.DataFrame({"step": [10, 20, 30], "loss_d": [1.3, 1.1, 0.9], "loss_g": [0.7, 0.9, 1.4]})
    figures_before = plt.get_fignums()
    data = loss_curves_png(history, ["loss_d", "loss_g"])
    assert plt.get_fignums() == figures_before
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (640, 240)


def test_steps_count_across_phases_and_each_later_phase_starts_where_the_one_before_ended():
    history = pandas.DataFrame({"phase": [1, 1, 2, 3, 3], "step": [5, 10, 4, 10, 20], "steps": [10, 10, 4, 20, 20],
                                "loss_d": [1.0, 0.9, 0.8, 0.7, 0.6]})
    steps, starts = steps_across_phases(history)
    assert steps.tolist() == [5, 10, 14, 24, 34] and starts == [10, 14]
    assert steps_across_phases(history[["step", "loss_d"]])[0].tolist() == [5, 10, 4, 10, 20]
    with Image.open(io.BytesIO(loss_curves_png(history, ["loss_d"]))) as image:
        assert image.size == (320, 240)


def test_loss_curves_png_names_missing_columns():
    with pytest.raises(ValueError, match="loss_x"):
        loss_curves_png(pandas.DataFrame({"step": [1], "loss_d": [1.0]}), ["loss_d", "loss_x"])
