"""Data-parallel training: the World helpers, DDP on CPU with gloo (ranks stay in step),
and training tasks with several processes, through torchrun, on one and on two "machines"."""
import os
import subprocess
import sys

import luigi
import numpy as np
import pytest
import torch
import torch.multiprocessing

import pipeline
from ganmodels.dcgan.sampling import generator_from_state
from ganmodels.feeding import to_float
from ganmodels.glcic.config import PhaseOptions
from ganmodels.glcic.inference import load_completion
from ganmodels.glcic.networks import complete
from ganmodels.masks import holes_to_mask, sample_holes
from ganmodels.metrics import inpainting_metrics
from ganmodels.world import World, join_world
from pipeline.artifacts import storage
from pipeline.artifacts.checkpoints import load_state
from pipeline.training.job import TrainingJob
from pipeline.training.launch import TrainingFailed, worker_command
from tests.conftest import REPO_ROOT
from tests.ddp_ranks import train_dcgan_two_ranks, train_two_ranks
from tests.services import config_values, free_port

TINY_PHASE1 = dict(dataset="folder", image_size=32, width=0.125, batch_size=4, shard_size=16, phase1_steps=4,
                   checkpoint_every=2, log_every=2, decode_workers=1)


def test_a_world_of_one_changes_nothing_and_splits_batches_evenly():
    world, module = World(), torch.nn.Linear(2, 2)
    assert world.is_main and world.wrap(module) is module and world.local_batch(16) == 16
    assert World(rank=1, size=4).local_batch(16) == 4 and not World(rank=1, size=4).is_main
    with pytest.raises(ValueError, match="batch_size 10 does not split evenly over 4 processes"):
        World(size=4).local_batch(10)
    seeds = {World(rank=rank, size=2).seed(base, step) for rank in (0, 1) for base in (1, 2) for step in (0, 5)}
    assert len(seeds) == 8
    assert World().gather(torch.ones(3))[0].tolist() == [1, 1, 1] and World().broadcast_bytes(b"x") == b"x"


def test_an_explicit_gpu_cannot_be_shared_by_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="would put 2 processes on one GPU"):
        join_world("cuda:0")


def test_ddp_ranks_train_on_different_images_and_stay_identical():
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(train_two_ranks, args=(free_port(), results), nprocs=2)
        first, second = results[0], results[1]
    assert not torch.equal(first["batch"], second["batch"])  # each rank draws its own images
    for name, value in first["parameters"].items():  # gradients were averaged, so every update was the same
        assert torch.equal(value, second["parameters"][name]), name
    without_timings = lambda history: [{k: v for k, v in row.items() if k not in ("images_per_s", "data_wait")}
                                       for row in history]
    assert without_timings(first["history"]) == without_timings(second["history"])  # losses are means over both ranks
    assert len(first["samplers"]) == 2 and not torch.equal(*first["samplers"])


def test_dcgan_ranks_draw_their_own_batches_and_stay_identical():
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(train_dcgan_two_ranks, args=(free_port(), results), nprocs=2)
        first, second = results[0], results[1]
    assert first["first_batch"].shape[0] == 4 and not torch.equal(first["first_batch"], second["first_batch"])
    for network in ("generator", "discriminator", "ema_generator"):
        for name, value in first[network].items():
            assert torch.equal(value, second[network][name]) or "running" in name or "num_batches" in name, name
    without_timings = lambda logs: [{k: v for k, v in row.items() if k not in ("images_per_s", "data_wait")}
                                    for row in logs]
    assert without_timings(first["logs"]) == without_timings(second["logs"]) and len(first["logs"]) == 2
    assert len(first["samplers"]) == 2 and not torch.equal(*first["samplers"])


@pytest.fixture
def two_gpus_of_resources(artifact_root):
    with config_values({("resources", "gpu"): "2"}):
        yield artifact_root


@pytest.fixture
def no_cuda_here(monkeypatch):
    """Any CUDA call in this (the luigi worker's) process fails the test."""
    def refusal(name):
        def refuse(*args, **kwargs):
            raise AssertionError(f"the luigi worker called torch.cuda.{name}")
        return refuse
    # One function per name: torch._dynamo, when first imported during the test (through a
    # lazy torchmetrics import), refuses one object listed under two names with different rules.
    for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "set_device"):
        monkeypatch.setattr(torch.cuda, name, refusal(name))


def test_two_processes_train_through_torchrun_and_the_checkpoint_evaluates(two_gpus_of_resources, image_folder,
                                                                            no_cuda_here):
    task = pipeline.PretrainCompletion(source=image_folder, processes=2, **TINY_PHASE1)
    assert task.resources == {"gpu": 2}
    assert task.directory == pipeline.PretrainCompletion(source=image_folder, **TINY_PHASE1).directory
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")

    manifest = storage.read_json(task.path("manifest.json"))
    assert manifest["summary"]["world_size"] == 2 and manifest["summary"]["steps"] == 4
    files = sorted(name for name in manifest["files"] if not name.startswith("tensorboard/"))
    assert files == [".task.json", "checkpoints/step-0000002.pt", "checkpoints/step-0000002.pt.sha256",
                     "history.csv", "model.pt", "training_options.json"]
    assert len(manifest["files"]) == len(files) + 1  # rank 0's event file only
    checkpoint = load_state(task.path("checkpoints/step-0000002.pt"))
    assert checkpoint["step"] == 2 and len(checkpoint["rng"]["samplers"]) == 2

    state = load_state(task.path("model.pt"))
    completion, masks = load_completion(state), PhaseOptions.from_dict(state["config"]).masks
    shards = task.requires()["shards"]
    images = to_float(np.concatenate(shards.split_arrays("val")), "cpu")
    mask = holes_to_mask(sample_holes(len(images), masks, torch.Generator().manual_seed(0)), 32)
    with torch.no_grad():
        completed = complete(completion, images, mask, torch.tensor(shards.mean_pixel()))
    metrics = inpainting_metrics(completed, images, mask)
    assert all(torch.isfinite(value).all() for value in metrics.values())


