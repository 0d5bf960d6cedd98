"""docker/compose.yaml brought up for real, as a team runs it: PostgreSQL, the MLflow server on it and a
training job, with podman-compose (no Docker daemon here). Only the images are local: no registry can be
reached, so PostgreSQL is docker/postgres built on a local Debian base (tests/images.py).

Each test is its own compose project (its own containers, network, volumes and UI port) and removes it,
volumes included, when it ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, TINY, write_mnist
from images import POSTGRES_IMAGE, TRAINLAB_IMAGE, base_image, postgres_image, trainlab_image

TINY_RUN = " ".join([*TINY, "data.download=false"])
WRONG_PASSWORD = "trainlab.cluster.stack: PostgreSQL at postgres:5432 refused user 'mlflow': wrong password."


def podman_compose() -> str:
    venv = str(Path(sys.executable).parent)
    found = shutil.which("podman-compose") or shutil.which("podman-compose", path=venv)
    if found is None:
        pytest.skip("podman-compose is not installed (pip install -e '.[dev]')")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    """One compose project of docker/compose.yaml, configured by its own .env file."""

    project: str
    env_file: Path
    folder: Path  # TRAINLAB_DIR: data/, outputs/, multirun/
    port: int

    def configure(self, **values: str | None) -> None:
        """Set (or, with None, remove) variables in the .env file."""
        lines = dict(line.split("=", 1) for line in self.env_file.read_text().splitlines() if line)
        lines.update(values)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items() if v is not None))

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        # The .env file only: none of this machine's variables (MLFLOW_TRACKING_URI, ...) leaks in.
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
        cmd = [podman_compose(), "-p", self.project, "-f", str(REPO / "docker" / "compose.yaml")]
        cmd += ["--env-file", str(self.env_file), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)

    def up(self, *services: str) -> None:
        result = self.compose("up", "-d", "--no-build", *services)
        assert result.returncode == 0, result.stderr[-3000:]

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def exit_code(self, service: str, timeout: float = 300) -> int:
        """Wait for the service's container to end; its exit status."""
        result = subprocess.run(
            ["podman", "wait", self.container(service)], capture_output=True, text=True, timeout=timeout
        )
        return int(result.stdout.strip())

    def logs(self, service: str) -> str:
        result = subprocess.run(["podman", "logs", self.container(service)], capture_output=True, text=True)
        return result.stdout + result.stderr

    def healthy(self, service: str) -> bool:
        """Run the service's health check once (podman's own schedule needs systemd, absent here)."""
        return subprocess.run(["podman", "healthcheck", "run", self.container(service)]).returncode == 0

    def wait_healthy(self, service: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(service):
            assert time.monotonic() < deadline, f"{service} not healthy in {timeout} s:\n{self.logs(service)}"
            time.sleep(2)

    def psql(self, database: str, query: str) -> str:
        cmd = ["podman", "exec", self.container("postgres"), "psql", "-U", "mlflow", "-d", database, "-tAc"]
        return subprocess.run([*cmd, query], capture_output=True, text=True, check=True).stdout.strip()

    def client(self):  # -> mlflow.MlflowClient
        from mlflow import MlflowClient

        return MlflowClient(f"http://127.0.0.1:{self.port}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    base = base_image()
    trainlab_image(base)
    postgres_image(base)
    folder = tmp_path / "trainlab"
    write_mnist(folder / "data")
    for name in ("data", "outputs", "multirun"):
        (folder / name).mkdir(exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image's user (uid 1000) writes there
    project = f"trainlab-test-{os.getpid()}-{tmp_path.name}".lower()
    stack = Stack(project, tmp_path / ".env", folder, free_port())
    stack.env_file.write_text("")
    stack.configure(
        POSTGRES_PASSWORD="s3cret:@/pass",  # characters that must be quoted in a database URL
        TRAINLAB_IMAGE=TRAINLAB_IMAGE,
        POSTGRES_IMAGE=POSTGRES_IMAGE,
        TRAINLAB_DIR=str(folder),
        MLFLOW_PORT=str(stack.port),
        TRAIN_ARGS=TINY_RUN,
    )
    yield stack
    stack.configure(POSTGRES_PASSWORD="any")  # every compose command needs one, `down` too
    stack.compose("down", "-v", timeout=120)


def host_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    result = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return next((a for a in result.stdout.split() if "." in a and not a.startswith("127.")), None)


@pytest.mark.slow
def test_the_stack_trains_logs_through_the_server_and_keeps_runs_and_studies_across_down_and_up(stack):
    import torch

    stack.up()
    assert stack.exit_code("trainer") == 0, stack.logs("trainer")[-3000:]
    client = stack.client()
    experiment = client.get_experiment_by_name("trainlab")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.name"] == "sgd" and run.data.params["trainer.max_epochs"] == "1"
    assert {"train/loss", "val/acc", "test/acc"} <= set(run.data.metrics)
    # The log's link to the run opens on this host, not at the in-stack http://mlflow:5000.
    link = f"http://127.0.0.1:{stack.port}/#/experiments/{experiment.experiment_id}/runs"
    assert link in stack.logs("trainer") and "http://mlflow:5000" not in stack.logs("trainer")
    # The checkpoint went through the server to its artifacts volume, and comes back to this host.
    path = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(stack.folder))
    assert "state_dict" in torch.load(path, weights_only=True)

    # The health checks that compose's depends_on conditions wait for pass in these images.
    assert stack.healthy("postgres") and stack.healthy("mlflow")
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/", timeout=10) as page:
        assert page.status == 200 and b"MLflow" in page.read()
    other = host_address()
    if other:  # the UI listens on this host's loopback only
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{other}:{stack.port}/", timeout=5)

    # Down and up again (volumes kept), this time a sweep: its study goes to PostgreSQL's `optuna`.
    assert stack.compose("down").returncode == 0
    stack.configure(TRAIN_ARGS=f"-m hparams_search=elastic_net hydra.sweeper.n_trials=2 {TINY_RUN}")
    stack.up()
    assert stack.exit_code("trainer") == 0, stack.logs("trainer")[-3000:]
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert run.info.run_id in runs
    assert client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(stack.folder / "again"))
    (parent,) = [r for r in runs.values() if r.info.run_name.startswith("sweep elastic_net")]
    trials = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert stack.psql("optuna", "SELECT state, count(*) FROM trials GROUP BY state") == "COMPLETE|2"
    assert not list(stack.folder.rglob("optuna.db"))


@pytest.mark.slow
def test_a_missing_password_or_a_wrong_one_is_one_line_not_a_restart_loop(stack):
    stack.configure(POSTGRES_PASSWORD=None)
    result = stack.compose("up", "-d", "--no-build")
    assert result.returncode != 0
    # Docker Compose prints this line alone; podman-compose 1.6 prints its traceback first
    # (containers/podman-compose#1503 makes it one line).
    assert "POSTGRES_PASSWORD" in result.stderr.strip().splitlines()[-1]
    assert "docker/.env" in result.stderr.strip().splitlines()[-1]
    assert not subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label=io.podman.compose.project={stack.project}"],
        capture_output=True,
        text=True,
    ).stdout.strip()

    # The database is created with one password; then .env says another.
    stack.configure(POSTGRES_PASSWORD="first")
    stack.up("postgres")
    stack.wait_healthy("postgres")
    assert stack.compose("down").returncode == 0
    stack.configure(POSTGRES_PASSWORD="second")
    stack.up()
    assert stack.exit_code("mlflow", timeout=120) == 1
    assert stack.logs("mlflow").strip().startswith(WRONG_PASSWORD)
    assert len(stack.logs("mlflow").strip().splitlines()) == 1
    time.sleep(3)
    state = subprocess.run(
        ["podman", "inspect", stack.container("mlflow"), "--format", "{{.State.Status}} {{.RestartCount}}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert state == ["exited", "0"]


def test_a_service_waits_for_the_one_it_needs_then_says_in_one_line_that_it_never_answered(tmp_path):
    """The wait itself, without containers: no MLflow server behind the trainer's tracking URI."""
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TRAINLAB_STACK_WAIT_S": "3"}
    cmd = [sys.executable, "-m", "trainlab.cluster.stack", "train"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"trainlab.cluster.stack: The MLflow server at {uri} did not answer in 3 s ("
    )
    assert len(result.stderr.strip().splitlines()) == 1
