"""The task chain end to end at tiny size, in-process and through the luigi command."""
import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import traceback

import botocore.exceptions
import luigi
import numpy as np
import pandas as pd
import pytest
from luigi.task_register import Register
from PIL import Image

from ganmodels.options import OptionError
import pipeline
from pipeline.artifacts import storage
from pipeline.artifacts.checkpoints import list_checkpoints, recorded_checksum
from pipeline.errors import OneLineErrors, UserError, explain, explained_as_user_errors
from pipeline.ingestion.decode import decode_image
from pipeline.tasks.base import ArtifactTask
from pipeline.training.loops import GRID_TAG
from tests.conftest import (TINY, cli_args, flip_tensor_byte, kill_after_first_checkpoint, logged_steps, make_images,
                            read_events, resumed_steps, run_luigi, write_config)


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
    methods = {"model", "mean_fill", "telea", "navier_stokes"}
    evaluation = summary["metrics_summary"]
    assert set(evaluation["methods"]) == methods and set(evaluation["by_kind"]) == {"box", "strokes"}
    for kind in ("box", "strokes"):  # every method with the pixel and the realism measures, per kind and area
        assert set(evaluation["by_kind"][kind]) == methods
        assert set(evaluation["by_kind"][kind]["model"]) == {"psnr_hole", "l1_hole", "ssim", "border_error",
                                                             "swd_hole", "c2st_accuracy"}
        buckets = evaluation["by_area"][kind]
        assert sum(values["model"]["n"] for values in buckets.values()) == evaluation["n_images"]
    # Scored at the training size and at eval_sizes, on the same test images.
    assert evaluation["image_size"] == 32 and set(evaluation["sizes"]) == {"32", "40"}
    assert evaluation["sizes"]["32"]["by_kind"] == evaluation["by_kind"]
    assert evaluation["sizes"]["40"]["n_images"] == evaluation["n_images"]
    assert evaluation["sizes"]["40"]["n_at_own_size"] == 0
    shown = storage.read_json(os.path.join(os.path.dirname(summary["grids"]["phase1"]), "manifest.json"))
    assert shown["summary"]["images"] == min(TINY["grid_images"], sum(map(len, _shards(task).split_arrays("val"))))
    for phase in (1, 2, 3):
        grid = Image.open(summary["grids"][f"phase{phase}"])
        # 3 columns of 32 px, 2 px padding; each image once under a box and once under strokes
        assert grid.size == (3 * 34 + 2, 2 * shown["summary"]["images"] * 34 + 2)
    joint = storage.read_json(os.path.join(os.path.dirname(summary["checkpoint"]), "manifest.json"))
    assert joint["config"] == storage.read_json(os.path.join(os.path.dirname(summary["checkpoint"]),
                                                             "training_options.json"))
    assert joint["config"]["training"]["joint"]["phase3_steps"] == TINY["phase3_steps"]
    assert joint["config"]["training"]["model"] == {"arch": "glcic", "image_size": 32, "width": 0.125, "upsample": "resize",
                                        "skips": True, "hole_fill": "harmonic"}


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


def test_held_out_images_are_kept_at_each_scoring_size_and_never_upscaled(artifact_root, image_folder):
    shards = pipeline.PrepareImages(dataset="folder", source=image_folder, image_size=16, eval_sizes=[24, 64],
                                    eval_images=3, shard_size=7, decode_workers=2)
    assert luigi.build([shards], local_scheduler=True, log_level="WARNING")
    assert shards.scoring_sizes() == [16, 24, 64]
    table = pd.read_csv(shards.path("images.csv"))
    chosen = shards.scoring_files("test")
    assert len(chosen) == 3 and set(chosen) < set(table.loc[table["split"] == "test", "relative_path"])
    for size, side in ((16, 16), (24, 24), (64, 48)):  # the sources are 48 px: scored at their own size at 64
        groups = shards.scoring_images("test", size)
        assert list(groups) == [side]
        paths, images = groups[side]
        assert paths == chosen and images.shape == (3, 3, side, side)
        for path, image in zip(paths, images):
            with open(os.path.join(image_folder, path), "rb") as file:
                assert np.array_equal(image, decode_image(file.read(), side, 10**8).transpose(2, 0, 1)), path
    scoring = pd.read_csv(shards.path("scoring_images.csv"))
    assert set(scoring["size"]) == {24, 64}
    for split in ("val", "test"):  # eval_images of each held-out split, at each larger size
        assert sorted(scoring.loc[scoring["split"] == split, "relative_path"]) == sorted(shards.scoring_files(split) * 2)


