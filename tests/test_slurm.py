"""trainlab against a real SLURM: Debian's Slurm 22.05 with slurmdbd (for sacct), started for this module
by tests/slurm/slurm-up.sh as two nodes on this host (two slurmd), each with 4 CPUs and 2 GPUs. Two
things are not what they say: the GPUs are gres files that are /dev/null (SLURM counts and assigns them,
no CUDA is behind them), and the nodes claim more cores than the host has, so that jobs run side by side.
Everything else is real: sbatch, array jobs, srun tasks, signals, requeues, sacct."""

from __future__ import annotations

import fcntl
import os
import pickle
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TRAIN, cli_env, mlflow_runs, write_mnist
from images import base_image, charliecloud_directory, cluster_image, pypy_image, trainlab_image

# One cluster, one process: this module runs in a pytest invocation of its own (`pytest -m slurm`, the
# second half of the README's test command); `pytest -n 2` leaves it out (pyproject.toml's addopts).
pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SCRIPTS = REPO / "tests" / "slurm"
# 500 training images in batches of 10 (50 steps an epoch; in DDP, 5 per rank), 60 for validation; last.ckpt
# every 7 steps: long enough to signal mid-run.
DATA = {"n_train": 560, "n_test": 50}
RUN = ["trainer.max_epochs=3", "data.val_size=60", "callbacks.checkpoint.every_n_train_steps=7", "seed=3"]
RUN += ["callbacks.progress_bar.refresh_rate=0"]
STEPS = 3 * 50
# Learning rates the tiny runs train at: a trial that diverged before a test cancels it would end FAIL with
# its own reason, not SLURM's.
SAFE_LR = "optimizer.lr=tag(log, interval(0.01, 0.2))"
# What a user with a CPU-only cluster types (issue 15).
CPU_JOB = ["trainer=cpu", "launcher.cpus=1", "launcher.mem=2", *RUN, "data.batch_size=10"]
# The preempted job, and the uninterrupted run it must equal: a wider MLP (3.8 M parameters), whose 150 steps
# take seconds, not the fraction of a second in which an idle machine trains the default one, so that each
# signal arrives mid-run.
PREEMPTED = [*CPU_JOB, "optimizer.lr=0.01", "model.hidden=[1000,1000,1000,1000]"]
# The same run as DDP over two SLURM tasks (global batch 10): on one node, and one task on each of two nodes.
DDP = ["trainer=ddp_cpu", *RUN, "data.batch_size=5", "optimizer.lr=0.01"]
DDP_JOBS = {"one_node": DDP, "two_nodes": [*DDP, "trainer.devices=1", "trainer.num_nodes=2"]}


