"""Clusters: DDP with 2 CPU processes, SLURM preemption (the signal sent to a local run), the SLURM
launcher's submission, and DDP inside a local sweep. Only the cluster itself (srun, sbatch) is faked."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, TRAIN, cli_env, mlflow_runs, write_mnist
from faults import Fault, subprocess_env
from trainlab.cluster.requeue import RequeueOnSignal, requeued_checkpoint

# 160 training and 40 validation images: whole batches of 32 in one process, of 16 per rank in two.
SMALL = [*TINY, "data.val_size=40", "trainer.max_epochs=2", "seed=3"]


def final_metrics(root: Path) -> dict[str, float]:
    (run,) = mlflow_runs(root)
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("train/", "val/", "test/"))}


def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(run_cli, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    for root in (single, ddp):
        write_mnist(root / "data")
    run_cli(*SMALL, "data.batch_size=32", root=single)
    run_cli(*SMALL, "trainer=ddp_cpu", "data.batch_size=16", root=ddp)

    expected, got = final_metrics(single), final_metrics(ddp)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-4), name
    assert len(mlflow_runs(ddp)) == 1
    assert len(list(ddp.glob("outputs/*/*/checkpoints"))) == 1
    assert len(list(ddp.glob("outputs/*/*"))) == 1


def start(root: Path, run_dir: Path, epochs: int, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, str(TRAIN), f"paths.root_dir={root}", f"hydra.run.dir={run_dir}", *TINY]
    cmd += [f"trainer.max_epochs={epochs}", "data.batch_size=64"]
    return subprocess.Popen(cmd, cwd=root, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_slurm_warning_signal_saves_the_run_and_the_requeued_job_finishes_it_as_the_same_run(
    mnist_root, tmp_path
):
    root, run_dir, epochs = tmp_path, tmp_path / "job", 20
    last = run_dir / "checkpoints" / "last.ckpt"
    bin_dir = tmp_path / "bin"  # a fake `scontrol` that records what it is asked
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    # USR2 (what submitit asks SLURM to send before the time limit) as epoch 1's last.ckpt is written
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    fault = subprocess_env(Fault("SIGUSR2", "checkpoint.last.ckpt", 2))
    job = start(root, run_dir, epochs, **{**fault, "SLURM_JOB_ID": "4242", "PATH": path})
    _, stderr = job.communicate(timeout=300)

    assert job.returncode == 128 + signal.SIGUSR2, stderr.decode()[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    saved = torch.load(last, weights_only=True)
    assert 0 < saved["global_step"] < epochs * 3
    (run,) = mlflow_runs(root)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("preempted")

    # SLURM restarts the job with the same command in the same folder (submitit keeps Hydra's folder).
    again = start(root, run_dir, epochs, SLURM_RESTART_COUNT="1")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr.decode()[-3000:]
    (resumed,) = mlflow_runs(root)
    assert resumed.info.run_id == run.info.run_id
    assert resumed.info.status == "FINISHED"
    assert "failure_reason" not in resumed.data.tags
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] == run.info.run_id
    assert torch.load(last, weights_only=True)["epoch"] == epochs - 1  # counted from 0
    assert [p.name for p in root.glob("outputs/*")] == []


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2], ids=["USR1", "USR2"])
def test_both_slurm_warning_signals_are_caught_during_fit_and_the_old_handlers_come_back(tmp_path, sig):
    """USR1 is Lightning's and SLURM's convention, USR2 submitit's: either one stops the run cleanly."""
    before = signal.getsignal(sig)
    callback = RequeueOnSignal(tmp_path / "last.ckpt")
    callback.setup(None, None, "fit")
    os.kill(os.getpid(), sig)
    assert callback.received == sig
    callback.teardown(None, None, "fit")
    assert signal.getsignal(sig) == before


