"""`python -m pipeline` commands on a tiny completed run, on local disk and on S3."""
import io
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.artifacts import storage
from pipeline.cli import main
from pipeline.infill import poisson_blend
from tests.conftest import REPO_ROOT, subprocess_env

RUN_COUNT = 9  # the TINY TrainInpainter chain: 6 task families, RenderEvalGrid three times
INCOMPLETE = "PretrainCompletion-0123456789"


def run_command(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_name(root: str, family: str) -> str:
    return next(name for name in storage.list_dirs(root) if name.startswith(family + "-"))


def add_incomplete_run(root: str) -> None:
    """A training directory that an interrupted run left: its marker, a checkpoint and no manifest."""
    family, short_hash = INCOMPLETE.split("-")
    storage.write_marker(storage.join(root, INCOMPLETE), family, short_hash + "0" * 54)
    with storage.open_write(storage.join(root, INCOMPLETE, "checkpoints/step-0000003.pt")) as file:
        file.write(b"not a real checkpoint")


def table_rows(output: str) -> list[str]:
    return output.strip().splitlines()[1:]  # below the header


def test_runs_lists_every_task_directory_with_its_status_and_filters(run_root, capsys):
    add_incomplete_run(run_root)
    code, out, _ = run_command(capsys, "runs", "--root", run_root)
    assert code == 0
    rows = table_rows(out)
    assert len(rows) == RUN_COUNT + 1
    assert sum(" complete " in row for row in rows) == RUN_COUNT
    incomplete = next(row for row in rows if "0123456789" in row)
    assert "incomplete: checkpoint at step 3, last write" in incomplete
    final = next(row for row in rows if row.lstrip().startswith("TrainInpainter"))
    for size in (32, 40):  # the training size and eval_sizes
        assert f"box {size} px: psnr_hole model" in final and f"strokes {size} px: psnr_hole model" in final
    assert "best baseline" in final
    assert "phase3_steps=4" in final
    # Beyond the key parameters, those that differ from their defaults tell runs apart; the rest do not show.
    assert "batch_size=4" in final and "alpha=" not in final and "log_every=" not in final

    assert len(table_rows(run_command(capsys, "runs", "--root", run_root, "--family", "rendereVALgrid")[1])) == 3
    assert "no matching runs" in run_command(capsys, "runs", "--root", run_root, "--family", "RenderEval")[1]
    assert len(table_rows(run_command(capsys, "runs", "--root", run_root, "--dataset", "folder")[1])) == RUN_COUNT
    assert "no matching runs" in run_command(capsys, "runs", "--root", run_root, "--dataset", "sample")[1]


def test_show_prints_parameters_upstream_chain_files_and_metrics(run_root, capsys):
    code, out, _ = run_command(capsys, "show", "TrainInpainter", "--root", run_root)
    assert code == 0
    assert "phase3_steps = 4" in out and "[complete, finished" in out
    for name in storage.list_dirs(run_root):  # the whole chain is upstream of the final task
        assert name in out
    assert "result.json" in out and "navier_stokes" in out and "telea" in out

    joint = run_name(run_root, "TrainJoint")
    code, out, _ = run_command(capsys, "show", joint.split("-")[1][:6], "--root", run_root)  # a hash prefix
    assert code == 0 and out.startswith(joint)
    assert re.search(r"\d+\.\d MiB  model\.pt", out) and re.search(r"\d+ B  history\.csv", out) and '"loss_rec"' in out


def test_show_explains_unknown_and_ambiguous_names(run_root, capsys):
    code, _, err = run_command(capsys, "show", "RenderEvalGrid", "--root", run_root)
    assert code == 2 and "matches 3 runs" in err
    code, _, err = run_command(capsys, "show", "NoSuchTask", "--root", run_root)
    assert code == 2 and "no run under" in err


def write_image_and_mask(folder, name, width, height, seed=0):
    """A smooth image whose holes are painted pure red, and the mask of those holes (one at the border)."""
    rng = np.random.default_rng(seed)
    ramp = (np.linspace(0, 1, width)[None, :, None] * rng.uniform(50, 200, 3)
            + np.linspace(0, 1, height)[:, None, None] * 40)
    image = np.clip(ramp + 20, 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), bool)
    mask[height // 4:height // 2, width // 3:width // 2 + 3] = True
    mask[:4, -5:] = True  # touches the top and right borders
    image[mask] = (255, 0, 0)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, f"{name}.png"))
    Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(folder, f"{name}-mask.bmp"))
    return os.path.join(folder, f"{name}.png"), os.path.join(folder, f"{name}-mask.bmp"), image, mask


