"""TrainDCGAN at 32 px on generated images: artifacts, resume after a kill, the collapse watch."""
import io
import json
import logging
import os

import luigi
import pandas as pd
import pytest
import torch
from PIL import Image

import pipeline
from ganmodels.dcgan.sampling import generator_from_state
from pipeline.artifacts import storage
from pipeline.artifacts.checkpoints import list_checkpoints, load_state
from pipeline.errors import explain
from pipeline.training.loops import SAMPLES_TAG
from tests.conftest import (cli_args, kill_after_first_checkpoint, logged_steps, make_images, read_events,
                            resumed_steps, run_luigi, write_config)

DATA = dict(dataset="folder", image_size=32, shard_size=16, decode_workers=1)
TINY = dict(**DATA, base_channels=4, latent_size=8, batch_size=4, fixed_latent_count=4, sample_count=6,
            walk_keyframes=2, walk_frames_between=3)
METRIC_COLUMNS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g", "grad_norm_d", "diversity",
                  "images_per_s", "data_wait"]


def _build(task):
    return luigi.build([task], local_scheduler=True, log_level="WARNING")


def _split_counts(task) -> dict:
    return storage.read_json(task.requires().path("manifest.json"))["summary"]["split_counts"]


def test_training_writes_every_artifact(artifact_root, image_folder):
    task = pipeline.TrainDCGAN(source=image_folder, **TINY, steps=7, snapshot_every=3, log_every=2,
                               checkpoint_every=3, ema_decay=0.9)
    assert _build(task) and task.complete()

    manifest = storage.read_json(task.path("manifest.json"))
    assert manifest["config"]["training"]["latent_size"] == 8 and manifest["summary"]["steps"] == 7
    assert storage.read_json(task.path("training_options.json")) == manifest["config"]
    summary = manifest["summary"]  # samples against the held-out val and test images, next to the floor
    held_out = sum(manifest_counts for split, manifest_counts in _split_counts(task).items() if split != "train")
    assert summary["swd_images"] == held_out and summary["swd_samples"] > summary["swd_train_images"] > 0
    event_files = {name for name in manifest["files"] if name.startswith("tensorboard/")}
    assert len(event_files) == 1
    assert set(manifest["files"]) - event_files == {
        "model.pt", "training_options.json", "metrics.csv", "loss_curves.png", "progress.gif", "latent_walk.gif",
        "samples.png", "snapshots/step-0000003.png", "snapshots/step-0000006.png", "snapshots/step-0000007.png",
        "checkpoints/step-0000003.pt", "checkpoints/step-0000006.pt",  # keep_checkpoints=2
        "checkpoints/step-0000003.pt.sha256", "checkpoints/step-0000006.pt.sha256", ".task.json"}

    metrics = pd.read_csv(task.path("metrics.csv"))
    assert list(metrics.columns) == METRIC_COLUMNS and list(metrics["step"]) == [2, 4, 6]
    assert metrics.notna().all().all()
    assert Image.open(task.path("loss_curves.png")).format == "PNG"

    grid_side = 2 * 34 + 2  # 4 latents in a 2x2 grid of 32 px images with 2 px borders
    for name in ("snapshots/step-0000003.png", "snapshots/step-0000007.png"):
        assert Image.open(task.path(name)).size == (grid_side, grid_side)
    progress = Image.open(task.path("progress.gif"))
    assert progress.n_frames == 3 and progress.size == (grid_side, grid_side)
    walk = Image.open(task.path("latent_walk.gif"))
    assert walk.n_frames == 2 * 3 and walk.size == (32, 32) and walk.info["loop"] == 0
    assert Image.open(task.path("samples.png")).size == (3 * 34 + 2, 2 * 34 + 2)  # 6 samples, 3 per row

    events = read_events(task.path("tensorboard"))
    assert sorted(events.Tags()["scalars"]) == sorted(METRIC_COLUMNS[1:] + ["lr"])
    assert all(logged_steps(events, tag) == [2, 4, 6] for tag in events.Tags()["scalars"])
    assert logged_steps(events, SAMPLES_TAG, "Images") == [3, 6, 7]
    assert Image.open(io.BytesIO(events.Images(SAMPLES_TAG)[-1].encoded_image_string)).size == (grid_side, grid_side)

    state = load_state(task.path("model.pt"))
    assert state["step"] == 7 and "ema_generator" in state["networks"]
    generator = generator_from_state(state)
    with torch.no_grad():
        last_grid = generator(state["fixed_latents"])
    assert last_grid.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("params, message", [
    (dict(image_size=48), "image_size must be one of"),
    (dict(label_flip_prob=0.6), "label_flip_prob"),
    (dict(walk_keyframes=1), "walk_keyframes"),
])
def test_bad_parameters_are_refused_before_anything_runs(artifact_root, params, message):
    with pytest.raises(Exception) as refused:
        pipeline.TrainDCGAN(**{**TINY, "source": "unused", **params})
    assert message in (explain(refused.value) or "")  # a user's error: one `error:` line, no traceback