@pytest.fixture(scope="session")
def slurm() -> Iterator[dict[str, str]]:
    """The cluster, up for this worker's session and stopped at its end (not at the module's: a worker
    that runs other modules between these tests would tear it down mid-way): the clients' environment."""
    if os.geteuid() != 0:
        pytest.skip("a real SLURM needs root (slurm-up.sh starts munged, slurmctld, slurmd, slurmdbd)")
    needed = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "mariadbd")
    missing = [name for name in needed if not (shutil.which(name) or Path("/usr/sbin", name).exists())]
    if missing:
        pytest.skip(f"SLURM packages missing ({', '.join(missing)}): run .ci/services.sh as root")
    # One cluster on this machine at a time: another pytest process running this module waits for this
    # cluster to be down, and its daemons gone, before it starts its own.
    with open(Path(tempfile.gettempdir()) / "trainlab-slurm-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prefix = Path(tempfile.mkdtemp(prefix="trainlab-slurm-"))
        prefix.chmod(0o755)  # the slurm and mysql users write below it
        env = {**os.environ, "SLURM_PREFIX": str(prefix), "INSTALL": "0", "NODES": "2", "CPUS": "4"}
        env.update({"GPUS": "2", "DB_PORT": str(_free_port())})
        up = subprocess.run(
            ["bash", SCRIPTS / "slurm-up.sh"], env=env, capture_output=True, text=True, timeout=300
        )
        try:
            assert up.returncode == 0, f"slurm-up.sh failed:\n{up.stdout[-2000:]}\n{up.stderr[-3000:]}"
            yield {"SLURM_CONF": str(prefix / "etc" / "slurm.conf")}
        finally:
            subprocess.run(["bash", SCRIPTS / "slurm-down.sh"], env={**env, "PURGE": "1"}, timeout=300)
            _wait_until_gone(("slurmctld", "slurmd", "slurmdbd", "mariadbd"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_gone(names: tuple[str, ...], limit: float = 60) -> None:
    """Until no process of these names runs (their ports are free for the next cluster)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(subprocess.run(["pgrep", "-x", name], capture_output=True).returncode for name in names):
            return
        time.sleep(0.5)


class Sweep:
    """`python src/train.py -m launcher=slurm ...` as a user runs it, with the project folder in `root`,
    started at once; its end is waited for when first needed, so that sweeps can overlap."""

    def __init__(self, slurm: dict[str, str], root: Path, *overrides: str) -> None:
        cmd = [sys.executable, str(TRAIN), "-m", f"paths.root_dir={root}", "launcher=slurm", *overrides]
        self.root = root
        self.process = subprocess.Popen(
            cmd, cwd=root, env=cli_env(**slurm), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._result: subprocess.CompletedProcess | None = None

    def result(self, timeout: float = 300) -> subprocess.CompletedProcess:
        """The ended Hydra process; one that never returns fails here instead of hanging the suite."""
        if self._result is None:
            try:
                stdout, stderr = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError(f"the Hydra process was still waiting after {timeout} s") from None
            code = self.process.returncode
            self._result = subprocess.CompletedProcess(self.process.args, code, stdout, stderr)
        return self._result


def wait_for(condition: Callable[[], object], sweep: Sweep, limit: float = 180) -> object:
    """Poll until `condition()` is truthy; fail if the sweep ends first or the limit passes."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if sweep.process.poll() is not None:
            raise AssertionError(f"the Hydra process ended first:\n{sweep.result().stderr[-3000:]}")
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.1)
    return value


def scheduler(*args: str, env: dict[str, str]) -> str:
    """A SLURM client command's output (scancel, sacct, scontrol)."""
    return subprocess.run(args, env=cli_env(**env), capture_output=True, text=True, check=True).stdout


def submitit_folders(root: Path) -> list[Path]:
    """The folder of each job (or array task) that has started, in job order: `.submitit/<job id>` or
    `.submitit/<array id>_<task>` with the job's logs (an array's own folder holds only its script)."""
    started = {log.parent for log in root.glob("multirun/*/.submitit/*/*_log.out")}
    return sorted(started, key=lambda p: [int(n) for n in p.name.split("_")])


def job_log(root: Path) -> str:
    """What the jobs of the sweep in `root` wrote (submitit's logs, appended to across requeues)."""
    return "".join(path.read_text() for path in sorted(root.glob("multirun/*/.submitit/*/*_log.*")))


def saved_step(checkpoint: Path) -> int | None:
    """The global step in `checkpoint`, or None while it does not exist or is being written."""
    try:
        return torch.load(checkpoint, weights_only=True)["global_step"]
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError):
        return None


def final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("train/", "val/", "test/"))}


@pytest.fixture(scope="session")
def sweeps(slurm, tmp_path_factory) -> Iterator[dict[str, Sweep]]:
    """Sweeps that need nothing from each other, started together so that their waits overlap: issue 15's
    grid of two learning rates ("grid": also the uninterrupted runs that the DDP jobs are compared with),
    the uninterrupted run the preempted jobs must equal, and the DDP jobs."""
    started = {}
    grids = {
        "grid": [*CPU_JOB, "optimizer.lr=0.01,0.1"],
        "population": [*CPU_JOB, "optimizer.lr=0.01,0.1", "hydra.sweeper.population=2"],
        "preemption_reference": PREEMPTED,
    }
    for name, overrides in {**grids, **DDP_JOBS}.items():
        root = tmp_path_factory.mktemp(name)
        write_mnist(root / "data", **DATA)
        started[name] = Sweep(slurm, root, *overrides)
    yield started
    for sweep in started.values():
        sweep.process.kill()  # ended already, unless a test failed first


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """The images the container tests run, built with podman (tests/images.py): the project's own with
    the Slurm client (docker/cluster: jobs requeue themselves with scontrol) as podman runs it, and as a
    Charliecloud directory image; a Debian image whose Python is PyPy (3.9), and Debian's own Python
    without trainlab's dependencies, both to be refused."""
    if shutil.which("ch-run") is None or shutil.which("ch-convert") is None:
        pytest.skip("Charliecloud is not installed (.ci/services.sh installs it)")
    cluster = cluster_image(trainlab_image(base := base_image()))
    pypy = pypy_image(base)
    return {
        "podman": cluster,
        "charliecloud": charliecloud_directory(cluster),
        "pypy": charliecloud_directory(pypy),
        "bare": charliecloud_directory(base),
    }


