"""trainlab from Python, as a notebook uses it: the same runs, errors and records as the CLI, several runs
in one process, and nothing of Hydra's left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import trainlab
from conftest import ONE_TRIAL_PER_JOB, REPO, TINY, mlflow_runs, write_mnist
from trainlab.errors import SweepFailed, UserError


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    """The project folder of the calls (data, mlruns, outputs) in tmp_path, as TRAINLAB_ROOT sets it."""
    write_mnist(tmp_path / "data")
    monkeypatch.setenv("TRAINLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def hydra_is_clear() -> bool:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    return not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()


def test_train_runs_as_the_cli_would_and_twice_in_one_process(root):
    first = trainlab.train(*TINY, "optimizer=adam")
    second = trainlab.train(*TINY, "norm=layer")
    runs = {run.info.run_id: run for run in mlflow_runs(root)}
    assert {first.run_id, second.run_id} == set(runs)
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert runs[first.run_id].data.params["optimizer.name"] == "adam"
    assert runs[second.run_id].data.params["norm.name"] == "layer"
    assert (first.output_dir / "checkpoints" / "last.ckpt").is_file()
    assert 0 <= first.value <= 1  # val/acc, what a sweeper would optimise
    assert hydra_is_clear()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1: must be a number > 0"),
        (["optimizer=adamm"], "optimizer='adamm': must be one of adagrad, adam, adamw, momentum, rmsprop"),
    ],
)
def test_a_mistake_raises_the_clis_one_line_and_leaves_no_run(root, overrides, message):
    with pytest.raises(UserError) as raised:
        trainlab.train(*TINY, *overrides)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert mlflow_runs(root) == []
    assert hydra_is_clear()


def test_an_interrupt_marks_the_run_killed_keeps_its_checkpoint_and_the_process_lives_on(root, monkeypatch):
    """The kernel's stop button sends SIGINT to the kernel's process: here a callback sends it during
    epoch 1's third batch, and the run stops at that batch's end, its state saved there."""
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    stop = "+callbacks.extra=[{_target_: user_callbacks.signals.SignalAt, epoch: 1, batch: 2}]"
    own = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="interrupted by SIGINT: the run is saved"):
        trainlab.train(*TINY, "trainer.max_epochs=1000", "data.batch_size=40", stop)
    (run,) = mlflow_runs(root)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == "interrupted (SIGINT)"
    [last] = (root / "outputs").rglob("last.ckpt")
    state = torch.load(last, weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 5 + 3)  # 200 images: 5 batches an epoch
    assert signal.getsignal(signal.SIGINT) is own  # the process's own handler back
    assert hydra_is_clear()
    again = trainlab.train(*TINY)  # and the next run in the same process works
    assert {r.info.status for r in mlflow_runs(root) if r.info.run_id == again.run_id} == {"FINISHED"}


def test_sweep_results_curves_and_report_come_back_as_dataframes_and_a_figure(root):
    runs = trainlab.sweep(
        "experiment=optimizers",
        "optimizer=sgd,adam",
        "trainer.max_steps=4",
        "callbacks.curves.every_n_steps=2",
    )
    assert list(runs["param.optimizer.name"]) == ["sgd", "adam"]
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["sweep"].nunique() == 1

    everything = trainlab.results(experiment="optimizers")
    assert set(runs["run_id"]) <= set(everything["run_id"])
    assert {"metric.test/acc", "metric.val/acc"} <= set(everything.columns)

    points = trainlab.curves(runs)
    assert set(points["metric"]) == {"curve/train/acc", "curve/test/acc"}
    assert sorted(points[points["run_id"] == runs["run_id"][0]]["step"].unique()) == [0, 2, 4]

    figure, table = trainlab.report("optimizers")
    assert figure.axes and list(table["variant"]) == ["SGD", "Adam"]
    assert hydra_is_clear()


def test_results_of_an_experiment_with_no_runs_say_so_in_one_line(root):
    with pytest.raises(UserError, match="no runs logged there yet"):
        trainlab.results(experiment="alexnet")


def test_runs_in_two_project_folders_in_one_process_each_log_to_their_own_store(root, tmp_path, monkeypatch):
    """MLflow's fluent API (which Lightning's logger and model logging use) sets $MLFLOW_TRACKING_URI for
    the whole process: a second project folder's run would be logged into the first one's store."""
    trainlab.train(*TINY)
    other = tmp_path / "other"
    write_mnist(other / "data")
    monkeypatch.setenv("TRAINLAB_ROOT", str(other))
    trainlab.train(*TINY)
    assert len(mlflow_runs(root)) == len(mlflow_runs(other)) == 1
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_sweep_that_stops_raises_the_clis_error_not_a_keyboard_interrupt(root):
    with pytest.raises(SweepFailed, match="sweep stopped: 2 of 2 trials failed, more than max_failure_rate"):
        trainlab.sweep(
            *TINY, "logger=none", "hparams_search=lr", "optimizer.lr=choice(1e10)",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.25", ONE_TRIAL_PER_JOB,
        )  # fmt: skip
    assert hydra_is_clear()