@pytest.mark.parametrize("poisson", [False, True], ids=["pasted", "poisson"])
def test_infill_fills_the_mask_at_the_image_size_and_keeps_known_pixels(run_root, tmp_path, capsys, poisson):
    image_path, mask_path, image, mask = write_image_and_mask(str(tmp_path), "photo", 45, 30)  # not multiples of 4
    outputs = {}
    joint_checkpoint = storage.join(run_root, run_name(run_root, "TrainJoint"), "model.pt")
    for model in ("TrainInpainter", joint_checkpoint):
        out = str(tmp_path / f"out-{len(outputs)}.png")
        code, _, err = run_command(capsys, "infill", "--root", run_root, "--model", model, "--image", image_path,
                                   "--mask", mask_path, "--out", out, *(["--poisson"] if poisson else []))
        assert code == 0, err
        outputs[model] = np.array(Image.open(out))
    result = outputs["TrainInpainter"]
    assert result.shape == image.shape
    assert (result[~mask] == image[~mask]).all()
    assert not (result[mask] == (255, 0, 0)).all(axis=1).any()  # every hole pixel was replaced
    assert (outputs[joint_checkpoint] == result).all()  # the run's model is its final TrainJoint checkpoint


def test_infill_over_a_folder_matches_masks_by_name(run_root, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    sizes = {"wide": (37, 22), "tall": (18, 41)}
    for name, (width, height) in sizes.items():
        image_path, mask_path, _, _ = write_image_and_mask(str(images), name, width, height)
        os.makedirs(masks, exist_ok=True)
        os.replace(mask_path, masks / f"{name}.bmp")
    code, out, err = run_command(capsys, "infill", "--root", run_root, "--model", "TrainInpainter",
                                 "--image", str(images), "--mask", str(masks), "--out", str(tmp_path / "filled"))
    assert code == 0, err
    for name, size in sizes.items():
        assert Image.open(tmp_path / "filled" / f"{name}.png").size == size

    os.remove(masks / "tall.bmp")
    code, _, err = run_command(capsys, "infill", "--root", run_root, "--model", "TrainInpainter",
                               "--image", str(images), "--mask", str(masks), "--out", str(tmp_path / "filled"))
    assert code == 2 and "no mask for tall.png" in err


def test_infill_rejects_masks_of_the_wrong_size_and_empty_masks(tiny_run_root, tmp_path, capsys):
    image_path, _, _, _ = write_image_and_mask(str(tmp_path), "photo", 45, 30)
    Image.new("L", (44, 30), 255).save(tmp_path / "small.png")
    Image.new("L", (45, 30), 0).save(tmp_path / "empty.png")
    for mask, message in (("small.png", "is 44x30 pixels but image"), ("empty.png", "has no white pixels")):
        code, _, err = run_command(capsys, "infill", "--root", tiny_run_root, "--model", "TrainInpainter",
                                   "--image", image_path, "--mask", str(tmp_path / mask),
                                   "--out", str(tmp_path / "x.png"))
        assert code == 2 and message in err and not os.path.exists(tmp_path / "x.png")
    code, _, err = run_command(capsys, "infill", "--root", tiny_run_root, "--model", "EvaluateInpainter",
                               "--image", image_path, "--mask", str(tmp_path / "empty.png"), "--out", "x.png")
    assert code == 2 and "no checkpoint at" in err


def test_poisson_blending_fits_a_wrong_fill_to_its_surroundings():
    height, width = 24, 30
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 240, width).astype(np.uint8)[None, :]
    image[..., 1] = np.linspace(0, 200, height).astype(np.uint8)[:, None]
    mask = np.zeros((height, width), bool)
    mask[6:16, 8:20] = mask[0:5, 25:] = True  # one hole inside, one in the top-right corner
    flat_grey = np.full_like(image, 128)
    blended = poisson_blend(image, flat_grey, mask)
    assert (blended[~mask] == image[~mask]).all()
    error = lambda fill: np.abs(fill[mask].astype(int) - image[mask]).mean()  # noqa: E731
    assert error(blended) < error(flat_grey) / 4