def test_dcgan_trains_in_two_processes_through_torchrun(two_gpus_of_resources, image_folder, no_cuda_here):
    params = dict(source=image_folder, dataset="folder", image_size=32, shard_size=16, decode_workers=1, base_channels=4,
                  latent_size=8, batch_size=4, steps=4, fixed_latent_count=4, sample_count=4, walk_keyframes=2,
                  walk_frames_between=2, snapshot_every=2, log_every=2, checkpoint_every=2)
    task = pipeline.TrainDCGAN(processes=2, **params)
    assert task.resources == {"gpu": 2} and task.directory == pipeline.TrainDCGAN(**params).directory
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")

    manifest = storage.read_json(task.path("manifest.json"))
    assert manifest["summary"]["world_size"] == 2 and manifest["summary"]["steps"] == 4
    assert {"model.pt", "training_options.json", "snapshots/step-0000002.png", "snapshots/step-0000004.png",
            "samples.png", "checkpoints/step-0000002.pt"} <= set(manifest["files"])
    assert len(load_state(task.path("checkpoints/step-0000002.pt"))["rng"]["samplers"]) == 2
    samples = generator_from_state(load_state(task.path("model.pt")))(torch.randn(3, 8))
    assert samples.shape == (3, 3, 32, 32) and torch.isfinite(samples).all()


def test_a_second_machine_joins_the_training_job(artifact_root, image_folder, no_cuda_here):
    port = free_port()
    joiner = subprocess.Popen([*worker_command("join"), "--once", "--nnodes=2", "--node-rank=1", "--master-addr=127.0.0.1",
                               f"--master-port={port}", "--device=cpu"],
                              cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1"))
    try:
        with config_values({("distributed", "master_addr"): "127.0.0.1", ("distributed", "master_port"): str(port)}):
            task = pipeline.PretrainCompletion(source=image_folder, nodes=2, **TINY_PHASE1)
            assert luigi.build([task], local_scheduler=True, log_level="WARNING")
        assert joiner.wait(60) == 0
    finally:
        if joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    assert storage.read_json(task.path("manifest.json"))["summary"]["world_size"] == 2


def test_a_failed_training_names_the_task_and_the_cause(artifact_root, image_folder):
    task = pipeline.PretrainCompletion(source=image_folder, device="bogus", **TINY_PHASE1)
    assert luigi.build([task.requires()["shards"]], local_scheduler=True, log_level="WARNING")
    cause = r"training of PretrainCompletion_\w+ failed: rank 0: RuntimeError: .*bogus"
    with pytest.raises(TrainingFailed, match=cause):
        task.run()
    assert not task.complete()


def test_the_training_entry_point_refuses_to_outlive_its_parent():
    # A child whose recorded parent is not its parent exits at once, without training.
    result = subprocess.run(worker_command("train"), cwd=REPO_ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT, PIPELINE_TRAINING_PARENT_PID="1"))
    assert result.returncode == 1 and "the process that started this one has exited" in result.stderr


def test_the_training_entry_point_refuses_a_mistake_in_one_line():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    joined = subprocess.run(worker_command("join", "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1"),
                            cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert joined.returncode == 2 and "Traceback" not in joined.stderr
    assert joined.stderr.splitlines()[-1].endswith(
        "error: --node-rank must be >= 1: node 0 is the machine running the luigi task")
    alone = subprocess.run(worker_command("train"), input="", cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                           timeout=120)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    assert alone.stderr.splitlines()[-1] == \
        "error: rank 0 reads its job on its standard input, from the luigi task that starts it"


def test_a_finished_training_process_exits_0_without_finalizing_the_interpreter():
    # Freeing gloo's objects while the interpreter is torn down aborts about one exit in twenty of two CPU
    # processes, which no test can trigger on demand; what prevents it is that a finished process never
    # reaches finalization (no atexit handler runs) and hands over its buffered output first.
    script = ("import atexit, sys\n"
              "from pipeline.training import worker\n"
              "worker._train = lambda device: print('trained on', device)\n"
              "atexit.register(lambda: print('finalized'))\n"
              "worker.main(['train', '--device', 'cpu'])\n"
              "print('main returned')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=120)
    assert (result.returncode, result.stdout) == (0, "trained on cpu\n"), result.stderr[-2000:]


def test_a_training_job_names_its_loop():
    with pytest.raises(ValueError, match=r"unknown training kind 'gan'; one of \('inpainting', 'dcgan'\)"):
        TrainingJob(task="t", directory="d", kind="gan", options={}, train_shards=[], start=None, keep_checkpoints=2,
                    final_state="model.pt", cache_dir="cache")
