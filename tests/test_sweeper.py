"""The Optuna sweeper end to end: real Optuna on a real SQLite storage, real Hydra multiruns of the CLI in
a subprocess on tiny MNIST files, real MLflow stores."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import ONE_TRIAL_PER_JOB, TINY, TRAIN, cli_env, mlflow_runs
from faults import Fault, subprocess_env

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A sweep whose trials all train (no divergence on the tiny data), sampled reproducibly.
SAFE_LR = "optimizer.lr=tag(log, interval(0.01, 0.2))"
RANDOM = ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0"]


def load_study(root: Path) -> optuna.Study:
    """The one study of the sweeps run under `root` (default storage: <root>/multirun/optuna.db)."""
    return optuna.load_study(study_name=None, storage=f"sqlite:///{root}/multirun/optuna.db")


def states(study: optuna.Study) -> list[str]:
    return sorted(t.state.name for t in study.get_trials(deepcopy=False))


def sweep_results(root: Path) -> list:
    return [OmegaConf.load(p) for p in sorted(root.glob("multirun/*/optimization_results.yaml"))]


def test_four_trial_sweep_records_the_study_a_parent_run_four_children_and_the_best(
    run_cli, mnist_root, tmp_path
):
    run_cli(
        "-m", *TINY, *RANDOM, "hparams_search=elastic_net", "hydra.sweeper.n_trials=4",
        "regularizer.l1=tag(log, interval(1e-6, 1e-3))", "regularizer.l2=tag(log, interval(1e-6, 1e-2))",
        SAFE_LR,
    )  # fmt: skip
    study = load_study(tmp_path)
    assert states(study) == ["COMPLETE"] * 4
    assert {tuple(t.params) for t in study.trials} == {("regularizer.l1", "regularizer.l2", "optimizer.lr")}
    assert all(1e-6 <= t.params["regularizer.l1"] <= 1e-3 for t in study.trials)

    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4 == len(runs) - 1
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["optuna.state"] for r in children} == {"COMPLETE"}
    best = study.best_trial
    assert parents[0].data.metrics["best_value"] == pytest.approx(best.value)
    assert parents[0].data.tags["best.optimizer.lr"] == str(best.params["optimizer.lr"])
    best_child = next(r for r in children if r.data.tags["optuna.trial"] == str(best.number))
    assert float(best_child.data.params["optimizer.lr"]) == pytest.approx(best.params["optimizer.lr"])

    (results,) = sweep_results(tmp_path)
    assert results.best_value == pytest.approx(best.value)
    assert results.best_params == best.params and results.study_name == study.study_name


def test_a_sweeper_joining_a_study_another_is_starting_files_its_trials_under_that_parent_run(
    mnist_root, tmp_path
):
    """Sweepers started together share one parent run: only the one whose create_study succeeded opens
    it, the others wait for its id. The creator here is the test: it stores its run's id only once the
    joining sweeper says it is waiting."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "multirun").mkdir()
    optuna.create_study(study_name="shared", storage=f"sqlite:///{tmp_path}/multirun/optuna.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parent = client.create_run(client.create_experiment("trainlab")).info.run_id
    cmd = [
        sys.executable, str(TRAIN), "-m", f"paths.root_dir={tmp_path}", *TINY, "hparams_search=lr",
        "hydra.sweeper.direction=minimize", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=1",
    ]  # fmt: skip
    sweep = subprocess.Popen(
        cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in sweep.stdout:
        output.append(line)
        if "Waiting for the sweeper that created study shared" in line:
            load_study(tmp_path).set_user_attr("mlflow_parent_run_id", parent)
    assert sweep.wait(timeout=300) == 0, "".join(output)[-3000:]

    assert any("Waiting for the sweeper" in line for line in output), "it opened a parent run of its own"
    (trial_run,) = (r for r in mlflow_runs(tmp_path) if r.info.run_id != parent)
    assert trial_run.data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"


def test_killed_sweep_resumes_with_the_same_command_to_exactly_n_trials(mnist_root, tmp_path):
    args = ["-m", f"paths.root_dir={tmp_path}", *TINY, *RANDOM, "hparams_search=lr", SAFE_LR]
    args.append(ONE_TRIAL_PER_JOB)  # trials one after another: one completes, then the next is killed
    cmd = [sys.executable, str(TRAIN), *args, "hydra.sweeper.n_trials=3", "trainer.max_epochs=2"]
    # kill -9 as the second trial's first last.ckpt is about to be written (the first trial wrote two)
    fault = subprocess_env(Fault("SIGKILL", "checkpoint.last.ckpt", 3))
    killed = subprocess.run(cmd, cwd=tmp_path, env=fault, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert states(load_study(tmp_path)) == ["COMPLETE", "RUNNING"]
    assert "RUNNING" in {r.info.status for r in mlflow_runs(tmp_path)}  # its run, until the next command

    resumed = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = load_study(tmp_path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == 3 and "RUNNING" not in states(study)
    assert "RUNNING" not in {r.info.status for r in mlflow_runs(tmp_path)}
    assert len({t.params["optimizer.lr"] for t in complete}) == 3  # none run twice
    assert interrupted and all(t.user_attrs["fail_reason"].startswith("interrupted") for t in interrupted)
    # ... and none lost: the interrupted trial's parameters ran again.
    assert {t.params["optimizer.lr"] for t in interrupted} <= {t.params["optimizer.lr"] for t in complete}


def test_diverging_trials_fail_with_their_reason_and_the_sweep_goes_on(run_cli, mnist_root, tmp_path):
    result = run_cli(
        "-m", *TINY, "trainer.max_epochs=2", "hparams_search=lr", "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(0.05, 1e10)", "hydra.sweeper.n_trials=2",
    )  # fmt: skip
    assert result.returncode == 0
    study = load_study(tmp_path)
    by_lr = {t.params["optimizer.lr"]: t for t in study.trials}
    assert by_lr[0.05].state == TrialState.COMPLETE
    assert by_lr[1e10].state == TrialState.FAIL
    assert by_lr[1e10].user_attrs["fail_reason"].startswith("Diverged: train/loss became")
    failed_run = next(r for r in mlflow_runs(tmp_path) if r.data.tags.get("optuna.state") == "FAIL")
    assert failed_run.info.status == "FAILED" and "Diverged" in failed_run.data.tags["failure_reason"]
    assert sweep_results(tmp_path)[0].best_params == {"optimizer.lr": 0.05}


def test_sweep_stops_once_more_than_max_failure_rate_of_n_trials_failed(run_cli, mnist_root, tmp_path):
    result = run_cli(
        "-m", *TINY, "logger=none", "hparams_search=lr", "optimizer.lr=choice(1e10)",
        "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.25", ONE_TRIAL_PER_JOB, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "sweep stopped: 2 of 2 trials failed, more than max_failure_rate=0.25 of n_trials=4" in result.stderr
    )
    assert states(load_study(tmp_path)) == ["FAIL", "FAIL"]


def test_pruner_stops_a_hopeless_trial_after_its_first_epoch_and_keeps_its_curve(
    run_cli, mnist_root, tmp_path
):
    run_cli(
        "-m", *TINY, "trainer.max_epochs=3", "hparams_search=lr", "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(1e-6, 0.1)", "hydra.sweeper.n_trials=2",
        # Any Optuna pruner by _target_; this one makes the outcome certain: lr=1e-6 stays near chance.
        "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 0.5}",
    )  # fmt: skip
    study = load_study(tmp_path)
    hopeless = next(t for t in study.trials if t.params["optimizer.lr"] == 1e-6)
    assert hopeless.state == TrialState.PRUNED and list(hopeless.intermediate_values) == [0]
    run = next(r for r in mlflow_runs(tmp_path) if r.data.tags.get("optuna.trial") == str(hopeless.number))
    assert run.data.tags["optuna.state"] == "PRUNED" and run.info.status == "KILLED"
    assert run.data.metrics["val/acc"] == pytest.approx(hopeless.intermediate_values[0])


@pytest.mark.parametrize(
    ("pruner", "target"),
    [
        ("median", "optuna.pruners.MedianPruner"),
        ("successive_halving", "optuna.pruners.SuccessiveHalvingPruner"),
        ("hyperband", "optuna.pruners.HyperbandPruner"),
        (None, None),  # no choice: no pruner
    ],
)
def test_the_documented_pruner_group_choice_composes_to_that_pruner(run_cli, tmp_path, pruner, target):
    """The sweeper node's own `pruner: null` must not override the group's choice."""
    choice = [f"hydra/sweeper/pruner={pruner}"] if pruner else []
    result = run_cli("hparams_search=lr", *choice, "--cfg=hydra", "--package=hydra.sweeper")
    assert OmegaConf.select(OmegaConf.create(result.stdout), "pruner._target_") == target


def test_pruner_median_as_documented_prunes_a_trial_below_the_median_of_the_earlier_ones(
    run_cli, mnist_root, tmp_path
):
    run_cli(
        "-m", *TINY, "trainer.max_epochs=3", "hparams_search=lr", "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1", "hydra/sweeper/sampler=brute_force",
        "hydra.sweeper.sampler.seed=0", "optimizer.lr=choice(1e-6, 0.1)", "hydra.sweeper.n_trials=2",
        ONE_TRIAL_PER_JOB,
    )  # fmt: skip
    first, second = sorted(load_study(tmp_path).trials, key=lambda t: t.number)
    # The seeded brute-force order: the good rate first sets the median, the hopeless one falls below it.
    assert first.params["optimizer.lr"] == 0.1 and first.state == TrialState.COMPLETE
    assert second.params["optimizer.lr"] == 1e-6 and second.state == TrialState.PRUNED
    assert list(second.intermediate_values) == [0] and second.intermediate_values[0] < first.value


def test_two_jobs_run_trials_in_parallel_processes_without_storage_errors(run_cli, mnist_root, tmp_path):
    result = run_cli(
        "-m", *TINY, *RANDOM, "trainer.max_epochs=2", "hparams_search=lr", SAFE_LR,
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", ONE_TRIAL_PER_JOB,
    )  # fmt: skip
    assert states(load_study(tmp_path)) == ["COMPLETE", "COMPLETE"]
    assert "database is locked" not in result.stderr
    # Each job's span: from Hydra writing its config (job start) to the end of its MLflow run.
    children = [r for r in mlflow_runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    started = [
        (tmp_path / "multirun").glob(f"*/{r.data.tags['job_num']}/.hydra/config.yaml") for r in children
    ]
    starts = [next(paths).stat().st_mtime * 1000 for paths in started]
    assert max(starts) < min(r.info.end_time for r in children)


def test_optuna_storage_in_the_environment_keeps_the_study_where_it_says(run_cli, mnist_root, tmp_path):
    """As MLFLOW_TRACKING_URI for runs (the compose stack points it at its PostgreSQL)."""
    studies = tmp_path / "shared" / "studies.db"
    studies.parent.mkdir()
    run_cli(
        "-m", *TINY, *RANDOM, "hparams_search=lr", SAFE_LR, "hydra.sweeper.n_trials=2",
        env={"OPTUNA_STORAGE": f"sqlite:///{studies}"},
    )  # fmt: skip
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{studies}")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert not (tmp_path / "multirun" / "optuna.db").exists()


def test_pareto_search_returns_two_objectives_and_logs_the_front_to_the_parent_run(
    run_cli, mnist_root, tmp_path
):
    from mlflow.tracking import MlflowClient

    run_cli(
        "-m", *TINY, "hparams_search=elastic_net_pareto", "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=3", SAFE_LR,
    )  # fmt: skip
    study = load_study(tmp_path)
    assert states(study) == ["COMPLETE"] * 3
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    (results,) = sweep_results(tmp_path)
    front = {s.trial: list(s["values"]) for s in results.solutions}
    assert front == {t.number: t.values for t in study.best_trials}

    runs = mlflow_runs(tmp_path)
    (parent,) = (r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    for child in (r for r in runs if r is not parent):  # each run records its sparsity, the 2nd objective
        trial = next(t for t in study.trials if str(t.number) == child.data.tags["optuna.trial"])
        assert child.data.metrics["weights/zero_fraction"] == pytest.approx(trial.values[1])
        assert child.data.metrics["val/acc"] == pytest.approx(trial.values[0])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.csv", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "figures")] == [
        "figures/pareto_front.png"
    ]
    table = Path(client.download_artifacts(parent.info.run_id, "pareto_front.csv", str(tmp_path))).read_text()
    header, *rows = table.splitlines()
    assert header == "trial,optimizer.lr,regularizer.l1,regularizer.l2,val/acc,weights/zero_fraction"
    assert sorted(int(row.split(",")[0]) for row in rows) == sorted(front)


def test_a_search_trains_four_trials_a_job_by_default_and_one_with_population_1(
    run_cli, mnist_root, tmp_path
):
    run_cli("-m", *TINY, *RANDOM, "hparams_search=lr", SAFE_LR, "hydra.sweeper.n_trials=4")
    trials = load_study(tmp_path).trials
    assert states(load_study(tmp_path)) == ["COMPLETE"] * 4
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path)}
    jobs = {runs[t.user_attrs["mlflow_run_id"]].data.tags["population.job"] for t in trials}
    assert len(jobs) == 1  # four trials, one job

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "data").symlink_to(tmp_path / "data")
    run_cli(
        "-m",
        *TINY,
        *RANDOM,
        "hparams_search=lr",
        SAFE_LR,
        "hydra.sweeper.n_trials=2",
        ONE_TRIAL_PER_JOB,
        root=alone,
    )
    assert not any("population.job" in r.data.tags for r in mlflow_runs(alone))


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        ([], 4),
        (["hydra.sweeper.population=7"], 7),
        (["launcher=slurm"], 1),  # SLURM: each trial its own job and resources, unless population=K
        (["launcher=slurm", "hydra.sweeper.population=3"], 3),
        (["hparams_search=elastic_net_pareto"], 1),  # two objectives: a population scores one
        (["repeats=3"], 1),  # each trial is a group, trained as a population of its own
        (["diagnostics=on"], 1),
    ],
)
def test_population_null_is_four_where_trials_share_a_network_and_one_elsewhere(overrides, size):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper import population_size
    from hydra_plugins.trainlab_optuna_sweeper.settings import Settings

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(TRAIN.parents[1] / "conf"), version_base="1.3"):
        config = compose("train", ["hparams_search=lr", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = OmegaConf.to_container(config.hydra.sweeper)
    sweeper.pop("_target_")
    assert population_size(Settings(**sweeper), config) == size


def test_populations_are_for_trainlabs_own_task_told_by_its_function_not_its_config():
    """train.py's `main` and trainlab.api's `run_job` read `population=[…]`; another app's task does not,
    whatever keys its config shares with trainlab's (tests/hydra_apps/app.py has them all)."""
    from hydra_plugins.trainlab_population.grid_sweeper import trainlab_task
    from trainlab.cli.main import run_job

    train_py = {}
    exec(compile("def main(cfg): ...", str(TRAIN), "exec"), train_py)  # a function of src/train.py
    other = {}
    exec(compile("def main(cfg): ...", str(TRAIN.parents[1] / "tests/hydra_apps/app.py"), "exec"), other)
    assert trainlab_task(train_py["main"]) and trainlab_task(run_job)
    assert not trainlab_task(other["main"]) and not trainlab_task(print)


def test_a_rerun_with_another_search_under_its_study_name_stops_in_one_line_before_it_writes(
    run_cli, mnist_root, tmp_path
):
    named = [
        "-m", *TINY, *RANDOM, "hparams_search=lr", "hydra.sweeper.study_name=mine",
        "hydra.sweeper.n_trials=1",
    ]  # fmt: skip
    run_cli(*named, SAFE_LR)
    storage = f"sqlite:///{tmp_path}/multirun/optuna.db"
    before = optuna.load_study(study_name="mine", storage=storage)
    assert before.user_attrs["search"]["app"] == "train/train"
    runs = sorted(r.info.run_id for r in mlflow_runs(tmp_path))
    changes = {
        "optimizer.lr=tag(log, interval(0.001, 0.01))": (
            "search space optimizer.lr=tag(log, interval(0.01, 0.2)), "
            "now optimizer.lr=tag(log, interval(0.001, 0.01))"
        ),
        "optimized_metric=val/loss": "objective val/acc, now val/loss",
        "hydra.sweeper.direction=minimize": "direction maximize, now minimize",
    }
    for change, differs in changes.items():
        result = run_cli(*named, SAFE_LR, change, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: study mine in {storage} was created for another search: {differs}; "
            "to start a new study, set another hydra.sweeper.study_name or a new hydra.sweeper.storage"
        )
    after = optuna.load_study(study_name="mine", storage=storage)
    assert len(after.trials) == 1 and after.user_attrs == before.user_attrs
    assert sorted(r.info.run_id for r in mlflow_runs(tmp_path)) == runs  # no parent run opened
