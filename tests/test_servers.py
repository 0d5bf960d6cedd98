"""Real servers, started by the tests on 127.0.0.1: an MLflow tracking server receiving a run over HTTP,
and PostgreSQL (Debian's package; `.ci/services.sh` installs it) as the MLflow backend store and the
Optuna storage shared by two sweep workers, as jobs on a cluster share them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ONE_TRIAL_PER_JOB, TINY, TRAIN, cli_env

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up within {timeout} s")
        time.sleep(0.2)


def responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def train(root: Path, *args: str, **env: str) -> subprocess.Popen:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *TINY, *overrides]
    return subprocess.Popen(cmd, cwd=root, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(job: subprocess.Popen) -> None:
    _, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr.decode()[-3000:]


def test_mlflow_server_receives_a_training_run_with_its_metrics_and_checkpoint_over_http(
    mnist_root, tmp_path
):
    port = free_port()
    store = tmp_path / "server"
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    command += [
        "--backend-store-uri",
        f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination",
        f"{store}/art",
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: responds(f"{uri}/health"), server, "mlflow server")
        finish(train(tmp_path, MLFLOW_TRACKING_URI=uri))

        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("trainlab").experiment_id])
        assert run.info.status == "FINISHED"
        assert {"val/acc", "test/acc"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert artifacts == {"checkpoints/best.ckpt"}
        assert list(store.glob("art/**/best.ckpt"))  # stored by the server, not the client
        assert not (tmp_path / "mlruns").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth); yields a URL without the database."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (initdb not found): run .ci/services.sh")
    folder = Path(tempfile.mkdtemp(prefix="trainlab-pg-"))  # not under pytest's root-only tmp folders
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run(
        [*as_user, bin_dir / "initdb", "-A", "trust", "-U", "postgres", "-D", data],
        check=True,
        capture_output=True,
    )
    command = [*as_user, bin_dir / "postgres", "-D", data, "-p", str(port), "-k", folder]
    command += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = [bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
    try:
        wait_until(lambda: subprocess.run(ready).returncode == 0, server, "postgres")
        for database in ("mlflow", "optuna"):
            subprocess.run(
                [bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
                check=True,
            )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_sweep_workers_share_one_optuna_study_and_one_mlflow_store_on_postgresql(
    mnist_root, tmp_path, postgres
):
    import optuna
    from mlflow.tracking import MlflowClient

    mlflow_uri, storage = f"{postgres}/mlflow", f"{postgres}/optuna"
    MlflowClient(mlflow_uri).search_experiments()  # create MLflow's tables once, as its server would
    sweep = ["-m", "hparams_search=lr", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared"]
    sweep += ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=1", ONE_TRIAL_PER_JOB]
    workers = [train(tmp_path, *sweep, MLFLOW_TRACKING_URI=mlflow_uri) for _ in range(2)]
    for worker in workers:
        finish(worker)

    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(done) <= 5  # the two workers may both start the fourth trial
    client = MlflowClient(mlflow_uri)
    runs = {
        r.info.run_id: r
        for r in client.search_runs([client.get_experiment_by_name("trainlab").experiment_id])
    }
    trial_runs = [runs.pop(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert all(run.info.status == "FINISHED" for run in trial_runs)
    (study_run,) = runs.values()  # the sweepers share the study's own run too
    assert study_run.data.tags["optuna.study"] == "shared"


def test_processes_opening_a_new_postgresql_study_at_once_take_turns_creating_its_tables(postgres):
    """Opening a new database runs Optuna's migrations; two sweepers doing so at once failed with
    "relation alembic_version already exists". While one holds the creation lock the others wait, then
    each opens the same storage."""
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    from trainlab.run.trial import open_storage
    from trainlab.tracking.creation_lock import creation_lock

    url = f"{postgres}/optuna"
    with ThreadPoolExecutor(4) as pool:
        with creation_lock(url):
            openings = [pool.submit(open_storage, url) for _ in range(4)]
            time.sleep(2)
            assert not any(opening.done() for opening in openings), "opened while another held the lock"
        storages = [opening.result(timeout=120) for opening in openings]
    study = optuna.create_study(study_name="turns", storage=storages[0])
    assert [optuna.load_study(study_name="turns", storage=s).study_name for s in storages] == [
        study.study_name
    ] * 4