def in_container(images: dict[str, str], runtime: str) -> list[str]:
    return [f"launcher.container.runtime={runtime}", f"launcher.container.image={images[runtime]}"]


@pytest.fixture(scope="session")
def container_sweeps(slurm, images, tmp_path_factory) -> Iterator[dict[str, Sweep]]:
    """Issue 29's sweeps in containers, started together: a grid of two learning rates in Charliecloud and
    in podman, CPU DDP as 2 tasks, and the grid as one population (one job) in Charliecloud."""
    started = {}
    sweeps = {
        "charliecloud": [*CPU_JOB, "optimizer.lr=0.01,0.1", *in_container(images, "charliecloud")],
        "podman": [*CPU_JOB, "optimizer.lr=0.01,0.1", *in_container(images, "podman")],
        "charliecloud_ddp": [*DDP, *in_container(images, "charliecloud")],
        "charliecloud_population": [
            *CPU_JOB,
            "optimizer.lr=0.01,0.1",
            "hydra.sweeper.population=2",
            *in_container(images, "charliecloud"),
        ],
    }
    for name, overrides in sweeps.items():
        root = tmp_path_factory.mktemp(name)
        write_mnist(root / "data", **DATA)
        started[name] = Sweep(slurm, root, *overrides)
    yield started
    for sweep in started.values():
        sweep.process.kill()


def uninterrupted(sweeps: dict[str, Sweep]):
    """The grid's MLflow run with the settings of the preempted and the DDP jobs (lr 0.01)."""
    assert sweeps["grid"].result().returncode == 0
    return next(r for r in mlflow_runs(sweeps["grid"].root) if r.data.params["optimizer.lr"] == "0.01")


