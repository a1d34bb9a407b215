"""Sampling a trained DCGAN generator: slerp, latent tours, generation in eval mode."""
import pytest
import torch
from torch import nn

from ganmodels.dcgan.sampling import closed_tour, generate, latent_walks, slerp


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


def test_closed_tour_loops_back_through_its_keyframes():
    latents = closed_tour(n_keyframes=3, steps_between=4, latent_size=12, seed=7)
    assert latents.shape == (12, 12)
    keyframes = latents[::4]
    # The last segment heads from the last keyframe back to the first one.
    torch.testing.assert_close(latents[-1], slerp(keyframes[2], keyframes[0], 3 / 4))
    torch.testing.assert_close(latents[1], slerp(keyframes[0], keyframes[1], 1 / 4))
    assert torch.equal(closed_tour(3, 4, 12, seed=7), latents)


def test_closed_tour_refuses_a_single_keyframe():
    with pytest.raises(ValueError, match="n_keyframes"):
        closed_tour(n_keyframes=1, steps_between=4, latent_size=12, seed=0)


def test_generate_runs_in_eval_mode_gives_images_in_0_1_and_restores_the_mode():
    generator = LatentAsImage()
    images = generate(generator, torch.full((5, 12), 8.0), batch_size=2)
    assert images.shape == (5, 3, 2, 2) and torch.equal(images, torch.ones(5, 3, 2, 2))
    assert generator.modes_seen == {False} and generator.training


def test_latent_walks_give_rows_of_steps_and_need_two_steps():
    walks = latent_walks(3, 5, 8, torch.Generator().manual_seed(0)).view(3, 5, 8)
    ends = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(walks[:, 0], ends[0])
    torch.testing.assert_close(walks[:, -1], ends[1])
    assert walks.isfinite().all()
    with pytest.raises(ValueError, match="at least 2 steps"):
        latent_walks(3, 1, 8, torch.Generator())


def test_generate_maps_tanh_output_to_unit_range_batch_by_batch():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 3 * 2 * 2), nn.BatchNorm1d(12), nn.Unflatten(1, (3, 2, 2)), nn.Tanh())
    latents = torch.randn(10, 4) * 5
    images = generate(generator, latents, batch_size=3)
    assert images.shape == (10, 3, 2, 2) and images.min() >= 0 and images.max() <= 1
    assert generator.training  # given back its mode; it ran in eval mode, so the batch split does not matter
    assert torch.allclose(images, generate(generator, latents, batch_size=10))
