"""The completion network's variants and the fills it starts from."""
import itertools

import pytest
import torch
from torch import nn

from bench.plain import plain_relax
from ganmodels.glcic.networks import (HARMONIC_SWEEPS, CompletionNetwork, InfillGenerator, fill_holes, jacobi_sweep,
                                      smooth_fill)


def _square_hole(batch: int, size: int, top: int, side: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, top:top + side, top:top + side] = 1
    return mask


@pytest.mark.parametrize("size,sweeps", [(16, 0), (37, 0), (64, 0), (37, HARMONIC_SWEEPS), (64, HARMONIC_SWEEPS)])
def test_smooth_fill_keeps_known_pixels_and_stays_within_their_colours(size, sweeps):
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    mask = _square_hole(3, size, size // 4, size // 2)
    filled = smooth_fill(images, mask, sweeps)
    known = mask.expand_as(images) == 0
    assert torch.equal(filled[known], images[known])
    hole = filled[~known].view(3, 3, -1)
    lowest, highest = images.amin(dim=(2, 3)), images.amax(dim=(2, 3))  # a weighted mean of known colours
    assert (hole >= lowest[..., None] - 1e-6).all() and (hole <= highest[..., None] + 1e-6).all()


def test_smooth_fill_continues_a_flat_image_and_a_gradient_smoothly():
    flat = torch.full((1, 3, 32, 32), 0.3)
    mask = _square_hole(1, 32, 8, 16)
    assert torch.allclose(smooth_fill(flat, mask), flat, atol=1e-6)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    filled = smooth_fill(ramp, mask)
    inside = filled[0, 0, 16, 8:24]  # across the hole: still rising from left to right
    assert (inside[1:] - inside[:-1] > 0).all()
    # far closer to the ramp than the mean pixel is
    assert (filled - ramp).abs().max() < 0.5 * (fill_holes(ramp, mask, torch.full((3,), 0.5)) - ramp).abs().max()


def test_the_harmonic_fill_continues_a_gradient_across_a_hole_where_pull_push_flattens_it():
    """A linear ramp is harmonic, so the harmonic fill restores it; pull-push bends it towards the hole's mean."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    mask = _square_hole(1, 64, 16, 32)
    harmonic_error = (fill_holes(ramp, mask, torch.full((3,), 0.5), "harmonic") - ramp).abs().max()
    assert harmonic_error < 0.02
    assert harmonic_error < 0.25 * (fill_holes(ramp, mask, torch.full((3,), 0.5), "smooth") - ramp).abs().max()


def test_the_harmonic_fill_is_near_the_converged_solution_of_laplaces_equation():
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    mask = _square_hole(2, 48, 10, 24)
    converged = smooth_fill(images, mask, 2000)
    padded = torch.nn.functional.pad(converged, (1, 1, 1, 1), mode="replicate")
    neighbours = (padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:] + padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1]) / 4
    hole = mask.expand_as(images) == 1
    assert (converged - neighbours)[hole].abs().max() < 1e-3  # converged: each hole pixel is its neighbours' mean
    pull_push_error = (smooth_fill(images, mask) - converged)[hole].abs().mean()
    harmonic_error = (fill_holes(images, mask, torch.full((3,), 0.5), "harmonic") - converged)[hole].abs().mean()
    assert harmonic_error < 0.5 * pull_push_error


def test_a_jacobi_sweep_gives_the_bits_of_the_plain_formula():
    generator = torch.Generator().manual_seed(3)
    filled, colour = torch.rand(2, 4, 3, 16, 16, generator=generator)
    share = torch.rand(4, 1, 16, 16, generator=generator).round()
    colour = colour * share
    assert torch.equal(jacobi_sweep(filled, colour, 1 - share), plain_relax(filled, colour, 1 - share))


def test_the_fill_is_the_same_in_either_memory_layout_and_keeps_the_one_it_was_given():
    """Training batches are channels_last; the fill computes in NCHW for speed and must not change a bit."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = _square_hole(4, 32, 6, 14)
    nchw = smooth_fill(images, mask, HARMONIC_SWEEPS)
    nhwc = smooth_fill(images.contiguous(memory_format=torch.channels_last),
                       mask.contiguous(memory_format=torch.channels_last), HARMONIC_SWEEPS)
    assert torch.equal(nchw, nhwc)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("upsample,skips,hole_fill", list(itertools.product(("transpose", "resize"), (False, True),
                                                                            ("mean", "smooth", "harmonic"))))
def test_every_variant_maps_an_image_to_one_of_its_size_in_range(upsample, skips, hole_fill):
    torch.manual_seed(0)
    net = CompletionNetwork(width=0.125, upsample=upsample, skips=skips, hole_fill=hole_fill)
    images, mask = torch.rand(2, 3, 32, 32), _square_hole(2, 32, 8, 12)
    output = net(torch.cat([fill_holes(images, mask, torch.full((3,), 0.5), hole_fill), mask], dim=1))
    assert output.shape == images.shape and output.min() >= 0 and output.max() <= 1
    output.mean().backward()
    assert all(parameter.grad is not None for parameter in net.parameters())
    transposed = [module for module in net.modules() if isinstance(module, nn.ConvTranspose2d)]
    assert len(transposed) == (2 if upsample == "transpose" else 0)


def test_a_fill_from_the_image_is_where_the_network_starts():
    """With a smooth fill the network predicts a correction to it, zero before training."""
    images, mask = torch.rand(2, 3, 32, 32), _square_hole(2, 32, 4, 16)
    filled = smooth_fill(images, mask)
    output = CompletionNetwork(width=0.125, upsample="resize", skips=True, hole_fill="smooth")(
        torch.cat([filled, mask], dim=1))
    assert torch.allclose(output, filled.clamp(1e-3, 1 - 1e-3), atol=1e-5)


@pytest.mark.parametrize("network_class", [CompletionNetwork, InfillGenerator])
def test_a_grey_image_is_completed_in_grey_and_a_colour_one_in_colour(network_class):
    """Only the known pixels decide: the grey image's hole holds colour, and the mean-pixel fill puts more there."""
    torch.manual_seed(0)
    network = network_class(width=0.125).eval()
    grey, colour = torch.rand(1, 1, 32, 32).expand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    images, mask = torch.cat([grey, colour]), _square_hole(2, 32, 8, 12)
    images[0, :, 8:20, 8:20] = torch.rand(3, 12, 12)
    output = network(torch.cat([fill_holes(images, mask, torch.tensor([0.2, 0.5, 0.8])), mask], dim=1))
    assert torch.equal(output[0], output[0, :1].expand(3, -1, -1))
    assert (output[1] - output[1].mean(0)).abs().amax() > 1e-3


def test_states_load_into_a_network_of_their_kind_only():
    with_skips = CompletionNetwork(width=0.125, skips=True).state_dict()
    CompletionNetwork(width=0.125, skips=True).load_state_dict(with_skips)
    with pytest.raises(RuntimeError, match="size mismatch"):
        CompletionNetwork(width=0.125, skips=False).load_state_dict(with_skips)
