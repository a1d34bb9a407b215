"""Inference on new inputs: any image size, known pixels kept, classical baselines, latent walks."""
import pytest
import torch

from ganmodels.glcic.config import ModelConfig
from ganmodels.glcic.inference import paste, predict, size_multiple
from ganmodels.glcic.networks import CompletionNetwork, InfillGenerator, build_networks, complete, fill_holes
from ganmodels.metrics import hole_l1
from pipeline.evaluation import CLASSICAL_METHODS, classical_inpaint


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


def test_prediction_at_a_multiple_of_the_network_size_matches_training():
    torch.manual_seed(0)
    completion, _ = build_networks(ModelConfig(image_size=32, width=0.125))
    completion.eval()
    images, mask, mean_pixel = torch.rand(3, 3, 32, 32), box_mask(3, 32, 32, 5, 9, 12), torch.tensor([0.3, 0.4, 0.5])
    with torch.no_grad():
        trained_path = complete(completion, images, mask, mean_pixel)
    assert torch.allclose(paste(images, predict(completion, images, mask, mean_pixel), mask), trained_path)


def test_images_smaller_than_the_size_multiple_are_refused():
    with pytest.raises(ValueError, match="at least 4 pixels"):
        predict(CompletionNetwork(width=0.125).eval(), torch.rand(1, 3, 3, 8), torch.ones(1, 1, 3, 8), torch.zeros(3))


@pytest.mark.parametrize("method", sorted(CLASSICAL_METHODS))
def test_classical_baselines_follow_smooth_surroundings_and_keep_known_pixels(method):
    images = (smooth_images(3, 32, 32) * 255).round() / 255  # as stored: whole uint8 levels
    mask = box_mask(3, 32, 32, 10, 12, 8)
    filled = classical_inpaint(images, mask, method)
    known = mask.expand_as(images) == 0
    assert torch.equal(filled[known], images[known])
    mean_fill = fill_holes(images, mask, images.mean(dim=(0, 2, 3)))
    assert (hole_l1(filled, images, mask) < hole_l1(mean_fill, images, mask) / 3).all()
