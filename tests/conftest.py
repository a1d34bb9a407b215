import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import luigi
import luigi.configuration
import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny settings that exercise every phase in seconds on a CPU.
TINY = dict(dataset="folder", image_size=32, width=0.125, batch_size=4, shard_size=16,
            phase1_steps=6, phase2_steps=3, phase3_steps=4, checkpoint_every=3, log_every=2,
            grid_images=4, decode_workers=1, eval_sizes=[40])


def make_images(folder, count, size=48, seed=0, prefix="img"):
    """Smooth random colour fields with a few rectangles: enough structure to inpaint."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    grid = np.linspace(0, 1, size)
    for index in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-120, 120, (2, 3))
        pixels = base + grid[:, None, None] * slope[0] + grid[None, :, None] * slope[1]
        for _ in range(3):
            top, left = rng.integers(0, size - 8, 2)
            pixels[top:top + 8, left:left + 8] = rng.uniform(0, 255, 3)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{prefix}-{index:04d}.png"))
    return folder


@pytest.fixture
def image_folder(tmp_path):
    return make_images(str(tmp_path / "source"), 60)


@pytest.fixture
def artifact_root(tmp_path):
    """Point [artifacts] root and [datasets] download_dir at a temporary folder for in-process runs."""
    config = luigi.configuration.get_config()
    root = str(tmp_path / "artifacts")
    for section, key, value in (("artifacts", "root", root),
                                ("datasets", "download_dir", str(tmp_path / "downloads"))):
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)
    Register.clear_instance_cache()
    yield root
    Register.clear_instance_cache()


def write_config(tmp_path, **sections) -> str:
    """A luigi.cfg for subprocess runs: artifacts and downloads under tmp_path, plus given sections."""
    lines = [f"[artifacts]\nroot = {tmp_path / 'artifacts'}", f"[datasets]\ndownload_dir = {tmp_path / 'downloads'}",
             "[retcode]\ntask_failed = 30\nmissing_data = 20\nunhandled_exception = 40\nscheduling_error = 35"]
    for section, values in sections.items():
        lines.append(f"[{section}]\n" + "\n".join(f"{k} = {v}" for k, v in values.items()))
    path = tmp_path / "luigi.cfg"
    path.write_text("\n\n".join(lines) + "\n")
    return str(path)


def luigi_command(*args):
    return [sys.executable, "-m", "luigi", "--module", "pipeline", *args, "--local-scheduler"]


def subprocess_env(config_path):
    env = dict(os.environ, LUIGI_CONFIG_PATH=config_path, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
    return env


def run_luigi(config_path, *args, timeout=300):
    return subprocess.run(luigi_command(*args), env=subprocess_env(config_path), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def cli_args(**params):
    return [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]


@pytest.fixture(scope="session")
def tiny_run_root(tmp_path_factory):
    """An artifact root holding one completed TINY TrainInpainter chain, built once per session; read-only."""
    base = tmp_path_factory.mktemp("tiny-run")
    source = make_images(str(base / "source"), 60)
    result = run_luigi(write_config(base), "TrainInpainter", *cli_args(**{**TINY, "source": source}))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return str(base / "artifacts")


@pytest.fixture(params=["local", "s3"])
def run_root(request, tmp_path, tiny_run_root):
    """A fresh copy of the tiny run's artifact root, on local disk or in S3 under a prefix of its own."""
    if request.param == "local":
        return shutil.copytree(tiny_run_root, str(tmp_path / "artifacts"))
    from tests.services import BUCKET, TEST_ENV

    moto = request.getfixturevalue("moto")
    monkeypatch = request.getfixturevalue("monkeypatch")
    # boto3 in this process and in the commands the tests start finds the server through these.
    for name, value in {**TEST_ENV, "AWS_ENDPOINT_URL": moto.url}.items():
        monkeypatch.setenv(name, value)
    prefix = f"runs-{tmp_path.name}"
    client = moto.client()
    for dirpath, _, filenames in os.walk(tiny_run_root):
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), tiny_run_root)
            client.upload_file(os.path.join(dirpath, name), BUCKET, f"{prefix}/{relative}")
    return f"s3://{BUCKET}/{prefix}"


def kill_after_first_checkpoint(config_path, args, tmp_path, family, env=None) -> pathlib.Path:
    """Start a luigi run, SIGKILL its whole process group once `family` wrote a checkpoint; return the task dir."""
    process = subprocess.Popen(luigi_command(*args), env={**subprocess_env(config_path), **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, checkpoints = time.time() + 240, []
        while time.time() < deadline and not checkpoints:
            time.sleep(0.2)
            checkpoints = list((tmp_path / "artifacts").glob(f"{family}-*/checkpoints/step-*.pt"))
        assert checkpoints, "no checkpoint appeared"
        os.killpg(process.pid, signal.SIGKILL)  # a real kill: no cleanup code runs
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    task_dir = checkpoints[0].parent.parent
    assert not (task_dir / "manifest.json").exists(), "the run ended before it was killed; raise its steps"
    return task_dir


def resumed_steps(log: str) -> list[int]:
    """The steps that "resuming from checkpoint ... (step N)" lines of a run's log name."""
    return [int(line.rsplit("step ", 1)[1].rstrip(")")) for line in log.splitlines() if "resuming from checkpoint" in line]


def read_events(folder):
    """TensorBoard's own reader over a folder of event files, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def logged_steps(events, tag: str, kind: str = "Scalars") -> list[int]:
    return [event.step for event in getattr(events, kind)(tag)]


def flip_tensor_byte(path) -> None:
    """Change one bit in the middle of the largest tensor of a torch.save file: it still loads, with other weights."""
    with zipfile.ZipFile(path) as archive:  # torch.save stores its entries uncompressed
        entry = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda info: info.file_size)
    with open(path, "r+b") as file:
        file.seek(entry.header_offset + 26)  # the local header's name and extra field lengths
        name_length, extra_length = struct.unpack("<HH", file.read(4))
        offset = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ 0x10]))


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """moto's standalone S3 server in its own process, with the bucket the S3 tests write to."""
    from tests.services import BUCKET, MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def server():
    """A plain HTTP file server on 127.0.0.1 for the download tests."""
    from tests.test_downloads import FileServer

    file_server = FileServer()
    file_server.thread.start()
    yield file_server
    file_server.httpd.shutdown()
    file_server.httpd.server_close()
