"""optuna-dashboard on the sweeper's study storage (docs/sweeps.md, "Watching a study"): a real sweep's
SQLite file, the real `optuna-dashboard` command on 127.0.0.1, its API and its page in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from test_mlflow_ui import CHROMIUM, chromium
from test_optuna_stock import run_app
from test_servers import free_port, postgres, responds, wait_until  # noqa: F401  (a fixture)

from conftest import cli_env

DASHBOARD = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(DASHBOARD is None, reason="pip install -e '.[dashboard]'")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def dashboard(tmp_path):
    """A 4-trial sweep of the stock example app through this sweeper (its default storage:
    <tmp_path>/optuna.db), and optuna-dashboard serving that file on 127.0.0.1: (url, the study)."""
    run_app("sphere.py", tmp_path / "sweep", "hydra.sweeper.n_trials=4", "hydra/sweeper/sampler=random")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    port = free_port()
    command = [DASHBOARD, storage, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: responds(f"{url}/api/studies"), server, "optuna-dashboard", timeout=60)
        yield url, optuna.load_study(study_name="sphere", storage=storage)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_optuna_dashboard_answers_with_the_sweeps_study_and_its_trials(dashboard):
    url, study = dashboard
    (summary,) = get(f"{url}/api/studies")["study_summaries"]
    assert summary["study_name"] == "sphere" and summary["directions"] == ["minimize"]
    shown = get(f"{url}/api/studies/{summary['study_id']}")["trials"]
    assert [(t["number"], t["state"], t["values"]) for t in shown] == [
        (t.number, "Complete", t.values) for t in study.trials
    ]
    assert [{p["name"]: float(p["param_external_value"]) for p in t["params"]} for t in shown] == [
        t.params for t in study.trials
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/services.sh installs Debian's)")
def test_optuna_dashboards_page_shows_the_study_in_a_browser(dashboard, tmp_path):
    url, _ = dashboard
    page = chromium(f"{url}/dashboard/studies/1", tmp_path / "chromium", "--dump-dom")
    assert "sphere (id=1)" in page and "History" in page
    shot = tmp_path / "dashboard.png"
    chromium(f"{url}/dashboard/studies/1", tmp_path / "chromium-shot", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_stacks_optuna_dashboard_serves_the_studies_in_its_postgresql(postgres, tmp_path):  # noqa: F811
    """What the compose stack's `optuna-dashboard` service runs, on a real PostgreSQL (docker/compose.yaml
    reaches it as `postgres`; here 127.0.0.1): a sweep's study there answers through the dashboard."""
    from sqlalchemy.engine import make_url

    server = make_url(postgres)
    storage = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/optuna"
    run_app("sphere.py", tmp_path / "sweep", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}")
    port = free_port()
    env = cli_env(
        POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(server.port), POSTGRES_USER="postgres",
        POSTGRES_PASSWORD="", POSTGRES_DB="mlflow",
    )  # fmt: skip
    command = [sys.executable, "-m", "trainlab.cluster.stack", "optuna-dashboard", "--host", "127.0.0.1"]
    dashboard = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: responds(f"{url}/api/studies"), dashboard, "optuna-dashboard", timeout=60)
        (summary,) = get(f"{url}/api/studies")["study_summaries"]
        trials = get(f"{url}/api/studies/{summary['study_id']}")["trials"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    assert summary["study_name"] == "sphere"
    assert [t["state"] for t in trials] == ["Complete"] * 3