def write_dcgan_run(root: str) -> str:
    """A DCGAN run holding the state of one training step as model.pt, then its manifest."""
    from ganmodels.dcgan.config import DCGANConfig
    from ganmodels.dcgan.training import train_dcgan
    from ganmodels.feeding import ImageBank
    from ganmodels.runtime import Runtime

    config = DCGANConfig(image_size=32, steps=1, latent_size=8, base_channels=4, batch_size=2, fixed_latent_count=2)
    images = ImageBank([np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)], "cpu")
    state = train_dcgan(config, images, None, Runtime())
    name = "TrainDCGAN-00000000aa"
    with storage.open_write(storage.join(root, name, "model.pt")) as file:
        torch.save(state, file)
    storage.write_manifest(storage.join(root, name), {
        "task_family": "TrainDCGAN", "task_id": "TrainDCGAN_test", "hash": "00000000aa", "parameters": {},
        "config": {}, "upstream": {}, "packages": {}, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:00:00+00:00", "summary": {},
        "files": {"model.pt": {"size": file.size, "sha256": file.sha256.hexdigest()}}})
    return name


def test_sample_draws_a_grid_and_latent_walks_from_a_dcgan_run(run_root, tmp_path, capsys):
    name = write_dcgan_run(run_root)
    for extra in ([], ["--interpolate"]):
        out = tmp_path / f"grid{len(extra)}.png"
        code, _, err = run_command(capsys, "sample", "--root", run_root, "--model", name, "--n", "6",
                                   "--per-row", "3", "--out", str(out), *extra)
        assert code == 0, err
        assert Image.open(out).size == (3 * 34 + 2, 2 * 34 + 2)  # 32 px images, 2 px padding
    code, _, err = run_command(capsys, "sample", "--root", run_root, "--model", name, "--n", "7",
                               "--per-row", "3", "--interpolate", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "not a multiple" in err
    code, _, err = run_command(capsys, "sample", "--root", run_root, "--model", "TrainInpainter",
                               "--out", str(tmp_path / "x.png"))
    assert code == 2 and "holds no generator network" in err


def test_clean_removes_only_old_incomplete_runs_after_confirmation(run_root, capsys, monkeypatch):
    add_incomplete_run(run_root)
    incomplete = storage.join(run_root, INCOMPLETE)
    code, out, _ = run_command(capsys, "clean", "--root", run_root, "--older-than", "1h", "--yes")
    assert code == 0 and "no incomplete runs older than" in out and storage.list_files(incomplete)

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, _ = run_command(capsys, "clean", "--root", run_root, "--older-than", "0s")
    assert code == 0 and INCOMPLETE in out and "nothing removed" in out
    assert storage.list_files(incomplete)

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, _ = run_command(capsys, "clean", "--root", run_root, "--older-than", "0s")
    assert code == 0 and f"removed {incomplete}" in out
    assert not storage.list_files(incomplete)
    assert len(storage.list_dirs(run_root)) == RUN_COUNT
    assert all(storage.exists(storage.join(run_root, name, "manifest.json")) for name in storage.list_dirs(run_root))

    code, _, err = run_command(capsys, "clean", "--root", run_root, "--older-than", "soon")
    assert code == 2 and "--older-than takes an age" in err


def _write(path: str, data: bytes) -> None:
    with storage.open_write(path) as file:
        file.write(data)


def test_clean_removes_only_directories_the_pipeline_made(run_root, tmp_path, capsys, monkeypatch):
    user_files = {"photos-2023/beach.jpg": b"a photo", "backup-1/db.sql": b"create table t (x int);",
                  "Foo-1234567890/notes.txt": b"notes",
                  # A marker naming another directory: this one was not made for it.
                  "PretrainCompletion-aaaaaaaaaa/.task.json":
                      json.dumps({"task_family": "PretrainCompletion", "hash": "b" * 64}).encode()}
    for name, data in user_files.items():
        _write(storage.join(run_root, name), data)
    kept = ["photos-2023", "backup-1", "Foo-1234567890", "PretrainCompletion-aaaaaaaaaa"]
    if not storage.is_remote(run_root):  # a link to a folder elsewhere, holding a marker valid for the link's name
        elsewhere = tmp_path / "elsewhere"
        storage.write_marker(str(elsewhere), "TrainJoint", "f" * 64)
        (elsewhere / "weights.pt").write_bytes(b"someone's weights")
        os.symlink(elsewhere, os.path.join(run_root, "TrainJoint-ffffffffff"))
        kept.append("TrainJoint-ffffffffff")
    add_incomplete_run(run_root)
    incomplete = storage.join(run_root, INCOMPLETE)

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nobody answers: that is a no
    code, out, _ = run_command(capsys, "clean", "--root", run_root, "--older-than", "0s")
    assert code == 0 and "nothing removed" in out and storage.list_files(incomplete)

    code, out, err = run_command(capsys, "clean", "--root", run_root, "--older-than", "0s", "--yes")
    assert code == 0, err
    assert f"removed {incomplete}" in out and not storage.list_files(incomplete)
    assert out.count("removed ") == 1
    for name in kept:
        assert f"  {name}: " in out  # listed as never removed
    for name, data in user_files.items():
        with storage.open_read(storage.join(run_root, name)) as file:
            assert file.read() == data, name
    if not storage.is_remote(run_root):
        assert "TrainJoint-ffffffffff: a symbolic link, not followed" in out
        assert os.path.islink(os.path.join(run_root, "TrainJoint-ffffffffff"))
        assert sorted(os.listdir(elsewhere)) == [".task.json", "weights.pt"]
    remaining = storage.list_dirs(run_root)
    assert set(kept) <= set(remaining) and len(remaining) == len(kept) + RUN_COUNT  # the complete runs stay too


class RunsCode:
    """A pickle that calls a shell command when loaded by a plain pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def one_error_line(code: int, err: str) -> str:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_mistakes_in_infill_are_one_error_line(tiny_run_root, tmp_path, capsys):
    image_path, mask_path, _, _ = write_image_and_mask(str(tmp_path), "photo", 45, 30)
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("L", (1, 1), 255).save(tmp_path / "dot-mask.png")
    (tmp_path / "notes.pt").write_bytes(b"these are notes, not a checkpoint\n" * 20)
    with open(tmp_path / "code.pt", "wb") as file:
        pickle.dump(RunsCode(f"touch {tmp_path / 'it-ran'}"), file, protocol=2)
    out = str(tmp_path / "filled.png")
    cases = [({"--image": str(tmp_path / "dot.png"), "--mask": str(tmp_path / "dot-mask.png")},
              f"image {tmp_path / 'dot.png'} is 1x1 pixels; the network needs at least 4 on each side"),
             ({"--model": str(tmp_path / "notes.pt")}, f"cannot load {tmp_path / 'notes.pt'} as a training state ("),
             ({"--model": str(tmp_path / "code.pt")},
              f"{tmp_path / 'code.pt'} holds objects that a weights-only load refuses to build, such as code"),
             ({"--max-pixels": "1000"}, f"image {image_path} has 45x30 pixels, more than --max-pixels 1000")]
    for changes, message in cases:
        options = {"--model": "TrainInpainter", "--image": image_path, "--mask": mask_path, "--out": out, **changes}
        code, _, err = run_command(capsys, "infill", "--root", tiny_run_root, *[x for o in options.items() for x in o])
        assert message in one_error_line(code, err)
        assert not os.path.exists(out)
    assert not os.path.exists(tmp_path / "it-ran")


@pytest.mark.parametrize("damage", ["truncated", "empty object", "renamed key"])
def test_a_broken_manifest_is_listed_as_such_and_refused_in_one_line(run_root, tmp_path, capsys, damage):
    joint = run_name(run_root, "TrainJoint")
    manifest = storage.join(run_root, joint, "manifest.json")
    with storage.open_read(manifest) as file:
        original = file.read()
    _write(manifest, {"truncated": original[:len(original) // 2], "empty object": b"{}",
                      "renamed key": original.replace(b'"summary"', b'"summarz"', 1)}[damage])
    code, out, err = run_command(capsys, "runs", "--root", run_root)
    assert code == 0 and not err
    rows = table_rows(out)
    assert len(rows) == RUN_COUNT and "broken manifest" in next(row for row in rows if joint.split("-")[1] in row)
    assert sum(" complete " in row for row in rows) == RUN_COUNT - 1

    image_path, mask_path, _, _ = write_image_and_mask(str(tmp_path), "photo", 45, 30)
    for argv in (["show", joint], ["report", joint, "--out", str(tmp_path / "report")],
                 ["infill", "--model", "TrainInpainter", "--image", image_path, "--mask", mask_path,
                  "--out", str(tmp_path / "filled.png")]):  # reads TrainJoint's model.pt
        code, _, err = run_command(capsys, *argv, "--root", run_root)
        assert f"error: broken manifest {manifest}: " in one_error_line(code, err), argv


def test_runs_says_in_one_line_that_the_s3_endpoint_cannot_be_reached(tmp_path):
    from tests.services import CREDENTIALS, TEST_ENV, free_port, s3_config

    port = free_port()  # nothing listens there
    config, _ = s3_config(tmp_path, f"http://127.0.0.1:{port}")
    result = subprocess.run([sys.executable, "-m", "pipeline", "runs"], env={**subprocess_env(config), **TEST_ENV},
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stderr == (f"error: cannot reach the S3 endpoint http://127.0.0.1:{port} (EndpointConnectionError); "
                             "check [s3] endpoint_url and that the store is up\n")
    assert result.returncode == 2 and not result.stdout
    assert not any(secret in result.stderr for secret in CREDENTIALS.values())


def test_python_m_pipeline_is_a_command_next_to_luigi_module_pipeline(tiny_run_root):
    # tiny_run_root itself was built with `luigi --module pipeline`, so importing the package stays task-only.
    failed = subprocess.run([sys.executable, "-m", "pipeline", "show", "Nothing", "--root", tiny_run_root],
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.startswith("error: no run under")
    assert "Traceback" not in failed.stderr


def test_importing_the_pipeline_leaves_the_slow_imports_to_the_code_that_needs_them():
    # Every luigi worker, `python -m pipeline` command and training process imports the
    # package; torchvision (which loads torch._dynamo) and torchmetrics (scipy.signal)
    # would add about 2.5 s to each start.
    # Nor do the studio's web framework and TensorBoard belong on the training path.
    probe = ("import sys, pipeline, pipeline.training.loops; print(' '.join(name for name in ('torchvision', 'torchmetrics', "
             "'torch._dynamo', 'scipy.signal', 'fastapi', 'uvicorn', 'tensorboard') if name in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
