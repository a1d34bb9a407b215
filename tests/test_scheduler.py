"""Scheduler-managed runs: two workers on one luigid share the chain and run each task
once; a training task killed with SIGKILL resumes from its checkpoint, on disk and on S3."""
import hashlib
import json
import re
import time
from collections import Counter

import luigi
import pytest

import pipeline
from pipeline.artifacts import storage
from pipeline.tasks.base import MANIFEST
from tests.conftest import TINY, cli_args, make_images, write_config
from tests.services import (BUCKET, CREDENTIALS, TEST_ENV, Luigid, alive, config_values, end_group,
                            kill_hard, run_luigi, s3_config, s3_key, s3_keys, start_luigi)

CHAIN_TASKS = 9  # PrepareImages, three phases, three grids, evaluation, TrainInpainter


def test_two_workers_on_one_scheduler_run_the_chain_on_s3_each_task_once(moto, tmp_path):
    config, root = s3_config(tmp_path, moto.url, resources={"gpu": 1}, worker={"keep_alive": "true",
                                                                             "wait_interval": 0.2, "wait_jitter": 0.2})
    scheduler = Luigid(tmp_path, config)
    source = make_images(str(tmp_path / "source"), 60)
    args = ["TrainInpainter", *cli_args(**{**TINY, "source": source})]
    # Separate lock folders stand for separate machines: luigi refuses a second identical command on one machine.
    workers = [start_luigi(config, tmp_path / f"worker{i}.log", *args, f"--lock-pid-dir={tmp_path / f'locks{i}'}",
                           scheduler_port=scheduler.port, env=TEST_ENV) for i in range(2)]
    try:
        codes = [worker.wait(300) for worker in workers]
        done = scheduler.tasks("DONE")
    finally:
        for worker in workers:
            end_group(worker)
        scheduler.stop()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    # 10 ([retcode] already_running) and 25 (not_run) say that the scheduler gave some of the
    # worker's tasks to the other one; a failure would be 30.
    assert set(codes) <= {0, 10, 25}, "\n".join(log[-3000:] for log in logs)

    ran = Counter(match for log in logs for match in re.findall(r"\) running +(\w+\(.*\))$", log, re.MULTILINE))
    assert len(ran) == CHAIN_TASKS and set(ran.values()) == {1}, ran  # every task ran, and ran once
    assert len(done) == CHAIN_TASKS

    client = moto.client()
    manifests = s3_keys(client, root, rf"/{MANIFEST}$")
    assert len(manifests) == CHAIN_TASKS
    listed = set()
    for name in manifests:
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=s3_key(root, name))["Body"].read())
        directory = name.rsplit("/", 1)[0]
        for file, info in manifest["files"].items():
            body = client.get_object(Bucket=BUCKET, Key=s3_key(root, directory, file))["Body"].read()
            assert (len(body), hashlib.sha256(body).hexdigest()) == (info["size"], info["sha256"]), file
            listed.add(f"{directory}/{file}")
            if file.endswith((".json", ".csv")):
                assert not any(secret.encode() in body for secret in CREDENTIALS.values()), file
        assert not any(secret in json.dumps(manifest) for secret in CREDENTIALS.values())
    assert set(s3_keys(client, root)) == listed | set(manifests)  # nothing half-written or left over
    assert not any(secret in log for secret in CREDENTIALS.values() for log in logs)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_worker_resumes_each_phase_from_its_checkpoint(where, moto, tmp_path):
    every, poll_s = 10, 0.1 if where == "local" else 0.25  # a gentle poll leaves moto's CPU to the training
    if where == "s3":
        config, root = s3_config(tmp_path, moto.url)
        checkpoints = lambda family: s3_keys(moto.client(), root, rf"^{family}-\w+/checkpoints/")
        manifest = lambda family: s3_keys(moto.client(), root, rf"^{family}-\w+/{MANIFEST}$")
    else:
        config = write_config(tmp_path)
        checkpoints = lambda family: list((tmp_path / "artifacts").glob(f"{family}-*/checkpoints/step-*.pt"))
        manifest = lambda family: list((tmp_path / "artifacts").glob(f"{family}-*/{MANIFEST}"))
    source = make_images(str(tmp_path / "source"), 40)
    args = ["TrainJoint", *cli_args(dataset="folder", source=source, image_size=32, width=0.125, batch_size=4,
                                    phase1_steps=100, phase2_steps=2, phase3_steps=100, checkpoint_every=every,
                                    log_every=every, decode_workers=1)]

    def run_until_checkpoint(family: str, log_name: str) -> str:
        """Start the command, SIGKILL the luigi worker alone once `family` has a checkpoint; its log."""
        process = start_luigi(config, tmp_path / log_name, *args, env=TEST_ENV)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and not checkpoints(family):
                assert process.poll() is None, (tmp_path / log_name).read_text()[-3000:]
                time.sleep(poll_s)
            assert checkpoints(family), f"no checkpoint of {family} appeared"
            training = kill_hard(process)
            deadline = time.time() + 10
            while any(map(alive, training)) and time.time() < deadline:
                time.sleep(0.1)
            assert training and not any(map(alive, training)), "the training processes outlived the worker"
        finally:
            end_group(process)
        assert not manifest(family), f"{family} looks complete after the kill"
        return (tmp_path / log_name).read_text()

    run_until_checkpoint("PretrainCompletion", "first.log")
    second = run_until_checkpoint("TrainJoint", "second.log")
    final = run_luigi(config, *args, env=TEST_ENV)
    assert final.returncode == 0, final.stdout[-3000:]

    for family, log in (("PretrainCompletion", second), ("TrainJoint", final.stdout)):
        resumed = re.search(rf"{family}: resuming from checkpoint \S+ \(step (\d+)\)", log)
        assert resumed, f"{family} did not resume:\n{log[-3000:]}"
        step = int(resumed.group(1))
        phase = 3 if family == "TrainJoint" else 1
        assert step >= every and f"{family} phase {phase} step {step - every}/100" not in log  # nothing trained twice
    assert manifest("TrainJoint") and manifest("PretrainCompletion")


def test_one_gpu_of_resources_lets_one_training_run_at_a_time(artifact_root, image_folder):
    tiny = {key: value for key, value in TINY.items() if key not in ("phase2_steps", "phase3_steps", "grid_images")}
    tasks = [pipeline.PretrainCompletion(**{**tiny, "source": image_folder, "seed": seed}) for seed in (0, 1)]
    with config_values({("resources", "gpu"): "1"}):
        assert luigi.build(tasks, workers=2, local_scheduler=True, log_level="WARNING")
    first, second = sorted((manifest["started"], manifest["finished"])
                           for manifest in (storage.read_json(task.path(MANIFEST)) for task in tasks))
    assert first[1] <= second[0]  # two workers were free, but the second training waited for the first
