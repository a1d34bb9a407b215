"""Scoring fills per mask kind and hole-area bucket, with the realism measures and the optional weighted ones."""
import logging

import luigi
import pytest
import torch
from luigi.task_register import Register

from ganmodels.masks import MaskConfig, bounding_boxes
from pipeline import evaluation
from pipeline.datasets.registry import scoring_subset
from pipeline.evaluation import (area_bucket, evaluate_fills, evaluate_sizes, evaluation_masks, summarise, summarise_sizes,
                                 weighted_measures)

SIZE = 32


def _shards(count=48, seed=0):
    """uint8 shards of smooth images with stripes, in two pieces as PrepareImages leaves them."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 4, 4, generator=generator)
    images = torch.nn.functional.interpolate(low, size=SIZE, mode="bicubic", align_corners=False)
    images = images + 0.3 * (torch.arange(SIZE) // 2 % 2).float()
    pixels = images.clamp(0, 1).mul(255).round().byte().numpy()
    return [pixels[: count // 2], pixels[count // 2:]]


FILLS = {"perfect": lambda images, mask: images,
         "grey": lambda images, mask: torch.lerp(images, torch.full_like(images, 0.5), mask)}


@pytest.fixture(scope="module")
def scored():
    return evaluate_fills(_shards(), FILLS, MaskConfig(image_size=SIZE), seed=3, batch_size=20)


def test_every_fill_is_scored_on_every_image_under_each_kind(scored):
    per_image, realism = scored
    assert len(per_image) == 2 * 2 * 48
    assert set(per_image["kind"]) == {"box", "strokes"} and set(per_image["method"]) == set(FILLS)
    assert sorted(per_image.groupby(["method", "kind"])["image"].apply(list).iloc[0]) == list(range(48))
    perfect = per_image[per_image["method"] == "perfect"]
    assert (perfect["psnr_hole"] >= 99).all() and (perfect["l1_hole"] == 0).all()
    grey = per_image[per_image["method"] == "grey"]
    assert (grey["psnr_hole"] < 30).all()
    # The same masks for every method: the areas agree image by image.
    areas = per_image.pivot_table(index=["kind", "image"], columns="method", values="area")
    assert (areas["perfect"] == areas["grey"]).all()


def test_realism_measures_tell_the_real_holes_from_a_grey_fill(scored):
    _, realism = scored
    table = realism.set_index(["method", "kind"])
    for kind in ("box", "strokes"):
        assert table.loc[("perfect", kind), "swd_hole"] == 0 and table.loc[("perfect", kind), "c2st_accuracy"] == 0.5
        assert table.loc[("grey", kind), "swd_hole"] > 10 and table.loc[("grey", kind), "c2st_accuracy"] > 0.8


def test_the_same_seed_gives_the_same_numbers(scored):
    again = evaluate_fills(_shards(), FILLS, MaskConfig(image_size=SIZE), seed=3, batch_size=48)
    assert scored[0].equals(again[0]) and scored[1].equals(again[1])


def test_summary_holds_every_method_overall_per_kind_and_per_area_bucket(scored):
    summary = summarise(*scored)
    assert summary["n_images"] == 48
    assert set(summary["methods"]) == set(FILLS)
    assert set(summary["methods"]["grey"]) == {"psnr_hole", "l1_hole", "ssim", "border_error", "swd_hole",
                                               "c2st_accuracy"}
    assert set(summary["by_kind"]) == {"box", "strokes"}
    for kind, buckets in summary["by_area"].items():
        assert sum(values["perfect"]["n"] for values in buckets.values()) == 48
        assert all(bucket in ("0-10%", "10-20%", "20-30%", "30-40%", "40-50%") for bucket in buckets)


def test_area_buckets():
    assert [area_bucket(a) for a in (0.0, 0.099, 0.1, 0.35, 0.49, 0.5, 0.7)] == [
        "0-10%", "0-10%", "10-20%", "30-40%", "40-50%", ">50%", ">50%"]


def test_evaluation_boxes_are_squares_and_strokes_cover_their_share():
    config = MaskConfig(image_size=64, hole_min=0.25, hole_max=0.5, stroke_area_min=0.1, stroke_area_max=0.4)
    boxes = bounding_boxes(evaluation_masks(500, config, "box", seed=0))
    assert torch.equal(boxes[:, 2], boxes[:, 3]) and boxes[:, 2].min() >= 16 and boxes[:, 2].max() <= 32
    coverage = evaluation_masks(500, config, "strokes", seed=0).flatten(1).mean(1)
    assert coverage.max() <= 0.4 and coverage.min() > 0.05
    assert torch.equal(evaluation_masks(8, config, "strokes", seed=1), evaluation_masks(8, config, "strokes", seed=1))


@pytest.fixture
def evaluation_settings():
    config = luigi.configuration.get_config()
    if not config.has_section("evaluation"):
        config.add_section("evaluation")

    def configure(**values):
        for key, value in values.items():
            config.set("evaluation", key, value)
        Register.clear_instance_cache()

    yield configure
    config.remove_section("evaluation")
    Register.clear_instance_cache()


def test_weighted_measures_are_skipped_with_a_line_each_when_their_weights_are_not_here(
        evaluation_settings, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        assert weighted_measures() == {}
    lines = [record.getMessage() for record in caplog.records]
    assert any("FID skipped" in line and "fid_inception_weights" in line for line in lines)
    assert any("LPIPS skipped" in line and "lpips_torch_home" in line for line in lines)
    caplog.clear()
    missing = str(tmp_path / "nowhere.pth")
    evaluation_settings(fid_inception_weights=missing)
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        assert weighted_measures() == {}
    assert any(f"FID skipped: {missing}" in record.getMessage() for record in caplog.records)


def test_weighted_measures_with_their_files_join_the_realism_table(evaluation_settings, tmp_path, monkeypatch):
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"stand-in")
    backbone = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    backbone.parent.mkdir(parents=True)
    backbone.write_bytes(b"stand-in")
    evaluation_settings(fid_inception_weights=str(weights), lpips_torch_home=str(tmp_path / "torch"))
    built = {}

    class StandIn:  # the networks need the real weights; what matters here is where their scores go
        def __init__(self, source):
            built[type(self).__name__ + str(len(built))] = source

        def __call__(self, real, completed):
            return float((real - completed).abs().mean())

    monkeypatch.setattr(evaluation, "FidMeasure", StandIn)
    monkeypatch.setattr(evaluation, "LpipsMeasure", StandIn)
    measures = {name: make() for name, make in weighted_measures().items()}
    assert set(measures) == {"fid", "lpips"} and sorted(built.values()) == sorted([str(weights), str(tmp_path / "torch")])
    _, realism = evaluate_fills(_shards(16), FILLS, MaskConfig(image_size=SIZE), seed=0, measures=measures)
    table = realism.set_index(["method", "kind"])
    assert (table.loc["perfect", ["fid", "lpips"]] == 0).all().all() and (table.loc["grey", "fid"] > 0).all()
    assert set(summarise(*evaluate_fills(_shards(16), FILLS, MaskConfig(image_size=SIZE), 0, measures=measures))
               ["methods"]["grey"]) >= {"fid", "lpips"}


def test_the_scoring_subset_is_fixed_by_the_paths_and_adding_files_changes_few():
    paths = [f"img-{index:03d}.png" for index in range(50)]
    chosen = scoring_subset(paths[::-1], 10)
    assert chosen == sorted(chosen) and len(set(chosen)) == 10 and set(chosen) <= set(paths)
    assert scoring_subset(paths, 10) == chosen and scoring_subset(paths, 80) == paths
    grown = scoring_subset(paths + [f"new-{index:03d}.png" for index in range(5)], 10)
    assert len(set(grown) & set(chosen)) >= 5


def test_every_size_is_scored_with_holes_that_grow_with_the_image_and_smaller_sources_counted():
    small = _shards(16)[0]
    larger = torch.nn.functional.interpolate(torch.from_numpy(small).float(), size=64, mode="bilinear").round().byte()
    sets = {SIZE: {SIZE: small}, 64: {SIZE: small[:4], 64: larger.numpy()[4:]}}
    per_image, realism = evaluate_sizes(sets, FILLS, MaskConfig(image_size=SIZE), seed=3, batch_size=5)
    at_64 = per_image[(per_image["size"] == 64) & (per_image["method"] == "grey")]
    assert sorted(at_64["image"].unique()) == list(range(8))
    # The same fractions of the image: the holes' shares agree across sides.
    for kind in ("box", "strokes"):
        shares = at_64[at_64["kind"] == kind].groupby("side")["area"].mean()
        assert shares[SIZE] > 0.05 and shares[64] > 0.05
    assert set(realism["n"]) == {4, 8}
    summary = summarise_sizes(per_image, realism, training_size=SIZE)
    assert summary["image_size"] == SIZE and set(summary["sizes"]) == {str(SIZE), "64"}
    assert summary["by_kind"] == summary["sizes"][str(SIZE)]["by_kind"]
    assert summary["sizes"]["64"]["n_images"] == 8 and summary["sizes"]["64"]["n_at_own_size"] == 4
    assert summary["sizes"][str(SIZE)]["n_at_own_size"] == 0
    # A size's realism is the mean over its sides, weighted by their images.
    rows = realism[(realism["size"] == 64) & (realism["method"] == "grey") & (realism["kind"] == "box")]
    expected = (rows["swd_hole"] * rows["n"]).sum() / rows["n"].sum()
    assert summary["sizes"]["64"]["by_kind"]["box"]["grey"]["swd_hole"] == pytest.approx(expected)
