"""The task chain end to end at tiny size, in-process and through the luigi command."""
import json
import os

import luigi
import numpy as np
import pandas as pd
from luigi.task_register import Register
from PIL import Image

import pipeline
from pipeline import storage
from pipeline.base import ArtifactTask
from pipeline.imagefiles import decode_image
from tests.conftest import TINY, cli_args, kill_after_first_checkpoint, make_images, resumed_steps, run_luigi, write_config


def _build(**params):
    task = pipeline.TrainInpainter(source=params.pop("source"), **{**TINY, **params})
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    return task, result


def _shards(task):
    return next(t for t in _all_tasks(task) if t.get_task_family() == "PrepareImages")


def _all_tasks(task):
    found = {task}
    for upstream in task.upstream():
        found |= _all_tasks(upstream)
    return found


def test_chain_end_to_end_writes_grids_metrics_and_manifests(artifact_root, image_folder):
    task, result = _build(source=image_folder)
    assert result.scheduling_succeeded and task.complete()
    tasks = _all_tasks(task)
    assert {t.get_task_family() for t in tasks} == {
        "PrepareImages", "PretrainCompletion", "PretrainDiscriminator", "TrainJoint",
        "RenderEvalGrid", "EvaluateInpainter", "TrainInpainter"}
    assert len({t.directory for t in tasks}) == len(tasks) == 9  # three grids, one per phase

    for t in tasks:
        manifest = storage.read_json(t.path("manifest.json"))
        assert manifest["task_family"] == t.get_task_family()
        assert manifest["upstream"] == {u.task_id: u.directory for u in t.upstream()}
        assert manifest["packages"]["torch"] and manifest["started"] <= manifest["finished"]
        for name, info in manifest["files"].items():  # every file is listed with its true size and hash
            assert storage.sha256_of(t.path(name)) == (info["size"], info["sha256"])
        assert set(manifest["files"]) == set(storage.list_files(t.directory)) - {"manifest.json"}

    summary = storage.read_json(task.path("result.json"))
    assert set(summary["metrics_summary"]["methods"]) == {"model", "mean_fill", "telea", "navier_stokes"}
    shown = storage.read_json(os.path.join(os.path.dirname(summary["grids"]["phase1"]), "manifest.json"))
    assert shown["summary"]["images"] == min(TINY["grid_images"], sum(map(len, _shards(task).split_arrays("val"))))
    for phase in (1, 2, 3):
        grid = Image.open(summary["grids"][f"phase{phase}"])
        assert grid.size == (3 * 34 + 2, shown["summary"]["images"] * 34 + 2)  # 3 columns of 32 px, 2 px padding
    joint = storage.read_json(os.path.join(os.path.dirname(summary["checkpoint"]), "manifest.json"))
    assert joint["config"]["phase"]["steps"] == TINY["phase3_steps"]
    assert joint["config"]["model"] == {"arch": "glcic", "image_size": 32, "width": 0.125}


def test_rerunning_a_complete_chain_runs_nothing(artifact_root, image_folder, monkeypatch):
    _build(source=image_folder)

    def must_not_run(self):
        raise AssertionError(f"{self.get_task_family()} ran again")

    monkeypatch.setattr(ArtifactTask, "build", must_not_run)
    task, result = _build(source=image_folder)
    assert result.scheduling_succeeded and task.complete()


def test_a_parameter_change_makes_new_directories_downstream_only(artifact_root, image_folder):
    first, _ = _build(source=image_folder)
    second, _ = _build(source=image_folder, phase3_steps=5)
    families = lambda task: {t.get_task_family() + (str(getattr(t, "phase", "")) if t.get_task_family() == "RenderEvalGrid" else ""): t.directory
                             for t in _all_tasks(task)}
    before, after = families(first), families(second)
    unchanged = {"PrepareImages", "PretrainCompletion", "PretrainDiscriminator"}
    for family in before:
        if family in unchanged:
            assert before[family] == after[family], family
        else:
            assert before[family] != after[family], family
            assert os.path.exists(os.path.join(before[family], "manifest.json"))  # the old run is kept
    # upstream changes propagate: a new image size changes every directory
    third, _ = _build(source=image_folder, image_size=16, hole_max=0.5)
    assert not set(families(third).values()) & set(after.values())


