import os
import subprocess
import sys

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
            grid_images=4, decode_workers=1)


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
