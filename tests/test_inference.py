"""Inference on new inputs: any image size, known pixels kept, classical baselines, latent walks."""
import pytest
import torch
from torch import nn

from ganmodels.glcic.config import ModelConfig
from ganmodels.glcic.inference import (borrowed_texture, complete_any_size, downscaled, fade_from_border, hole_crops,
                                       paste, predict, size_multiple, upscaled)
from ganmodels.glcic.networks import CompletionNetwork, InfillGenerator, build_networks, complete, fill_holes
from ganmodels.masks import MaskConfig, sample_strokes
from ganmodels.metrics import hole_l1
from pipeline.evaluation import CLASSICAL_METHODS, classical_inpaint
from pipeline.infill import inpaint, navier_stokes_detail


def smooth_images(count: int, height: int, width: int) -> torch.Tensor:
    """Colour ramps: easy for any inpainting method that follows its surroundings."""
    rows = torch.linspace(0, 1, height)[:, None]
    cols = torch.linspace(0, 1, width)[None, :]
    weights = torch.rand(count, 3, 2, generator=torch.Generator().manual_seed(0))
    return (0.1 + 0.4 * weights[..., 0, None, None] * rows + 0.4 * weights[..., 1, None, None] * cols).clamp(0, 1)


def box_mask(count: int, height: int, width: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(count, 1, height, width)
    mask[..., top:top + size, left:left + size] = 1
    return mask


def test_size_multiple_is_the_product_of_downsampling_strides():
    assert size_multiple(CompletionNetwork(width=0.125)) == 4
    assert size_multiple(InfillGenerator(width=0.125)) == 1


@pytest.mark.parametrize("height, width", [(30, 45), (17, 22), (5, 4)])
def test_prediction_has_the_image_size_and_paste_keeps_known_pixels(height, width):
    torch.manual_seed(0)
    net = CompletionNetwork(width=0.125).eval()
    images = torch.rand(2, 3, height, width)
    mask = box_mask(2, height, width, height // 3, width // 3, min(height, width) // 2)
    mask[:, :, -1, -1] = 1  # a hole pixel on the padded border
    prediction = predict(net, images, mask, torch.tensor([0.4, 0.5, 0.6]))
    assert prediction.shape == images.shape and prediction.isfinite().all()
    completed = paste(images, prediction, mask)
    known = mask.expand_as(images) == 0
    assert torch.equal(completed[known], images[known])
    assert torch.equal(completed[~known], prediction[~known])


def test_prediction_is_the_mean_of_the_training_path_on_the_image_and_on_its_mirror():
    torch.manual_seed(0)
    completion = CompletionNetwork(width=0.125, upsample="resize", skips=True, hole_fill="harmonic")
    nn.init.normal_(completion.layers[-1].weight, std=0.2)  # a correction that is not zero, as after training
    completion.eval()
    images, mask, mean_pixel = torch.rand(3, 3, 32, 32), box_mask(3, 32, 32, 5, 9, 12), torch.tensor([0.3, 0.4, 0.5])
    with torch.no_grad():
        as_trained = complete(completion, images, mask, mean_pixel)
        mirrored = complete(completion, images.flip(-1), mask.flip(-1), mean_pixel).flip(-1)
    prediction = predict(completion, images, mask, mean_pixel)
    assert not torch.allclose(as_trained, mirrored, atol=1e-3)  # the network alone is not symmetric
    assert torch.allclose(paste(images, prediction, mask), (as_trained + mirrored) / 2, atol=1e-6)
    flipped = predict(completion, images.flip(-1), mask.flip(-1), mean_pixel)
    assert torch.allclose(flipped.flip(-1), prediction, atol=1e-6)


def test_images_smaller_than_the_size_multiple_are_refused():
    with pytest.raises(ValueError, match="at least 4 pixels"):
        predict(CompletionNetwork(width=0.125).eval(), torch.rand(1, 3, 3, 8), torch.ones(1, 1, 3, 8), torch.zeros(3))


class CountingNetwork(nn.Module):
    """A completion network that records the shape of every input it is run on."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.hole_fill, self.shapes = net, net.hole_fill, []

    def forward(self, network_input: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(network_input.shape))
        return self.net(network_input)


TRAINING_SIZE = 32
MEAN_PIXEL = torch.tensor([0.4, 0.5, 0.6])


def trained_looking_network(seed: int = 0) -> CountingNetwork:
    """A harmonic-fill network whose correction is not zero, as after training."""
    torch.manual_seed(seed)
    net = CompletionNetwork(width=0.125, upsample="resize", skips=True, hole_fill="harmonic")
    nn.init.normal_(net.layers[-1].weight, std=0.2)
    return CountingNetwork(net.eval())


@pytest.mark.parametrize("height, width", [(97, 203), (301, 150), (20, 33), (257, 255)])
def test_any_size_keeps_known_pixels_and_fills_every_hole(height, width):
    net = trained_looking_network()
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    mask = box_mask(2, height, width, height // 5, width // 6, min(height, width) // 4)
    mask[0, :, -height // 3:, -width // 4:] = 1  # a second region, at the bottom-right corner
    mask[1, :, 0, 0] = 1  # a single pixel in a corner
    completed = complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    known = mask.expand_as(images) == 0
    assert completed.shape == images.shape
    assert torch.equal(completed[known], images[known])
    assert completed.isfinite().all() and completed.min() >= 0 and completed.max() <= 1
    assert (completed[~known] != images[~known]).float().mean() > 0.99  # the holes were filled, not left as they were


@pytest.mark.parametrize("height, width", [(TRAINING_SIZE, TRAINING_SIZE), (24, 30)])
def test_at_the_training_size_or_below_it_is_the_network_on_the_whole_image(height, width):
    net = trained_looking_network()
    images, mask = torch.rand(3, 3, height, width), box_mask(3, height, width, 5, 9, 12)
    mask[1, :, 20:, :] = 1
    completed = complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    assert torch.equal(completed, paste(images, predict(net, images, mask, MEAN_PIXEL), mask))


def test_a_small_hole_in_a_large_image_is_filled_from_a_crop_around_it():
    net = trained_looking_network()
    images, mask = torch.rand(1, 3, 400, 600), box_mask(1, 400, 600, 200, 300, 5)
    completed = complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    assert net.shapes == [(2, 4, TRAINING_SIZE, TRAINING_SIZE)]  # one crop at its own scale, and its mirror image
    far_changed = images.clone()
    far_changed[..., :150, :] = torch.rand(1, 3, 150, 600)
    far_changed[..., :, 350:] = torch.rand(1, 3, 400, 250)
    holes = mask.bool().expand_as(images)
    assert torch.equal(complete_any_size(net, far_changed, mask, MEAN_PIXEL, TRAINING_SIZE)[holes], completed[holes])


def test_large_holes_are_filled_at_the_training_scale():
    net = trained_looking_network()
    images, mask = torch.rand(1, 3, 240, 320), box_mask(1, 240, 320, 35, 75, 170)
    complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    # The crop, 1.5 times the hole (255 pixels square) cut to the image's 240 rows, seen with its
    # short side at 32 pixels: 34 columns, padded to a multiple of 4.
    assert net.shapes == [(2, 4, TRAINING_SIZE, 36)]  # with its mirror image


def test_what_was_under_the_holes_does_not_matter():
    net = trained_looking_network()
    images, mask = torch.rand(1, 3, 300, 200), box_mask(1, 300, 200, 50, 40, 90)
    mask[..., 200:203, :] = 1  # a thin stroke across the image
    other = torch.where(mask.bool(), torch.rand(1, 3, 300, 200), images)
    assert torch.equal(complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE),
                       complete_any_size(net, other, mask, MEAN_PIXEL, TRAINING_SIZE))


def test_separate_holes_get_separate_crops_and_nearby_ones_share_one():
    net = trained_looking_network()
    images = torch.rand(1, 3, 300, 300)
    apart = box_mask(1, 300, 300, 20, 20, 6) + box_mask(1, 300, 300, 250, 240, 6)
    completed = complete_any_size(net, images, apart, MEAN_PIXEL, TRAINING_SIZE)
    assert net.shapes == [(2, 4, TRAINING_SIZE, TRAINING_SIZE)] * 2  # each with its mirror image
    assert (completed[apart.bool().expand_as(images)] != images[apart.bool().expand_as(images)]).all()
    net.shapes.clear()
    complete_any_size(net, images, box_mask(1, 300, 300, 100, 100, 6) + box_mask(1, 300, 300, 100, 115, 6),
                      MEAN_PIXEL, TRAINING_SIZE)
    assert len(net.shapes) == 1


@pytest.mark.parametrize("height, width", [(130, 77), (64, 500), (333, 333)])
def test_hole_crops_hold_every_hole_pixel_once_inside_the_image(height, width):
    config = MaskConfig(image_size=max(height, width), stroke_area_min=0.02, stroke_area_max=0.05)
    mask = sample_strokes(1, config, torch.Generator().manual_seed(3))[0, 0, :height, :width]
    mask[-3:, -3:] = 1
    covered = torch.zeros(height, width)
    crops = hole_crops(mask, TRAINING_SIZE)
    for top, left, crop_height, crop_width in crops:
        assert 0 <= top and top + crop_height <= height and 0 <= left and left + crop_width <= width
        assert min(crop_height, crop_width) >= min(TRAINING_SIZE, height, width)
        covered[top:top + crop_height, left:left + crop_width] += 1
    assert covered.max() <= 1 and (covered[mask > 0] == 1).all()
    assert hole_crops(torch.zeros(height, width), TRAINING_SIZE) == []


def striped_images(count: int, height: int, width: int) -> torch.Tensor:
    """Colour ramps under fine stripes, two pixels wide: detail no 32-pixel image can hold."""
    stripes = (torch.arange(width) % 4 < 2).float().expand(height, width)
    return (0.8 * smooth_images(count, height, width) + 0.2 * stripes).clamp(0, 1)


def test_the_holes_borrow_the_fine_texture_of_the_known_pixels():
    images = striped_images(2, 128, 160)
    mask = box_mask(2, 128, 160, 40, 50, 48)
    mask[1, :, 90:94, 10:150] = 1  # and a thin stroke
    small_size = (TRAINING_SIZE, 40)
    small_fill = downscaled(images, torch.zeros_like(mask), small_size)[0]  # a perfect fill at the small scale
    small_mask = downscaled(images, mask, small_size)[1]
    borrowed = borrowed_texture(small_fill, small_mask, images, mask)
    missing = images - upscaled(small_fill, (128, 160))  # what the small fill cannot hold
    holes = mask.bool().expand_as(images)
    assert torch.equal(borrowed[~holes], torch.zeros_like(borrowed[~holes]))
    # Deep in the square (TEXTURE_FADE small pixels are 8 here) the texture is the image's own;
    deep = (slice(None), slice(None), slice(48, 80), slice(58, 90))
    assert (borrowed[deep] - missing[deep]).abs().mean() < 0.1 * missing[deep].abs().mean()
    # near the border, where the harmonic fill carries the border's detail, it fades out.
    stroke = (1, slice(None), slice(90, 94), slice(10, 40))
    assert borrowed[stroke].abs().mean() < 0.5 * missing[stroke].abs().mean()


def test_large_holes_in_large_images_get_texture_not_blur():
    torch.manual_seed(0)
    net = CompletionNetwork(width=0.125, skips=True, hole_fill="harmonic").eval()  # an untrained correction: zero
    images, mask = striped_images(1, 256, 256), box_mask(1, 256, 256, 80, 90, 96)
    # At 64 pixels, as the defaults train, the known ring of the crop around the hole holds sources.
    completed = complete_any_size(net, images, mask, MEAN_PIXEL, 64)
    detail = lambda pictures: (pictures[..., 1:] - pictures[..., :-1]).abs()[..., 100:160, 110:160].mean()  # noqa: E731
    assert detail(fill_holes(images, mask, MEAN_PIXEL, "harmonic")) < 0.1 * detail(images)
    assert detail(completed) > 0.5 * detail(images)  # pieces blended where blocks meet lose some


def test_an_untrained_correction_gives_the_full_size_harmonic_fill():
    """At the start of training the network's correction is zero: whatever the scale it works at, the
    fill must then be the harmonic interpolation of the holes' border at the image's own size."""
    torch.manual_seed(0)
    net = CompletionNetwork(width=0.125, skips=True, hole_fill="harmonic").eval()
    images = 0.1 + 0.8 * smooth_images(2, 150, 140)
    mask = box_mask(2, 150, 140, 25, 20, 100)  # the crop around it is the whole image
    completed = complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    harmonic = fill_holes(images, mask, MEAN_PIXEL, "harmonic")
    assert torch.allclose(completed, harmonic, atol=1e-5)


@pytest.mark.parametrize("shape, pixels", [((2, 1, 64, 80), 1.0), ((1, 1, 300, 410), 12.0), ((3, 1, 5, 7), 4.0)])
def test_the_fade_from_the_border_is_the_share_of_hole_pixels_around_each_pixel(shape, pixels):
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    mask[..., 1:4, 2:6] = 1
    reach = 2 * round(pixels) + 1  # windows larger than the image included
    share = torch.nn.functional.avg_pool2d(mask, reach, stride=1, padding=reach // 2, count_include_pad=False)
    assert torch.equal(fade_from_border(mask, pixels), (2 * share - 1).clamp(0, 1))


class OffsetNetwork(nn.Module):
    """A completion network whose correction to the harmonic fill is the same everywhere."""

    hole_fill = "harmonic"

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, network_input: torch.Tensor) -> torch.Tensor:
        return network_input[:, :3] + self.offset


def test_the_correction_above_the_training_size_meets_the_border_without_a_step():
    """A small pixel of the border holds a whole correction; upsampled as it is, it would put a step
    where the fill meets the known pixels, which the border measure counts as a seam."""
    images, mask = 0.1 + 0.5 * smooth_images(1, 256, 256), box_mask(1, 256, 256, 80, 90, 96)
    completed = complete_any_size(OffsetNetwork(0.25), images, mask, MEAN_PIXEL, 64)
    correction = completed - fill_holes(images, mask, MEAN_PIXEL, "harmonic")
    on_border = (mask * torch.nn.functional.max_pool2d(1 - mask, 3, stride=1, padding=1)).bool().expand_as(images)
    assert correction[on_border].abs().mean() < 0.02
    deep = (slice(None), slice(None), slice(90, 166), slice(100, 176))  # 10 pixels in: over 4 small pixels
    assert (correction[deep] - 0.25).abs().max() < 0.02


@pytest.mark.parametrize("method", sorted(CLASSICAL_METHODS))
def test_classical_baselines_follow_smooth_surroundings_and_keep_known_pixels(method):
    images = (smooth_images(3, 32, 32) * 255).round() / 255  # as stored: whole uint8 levels
    mask = box_mask(3, 32, 32, 10, 12, 8)
    filled = classical_inpaint(images, mask, method)
    known = mask.expand_as(images) == 0
    assert torch.equal(filled[known], images[known])
    mean_fill = fill_holes(images, mask, images.mean(dim=(0, 2, 3)))
    assert (hole_l1(filled, images, mask) < hole_l1(mean_fill, images, mask) / 3).all()


def test_the_fill_users_get_adds_navier_stokes_fine_detail_inside_the_holes_alone():
    torch.manual_seed(0)
    net = CompletionNetwork(width=0.125, skips=True, hole_fill="harmonic").eval()
    # Stripes across a thin stroke: Navier-Stokes carries them over it, the harmonic fill blurs them.
    columns = torch.arange(96)
    images = (0.5 + 0.3 * ((columns // 2) % 2 * 2 - 1).float()).expand(1, 3, 96, 96).contiguous()
    images = (images * 255).round() / 255
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., 40:43, 8:88] = 1
    network = complete_any_size(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    completed = inpaint(net, images, mask, MEAN_PIXEL, TRAINING_SIZE)
    detail = navier_stokes_detail(images, mask)
    known = mask.expand_as(images) == 0
    assert torch.equal(completed[known], images[known]) and torch.equal(detail[known], torch.zeros_like(detail[known]))
    assert torch.allclose(completed, (network + detail).clamp(0, 1))
    hole = (slice(None), slice(None), slice(40, 43), slice(16, 80))
    stripes = images - images.mean()
    assert torch.corrcoef(torch.stack([detail[hole].flatten(), stripes[hole].flatten()]))[0, 1] > 0.5
    assert (completed - images)[hole].abs().mean() < (network - images)[hole].abs().mean()
    # A smooth ramp has no fine detail to add.
    ramps = (smooth_images(1, 96, 96) * 255).round() / 255
    assert navier_stokes_detail(ramps, mask).abs().max() < 0.02
