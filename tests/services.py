"""Real servers for the tests, on 127.0.0.1 only: moto's S3 server, luigid, and a TCP
relay that makes an endpoint disappear and come back, plus process helpers."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager

import boto3
import luigi
from luigi.task_register import Register

from tests.conftest import REPO_ROOT, subprocess_env, write_config

# Dummy credentials with distinctive values, so a test can prove they never leak.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIATESTKEY7Q3XZ", "AWS_SECRET_ACCESS_KEY": "test-secret-4f9c2e71b8"}
# The environment of the pipeline's processes in these tests.
TEST_ENV = {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1",
            # fail fast when the endpoint is down, instead of after boto3's default retries
            "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2",
            # tiny networks gain nothing from threads, which parallel test processes would oversubscribe
            "OMP_NUM_THREADS": "1"}
BUCKET = "artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class MotoServer:
    """moto's standalone S3 server in its own process."""

    def __init__(self, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process)

    def client(self, url: str | None = None):
        return boto3.client("s3", endpoint_url=url or self.url, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def stop(self):
        stop(self.process)
        self._log.close()


class Relay:
    """A TCP relay to another port: stopping it makes the endpoint unreachable, as a
    crashed server would, while the server behind it keeps its data."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self._connections: list[socket.socket] = []
        self._listener = None
        self.start()

    def start(self):
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self):
        self._listener.close()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._connections.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class Luigid:
    """A central luigi scheduler with its own state file and config."""

    def __init__(self, tmp_path, config_path):
        self.port = free_port()
        self._log = open(tmp_path / "luigid.log", "w")
        self.process = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "luigid"), "--address", "127.0.0.1",
             "--port", str(self.port), "--state-path", str(tmp_path / "luigid-state.pickle")],
            env=subprocess_env(config_path), cwd=tmp_path, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process)

    def tasks(self, status: str) -> dict:
        query = urllib.parse.quote(json.dumps({"status": status}))
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/task_list?data={query}", timeout=10) as reply:
            return json.load(reply)["response"]

    def stop(self):
        stop(self.process)
        self._log.close()


def start_luigi(config_path, log_path, *args, scheduler_port: int | None = None, env=None) -> subprocess.Popen:
    """`luigi --module pipeline ARGS` in its own process, output to log_path."""
    where = (["--scheduler-host", "127.0.0.1", "--scheduler-port", str(scheduler_port)] if scheduler_port
             else ["--local-scheduler"])
    return subprocess.Popen([sys.executable, "-m", "luigi", "--module", "pipeline", *args, *where],
                            env={**subprocess_env(config_path), **(env or {})}, cwd=REPO_ROOT,
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def children(pid: int) -> list[int]:
    """Every descendant of a process, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished
    except OSError:
        return False


def kill_hard(process: subprocess.Popen) -> list[int]:
    """SIGKILL one process alone (not its group), as a crash would; returns its descendants at that moment."""
    descendants = children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    return descendants


def end_group(process: subprocess.Popen) -> None:
    """Clean-up: SIGKILL a process started by start_luigi and everything in its session."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def s3_config(tmp_path, endpoint_url: str, **sections) -> tuple[str, str]:
    """A luigi.cfg like conftest.write_config's with the artifacts under a fresh S3 prefix; returns (path, root)."""
    root = f"s3://{BUCKET}/{tmp_path.name}"
    path = write_config(tmp_path, s3={"endpoint_url": endpoint_url, "region_name": "us-east-1"}, **sections)
    with open(path) as file:
        text = file.read().replace(f"root = {tmp_path / 'artifacts'}",
                                   f"root = {root}\ncache_dir = {tmp_path / 'cache'}")
    with open(path, "w") as file:
        file.write(text)
    return path, root


def s3_keys(client, root: str, pattern: str = "") -> list[str]:
    """Keys under an s3:// root (relative to it) in which the regular expression `pattern` occurs."""
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])
                  if re.search(pattern, item["Key"][len(prefix):]))


def run_luigi(config_path, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`luigi --module pipeline ARGS --local-scheduler` to completion, stdout and stderr together."""
    return subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", *args, "--local-scheduler"],
                          env={**subprocess_env(config_path), **(env or {})}, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def s3_key(root: str, *parts: str) -> str:
    """The bucket key of a path under an s3:// root."""
    return "/".join([root.removeprefix(f"s3://{BUCKET}/"), *parts])


@contextmanager
def config_values(values: dict[tuple[str, str], str]):
    """Set luigi config options in this process for the duration of a block."""
    config = luigi.configuration.get_config()
    saved = {key: config.get(*key, fallback=None) for key in values}
    for (section, option), value in values.items():
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, option, value)
    Register.clear_instance_cache()  # luigi.Config objects read the config once
    try:
        yield
    finally:
        for (section, option), value in saved.items():
            if value is None:
                config.remove_option(section, option)
            else:
                config.set(section, option, value)
        Register.clear_instance_cache()
