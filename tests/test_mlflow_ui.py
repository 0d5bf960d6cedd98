"""What a user sees in `mlflow ui`: trainlab's experiments open on the runs table, checked in a real
headless Chromium against a real `mlflow server` on a SQLite store that holds a real sweep."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from test_servers import free_port, responds, wait_until

from conftest import TINY
from trainlab.tracking.tracker import EXPERIMENT_KIND, MODEL_DEVELOPMENT, MlflowTracker, runs_table_url

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


class DevTools:
    """Headless Chromium driven through its DevTools protocol over a pipe (`--remote-debugging-pipe`:
    commands on fd 3, replies on fd 4, JSON messages ending in NUL), to click like a user; no package."""

    def __init__(self, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 and 4, whatever their numbers were
            high = [os.dup2(fd, 100 + i) for i, fd in enumerate((commands_read, replies_write))]
            for target, fd in zip((3, 4), high, strict=True):
                os.dup2(fd, target)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,800", "--remote-debugging-pipe",
             "about:blank"],
            close_fds=False, preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_read)
        os.close(replies_write)
        self._pending, self._id = b"", 0

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:  # replies to this call only; events are skipped
            while b"\0" not in self._pending:
                chunk = os.read(self._replies, 1 << 16)
                assert chunk, "Chromium closed its DevTools pipe"
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(reply["error"]["message"])
                return reply["result"]

    def evaluate(self, url: str, script: str) -> object:
        """Open `url`, wait until it has loaded, return the value of `script` (a JS expression, awaited)."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

        def run(expression: str) -> dict:
            return self.call(
                "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
            )

        loaded = 'location.href !== "about:blank" && document.readyState === "complete"'
        deadline = time.monotonic() + 60
        while not run(loaded)["result"].get("value"):
            assert time.monotonic() < deadline, f"{url} did not load in 60 s"
            time.sleep(0.25)
        reply = run(script)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


# Wait for the runs table, click the sweep's expander as a user would, return what the page then shows.
EXPAND_PARENT_RUN = """
(async () => {
  const until = async (found, ms) => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise(r => setTimeout(r, 250)))
      if (found()) return found();
    return null;
  };
  const expander = await until(
    () => document.querySelector('button[data-component-id$="runnamecellrenderer.tsx_46"]'), 60000);
  if (!expander) return "no expander in: " + document.body.innerText;
  expander.click();
  await until(() => document.body.innerText.includes("optimizer.lr="), 15000);
  return document.body.innerText;
})()
"""


def test_an_existing_experiment_without_the_kind_tag_gets_it_when_reopened(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    old = MlflowClient(uri).create_experiment("made-before", artifact_location=(tmp_path / "art").as_uri())
    cfg = OmegaConf.create(
        {"tracking_uri": uri, "experiment_name": "made-before", "artifact_location": str(tmp_path / "art")}
    )
    assert MlflowTracker(cfg)._experiment_id() == old
    assert MlflowClient(uri).get_experiment(old).tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT


def test_the_logged_link_opens_the_runs_table_where_people_reach_the_ui(monkeypatch):
    monkeypatch.delenv("TRAINLAB_UI_URL", raising=False)
    table = "/#/experiments/3/runs?workflowType=machine_learning"
    assert runs_table_url("sqlite:///mlruns/mlflow.db", "3") == "http://127.0.0.1:5000" + table
    assert runs_table_url("http://mlflow:5000/", "3") == "http://mlflow:5000" + table
    # The compose stack's trainer reaches the server by its service name; people on the host do not.
    monkeypatch.setenv("TRAINLAB_UI_URL", "http://127.0.0.1:8080")
    assert runs_table_url("http://mlflow:5000", "3") == "http://127.0.0.1:8080" + table


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
        browser = DevTools(tmp_path / "chromium-devtools")
        try:
            expanded = browser.evaluate(url, EXPAND_PARENT_RUN)
        finally:
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert ">Runs</h2>" in page  # the runs table, not the GenAI overview with its traces and token usage
    assert "Detect Issues" not in page
    assert parent.info.run_name in page
    # The trials sit under their parent's expander, collapsed; the table counts them with it ...
    assert f"<strong>{1 + len(trials)}</strong> matching runs" in page
    # ... and lists them, by name, once a click opens it.
    assert parent.info.run_name in expanded
    for trial in trials:
        assert trial.info.run_name in expanded