@pytest.mark.parametrize("parameters, in_config, status, message", [
    # run() fails: a task failed, status [retcode] task_failed
    ({"dataset": "folder", "source": "{tmp}/missing"}, False, 30,
     "dataset=folder needs source= an existing directory of images, got '{tmp}/missing'"),
    # an upstream task's option is refused while the tasks are scheduled: scheduling_error
    ({"alpha": -1}, False, 35, "alpha must be >= 0, got -1.0"),
    # the command line's own task cannot be built: unhandled_exception
    ({"image_size": "abc"}, False, 40, "bad value for image_size: invalid literal for int() with base 10: 'abc'"),
    ({"upsample": "bilinear"}, False, 40, "bad value for upsample: bilinear is not a valid choice from"),
    ({"lr_completion": "fast"}, True, 40, "bad value for lr_completion: could not convert string to float: 'fast'"),
])
def test_a_users_mistake_is_one_error_line_and_a_non_zero_exit(tmp_path, parameters, in_config, status, message):
    parameters = {name: str(value).format(tmp=tmp_path) for name, value in parameters.items()}
    if in_config:  # [TrainInpainter] in luigi.cfg rather than on the command line
        result = run_luigi(write_config(tmp_path, TrainInpainter=parameters), "TrainInpainter")
    else:
        result = run_luigi(write_config(tmp_path), "TrainInpainter", *cli_args(**parameters))
    output = result.stdout + result.stderr
    assert result.returncode == status, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message.format(tmp=tmp_path)}"), output[-3000:]
    assert "Traceback" not in output


def _luigi_record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error else None
    return logging.LogRecord("luigi-interface", logging.ERROR, __file__, 1, message, (), exc_info)


def _traceback_of(error: Exception, explained: bool) -> str:
    """The traceback text luigi logs for an error in complete() (it keeps no exception object)."""
    try:
        with contextlib.ExitStack() as stack:
            if explained:
                stack.enter_context(explained_as_user_errors())
            raise error
    except Exception:
        return traceback.format_exc()


