"""What a user sees in `mlflow ui`: trainlab's experiments open on the runs table, checked in a real
headless Chromium against a real `mlflow server` on a SQLite store that holds a real sweep."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from test_servers import free_port, responds, wait_until

from conftest import TINY
from trainlab.tracking import EXPERIMENT_KIND, MODEL_DEVELOPMENT, MlflowTracker, runs_table_url

CHROMIUM = shutil.which("chromium")


def chromium(url: str, profile: Path, *output: str) -> str:
    """Load `url` headless, let its scripts run for 15 s of virtual time, return what Chromium prints."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--window-size=1400,800",
        *output,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout


def test_an_existing_experiment_without_the_kind_tag_gets_it_when_reopened(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    old = MlflowClient(uri).create_experiment("made-before", artifact_location=(tmp_path / "art").as_uri())
    cfg = OmegaConf.create(
        {"tracking_uri": uri, "experiment_name": "made-before", "artifact_location": str(tmp_path / "art")}
    )
    assert MlflowTracker(cfg)._experiment_id() == old
    assert MlflowClient(uri).get_experiment(old).tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/services.sh installs Debian's)")
def test_mlflow_ui_shows_a_sweeps_parent_run_and_its_trials_on_the_runs_table(run_cli, mnist_root, tmp_path):
    run_cli("-m", *TINY, "hparams_search=lr", "hydra.sweeper.n_trials=2")
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("trainlab")
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    trials = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2

    port = free_port()
    server_command = [Path(sys.executable).parent / "mlflow", "server", "--backend-store-uri", store]
    server_command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(server_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: responds(f"http://127.0.0.1:{port}/health"), server, "mlflow server")
        url = runs_table_url(f"http://127.0.0.1:{port}", experiment.experiment_id)
        page = chromium(url, tmp_path / "chromium", "--dump-dom")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert ">Runs</h2>" in page  # the runs table, not the GenAI overview with its traces and token usage
    assert "Detect Issues" not in page
    assert parent.info.run_name in page
    # The trials sit under their parent's expander, collapsed; the table counts them with it.
    assert f"<strong>{1 + len(trials)}</strong> matching runs" in page
