"""TensorBoard event files of the training runs, read back with TensorBoard's own reader."""
import io
import os

from PIL import Image

from pipeline.artifacts import storage
from pipeline.training.loops import GRID_TAG
from tests.conftest import logged_steps, read_events
from tests.test_cli import run_name

# The TINY chain: (log rows, grids at each checkpoint and at the end) of each phase.
PHASES = {"PretrainCompletion": ([2, 4, 6], [3, 6], ["loss_rec", "lr_completion"]),
          "PretrainDiscriminator": ([2, 3], [3], ["loss_d", "d_real", "d_fake", "lr_discriminator"]),
          "TrainJoint": ([2, 4], [3, 4], ["loss_rec", "loss_d", "loss_adv", "d_real", "d_fake", "lr_completion",
                                          "lr_discriminator"])}
EVERY_ROW = ["images_per_s", "data_wait"]


def test_every_phase_logs_its_rows_and_fixed_mask_grids_into_its_task_directory(tiny_run_root):
    for family, (rows, grids, losses) in PHASES.items():
        directory = os.path.join(tiny_run_root, run_name(tiny_run_root, family))
        manifest = storage.read_manifest(directory)
        event_files = [name for name in manifest["files"] if name.startswith("tensorboard/events.out.tfevents.")]
        assert len(event_files) == 1, family  # recorded with the task's other files
        events = read_events(os.path.join(directory, "tensorboard"))
        assert sorted(events.Tags()["scalars"]) == sorted(losses + EVERY_ROW), family
        for tag in losses + EVERY_ROW:
            assert logged_steps(events, tag) == rows, (family, tag)
        assert events.Tags()["images"] == [GRID_TAG]
        assert logged_steps(events, GRID_TAG, "Images") == grids, family
        last = Image.open(io.BytesIO(events.Images(GRID_TAG)[-1].encoded_image_string))
        assert last.size[0] == 3 * 34 + 2 and last.size[1] > 34  # masked input | completion | original, 32 px