def test_only_a_job_restarted_by_slurm_resumes_the_checkpoint_in_its_own_folder(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_checkpoint(tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert requeued_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert requeued_checkpoint(tmp_path / "elsewhere") is None


def test_ddp_inside_a_local_sweep_is_refused_and_points_to_the_slurm_launcher(run_cli, mnist_root, tmp_path):
    result = run_cli("-m", *TINY, "trainer=ddp_cpu", "seed=1,2", check=False)
    assert result.returncode != 0
    assert "trainer.strategy='ddp'" in result.stderr
    assert "launcher=slurm" in result.stderr
    assert mlflow_runs(tmp_path) == []


class FinishedJob:
    """What submitit hands back for a job that has run: its Hydra JobReturn."""

    def results(self) -> list:
        from hydra.core.utils import JobReturn, JobStatus

        return [JobReturn(status=JobStatus.COMPLETED)]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """An `srun` on PATH (submitit checks for one) and a submitit whose map_array records the executor
    instead of calling sbatch, and returns jobs that have finished."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitted: dict = {}

    def map_array(self, fn, *args):
        submitted.update(
            executor=self._executor, overrides=args[0], launcher=fn, jobs=list(zip(*args, strict=True))
        )
        return [FinishedJob() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    return submitted


def submit(root: Path, monkeypatch, *overrides: str) -> None:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants -m before the overrides
    overrides = [f"paths.root_dir={root}", "launcher=slurm", *(o for o in overrides if o not in flags)]
    monkeypatch.setattr(sys, "argv", ["train.py", *flags, *overrides])
    # In this process, the CLI's os._exit would end pytest's worker: return from main instead.
    monkeypatch.setattr("trainlab.cli.fast_exit.run_then_exit", lambda main: main())
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()


def test_slurm_launcher_submits_one_task_per_gpu_on_each_node(fake_slurm, tmp_path, monkeypatch):
    submit(
        tmp_path,
        monkeypatch,
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "launcher.partition=gpu",
        "launcher.account=lab",
        "launcher.time=240",
        "launcher.mem=64",
    )
    params = fake_slurm["executor"].parameters
    expected = {"partition": "gpu", "account": "lab", "time": 240, "mem": "64GB", "nodes": 2}
    assert {k: params[k] for k in expected} == expected
    assert params["gpus_per_node"] == params["ntasks_per_node"] == 4
    script = fake_slurm["executor"]._make_submission_file_text("python job.py", "0")
    assert "#SBATCH --signal=USR2@120" in script
    assert hasattr(fake_slurm["launcher"], "checkpoint")  # what submitit calls to requeue on USR2


@pytest.mark.parametrize(
    ("trainer", "gpus", "tasks"),
    [("trainer=cpu", None, 1), ("trainer=ddp_cpu", None, 2), ("trainer=gpu", 1, 1), ("trainer=auto", 1, 1)],
)
def test_slurm_jobs_ask_for_gpus_only_on_a_gpu_trainer_and_for_one_task_per_device(
    fake_slurm, tmp_path, monkeypatch, trainer, gpus, tasks
):
    """What a user types for a CPU job (trainer=cpu) asks for no GPU: a GPU-less cluster refuses that."""
    submit(tmp_path, monkeypatch, trainer)
    params = fake_slurm["executor"].parameters
    assert params.get("gpus_per_node") == gpus
    assert params["ntasks_per_node"] == tasks
    script = fake_slurm["executor"]._make_submission_file_text("python job.py", "0")
    assert ("--gpus-per-node" in script) == bool(gpus)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer=ddp", "trainer.devices='auto': must be an integer >= 1 on SLURM"),
        ("trainer.accelerator=mps", "trainer.accelerator='mps': must be one of gpu, cuda, auto, cpu"),
        ("launcher.cpus=0", "launcher.cpus=0: must be an integer >= 1"),
    ],
)
def test_a_slurm_setting_sbatch_cannot_take_is_one_line_and_exit_2_before_anything_is_submitted(
    run_cli, tmp_path, override, message
):
    result = run_cli("launcher=slurm", override, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("multirun/*/.submitit"))


@pytest.mark.skipif(
    shutil.which("sbatch") is None, reason="needs SLURM's sbatch (.ci/services.sh installs it)"
)
def test_a_submission_sbatch_refuses_is_one_line_and_exit_2(run_cli, tmp_path):
    """The real sbatch, on a machine whose SLURM it cannot reach (here: no readable slurm.conf): its own
    reason in one line, not submitit's traceback, and no submission files left behind."""
    env = {"SLURM_CONF": str(tmp_path / "missing.conf")}
    result = run_cli("launcher=slurm", "trainer=cpu", env=env, check=False)
    assert result.returncode == 2
    refused = "error: launcher=slurm: sbatch refused the jobs: sbatch: fatal: Unable to process configuration"
    assert result.stderr.strip().splitlines()[-1] == f"{refused} file"
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.glob("multirun/*/.submitit/*")] == []


def test_slurm_sweep_submits_its_trials_as_one_array_job(fake_slurm, tmp_path, monkeypatch):
    """One task per trial: on SLURM a grid's trials are not packed into populations unless asked."""
    args = ["optimizer.lr=0.1,0.01,0.001", "launcher.array_parallelism=2"]
    submit(tmp_path, monkeypatch, "-m", *args)
    assert len(fake_slurm["overrides"]) == 3
    assert fake_slurm["executor"].parameters["array_parallelism"] == 2
    assert fake_slurm["executor"].parameters["gpus_per_node"] == 1


def test_under_submitit_the_signal_requeues_the_same_hydra_job_through_submitit(
    fake_slurm, tmp_path, monkeypatch
):
    """submitit's own USR2 handler, handed on by RequeueOnSignal: it pickles the launcher's resubmission
    of the same job (same overrides, same job number, hence the same folder) and calls scontrol."""
    from submitit.core.job_environment import JobEnvironment, SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths

    from trainlab.cluster.requeue import requeue

    submit(tmp_path, monkeypatch, "optimizer.lr=0.1")
    (job,) = fake_slurm["jobs"]
    (tmp_path / "bin" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    delayed = DelayedSubmission(fake_slurm["launcher"], *job)
    delayed.set_timeout(60, 3)
    paths = JobPaths(tmp_path / "submitit", job_id="77")
    paths.folder.mkdir(parents=True)

    code = requeue(SignalHandler(JobEnvironment(), paths, delayed).checkpoint_and_try_requeue)

    assert code == -1
    assert (tmp_path / "scontrol.log").read_text() == "requeue 77\n"
    resubmitted = DelayedSubmission.load(paths.submitted_pickle)
    assert resubmitted.args[:4] == job[:4]  # overrides, folder key, job number, job id (then Hydra's state)


# Apptainer/Singularity and pyxis cannot be installed here (not packaged for Debian 12; pyxis is a plugin of
# a site's srun): this `apptainer` reads the command line trainlab builds as Apptainer's `exec` does and
# runs its Python in this machine's file system, to check what a job would start. Charliecloud and podman
# run for real in tests/test_slurm.py.
FAKE_APPTAINER = """#!{python}
import json, os, sys
args = sys.argv[1:]
assert args.pop(0) == "exec", "apptainer exec"
env, cwd, binds = {{}}, None, []
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag == "--nv":
        continue
    value = args.pop(0)
    if flag == "--env":
        env.update([value.split("=", 1)])
    elif flag == "--pwd":
        cwd = value
    elif flag == "--bind":
        assert os.path.exists(value.split(":")[0]), value
        binds.append(value)
    else:
        sys.exit(f"apptainer: unknown flag {{flag}}")
image = args.pop(0)
with open({log!r}, "a") as log:
    print(json.dumps(sys.argv[1:]), file=log)
os.environ.update(env)
os.chdir(cwd)
os.execvp(args[0], args)
"""


@pytest.fixture
def fake_apptainer(fake_slurm, tmp_path) -> Path:
    """An `apptainer` on PATH (beside fake_slurm's srun); returns the log of its command lines."""
    log = tmp_path / "apptainer.log"
    script = tmp_path / "bin" / "apptainer"
    script.write_text(FAKE_APPTAINER.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    return log


def job_script(fake_slurm) -> str:
    executor = fake_slurm["executor"]
    return executor._make_submission_file_text(executor._submitit_command_str, "0")


def test_apptainer_jobs_start_python_in_the_image_with_the_projects_paths_bound_and_the_gpus(
    fake_apptainer, fake_slurm, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    python = sys.executable  # the fake runs it outside any image: the one with trainlab's dependencies
    image = "/images/trainlab.sif"
    container = ["launcher.container.runtime=apptainer", f"launcher.container.image={image}"]
    submit(tmp_path, monkeypatch, "trainer=gpu", *container, f"launcher.container.python={python}")

    srun = next(line for line in job_script(fake_slurm).splitlines() if line.startswith("srun "))
    words = srun.split()
    start = words.index("apptainer")
    assert words[start : start + 3] == ["apptainer", "exec", "--nv"]  # the job's GPU, as Apptainer wants
    assert words[words.index(image) + 1 :][:4] == [python, "-u", "-m", "submitit.core._submit"]
    binds = [words[i + 1] for i, word in enumerate(words) if word == "--bind"]
    assert str(tmp_path) in binds  # the project (its multirun/ sweep folder and data below it)
    env = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--env")
    assert env["TRAINLAB_ROOT"] == str(tmp_path)
    assert env["TRAINLAB_IMAGE"] == image and env["TRAINLAB_CONTAINER_RUNTIME"] == "apptainer"
    assert env["PYTHONPATH"] == str(Path(__file__).parents[1] / "src")  # the code it was submitted with
    # The check before submission started that same command once, with the probe's code.
    (probe,) = map(json.loads, fake_apptainer.read_text().splitlines())
    assert probe[: probe.index("-c")] == words[start + 1 : words.index(python) + 1]


def test_pyxis_jobs_put_the_image_on_the_srun_line_and_python_is_the_images(
    fake_slurm, tmp_path, monkeypatch
):
    container = ["launcher.container.runtime=pyxis", "launcher.container.image=lab/trainlab:1.2"]
    submit(tmp_path, monkeypatch, "trainer=cpu", *container, "launcher.container.binds=[/scratch:/data]")

    script = job_script(fake_slurm)
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--container-image=lab/trainlab:1.2" in srun.split()
    mounts = next(w for w in srun.split() if w.startswith("--container-mounts=")).split("=", 1)[1].split(",")
    assert f"{tmp_path}:{tmp_path}" in mounts and "/scratch:/data" in mounts
    assert f"--container-workdir={Path.cwd()}" in srun.split()
    assert srun.endswith("python -u -m submitit.core._submit " + str(fake_slurm["executor"].folder))
    # pyxis keeps an image's variable unless named: the job's own values, exported by the batch script.
    named = next(w for w in srun.split() if w.startswith("--container-env=")).split("=", 1)[1].split(",")
    assert {"TRAINLAB_ROOT", "TRAINLAB_IMAGE", "TRAINLAB_CONTAINER_RUNTIME"} <= set(named)
    assert f"export TRAINLAB_ROOT={tmp_path}" in script.splitlines()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["launcher.container.runtime=docker"],
            "launcher.container.runtime='docker': must be null or one of apptainer, singularity, "
            "charliecloud, podman, pyxis",
        ),
        (["launcher.container.runtime=apptainer"], "launcher.container.image=None: must be the image to run"),
        (
            [
                "launcher.container.runtime=podman",
                "launcher.container.image=x",
                "launcher.container.binds=[data]",
            ],
            "launcher.container.binds=['data']: must be a list of absolute host paths",
        ),
        (
            ["launcher.container.runtime=apptainer", "launcher.container.image=x.sif"],
            "launcher.container.runtime='apptainer': must be a runtime installed on this machine "
            "(`apptainer` is not on PATH)",
        ),
        (  # before: shlex's traceback when the job script was written
            [
                "launcher.container.runtime=pyxis",
                "launcher.container.image=x",
                """launcher.container.python='python -X "dev'""",
            ],
            """launcher.container.python='python -X "dev': must be a command, as a shell reads it (quotes """
            "closed): python",
        ),
    ],
)
def test_a_container_setting_that_cannot_run_is_one_line_and_exit_2_before_anything_is_submitted(
    run_cli, tmp_path, overrides, message
):
    result = run_cli("launcher=slurm", "trainer=cpu", *overrides, check=False, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("multirun/*/.submitit"))


def test_a_data_folder_the_containers_cannot_be_given_is_one_line_naming_the_key(run_cli, tmp_path):
    """The data and MLflow folders are made here to be bound into the jobs' containers; before, one that could
    not be made was an OSError's traceback."""
    (tmp_path / "a_file").write_text("")
    data = tmp_path / "a_file" / "data"
    container = ["launcher.container.runtime=podman", "launcher.container.image=x"]
    result = run_cli("launcher=slurm", "trainer=cpu", *container, f"paths.data_dir={data}", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: paths.data_dir='{data}': must be a folder this user can create and write, to bind into the "
        "jobs' containers (Not a directory)"
    ]
    assert not list(tmp_path.glob("multirun/*/.submitit"))
