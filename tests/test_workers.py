"""Sweeps with workers (`hydra.sweeper.workers=N`) started on this machine: the command returns, N
processes of their own pull trials from a real Optuna journal file until the study has n_trials, with
real Hydra jobs of the CLI on tiny MNIST files and a real MLflow store. The same on a real SLURM:
tests/test_slurm.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from test_optuna_stock import results, run_app
from test_sweeper import RANDOM, SAFE_LR

from conftest import REPO, TINY, cli_env, mlflow_runs
from faults import Fault, subprocess_env

optuna.logging.set_verbosity(optuna.logging.WARNING)

WORKERS = ["hydra.sweeper.workers=2"]
SWEEPS = REPO / "src" / "sweeps.py"


def journal_study(path: Path) -> optuna.Study:
    """The one study in the journal file `path`."""
    return optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(path))))


def until_workers_end(study_file: Path, limit: float = 240) -> optuna.Study:
    """The study once every worker it records has ended (their processes gone): the sweep's end."""
    from trainlab.sweeps import workers_active

    deadline = time.monotonic() + limit
    while not study_file.exists() or workers_active(study := journal_study(study_file)):
        assert time.monotonic() < deadline, "the workers were still running"
        time.sleep(0.5)
    return study


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from trainlab.sweeps import counts_as_finished

    return [t for t in study.get_trials(deepcopy=False) if counts_as_finished(t)]