@pytest.mark.parametrize("runtime", [None, "charliecloud"])
def test_usr1_then_usr2_requeue_the_job_which_resumes_and_ends_as_the_same_run_as_uninterrupted(
    sweeps, slurm, tmp_path, request, runtime
):
    """USR1 (Lightning's and SLURM's convention: trainlab requeues with scontrol), then USR2 (submitit's:
    submitit requeues), each while the job trains: both save, requeue under the same id and resume. In a
    container too, where the signals reach the Python that Charliecloud's ch-run became, and scontrol is
    the image's, talking to the cluster through the bound config and munge socket."""
    write_mnist(tmp_path / "data", **DATA)
    container = in_container(request.getfixturevalue("images"), runtime) if runtime else []
    hydra = Sweep(slurm, tmp_path, *PREEMPTED, *container)
    last = lambda: next(tmp_path.glob("multirun/*/0/checkpoints/last.ckpt"), None)  # noqa: E731
    stopped_at: list[int] = []
    for signal in ("USR1", "USR2"):
        # Training is under way (in the resumed job: past where it stopped) before the signal is sent.
        wait_for(lambda: last() and (saved_step(last()) or 0) > max(stopped_at, default=0), hydra)
        job = wait_for(lambda: submitit_folders(tmp_path), hydra)[0].name
        scheduler("scancel", f"--signal={signal}", job, env=slurm)
        saved = re.compile(rf"SIG{signal}: saved \S+ at step (\d+)")
        stopped_at.append(int(wait_for(lambda saved=saved: saved.findall(job_log(tmp_path)), hydra)[0]))
        wait_for(lambda: job_log(tmp_path).count("SLURM restarted this job") == len(stopped_at), hydra)
    result = hydra.result()

    assert result.returncode == 0, result.stderr[-3000:]
    assert 0 < stopped_at[0] < stopped_at[1] < STEPS  # each time mid-run
    assert "Restarts=2" in scheduler("scontrol", "show", "job", job, env=slurm)
    assert [f.name for f in submitit_folders(tmp_path)] == [job]  # one job id throughout
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert "failure_reason" not in run.data.tags
    reference = sweeps["preemption_reference"]
    assert reference.result().returncode == 0, reference.result().stderr[-3000:]
    (straight,) = mlflow_runs(reference.root)
    assert final_metrics(run) == pytest.approx(final_metrics(straight), abs=1e-6)
    assert run.data.tags.get("container.runtime") == runtime
    expected = torch.load(next(reference.root.glob("multirun/*/0/checkpoints/last.ckpt")), weights_only=True)
    resumed = torch.load(last(), weights_only=True)
    assert resumed["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_a_grid_sweep_is_one_array_job_whose_trials_all_finish_and_report_back(sweeps):
    root, result = sweeps["grid"].root, sweeps["grid"].result()
    assert result.returncode == 0, result.stderr[-3000:]
    folders = submitit_folders(root)
    array = folders[0].name.split("_")[0]
    assert [f.name for f in folders] == [f"{array}_0", f"{array}_1"]
    script = next(root.glob("multirun/*/.submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script  # both at once (launcher.array_parallelism caps it)
    assert "--gpus-per-node" not in script  # a CPU-only cluster refuses any GPU request
    assert "#SBATCH --ntasks-per-node=1" in script

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    runs = {run.data.params["optimizer.lr"]: run for run in mlflow_runs(root)}
    assert sorted(runs) == ["0.01", "0.1"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    for folder in folders:  # what each job handed back to the Hydra process: its best val/acc
        outcome, job = pickle.loads(next(folder.glob("*_result.pkl")).read_bytes())
        assert outcome == "success" and job.status.name == "COMPLETED"
        run = runs[str(job.cfg.optimizer.lr)]
        best = max(m.value for m in client.get_metric_history(run.info.run_id, "val/acc"))
        assert job.return_value == pytest.approx(best)


def test_a_population_of_two_trials_is_one_slurm_job_that_ends_as_two_runs(sweeps):
    root, result = sweeps["population"].root, sweeps["population"].result()
    assert result.returncode == 0, result.stderr[-3000:]
    [folder] = submitit_folders(root)  # one job trained both trials
    outcome, job = pickle.loads(next(folder.glob("*_result.pkl")).read_bytes())
    assert outcome == "success" and [member["state"] for member in job.return_value] == ["COMPLETE"] * 2
    runs = mlflow_runs(root)
    assert sorted(run.data.params["optimizer.lr"] for run in runs) == ["0.01", "0.1"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    # The same numbers as the two single-trial jobs of the grid sweep (same seed, batches, weights).
    grid = {run.data.params["optimizer.lr"]: run for run in mlflow_runs(sweeps["grid"].root)}
    for run in runs:
        expected = grid[run.data.params["optimizer.lr"]].data.metrics["val/loss"]
        assert run.data.metrics["val/loss"] == pytest.approx(expected, rel=1e-3)


def test_an_optuna_sweep_through_slurm_shares_one_study_and_fails_a_cancelled_trial_with_slurms_reason(
    slurm, tmp_path
):
    """Two trials at once, one array job, one study. Trial 0 is cancelled (scancel) while it trains: it
    fails with SLURM's reason and the sweep records trial 1's result instead of dying with the lost job."""
    import optuna

    write_mnist(tmp_path / "data", **DATA)
    search = ["hparams_search=lr", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", SAFE_LR]
    hydra = Sweep(slurm, tmp_path, "trainer=cpu", "launcher.cpus=2", *RUN, "data.batch_size=10", *search)
    wait_for(lambda: any(tmp_path.glob("multirun/*/0/checkpoints/last.ckpt")), hydra)
    first = submitit_folders(tmp_path)[0].name
    scheduler("scancel", first, env=slurm)
    result = hydra.result()

    assert result.returncode == 0, result.stderr[-3000:]
    array = first.split("_")[0]
    assert [f.name for f in submitit_folders(tmp_path)] == [f"{array}_0", f"{array}_1"]
    (study,) = optuna.get_all_study_names(f"sqlite:///{tmp_path}/multirun/optuna.db")
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/multirun/optuna.db").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    reason = f"JobLost: SLURM job {first} ended without a result (state: CANCELLED"
    assert trials[0].user_attrs["fail_reason"].startswith(reason)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["optuna.trial"]): r for r in runs if r is not parent}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert children[0].info.status == "KILLED"
    assert children[0].data.tags["failure_reason"].startswith(reason)
    for trial in trials[1:]:  # each value the job handed back is its run's best val/acc
        history = client.get_metric_history(children[trial.number].info.run_id, "val/acc")
        assert trial.value == pytest.approx(max(m.value for m in history))
    # Torch threads per trial: the cores SLURM gives each job, not this host's share of its own cores.
    jobs = [OmegaConf.load(path).hydra.job for path in tmp_path.glob("multirun/*/[0-9]/.hydra/hydra.yaml")]
    assert [job.env_set.TRAINLAB_NUM_THREADS for job in jobs] == ["2", "2"]


def test_sweep_workers_outlive_the_command_and_retry_the_trial_of_a_cancelled_one_from_its_checkpoint(
    slurm, tmp_path
):
    """`hydra.sweeper.workers=2`: the command submits one array job of two workers and returns; with it
    gone, the task whose trial has saved a last.ckpt is cancelled (scancel) while it trains. Its trial
    fails, not counted, and the other task trains it again from that checkpoint; the study ends with
    exactly n_trials finished, nothing RUNNING."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from trainlab.sweeps import Progress, workers_active

    write_mnist(tmp_path / "data", **DATA)
    search = ["hparams_search=lr", SAFE_LR, "hydra.sweeper.n_trials=3"]
    search += ["hydra/sweeper/sampler=random", "hydra.sweeper.workers=2"]
    submitted = Sweep(slurm, tmp_path, *CPU_JOB, *search).result(timeout=60)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    array = re.search(r"SLURM array job (\d+)", submitted.stdout).group(1)

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal")))
    study = optuna.load_study(study_name=None, storage=storage)
    deadline = time.monotonic() + 180
    while not (saved := [t for t in study.get_trials(deepcopy=False) if _saved_and_running(t)]):
        assert time.monotonic() < deadline, "no running trial saved a checkpoint"
        time.sleep(0.1)
    # The array task of the worker that runs it (a process of this host: its environment says which).
    worker = int(saved[0].user_attrs["sweeper"].rsplit(":", 1)[1])
    task = re.search(rb"SLURM_ARRAY_TASK_ID=(\d+)", Path(f"/proc/{worker}/environ").read_bytes()).group(1)
    scheduler("scancel", f"{array}_{task.decode()}", env=slurm)
    os.environ["SLURM_CONF"] = slurm["SLURM_CONF"]  # squeue, for the workers' states
    while workers_active(study):
        assert time.monotonic() < deadline + 240, "the workers were still running"
        time.sleep(0.5)

    progress = Progress.of(study, workers=True)
    assert progress.states == {"COMPLETE": 3, "RUNNING": 0, "WAITING": 0, "RETRIED": 1}, str(progress)
    (lost,) = [t for t in study.trials if t.state.name == "FAIL"]
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.state.name == "COMPLETE"
    assert retry.user_attrs["mlflow_run_id"] == lost.user_attrs["mlflow_run_id"]  # from its checkpoint
    runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert progress.workers[0].endswith(": 1 CANCELLED, 1 COMPLETED"), progress.workers


def _saved_and_running(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that trains and has saved its last.ckpt."""
    saved = trial.user_attrs.get("last_checkpoint")
    return trial.state.name == "RUNNING" and saved is not None and Path(saved).is_file()


def test_ddp_as_two_slurm_tasks_on_one_node_or_on_two_nodes_is_one_run_matching_one_process(sweeps, slurm):
    expected = final_metrics(uninterrupted(sweeps))
    for name, nodes in (("one_node", 1), ("two_nodes", 2)):
        result = sweeps[name].result()
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        (run,) = mlflow_runs(sweeps[name].root)
        assert run.info.status == "FINISHED"
        assert final_metrics(run) == pytest.approx(expected, abs=1e-4), name
        (job,) = submitit_folders(sweeps[name].root)  # one srun step: 2 tasks (DDP ranks) on 1 or 2 nodes
        step = scheduler("sacct", "-n", "-P", "-j", f"{job.name}.0", "-o", "NTasks,NNodes", env=slurm)
        assert step.split() == [f"2|{nodes}"], name


def test_gpu_requests_become_sbatch_lines_that_slurm_schedules_on_its_gpu_nodes(slurm, mnist_root, tmp_path):
    hydra = Sweep(slurm, tmp_path, "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=1")
    (job,) = wait_for(lambda: submitit_folders(tmp_path), hydra)  # started: SLURM has placed it

    script = next(tmp_path.glob("multirun/*/.submitit/*/*_submission.sh")).read_text()
    for line in ("--gpus-per-node=2", "--ntasks-per-node=2", "--nodes=1", "--cpus-per-task=1", "--mem=8GB"):
        assert f"#SBATCH {line}\n" in script
    allocated = scheduler("scontrol", "show", "job", job.name, env=slurm)
    assert "gres/gpu=2" in allocated and "NumTasks=2" in allocated
    # Behind the fake GPUs there is no CUDA to train on: stop the job once it has its GPUs.
    scheduler("scancel", job.name, env=slurm)
    result = hydra.result()
    assert result.returncode == 1
    assert f"SLURM job {job.name} ended without a result (state: CANCELLED" in result.stderr


@pytest.mark.parametrize("runtime", ["charliecloud", "podman"])
def test_a_grid_sweep_in_containers_runs_both_jobs_in_the_image_as_this_machines_python_would(
    container_sweeps, sweeps, images, runtime
):
    root, result = container_sweeps[runtime].root, container_sweeps[runtime].result()
    assert result.returncode == 0, result.stderr[-3000:]
    script = next(root.glob("multirun/*/.submitit/*/*_submission.sh")).read_text()
    assert {"charliecloud": "ch-run", "podman": "podman run"}[runtime] in script
    runs = {run.data.params["optimizer.lr"]: run for run in mlflow_runs(root)}
    assert sorted(runs) == ["0.01", "0.1"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    for run in runs.values():  # where each ran: the image's Python (Debian's 3.11.2, not this one)
        assert run.data.tags["container.runtime"] == runtime
        assert run.data.tags["container.image"] == images[runtime]
        assert run.data.params["env.python"] != platform.python_version()
    if runtime == "podman":
        assert runs["0.01"].data.tags["container.digest"].startswith("sha256:")
    # The same numbers as this machine's Python gives (same torch wheels, same seed and batches).
    assert final_metrics(runs["0.01"]) == pytest.approx(final_metrics(uninterrupted(sweeps)), abs=1e-6)


def test_a_population_in_a_container_is_one_job_whose_members_match_the_grids_runs(container_sweeps, sweeps):
    root, result = (
        container_sweeps["charliecloud_population"].root,
        container_sweeps["charliecloud_population"].result(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(submitit_folders(root)) == 1
    runs = {run.data.params["optimizer.lr"]: run for run in mlflow_runs(root)}
    assert sorted(runs) == ["0.01", "0.1"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    assert {run.data.tags["container.runtime"] for run in runs.values()} == {"charliecloud"}
    grid = {run.data.params["optimizer.lr"]: run for run in mlflow_runs(sweeps["grid"].root)}
    for lr, run in runs.items():
        assert run.data.metrics["val/loss"] == pytest.approx(grid[lr].data.metrics["val/loss"], rel=1e-3)


def test_ddp_as_two_containerised_tasks_is_one_run_matching_one_process(container_sweeps, sweeps, slurm):
    result = container_sweeps["charliecloud_ddp"].result()
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = mlflow_runs(container_sweeps["charliecloud_ddp"].root)
    assert run.info.status == "FINISHED" and run.data.tags["container.runtime"] == "charliecloud"
    assert final_metrics(run) == pytest.approx(final_metrics(uninterrupted(sweeps)), abs=1e-4)
    (job,) = submitit_folders(container_sweeps["charliecloud_ddp"].root)
    step = scheduler("sacct", "-n", "-P", "-j", f"{job.name}.0", "-o", "NTasks", env=slurm)
    assert step.split() == ["2"]


@pytest.mark.parametrize(
    ("image", "python", "message"),
    [
        ("pypy", "pypy3", "must be an image whose `pypy3` is Python {version} like this one (it is 3.9."),
        (
            "bare",
            "python3",
            "must be an image with trainlab's dependencies (torch, lightning, hydra, submitit, mlflow "
            "missing)",
        ),
    ],
)
def test_an_image_the_jobs_cannot_run_in_is_refused_in_one_line_before_anything_is_submitted(
    slurm, images, tmp_path, image, python, message
):
    settings = ["launcher.container.runtime=charliecloud", f"launcher.container.image={images[image]}"]
    hydra = Sweep(slurm, tmp_path, *CPU_JOB, *settings, f"launcher.container.python={python}")
    result = hydra.result()
    assert result.returncode == 2
    version = ".".join(map(str, sys.version_info[:2]))
    assert result.stderr.startswith(f"error: launcher.container.image='{images[image]}': ")
    assert message.format(version=version) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("multirun/*/.submitit"))
