"""Repeats and k-fold cross-validation: a group of runs under one MLflow parent run holding each final
metric's mean, std, count and 95 % CI; stratified folds; the group as an Optuna trial; resuming a group;
the one-line mistakes. Real CLI runs on tiny MNIST files, real MLflow stores and Optuna storages."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from conftest import TINY, TRAIN, cli_env, mlflow_runs
from faults import Fault, subprocess_env
from trainlab.data import build_datamodule
from trainlab.errors import ConfigError
from trainlab.repeats.stats import summarize, welch_p


def test_summary_is_mean_sample_std_and_a_student_t_interval():
    values = [0.81, 0.84, 0.79, 0.86, 0.83]
    summary = summarize(values)
    mean, std = sum(values) / 5, torch.tensor(values).std().item()  # torch: n − 1 by default
    assert summary.mean == pytest.approx(mean)
    assert summary.std == pytest.approx(std)
    half = 2.7764451051977987 * std / math.sqrt(5)  # t_{0.975, 4}
    assert (summary.low, summary.high) == pytest.approx((mean - half, mean + half))
    assert summary.count == 5
    assert math.isnan(summarize([0.5]).std)  # one run has no spread


def test_welch_p_value_is_scipys_unequal_variance_t_test():
    a, b = [0.80, 0.82, 0.81, 0.79], [0.70, 0.75, 0.72, 0.90]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p(a, a) == pytest.approx(1.0)


def test_folds_partition_the_training_images_by_class_and_leave_the_test_set_alone(compose, mnist_root):
    common = [f"data.root={mnist_root}", "data.folds=4"]
    modules = [build_datamodule(compose(*common, f"data.fold={i}").data, seed=i) for i in range(4)]
    plain = build_datamodule(compose(f"data.root={mnist_root}").data, seed=0)
    pool = len(plain.train) + len(plain.val)
    val_sets = [{tuple(m.val.images[j].flatten()[:64].tolist()) for j in range(len(m.val))} for m in modules]
    assert sum(len(v) for v in val_sets) == pool // 4 * 4  # every image validates once (but pool mod 4)
    assert len(set.union(*val_sets)) == pool // 4 * 4
    assert {(len(m.train), len(m.val)) for m in modules} == {(pool // 4 * 3, pool // 4)}  # one size
    for m in modules:
        assert torch.equal(m.test.images, plain.test.images)  # the test set is untouched
        shares = torch.bincount(m.val.labels, minlength=10) / torch.bincount(plain.train.labels, minlength=10)
        assert shares.max() - shares.min() < 0.2  # each class's share, stratified
    assert "4 folds (stratified, split_seed=0): fold 2 validates" in modules[2].split


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["repeats=0"], "repeats=0: must be an integer >= 1 (1: one run)"),
        (["data.folds=1"], "data.folds=1: must be null or an integer >= 2"),
        (["data.folds=5", "data.fold=5"], "data.fold=5: must be an integer from 0 to 4 (data.folds=5)"),
        (["data.fold=2"], "data.fold=2: must be null without data.folds"),
        (["data.folds=5", "data.val_size=0.2"], "data.val_size=0.2: must be null with data.folds"),
    ],
)
def test_group_mistakes_are_one_line_naming_the_key(compose, overrides, message):
    from trainlab.config import validate

    with pytest.raises(ConfigError, match=None) as caught:
        validate(compose(*overrides), build=False)
    assert str(caught.value).startswith(message)


def test_more_folds_than_a_class_has_images_stops_before_any_run(run_cli, mnist_root, tmp_path):
    result = run_cli("data.folds=150", *TINY, check=False)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: data.folds=150: must be at most ")
    assert "training images" in line
    assert mlflow_runs(tmp_path) == []  # no parent run, no child


# A callback of the user's own keeps a group out of a population: its runs train one after another.
ONE_AFTER_ANOTHER = "callbacks.extra=[{_target_:lightning.pytorch.callbacks.Callback}]"
USER_CODE = str(Path(__file__).parent)


def _group(root: Path) -> tuple:
    runs = mlflow_runs(root)
    [parent] = [r for r in runs if "group.member" not in r.data.tags]
    return parent, {r.data.tags["group.member"]: r for r in runs if r is not parent}


def test_repeats_times_folds_are_ordinary_runs_under_one_parent_with_mean_std_and_ci(
    run_cli, mnist_root, tmp_path
):
    run_cli("repeats=2", "data.folds=2", "seed=5", *TINY)
    parent, children = _group(tmp_path)
    assert parent.info.status == "FINISHED"
    assert sorted(children) == ["seed_5_fold_0", "seed_5_fold_1", "seed_6_fold_0", "seed_6_fold_1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    assert {r.data.tags["population.job"] for r in children.values()} == {"population"}  # ONE population
    # Seeds differ in init and data order: the first epoch's training loss differs between repeats.
    assert (
        children["seed_5_fold_0"].data.metrics["train/loss"]
        != children["seed_6_fold_0"].data.metrics["train/loss"]
    )
    for r in children.values():
        r.data.metrics["train_test_gap"] = r.data.metrics["train/acc"] - r.data.metrics["test/acc"]
    for metric in ("test/acc", "test/loss", "train/acc", "val/acc", "train_test_gap"):
        summary = summarize([r.data.metrics[metric] for r in children.values()])
        assert parent.data.metrics[f"{metric}.mean"] == pytest.approx(summary.mean, abs=1e-6)
        assert parent.data.metrics[f"{metric}.std"] == pytest.approx(summary.std, abs=1e-6)
        assert parent.data.metrics[f"{metric}.count"] == 4
        assert parent.data.metrics[f"{metric}.ci95_low"] == pytest.approx(summary.low, abs=1e-6)
        assert parent.data.metrics[f"{metric}.ci95_high"] == pytest.approx(summary.high, abs=1e-6)
    # Each child validates on its own fold: the data tag says which.
    assert children["seed_6_fold_1"].data.tags["data.split"].endswith("fold 1 validates")

    # One after another, the same runs come to the same numbers: each member is its standalone run.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "data").symlink_to(tmp_path / "data")
    run_cli("repeats=2", "data.folds=2", "seed=5", ONE_AFTER_ANOTHER, *TINY, root=alone)
    _, sequential = _group(alone)
    assert "population.job" not in sequential["seed_5_fold_0"].data.tags
    for name, run in children.items():
        for metric in ("train/loss", "val/loss", "test/loss", "test/acc"):
            expected = sequential[name].data.metrics[metric]
            assert run.data.metrics[metric] == pytest.approx(expected, rel=1e-4), (name, metric)


@pytest.mark.parametrize("how", ["population", "one after another"])
def test_a_group_in_an_optuna_sweep_reports_the_mean_and_keeps_the_std(run_cli, mnist_root, tmp_path, how):
    import optuna

    run_cli(
        "-m",
        "hparams_search=lr",
        "hydra.sweeper.n_trials=1",
        "repeats=2",
        "trainer.max_epochs=2",
        *([ONE_AFTER_ANOTHER] if how != "population" else []),
        *TINY[1:],
    )
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path}/multirun/optuna.db")
    [trial] = study.trials
    assert trial.state.name == "COMPLETE"
    runs = mlflow_runs(tmp_path)
    [group] = [r for r in runs if r.info.run_id == trial.user_attrs["mlflow_run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == group.info.run_id]
    assert len(children) == 2
    assert trial.value == pytest.approx(group.data.metrics["val/acc.mean"], abs=1e-6)
    assert trial.user_attrs["std"] == pytest.approx(group.data.metrics["val/acc.std"], abs=1e-6)
    # Each epoch's reported value is the mean of the two runs' val/acc at that epoch.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    curves = [
        sorted(client.get_metric_history(r.info.run_id, "val/acc"), key=lambda m: m.step) for r in children
    ]
    means = [(a.value + b.value) / 2 for a, b in zip(*curves, strict=True)]
    assert list(trial.intermediate_values.values()) == pytest.approx(means, abs=1e-6)


@pytest.mark.parametrize("how", ["population", "one after another"])
def test_kill_9_during_a_group_then_ckpt_path_last_keeps_what_was_done_and_resumes(mnist_root, tmp_path, how):
    # kill -9 as a last.ckpt is about to be written: the population's second (its epoch 1), or one after
    # another seed_1's second (seed_0 wrote four in its 4 epochs): each has its epoch 0 saved.
    args = [f"paths.root_dir={tmp_path}", "repeats=2", "trainer.max_epochs=4", *TINY[1:]]
    if how != "population":  # a callback of the user's: the runs train one after another (not as one network)
        args.append("callbacks.extra=[{_target_:lightning.pytorch.callbacks.Timer}]")
    nth = 2 if how == "population" else 6
    process = subprocess.run(
        [sys.executable, str(TRAIN), *args],
        cwd=tmp_path,
        env=subprocess_env(Fault("SIGKILL", "checkpoint.last.ckpt", nth)),
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL
    [folder] = [p.parent for p in tmp_path.glob("outputs/*/*/group.json")]
    first = json.loads((folder / "group.json").read_text())
    assert list(first["done"]) == ([] if how == "population" else ["seed_0"])

    result = subprocess.run(
        [sys.executable, str(TRAIN), *args, "ckpt_path=last"],
        cwd=tmp_path,
        env=cli_env(PYTHONPATH=USER_CODE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((folder / "group.json").read_text())
    assert list(record["done"]) == ["seed_0", "seed_1"]
    if how != "population":
        assert record["done"]["seed_0"] == first["done"]["seed_0"]  # kept, not trained again
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 3  # one parent, two runs: the interrupted ones reopened, none added
    assert {r.info.status for r in runs} == {"FINISHED"}
    [resumed] = [r for r in runs if r.data.tags.get("group.member") == "seed_1"]
    assert resumed.data.tags.get("resumed") == "true"


def test_the_report_draws_each_group_as_a_mean_and_std_band_and_tables_mean_and_ci(
    run_cli, mnist_root, tmp_path, monkeypatch
):
    from matplotlib.collections import PolyCollection

    from trainlab.figures.exercise import report

    run_cli(
        "-m",
        "experiment=overfitting",
        "variant=baseline,l2",
        "repeats=3",
        "data.train_size=50",
        "trainer.max_steps=4",
        "callbacks.curves.every_n_steps=2",
        *TINY[1:],
    )
    for name in ("MLFLOW_TRACKING_URI", "TRAINLAB_ROOT"):
        monkeypatch.delenv(name, raising=False)
    drawn = report("overfitting", overrides=[f"paths.root_dir={tmp_path}"])
    assert [row["variant"] for row in drawn.rows] == ["no regularization", "L2 λ=0.1"]
    runs = mlflow_runs(tmp_path, "overfitting")
    assert [row["runs"] for row in drawn.rows] == [3, 3]
    assert all(row["test acc ci"] >= 0 for row in drawn.rows)  # mean ± the half-width of a Student-t CI
    baseline = [r for r in runs if "group.member" in r.data.tags and r.data.params["variant"] == "baseline"]
    summary = summarize([r.data.metrics["test/acc"] for r in baseline])
    assert drawn.rows[0]["best-ckpt test"] == pytest.approx(summary.mean)
    assert drawn.rows[0]["best-ckpt test ci"] == pytest.approx(summary.half_width)
    panels = drawn.figure.axes
    assert any(isinstance(c, PolyCollection) for c in panels[0].collections)  # the ± std band
    assert "(mean ± std of 3 runs)" in panels[0].get_title()
    table = (drawn.png.parent / "overfitting_results.txt").read_text()
    assert f"{summary.mean:.3f} ± {summary.half_width:.3f}" in table


def test_ctrl_c_in_a_group_trained_one_after_another_marks_the_parent_interrupted(
    run_cli, mnist_root, tmp_path
):
    """A user's callback keeps the runs one after another; it also sends the Ctrl-C, during seed_0's
    second epoch (tests/user_callbacks/signals.py). The parent run says why it stopped: interrupted, not
    "preempted: saved and requeued" (a requeue is SLURM's)."""
    stop = "+callbacks.extra=[{_target_: user_callbacks.signals.SignalAt, epoch: 1, batch: 0}]"
    result = run_cli(
        "repeats=2", "trainer.max_epochs=3", *TINY[1:], stop, env={"PYTHONPATH": USER_CODE}, check=False
    )
    assert result.returncode == 128 + signal.SIGINT
    assert result.stderr.strip().splitlines()[-1].startswith("interrupted by SIGINT: the run is saved")
    runs = {r.data.tags.get("group.member", "parent"): r for r in mlflow_runs(tmp_path)}
    assert set(runs) == {"parent", "seed_0"}
    for run in runs.values():
        assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == "interrupted (SIGINT)"