def test_workers_started_here_finish_the_sweep_after_the_command_has_returned(run_cli, mnist_root, tmp_path):
    """Two workers, five trials, populations where trials share a network (up to four trials a job): each
    job in the folder of its first trial, filed under one parent run that the worker telling the last
    result ends."""
    started = run_cli(
        "-m", *TINY, *RANDOM, "hparams_search=lr", SAFE_LR, "hydra.sweeper.n_trials=5", *WORKERS
    )
    assert "2 worker(s) started (processes" in started.stdout
    study = until_workers_end(tmp_path / "multirun" / "optuna.journal")

    trials = {t.number: t for t in counted(study)}
    assert len(trials) == 5 and {t.state.name for t in trials.values()} == {"COMPLETE"}
    # Workers asking at once may ask one too many: set aside, not counted, not trained.
    assert all(
        t.user_attrs["fail_reason"].endswith("asking at once") for t in study.trials if t.number not in trials
    )
    runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_value"] == study.best_value
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(trials)
    assert {r.info.status for r in children} == {"FINISHED"}
    # Each job in the folder of its (first) trial's number: a population's members in it, the other alone.
    (sweep_results,) = tmp_path.glob("multirun/*/optimization_results.yaml")
    jobs = {int(p.name): p for p in sweep_results.parent.iterdir() if p.name.isdigit()}
    assert set(jobs) <= set(trials) and sum(len(list(p.glob("member_*"))) or 1 for p in jobs.values()) == 5
    assert any(p.glob("member_*") for p in jobs.values())
    assert f"best_value: {study.best_value}" in sweep_results.read_text()

    status = subprocess.run(
        [sys.executable, SWEEPS, study.study_name, "--storage", tmp_path / "multirun" / "optuna.journal"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"{study.study_name}: 5 of 5 trials finished (5 COMPLETE), 0 running" in status.stdout
    assert "2 ended" in status.stdout
    import trainlab

    progress = trainlab.sweep_status(study.study_name, storage=str(tmp_path / "multirun" / "optuna.journal"))
    assert (
        progress.done
        and progress.best_value == study.best_value
        and progress.best_trial == study.best_trial.number
    )
    unknown = subprocess.run(
        [sys.executable, SWEEPS, "nope", "--storage", str(tmp_path / "multirun" / "optuna.journal")],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == f"error: study 'nope' not found; the studies there: {study.study_name}"


def test_a_worker_killed_mid_trial_has_its_trial_retried_by_the_other_from_its_checkpoint(
    run_cli, mnist_root, tmp_path
):
    """kill -9 of worker 0 as it saves its first trial's second last.ckpt: worker 1 sees its process gone,
    fails that trial (not counted) and trains it again from its last.ckpt, in its folder and MLflow run.
    The sweep ends with exactly n_trials finished, no trial and no run RUNNING."""
    fault = subprocess_env(Fault("SIGKILL", "checkpoint.last.ckpt", 2), TRAINLAB_TEST_FAULT_ARGV="0")
    run_cli(
        "-m", *TINY, "trainer.max_epochs=3", *RANDOM, "hparams_search=lr", SAFE_LR,
        "hydra.sweeper.n_trials=3", "hydra.sweeper.population=1", *WORKERS, env=fault,
    )  # fmt: skip
    study = until_workers_end(tmp_path / "multirun" / "optuna.journal")

    assert len(counted(study)) == 3 and {t.state.name for t in counted(study)} == {"COMPLETE"}
    (lost,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert (
        lost.user_attrs["fail_reason"].startswith("interrupted: its sweeper")
        and "is gone" in lost.user_attrs["fail_reason"]
    )
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.state.name == "COMPLETE" and retry.params == lost.params
    # From its checkpoint: the same MLflow run goes on (resumed), and ends FINISHED with three epochs.
    assert retry.user_attrs["mlflow_run_id"] == lost.user_attrs["mlflow_run_id"]
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path)}
    resumed = runs[retry.user_attrs["mlflow_run_id"]]
    assert resumed.data.tags["resumed"] == "true" and resumed.info.status == "FINISHED"
    assert "RUNNING" not in {r.info.status for r in runs.values()}


def test_any_apps_sweep_with_wait_follows_its_workers_to_the_end_and_prints_the_best(tmp_path):
    """The stock plugin's example app (seeded sampler) with two workers: each draws its own trials (over a
    continuous space: no trial twice), and the command, told to wait, shows the progress and writes the
    best."""
    followed = run_app(
        "sphere.py", tmp_path / "sweep", "hydra/sweeper=trainlab_optuna", "hydra.sweeper.n_trials=6",
        "x=interval(-5, 5)", "y=interval(-5, 5)", *WORKERS, "hydra.sweeper.wait=true",
    )  # fmt: skip
    assert "6 of 6 trials finished (6 COMPLETE)" in followed.stdout
    study = journal_study(tmp_path / "optuna.journal")
    assert len({tuple(t.params.values()) for t in study.trials}) == 6 == len(study.trials)
    assert results(tmp_path / "sweep").best_value == study.best_value


def test_waiting_for_workers_that_stopped_the_sweep_for_its_failures_ends_in_one_line(tmp_path):
    """Every trial raises (the app's `error=true`): each worker stops the sweep (max_failure_rate=0) and
    exits; the command that waits for them says so in one line, exit status 1, instead of waiting on."""
    followed = run_app(
        "sphere.py", tmp_path / "sweep", "hydra/sweeper=trainlab_optuna", "error=true", *WORKERS,
        "hydra.sweeper.wait=true", check=False,
    )  # fmt: skip
    assert followed.returncode == 1, followed.stderr[-2000:]
    (line,) = followed.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: the workers of study sphere ended with ") and "FAIL" in line
    logs = tmp_path / "sweep" / ".workers"
    assert line.endswith(f"; why: their logs in {logs}; the same command starts new ones")
    # Each worker said why: more trials failed than max_failure_rate (0 here) allows.
    said = "".join(path.read_text() for path in logs.glob("*.log"))
    assert "trials failed, more than max_failure_rate=0.0 of n_trials=20" in said


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["launcher=slurm", "hydra.sweeper.storage=sqlite:///{root}/optuna.db"],
            "error: hydra.sweeper.storage=sqlite:///{root}/optuna.db: SQLite cannot be shared by workers on "
            "several nodes",
        ),
        (["hydra.sweeper.workers=-1"], "hydra.sweeper.workers=-1: must be 0 (one batch of n_jobs"),
        (["hydra.sweeper.heartbeat_interval=300"], "hydra.sweeper.heartbeat_interval=300: must be a number"),
    ],
)
def test_workers_refuse_a_store_or_setting_they_cannot_work_with_in_one_line(
    run_cli, tmp_path, overrides, message
):
    wrong = [o.format(root=tmp_path) for o in overrides]
    result = run_cli("-m", "hparams_search=lr", *WORKERS, *wrong, check=False)
    assert result.returncode != 0 and message.format(root=tmp_path) in result.stderr
    assert not (tmp_path / "optuna.db").exists() and not list(tmp_path.glob("multirun/**/.workers"))