def test_only_explained_errors_lose_their_traceback():
    def shown(record: logging.LogRecord) -> str:
        assert OneLineErrors().filter(record)
        return logging.Formatter("%(levelname)s: %(message)s").format(record)

    assert shown(_luigi_record("failed", OptionError("alpha must be >= 0, got -1.0"))) == \
        "error: alpha must be >= 0, got -1.0"
    assert shown(_luigi_record("Will not run TrainInpainter(...) due to error in complete() method:\n" +
                               _traceback_of(botocore.exceptions.NoCredentialsError(), explained=True))) == \
        "error: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use ~/.aws/credentials"
    # A bug keeps its traceback, whether luigi logs the exception or its text.
    try:
        {}["missing"]
    except KeyError as error:
        bug = shown(_luigi_record("failed", error))
    assert bug.startswith("ERROR: failed\nTraceback (most recent call last)") and "KeyError: 'missing'" in bug
    text = _traceback_of(KeyError("missing"), explained=True)
    assert shown(_luigi_record("Will not run X:\n" + text)) == "ERROR: Will not run X:\n" + text
    try:  # a bug while handling a user's error is still a bug
        try:
            raise UserError("refused")
        except UserError:
            {}["missing"]
    except KeyError:
        chained = traceback.format_exc()
    assert shown(_luigi_record("Will not run X:\n" + chained)) == "ERROR: Will not run X:\n" + chained


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    source = make_images(str(tmp_path / "source"), 40)
    config = write_config(tmp_path)
    args = ["PretrainCompletion", *cli_args(dataset="folder", source=source, image_size=32, width=0.125,
                                            batch_size=4, phase1_steps=400, checkpoint_every=20, log_every=20,
                                            decode_workers=1)]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    task_dir = kill_after_first_checkpoint(config, args, tmp_path, "PretrainCompletion", env={"TMPDIR": str(scratch)})
    assert not list(scratch.glob("training-job-*"))  # the job went to the training process without a file

    result = run_luigi(config, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    resumed_at = resumed_steps(log)
    assert resumed_at and resumed_at[0] >= 20, log[-3000:]
    assert f"step {resumed_at[0] - 20}/400" not in log  # no step before the checkpoint was trained again
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert manifest["summary"]["steps"] == 400
    # Both attempts wrote events; TensorBoard shows each step once, those after the kill's checkpoint from the second.
    assert len([name for name in manifest["files"] if name.startswith("tensorboard/")]) == 2
    events = read_events(task_dir / "tensorboard")
    assert logged_steps(events, "loss_rec") == list(range(20, 401, 20))
    assert logged_steps(events, GRID_TAG, "Images") == list(range(20, 401, 20))  # every checkpoint, and the end


def test_every_task_directory_is_marked_and_every_manifest_sealed(artifact_root, image_folder):
    task = pipeline.PrepareImages(dataset="folder", source=image_folder, image_size=16, decode_workers=1)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    marker = json.loads(open(task.path(".task.json")).read())
    assert marker["task_family"] == "PrepareImages" and re.fullmatch(r"[0-9a-f]{64}", marker["hash"])
    assert task.directory.endswith("PrepareImages-" + marker["hash"][:10])
    manifest = json.loads(open(task.path("manifest.json")).read())
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert manifest["format"] == 2 and manifest["checksum"] == hashlib.sha256(canonical).hexdigest()


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def test_a_broken_manifest_makes_its_task_run_again_and_one_from_before_checksums_counts(artifact_root, image_folder):
    task = pipeline.PrepareImages(dataset="folder", source=image_folder, image_size=16, decode_workers=1)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    path = task.path("manifest.json")
    original = open(path, "rb").read()
    manifest = json.loads(original)

    # What the pipeline wrote before manifests were sealed: exactly these keys, no checksum.
    legacy = {key: value for key, value in manifest.items() if key not in ("format", "checksum")}
    _write_bytes(path, json.dumps(legacy, indent=2).encode())
    assert task.complete()

    for broken in (original[:len(original) // 2], b"{}", b"", original.replace(b'"kept": 60', b'"kept": 61'),
                   original.replace(b'"summary"', b'"sumMary"'), json.dumps({**legacy, "extra": 1}).encode()):
        assert broken != original
        _write_bytes(path, broken)
        assert not task.complete(), broken[:80]
    assert luigi.build([task], local_scheduler=True, log_level="WARNING") and task.complete()
    rebuilt = storage.read_manifest(task.directory)
    assert rebuilt["summary"] == manifest["summary"] and rebuilt["files"] == manifest["files"]


@pytest.mark.parametrize("family, parameters, message", [
    ("PretrainCompletion", {"phase1_steps": 0}, "phase1_steps must be >= 1, got 0"),
    ("PretrainDiscriminator", {"phase2_steps": 0}, "phase2_steps must be >= 1, got 0"),
    ("TrainJoint", {"phase3_steps": 0}, "phase3_steps must be >= 1, got 0"),
    ("TrainJoint", {"hole_margin": 0.6}, "hole_margin must be in [0, 0.5), got 0.6"),
    ("PretrainDiscriminator", {"lr_discriminator": 0}, "lr_discriminator must be positive, got 0"),
    ("TrainJoint", {"lr_joint": -1}, "lr_joint must be positive, got -1"),
    ("PretrainCompletion", {"max_zoom": 0.5}, "max_zoom must be in [1, 4], got 0.5"),
    ("PretrainCompletion", {"keep_checkpoints": 1}, "keep_checkpoints must be >= 2"),
    ("TrainDCGAN", {"keep_checkpoints": 1}, "keep_checkpoints must be >= 2"),
    ("TrainDCGAN", {"real_label_high": 1.5}, "real_label_low and real_label_high must satisfy"),
    ("PrepareImages", {"eval_sizes": [256, 4]}, "eval_sizes must be a list of sides of at least 8 pixels"),
    ("PrepareImages", {"eval_images": 0}, "eval_images must be >= 1, got 0"),
])
def test_a_bad_value_is_refused_naming_the_parameter_as_typed(family, parameters, message):
    with pytest.raises(Exception) as refused:
        getattr(pipeline, family)(dataset="sample", **parameters)
    assert message in (explain(refused.value) or "")  # a user's error: one `error:` line, no traceback


def test_empty_splits_fail_before_any_image_is_decoded_or_any_step_trained(artifact_root, tmp_path):
    source = make_images(str(tmp_path / "three"), 3, prefix="photo")  # these names fall in train by their hash
    shards = pipeline.PrepareImages(dataset="folder", source=source, image_size=16, decode_workers=1)
    with pytest.raises(UserError, match=re.escape(
            "the val split would be empty: the files split 3/0/0 (train/val/test) with val_fraction=0.1, "
            "test_fraction=0.1; add images or raise val_fraction (or set it to 0 to do without a val split)")):
        shards.run()
    assert storage.list_files(shards.directory) == [".task.json"]  # nothing decoded, no shard written

    chain = pipeline.TrainInpainter(source=source, **TINY)
    assert not luigi.build([chain], local_scheduler=True, log_level="CRITICAL")
    assert all(name.startswith("PrepareImages-") for name in storage.list_dirs(artifact_root))

    # Without val or test the inpainter cannot render its grids or evaluate: its training phases refuse
    # when constructed, so the chain fails while it is scheduled.
    for name in ("val_fraction", "test_fraction"):
        with pytest.raises(UserError, match=f"{name} must be > 0 for the inpainter"):
            pipeline.TrainJoint(source=source, **{key: value for key, value in TINY.items() if key != "grid_images"},
                                **{name: 0})
        assert not luigi.build([pipeline.TrainInpainter(source=source, **{**TINY, name: 0})], local_scheduler=True,
                               log_level="CRITICAL")
    assert all(name.startswith("PrepareImages-") for name in storage.list_dirs(artifact_root))
    # Where none is needed, an empty val and test split is what was asked for.
    assert luigi.build([pipeline.PrepareImages(dataset="folder", source=source, image_size=16, decode_workers=1,
                                               val_fraction=0, test_fraction=0)],
                       local_scheduler=True, log_level="WARNING")


@contextlib.contextmanager
def read_only(folder):
    """`folder` read-only for this test's commands: chmod, or as root (which chmod does not stop) a read-only tmpfs."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"running as root, where chmod does not stop writes, and mounting a read-only tmpfs failed: "
                    f"{mount.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_artifact_root_that_cannot_be_written_fails_first_saying_so(tmp_path):
    source = make_images(str(tmp_path / "source"), 20)
    args = ["PrepareImages", *cli_args(dataset="folder", source=source, image_size=16, decode_workers=1)]
    read_only_root = tmp_path / "read-only"
    read_only_root.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    for root in (read_only_root, tmp_path / "a-file" / "artifacts"):  # and one that cannot be created
        config = write_config(tmp_path)
        with open(config) as file:
            text = file.read().replace(f"root = {tmp_path / 'artifacts'}", f"root = {root}")
        with open(config, "w") as file:
            file.write(text)
        with read_only(root) if root == read_only_root else contextlib.nullcontext():
            result = run_luigi(config, *args)
        log = result.stdout + result.stderr
        assert result.returncode == 30, log[-3000:]
        assert f"error: the artifact root {root} is not writable: cannot write {root}/PrepareImages-" in log
        assert "Traceback" not in log
        assert "-luigi-tmp-" not in log and not re.search(r"PrepareImages: +\d+%", log)  # no image was decoded


def _training(image_folder, **changes):
    return pipeline.PretrainCompletion(**{**dict(dataset="folder", source=image_folder, image_size=32, width=0.125,
                                                 batch_size=4, shard_size=16, decode_workers=1, phase1_steps=8,
                                                 checkpoint_every=2, log_every=2), **changes})


def _interrupted(task) -> list[str]:
    """The task's directory as a killed attempt leaves it: checkpoints, no final state, no manifest."""
    for name in ("manifest.json", "model.pt", "history.csv"):
        os.remove(task.path(name))
    return [task.path(name) for _, name in list_checkpoints(task.directory)]


def test_a_damaged_checkpoint_is_refused_by_name_and_resume_falls_back(artifact_root, image_folder, caplog):
    task = _training(image_folder)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    older, newest = _interrupted(task)  # steps 4 and 6 (keep_checkpoints=2)
    flip_tensor_byte(newest)
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert f"refusing checkpoint {newest}: its sha256 " in caplog.text
    assert resumed_steps(caplog.text) == [4]
    assert storage.read_manifest(task.directory)["summary"]["steps"] == 8
    for _, name in list_checkpoints(task.directory):  # the damaged one was written again
        assert storage.sha256_of(task.path(name))[1] == recorded_checksum(task.path(name)).sha256

    older, newest = _interrupted(task)
    for path in (older, newest):
        flip_tensor_byte(path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert all(f"refusing checkpoint {path}" in caplog.text for path in (older, newest))
    assert "no checkpoint can be resumed from; the phase starts over" in caplog.text
    assert resumed_steps(caplog.text) == [] and task.complete()


def test_a_damaged_local_shard_is_refused_by_name(artifact_root, image_folder, caplog):
    task = _training(image_folder)
    shards = task.requires()["shards"]
    assert luigi.build([shards], local_scheduler=True, log_level="WARNING")
    shard = shards.split_paths("train")[0]
    with open(shard, "r+b") as file:  # one pixel of the first image
        file.seek(200)
        pixel = file.read(1)[0]
        file.seek(200)
        file.write(bytes([pixel ^ 1]))
    assert not luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert f"failed: rank 0: IntegrityError: {shard} has " in caplog.text
    assert not task.complete() and not list_checkpoints(task.directory)
