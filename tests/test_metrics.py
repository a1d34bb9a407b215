import math

import torch

from ganmodels.metrics import hole_l1, hole_psnr, inpainting_metrics, ssim


def _square_mask(size=32, top=8, side=16):
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, top:top + side, top:top + side] = 1
    return mask


def test_hole_metrics_on_a_known_offset_ignore_pixels_outside_the_hole():
    target = torch.full((2, 3, 32, 32), 0.5)
    mask = _square_mask()
    predicted = target + 0.1 * mask  # off by 0.1 inside the hole
    predicted[:, :, :4, :4] = 0.0  # wrong outside the hole: must not count
    assert torch.allclose(hole_l1(predicted, target, mask), torch.tensor([0.1, 0.1]), atol=1e-6)
    assert torch.allclose(hole_psnr(predicted, target, mask), torch.tensor([20.0, 20.0]), atol=1e-4)


def test_psnr_matches_its_definition_per_image():
    torch.manual_seed(0)
    target, predicted = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = _square_mask()
    inside = mask.expand_as(target).bool()
    for i in range(2):
        mse = ((predicted[i] - target[i])[inside[i]] ** 2).mean().item()
        assert math.isclose(hole_psnr(predicted, target, mask)[i].item(), 10 * math.log10(1 / mse), rel_tol=1e-4)


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(images, images), torch.ones(2), atol=1e-5)
    noisy = (images + 0.3 * torch.randn_like(images)).clamp(0, 1)
    assert (ssim(noisy, images) < 0.9).all()
    assert set(inpainting_metrics(noisy, images, _square_mask())) == {"psnr_hole", "l1_hole", "ssim"}
