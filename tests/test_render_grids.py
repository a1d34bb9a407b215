"""bench/render_grids.py: a trained run's fills next to Telea's, on its test images under the evaluation's masks."""
import os

import numpy as np
import torch
from PIL import Image

from bench import render_grids
from ganmodels.feeding import to_float
from ganmodels.glcic.config import PhaseOptions
from pipeline.artifacts.runs import checkpoint_path, find_run, model_state
from pipeline.evaluation import EVALUATION_KINDS, classical_inpaint, evaluation_masks
from pipeline.infill import Inpainter
from tests.conftest import TINY


def test_grids_show_the_evaluations_masks_telea_and_the_model_on_test_images(tiny_run_root, tmp_path):
    out = str(tmp_path / "grids")
    assert render_grids.main(["TrainInpainter", "--root", tiny_run_root, "--out", out, "--images", "3",
                              "--scale", "2", "--device", "cpu"]) == 0
    cell = TINY["image_size"] * 2
    for kind in EVALUATION_KINDS:
        with Image.open(os.path.join(out, f"{kind}.png")) as picture:
            width, height = picture.size
        assert width == render_grids.GAP + 4 * (cell + render_grids.GAP)
        assert height > 3 * (cell + render_grids.GAP)

    run = find_run(tiny_run_root, "TrainInpainter")
    state = model_state(checkpoint_path(tiny_run_root, "TrainInpainter"), torch.device("cpu"), "completion")
    test = render_grids.test_images(run)
    chosen = render_grids.spread(len(test), 3)
    assert chosen[0] == 0 and chosen[-1] == len(test) - 1 and len(chosen) == 3
    masks = evaluation_masks(len(test), PhaseOptions.from_dict(state["config"]).masks, "strokes",
                             int(run.parameters["eval_seed"]) + 1)[chosen]
    rows = render_grids.grid_rows(test[chosen], masks, Inpainter(state, torch.device("cpu")))
    telea = classical_inpaint(to_float(test[chosen], "cpu"), masks, "telea")
    for (with_hole, telea_fill, model_fill, original), image, mask, expected in zip(rows, test[chosen], masks, telea):
        holes = mask[0].bool().numpy()
        image = image.transpose(1, 2, 0)
        assert holes.any() and not holes.all()
        assert np.array_equal(original, image)
        assert (with_hole[holes] == 255).all() and np.array_equal(with_hole[~holes], image[~holes])
        assert np.array_equal(telea_fill, expected.mul(255).round().byte().permute(1, 2, 0).numpy())
        assert np.array_equal(model_fill[~holes], image[~holes])  # the known pixels come back unchanged
        assert not np.array_equal(model_fill[holes], telea_fill[holes])


def test_a_run_that_is_not_there_is_one_error_line(tmp_path, capsys):
    assert render_grids.main(["--root", str(tmp_path), "--out", str(tmp_path / "grids")]) == 2
    assert capsys.readouterr().err.startswith("error: no run under")
