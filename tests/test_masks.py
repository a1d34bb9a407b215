import pytest
import torch

from ganmodels.glcic.config import CompletionTraining, ModelConfig, PhaseOptions
from ganmodels.glcic.networks import CompletionNetwork, complete
from ganmodels.masks import (MaskConfig, bounding_boxes, crop_patches, holes_to_mask, patch_origins, sample_holes,
                             sample_masks)


@pytest.mark.parametrize("size,hole_min,hole_max,hole_margin",
                         [(64, 0.25, 0.5, 0.0), (32, 0.1, 0.3, 0.2), (128, 0.375, 0.5, 0.1)])
def test_holes_stay_inside_the_placement_area_with_sizes_in_range(size, hole_min, hole_max, hole_margin):
    config = MaskConfig(image_size=size, hole_min=hole_min, hole_max=hole_max, hole_margin=hole_margin)
    holes = sample_holes(4000, config, torch.Generator().manual_seed(1))
    top, left, height, width = holes.T
    assert height.min() == config.min_pixels and height.max() == config.max_pixels
    assert width.min() == config.min_pixels and width.max() == config.max_pixels
    start, stop = config.area_start, config.area_start + config.area_size
    assert top.min() == start and left.min() == start  # the whole area is reachable ...
    assert (top + height).max() == stop and (left + width).max() == stop  # ... and never left
    mask = holes_to_mask(holes, size)
    assert torch.equal(mask.sum((1, 2, 3)), (height * width).float())
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[start:stop, start:stop] = False
    assert mask[:, 0, outside].sum() == 0


def test_mask_matches_a_per_image_loop():
    holes = sample_holes(16, MaskConfig(image_size=32), torch.Generator().manual_seed(0))
    expected = torch.zeros(16, 1, 32, 32)
    for i, (top, left, height, width) in enumerate(holes.tolist()):
        expected[i, 0, top:top + height, left:left + width] = 1
    assert torch.equal(holes_to_mask(holes, 32), expected)


def test_local_patches_contain_their_hole_and_match_slicing():
    config = MaskConfig(image_size=64, hole_min=0.25, hole_max=0.5)
    holes = sample_holes(64, config, torch.Generator().manual_seed(2))
    origins = patch_origins(holes, 64, 32)
    assert (origins >= 0).all() and (origins + 32 <= 64).all()
    assert (holes[:, :2] >= origins).all() and (holes[:, :2] + holes[:, 2:] <= origins + 32).all()
    images = torch.rand(64, 3, 64, 64)
    patches = crop_patches(images, origins, 32)
    for i, (top, left) in enumerate(origins.tolist()):
        assert torch.equal(patches[i], images[i, :, top:top + 32, left:left + 32])


def test_completion_keeps_known_pixels_exactly():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    mask = holes_to_mask(sample_holes(4, MaskConfig(image_size=32), torch.Generator().manual_seed(3)), 32)
    completed = complete(CompletionNetwork(width=0.125).eval(), images, mask, torch.tensor([0.4, 0.5, 0.6]))
    known = mask.expand_as(images) == 0
    assert torch.equal(completed[known], images[known])
    assert not torch.allclose(completed[~known], images[~known])


@pytest.mark.parametrize("make", [
    lambda: MaskConfig(image_size=64, hole_min=0.3, hole_max=0.2),
    lambda: MaskConfig(image_size=64, hole_max=0.6),
    lambda: MaskConfig(image_size=64, hole_max=0.5, hole_margin=0.3),
    lambda: ModelConfig(image_size=48),
    lambda: ModelConfig(image_size=64, arch="unet"),
    lambda: PhaseOptions.from_settings(4),
    lambda: CompletionTraining(phase1_steps=0),
    lambda: MaskConfig(image_size=64, mask_kind="circles"),
    lambda: MaskConfig(image_size=64, stroke_area_min=0.5, stroke_area_max=0.3),
    lambda: ModelConfig(image_size=64, upsample="bicubic"),
    lambda: CompletionTraining(loss="huber"),
    lambda: CompletionTraining(lr_final=2.0),
    lambda: CompletionTraining(max_zoom=0.5),
    lambda: PhaseOptions.from_settings(1, alpha=0.1),
])
def test_bad_values_raise_clear_errors(make):
    with pytest.raises(ValueError, match="must|need|do not fit|has no options"):
        make()


def _coverage(mask):
    return mask.flatten(1).mean(1)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_strokes_cover_the_drawn_share_of_the_image(size):
    config = MaskConfig(image_size=size, mask_kind="strokes", stroke_area_min=0.1, stroke_area_max=0.4)
    mask = sample_masks(2000, config, torch.Generator().manual_seed(0))[0]
    coverage = _coverage(mask)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert coverage.max() <= 0.4 and (coverage >= 0.1).float().mean() > 0.98
    # Spread over the whole range, not bunched at one end.
    assert coverage.quantile(0.1) < 0.2 and coverage.quantile(0.9) > 0.3


def test_masks_are_the_same_for_the_same_seed_and_differ_for_another():
    config = MaskConfig(image_size=32, mask_kind="mixed")
    first, boxes = sample_masks(64, config, torch.Generator().manual_seed(5))
    again, boxes_again = sample_masks(64, config, torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and torch.equal(boxes, boxes_again)
    assert not torch.equal(first, sample_masks(64, config, torch.Generator().manual_seed(6))[0])


@pytest.mark.parametrize("box_share", [0.5, 0.3, 0.0, 1.0])
def test_mixed_masks_are_boxes_in_the_share_asked_for_and_strokes_otherwise(box_share):
    config = MaskConfig(image_size=32, mask_kind="mixed", box_share=box_share)
    mask, _ = sample_masks(1000, config, torch.Generator().manual_seed(1))
    boxes = bounding_boxes(mask)
    box_area = (boxes[:, 2] * boxes[:, 3]).float() / 32 ** 2
    is_rectangle = torch.isclose(_coverage(mask), box_area)  # a mask that fills its bounding box
    assert abs(is_rectangle.float().mean() - box_share) < 0.06


def test_a_box_share_outside_zero_to_one_is_refused_by_name():
    with pytest.raises(ValueError, match="box_share must be in"):
        MaskConfig(image_size=32, box_share=1.5)


def test_bounding_boxes_are_tight_and_place_the_local_patch_on_the_strokes():
    mask, boxes = sample_masks(200, MaskConfig(image_size=64, mask_kind="strokes"), torch.Generator().manual_seed(2))
    for one, (top, left, height, width) in zip(mask[:, 0], boxes.tolist()):
        rows, cols = one.nonzero(as_tuple=True)
        assert (top, left) == (rows.min(), cols.min())
        assert (top + height - 1, left + width - 1) == (rows.max(), cols.max())
    origins = patch_origins(boxes, 64, 32)
    centres = boxes[:, :2] + boxes[:, 2:] // 2
    inside = (centres >= origins) & (centres < origins + 32)
    assert inside.all()
    assert torch.equal(bounding_boxes(torch.zeros(1, 1, 8, 8)), torch.zeros(1, 4, dtype=torch.long))
