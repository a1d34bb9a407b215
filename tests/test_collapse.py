"""The collapse watch both training loops share."""
import pytest
import torch

from ganmodels.collapse import CollapseWatch, sample_diversity


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