def test_collapse_stop_fails_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        artifact_root, image_folder, caplog):
    # The tiny networks' discriminator soon pays less than the 0.7 floor on these few images.
    task = pipeline.TrainDCGAN(source=image_folder, **{**TINY, "batch_size": 16}, steps=1000, log_every=5,
                               checkpoint_every=10, snapshot_every=10, collapse_window=3,
                               collapse_diversity_floor=0, on_collapse="stop")
    with caplog.at_level(logging.ERROR, logger="luigi-interface"):
        assert not _build(task)

    # The stop is explained: luigi's failure record becomes one `error:` line without a traceback.
    failures = [record for record in caplog.records if record.levelname == "error"]
    assert len(failures) == 1 and not failures[0].exc_info, caplog.text[-3000:]
    message = failures[0].getMessage()
    assert message.startswith("TrainDCGAN stopped by the collapse watch (on_collapse=stop)")
    metrics = pd.read_csv(task.path("metrics.csv"))
    stop_step = int(metrics["step"].iloc[-1])
    assert stop_step < 1000 and f"collapse at step {stop_step}: discriminator loss below 0.7" in message
    assert (metrics["loss_d"].tail(3) < 0.7).all()
    (kept_step, kept_name), = list_checkpoints(task.directory)[-1:]
    assert kept_step < stop_step and task.path(kept_name) in message and "on_collapse=warn" in message
    assert load_state(task.path(kept_name))["step"] == kept_step
    assert not task.complete() and not os.path.exists(task.path("model.pt"))
    assert os.path.exists(task.path("loss_curves.png"))


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    source = make_images(str(tmp_path / "source"), 40)
    config = write_config(tmp_path)
    steps, every = 300, 20
    args = ["TrainDCGAN", *cli_args(source=source, **TINY, steps=steps, checkpoint_every=every, log_every=every,
                                     snapshot_every=every * 5)]
    task_dir = kill_after_first_checkpoint(config, args, tmp_path, "TrainDCGAN")

    result = run_luigi(config, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    resumed_at = resumed_steps(log)
    assert resumed_at and resumed_at[0] >= every, log[-3000:]
    assert f"step {resumed_at[0]}/{steps}" not in log  # no step up to the checkpoint was trained again
    assert f"step {resumed_at[0] + every}/{steps}" in log
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert manifest["summary"]["steps"] == steps
    # The rows logged before the kill came back with the checkpoint: the CSV covers the whole run once.
    assert list(pd.read_csv(task_dir / "metrics.csv")["step"]) == list(range(every, steps + 1, every))
    assert Image.open(task_dir / "progress.gif").n_frames == steps // (every * 5)
    # Both attempts wrote events; TensorBoard shows each step once, those after the kill's checkpoint from the second.
    assert len(os.listdir(task_dir / "tensorboard")) == 2
    events = read_events(task_dir / "tensorboard")
    assert logged_steps(events, "loss_d") == list(range(every, steps + 1, every))
    assert logged_steps(events, SAMPLES_TAG, "Images") == list(range(every * 5, steps + 1, every * 5))