def test_added_files_make_a_new_run_and_old_files_keep_their_split(artifact_root, tmp_path):
    source = make_images(str(tmp_path / "grow"), 40)
    first = pipeline.PrepareImages(dataset="folder", source=source, image_size=16, decode_workers=1)
    assert luigi.build([first], local_scheduler=True, log_level="WARNING")
    make_images(source, 30, seed=7, prefix="added")
    Register.clear_instance_cache()
    second = pipeline.PrepareImages(dataset="folder", source=source, image_size=16, decode_workers=2)
    assert second.directory != first.directory and not second.complete()
    assert luigi.build([second], local_scheduler=True, log_level="WARNING")
    old = pd.read_csv(first.path("images.csv")).set_index("relative_path")["split"]
    new = pd.read_csv(second.path("images.csv")).set_index("relative_path")["split"]
    assert len(old) == 40 and len(new) == 70
    assert (new.loc[old.index] == old).all()
    assert set(new) == {"train", "val", "test"}


def test_rejected_files_are_listed_with_a_reason(artifact_root, tmp_path):
    source = make_images(str(tmp_path / "mixed"), 20)
    open(os.path.join(source, "notes.txt"), "w").write("not an image")
    open(os.path.join(source, "empty.png"), "wb").close()
    task = pipeline.PrepareImages(dataset="folder", source=source, image_size=16, decode_workers=1)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    rejected = pd.read_csv(task.path("rejected.csv")).set_index("relative_path")["reason"]
    assert set(rejected.index) == {"notes.txt", "empty.png"} and all(rejected.str.len() > 0)
    summary = storage.read_json(task.path("manifest.json"))["summary"]
    assert (summary["kept"], summary["rejected"]) == (20, 2)


def test_shards_hold_every_kept_image_in_path_order_and_the_train_mean(artifact_root, image_folder):
    shards = pipeline.PrepareImages(dataset="folder", source=image_folder, image_size=16, shard_size=7, decode_workers=2)
    assert luigi.build([shards], local_scheduler=True, log_level="WARNING")
    arrays = {split: shards.split_arrays(split) for split in ("train", "val", "test")}
    assert all(a.dtype == np.uint8 and a.shape[1:] == (3, 16, 16) for s in arrays.values() for a in s)
    assert all(len(a) == 7 for s in arrays.values() for a in s[:-1])  # only a split's last shard is short
    table = pd.read_csv(shards.path("images.csv"))
    assert len(table) == sum(len(a) for split in arrays.values() for a in split) == 60
    for split, rows in table.groupby("split", sort=False):
        assert list(rows["relative_path"]) == sorted(rows["relative_path"])
        stored = np.concatenate(arrays[split])
        for position, (path, shard, row) in enumerate(zip(rows["relative_path"], rows["shard"], rows["row"])):
            assert shards.path(shard) == shards.split_paths(split)[position // 7] and row == position % 7
            with open(os.path.join(image_folder, path), "rb") as file:
                expected = decode_image(file.read(), 16, 10**8).transpose(2, 0, 1)
            assert np.array_equal(stored[position], expected), path
    train = np.concatenate(arrays["train"])
    assert np.allclose(shards.mean_pixel(), train.mean(axis=(0, 2, 3)) / 255)


def test_failed_task_makes_the_command_exit_non_zero(tmp_path):
    config = write_config(tmp_path)
    result = run_luigi(config, "TrainInpainter", *cli_args(dataset="folder", source=str(tmp_path / "missing")))
    assert result.returncode == 30, result.stdout[-2000:] + result.stderr[-2000:]
    assert "dataset=folder needs source=" in result.stdout + result.stderr


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    source = make_images(str(tmp_path / "source"), 40)
    config = write_config(tmp_path)
    args = ["PretrainCompletion", *cli_args(dataset="folder", source=source, image_size=32, width=0.125,
                                            batch_size=4, phase1_steps=400, checkpoint_every=20, log_every=20,
                                            decode_workers=1)]
    task_dir = kill_after_first_checkpoint(config, args, tmp_path, "PretrainCompletion")

    result = run_luigi(config, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    resumed_at = resumed_steps(log)
    assert resumed_at and resumed_at[0] >= 20, log[-3000:]
    assert f"step {resumed_at[0] - 20}/400" not in log  # no step before the checkpoint was trained again
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert manifest["summary"]["steps"] == 400
