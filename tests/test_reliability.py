"""Faults caused for real — kill -9, Ctrl-C, SIGTERM, NaN, a vanishing MLflow server, concurrent
writers, corrupt or malicious files, a full disk — and what the user is left with."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import ONE_TRIAL_PER_JOB, REPO, TINY, TRAIN, cli_env, mlflow_runs, write_mnist
from faults import Fault, subprocess_env

QUIET = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]


def start_cli(root: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags (-m) come before overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *overrides]
    return subprocess.Popen(
        cmd, cwd=root, env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen | None = None, limit: float = 120
) -> None:
    """Poll until `condition()`; fail if the process ends first or the (generous) limit passes."""
    deadline = time.monotonic() + limit
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended first:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("condition never met")
        time.sleep(0.02)


def stopped(process: subprocess.Popen) -> bool:
    """Whether the process is held by SIGSTOP (a state it reaches for sure, at the moment the test chose)."""
    return Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


def last_checkpoint(root: Path) -> Path | None:
    found = sorted(root.glob("outputs/*/*/checkpoints/last.ckpt"))
    return found[0] if found else None


def final_state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(last_checkpoint(root), weights_only=True)["state_dict"]


# A run slow enough to be stopped mid-epoch: 50 steps per epoch, last.ckpt every 7 steps.
SLOW = [
    *QUIET,
    "model=simple_cnn",
    "model.dropout=0.2",
    "data.batch_size=10",
    "trainer.max_epochs=2",
    "callbacks.checkpoint.every_n_train_steps=7",
]


# A step schedule whose warm-up spans the kill: the resumed run must continue it from the same step.
SCHEDULE = ["scheduler=warmup_cosine", "scheduler.warmup=30", "scheduler.start_factor=0.1"]


def signal_at(epoch: int, batch: int, name: str) -> str:
    """The override that sends signal `name` to the run's own process during that batch: the moment is
    the test's, not a race between a poll and a fast machine (tests/user_callbacks/signals.py)."""
    target = "user_callbacks.signals.SignalAt"
    return f"+callbacks.extra=[{{_target_: {target}, epoch: {epoch}, batch: {batch}, name: {name}}}]"


USER_CODE = {"PYTHONPATH": str(REPO / "tests")}


@pytest.mark.parametrize("schedule", [[], SCHEDULE], ids=["constant_lr", "warmup_cosine"])
def test_kill_9_mid_epoch_then_resume_ends_like_an_uninterrupted_run(run_cli, tmp_path, schedule):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for root in (straight, killed):
        write_mnist(root / "data", n_train=556, n_test=50)
    run_cli(*SLOW, *schedule, root=straight)

    # kill -9 as the third last.ckpt (step 21; one every 7 steps) is about to be written: the same command
    # then resumes from step 14's
    fault = subprocess_env(Fault("SIGKILL", "checkpoint.last.ckpt", 3))
    dead = run_cli(*SLOW, *schedule, root=killed, env=fault, check=False)
    assert dead.returncode == -signal.SIGKILL
    assert torch.load(last_checkpoint(killed), weights_only=True)["global_step"] == 14
    [run] = mlflow_runs(killed)
    assert run.info.status == "RUNNING"  # until the next command on the store looks at it

    run_cli(*SLOW, *schedule, "ckpt_path=last", root=killed)
    expected, resumed = final_state(straight), final_state(killed)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    [run] = mlflow_runs(killed)  # the same MLflow run, now finished
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] == mlflow_runs(straight)[0].data.metrics["test/acc"]


def metric_history(root: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} of the project's one run."""
    [run] = mlflow_runs(root)
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    keys = [k for k in run.data.metrics if k.startswith(("train/", "val/", "test/"))]
    return {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in keys}


def test_ctrl_c_at_an_epochs_last_batch_then_resume_ends_like_an_uninterrupted_run(run_cli, tmp_path):
    """Ctrl-C during the last batch of epoch 0, then of epoch 1: each time the run stops after the next
    epoch's first batch (Lightning resumes a checkpoint taken at an epoch's last batch in the next epoch,
    that epoch's validation skipped: another best checkpoint, or an epoch trained twice), and it ends as
    the run never stopped: the same weights, the same metrics at the same steps (the resumed epochs'
    train/loss averaged over all their batches), the same test result."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for root in (straight, stopped):
        write_mnist(root / "data", n_train=556, n_test=50)
    at_steps = "+callbacks.extra=[{_target_: user_callbacks.signals.SignalAtSteps}]"
    run = [*SLOW, "trainer.max_epochs=3", at_steps]
    run_cli(*run, root=straight, env=USER_CODE)
    for resume, (step, saved) in zip([[], ["ckpt_path=last"]], [(49, 51), (99, 101)], strict=True):
        signalled = {**USER_CODE, "TRAINLAB_TEST_SIGNAL_STEPS": str(step)}
        result = run_cli(*run, *resume, root=stopped, env=signalled, check=False)
        assert result.returncode == 130, result.stderr[-3000:]
        assert torch.load(last_checkpoint(stopped), weights_only=True)["global_step"] == saved
    run_cli(*run, "ckpt_path=last", root=stopped, env=USER_CODE)

    expected, resumed = final_state(straight), final_state(stopped)
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    assert metric_history(stopped) == metric_history(straight)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_at_the_batch_end_saved_and_marks_the_run_killed(run_cli, tmp_path, sig):
    write_mnist(tmp_path / "data", n_train=556, n_test=50)
    result = run_cli(*SLOW, "trainer.max_epochs=50", signal_at(1, 3, sig), env=USER_CODE, check=False)
    assert result.returncode == 128 + getattr(signal, sig)
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted by {sig}: the run is saved (MLflow run KILLED); the same command with "
        "ckpt_path=last resumes it"
    )
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == f"interrupted ({sig})"
    saved = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert saved["global_step"] == 50 + 4  # at the end of the batch the signal came in


def test_a_run_killed_with_kill_9_is_marked_killed_by_the_next_command_on_its_store(run_cli, tmp_path):
    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    dead = run_cli(*QUIET, "trainer.max_epochs=2", signal_at(0, 0, "SIGKILL"), env=USER_CODE, check=False)
    assert dead.returncode == -signal.SIGKILL
    [orphan] = mlflow_runs(tmp_path)
    assert orphan.info.status == "RUNNING"
    run_cli(*QUIET, "trainer.max_epochs=1", "optimizer=adam")  # another run, on the same store
    orphan = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").get_run(orphan.info.run_id)
    assert orphan.info.status == "KILLED"
    assert "ended without ending the run" in orphan.data.tags["failure_reason"]


def signalled(body: str) -> subprocess.CompletedProcess:
    """Run `body` (Python, indented under `with interrupts.cooperative():`) in a process of its own."""
    code = (
        "import os, signal, time\n"
        "from trainlab import interrupts\n"
        "with interrupts.cooperative():\n"
        f"{body}"
        "print('never reached', flush=True)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)


def test_a_first_signal_is_only_recorded_and_a_second_exits_at_once():
    result = signalled(
        "    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2)\n"  # recorded: nothing is raised
        "    print('recorded', interrupts.received() == signal.SIGINT, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"  # a slow way to the next batch
    )
    assert result.returncode == 128 + signal.SIGINT
    assert result.stdout == "recorded True\n"


def test_a_second_signal_lets_a_critical_write_finish_then_exits():
    """An MLflow spool line is appended inside `critical`: a second Ctrl-C cannot tear it."""
    result = signalled(
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.2)\n"
        "    with interrupts.critical():\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.5)\n"
        "        print('write finished', flush=True)\n"
        "    time.sleep(30)\n"
    )
    assert result.returncode == 128 + signal.SIGTERM
    assert result.stdout == "write finished\n"


def test_divergence_keeps_the_last_good_checkpoint(run_cli, mnist_root, tmp_path):
    steps = ["data.batch_size=10", "callbacks.checkpoint.every_n_train_steps=1"]
    result = run_cli(*TINY, *steps, "optimizer.lr=10", check=False)  # diverges after a few steps
    assert result.returncode == 1
    assert "error: train/loss became nan at step" in result.stderr
    kept = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert kept["global_step"] >= 1
    assert all(torch.isfinite(weights).all() for weights in kept["state_dict"].values())
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED" and "Diverged" in run.data.tags["failure_reason"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_is_a_clear_error_within_seconds(run_cli, mnist_root, tmp_path):
    env = cli_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    cmd = [sys.executable, str(TRAIN), f"paths.root_dir={tmp_path}", *TINY]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: logger.tracking_uri=http://127.0.0.1:") and "no MLflow server answers" in last
    )
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))  # stopped before any training


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend, stopped and restarted by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.process = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

        def healthy() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(healthy, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.mark.slow
def test_server_that_vanishes_mid_run_loses_nothing(tmp_path):
    write_mnist(tmp_path / "data", n_train=556, n_test=50)
    server = MlflowServer(tmp_path)
    server.start()
    try:
        # The run holds still (SIGSTOP) as epoch 0's best.ckpt is written; the server goes; the run goes on.
        env = subprocess_env(Fault("SIGSTOP", "checkpoint.best.ckpt", 1), MLFLOW_TRACKING_URI=server.uri)
        process = start_cli(tmp_path, *SLOW, "trainer.max_epochs=3", env=env)
        client = MlflowClient(server.uri)
        wait_for(lambda: stopped(process), process)
        server.stop()
        process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]  # training completed without the server
        [spool] = tmp_path.glob("outputs/*/*/mlflow_spool.jsonl")
        assert f"python -m trainlab.tracking.spool {spool}" in stdout + stderr

        server.start()
        sent = subprocess.run(
            [sys.executable, "-m", "trainlab.tracking.spool", str(spool), server.uri],
            capture_output=True,
            text=True,
        )
        assert sent.returncode == 0, sent.stderr
        assert not spool.exists()
        [run] = client.search_runs([client.get_experiment_by_name("trainlab").experiment_id])
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 3
        assert "test/acc" in run.data.metrics
    finally:
        server.stop()


@pytest.mark.slow
def test_four_trainings_at_once_share_one_sqlite_store_and_one_optuna_study(tmp_path):
    """Two sweep workers on one command, two jobs each: four processes train and log at once to the
    default SQLite MLflow store while the workers share the default SQLite Optuna study."""
    import optuna

    write_mnist(tmp_path / "data")
    sweep = ["-m", *TINY, "hparams_search=lr", "optimizer.lr=tag(log, interval(0.01, 0.2))"]
    sweep += ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", ONE_TRIAL_PER_JOB]
    workers = [start_cli(tmp_path, *sweep) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr

    storage = f"sqlite:///{tmp_path}/multirun/optuna.db"
    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert 4 <= len(trials) <= 6  # both workers may start a last batch of two
    assert {t.state.name for t in trials} == {"COMPLETE"}
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path)}
    for trial in trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert {"train/loss", "val/acc", "test/acc"} <= set(run.data.metrics)


def test_corrupt_checkpoint_is_a_one_line_error_naming_it(run_cli, mnist_root, tmp_path):
    run_cli(*TINY)
    checkpoint = last_checkpoint(tmp_path)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = run_cli(*TINY, "ckpt_path=last", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {checkpoint}: cannot be loaded safely")


def test_a_malicious_checkpoint_is_refused_without_running_its_code(run_cli, mnist_root, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Payload()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    result = run_cli(*TINY, f"ckpt_path={evil}", check=False)
    assert result.returncode == 2
    assert "cannot be loaded safely" in result.stderr.strip().splitlines()[-1]
    assert not marker.exists()
    assert mlflow_runs(tmp_path) == []


def test_unwritable_output_folder_is_a_clear_error(run_cli, mnist_root, tmp_path):
    (tmp_path / "outputs").write_text("a file where the output folder should be")
    result = run_cli(*TINY, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot create the output folder")
    assert f"{tmp_path / 'outputs'} is a file" in result.stderr


def test_full_disk_stops_with_one_line_and_keeps_the_store_consistent(run_cli, mnist_root, tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(outputs)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = run_cli(*TINY, check=False)
    finally:
        subprocess.run(["umount", str(outputs)], check=True)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and "No space left on device" in last
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"


def test_no_environment_value_is_logged_to_mlflow(mnist_root, tmp_path):
    secret = "s3cr3t-token-value"
    result = subprocess.run(
        [sys.executable, str(TRAIN), f"paths.root_dir={tmp_path}", *TINY, "+note=${oc.env:API_TOKEN}"],
        capture_output=True, text=True, cwd=tmp_path, env=cli_env(API_TOKEN=secret),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = mlflow_runs(tmp_path)
    assert run.data.params["note"] == "<from the environment>"
    assert secret not in str(run.data.params) and secret not in str(run.data.tags)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert secret not in config


@pytest.mark.parametrize(
    ("ending", "code", "stderr"),
    [("pass", 0, ""), ("raise SystemExit(3)", 3, ""), ("raise SystemExit('error: bad')", 1, "error: bad\n")],
)
def test_the_cli_exit_skips_teardown_but_not_threads_exit_handlers_or_output(tmp_path, ending, code, stderr):
    """src/train.py ends with `run_then_exit`: a writer thread still running, an atexit handler and
    unflushed output all finish before the process goes, and the exit code is the one `sys.exit` gives."""
    script = f"""
import atexit, pathlib, sys, threading, time
from trainlab.cli.fast_exit import run_then_exit
folder = pathlib.Path(sys.argv[1])

def write_late():
    time.sleep(0.3)
    (folder / "thread.txt").write_text("done")

def main():
    threading.Thread(target=write_late).start()
    atexit.register(lambda: (folder / "atexit.txt").write_text("done"))
    sys.stdout.write("no newline, still buffered")
    {ending}

run_then_exit(main)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=cli_env()
    )
    assert (result.returncode, result.stdout, result.stderr) == (code, "no newline, still buffered", stderr)
    assert (tmp_path / "thread.txt").read_text() == (tmp_path / "atexit.txt").read_text() == "done"


def test_kill_9_while_a_file_of_the_run_is_rewritten_leaves_the_previous_one_whole(tmp_path):
    """Member checkpoints, the MLflow spool and resume records go through `write_atomically`. A process
    that does nothing but rewrite a checkpoint is killed: were it written in place, the kill would all but
    surely land mid-write and leave a truncated file behind."""
    path = tmp_path / "last.ckpt"
    size = 64 * 2**20
    rewrite = (
        "from pathlib import Path; from trainlab.atomic import write_atomically\n"
        f"data = bytes({size})\n"
        "for written in range(10**6):\n"
        f"    write_atomically(Path({str(path)!r}), data)\n"
        "    if written == 3: print('rewriting', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", rewrite], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "rewriting\n"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert path.stat().st_size == size


def test_a_run_whose_end_cannot_be_written_keeps_its_outcome_and_the_next_command_sends_it(
    run_cli, tmp_path, monkeypatch
):
    """The store refuses the run's last write ("database is locked" each time, a fresh connection too):
    the run's result stands, its end is kept beside the store and in run.json, one line says so, and the
    next command on the store writes it."""
    import sqlite3

    from mlflow.tracking import MlflowClient as Client

    import trainlab

    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    monkeypatch.setenv("TRAINLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Client, "set_terminated", locked)
    run = trainlab.train(*QUIET, "trainer.max_epochs=1", "logger.log_model=false")
    assert 0 <= run.value <= 1  # the run's own outcome
    monkeypatch.undo()
    [stored] = mlflow_runs(tmp_path)
    assert stored.info.status == "RUNNING"
    assert json.loads((run.output_dir / "run.json").read_text())["outcome"] == {
        "status": "FINISHED",
        "failure_reason": None,
    }
    assert (tmp_path / "mlruns" / "spool" / f"{run.run_id}.jsonl").is_file()

    run_cli(*QUIET, "trainer.max_epochs=1", "optimizer=adam")  # the next command on the store
    assert {r.info.run_id: r.info.status for r in mlflow_runs(tmp_path)}[run.run_id] == "FINISHED"
    assert not (tmp_path / "mlruns" / "spool" / f"{run.run_id}.jsonl").exists()


def test_a_torn_last_line_of_the_spool_is_left_out_and_every_whole_write_is_sent(tmp_path):
    """A kill or a full disk mid-append leaves the spool's last line torn: the writes before it are sent,
    and a later append starts on a line of its own."""
    from trainlab.tracking.spool import ResilientClient, append_line, spooled

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("spool")).info.run_id
    spool = tmp_path / "mlflow_spool.jsonl"
    writer = ResilientClient(uri, spool)
    writer.keep("set_tag", run, "before", "1")
    with spool.open("a") as file:
        file.write('{"method": "set_tag", "args": ["')  # the torn append
    append_line(spool, json.dumps({"method": "set_tag", "args": [run, "after", "2"], "kwargs": {}}))
    assert len(spooled(spool)) == 2
    assert writer.flush()
    assert {k: v for k, v in client.get_run(run).data.tags.items() if k in ("before", "after")} == {
        "before": "1",
        "after": "2",
    }


def test_the_sqlite_stores_are_in_write_ahead_log_mode(run_cli, mnist_root, tmp_path):
    """Readers (the MLflow UI, a report) never wait for a writer, and a write is one append."""
    import sqlite3

    run_cli("-m", *TINY, "hparams_search=lr", "hydra.sweeper.n_trials=1")
    for store in ("mlruns/mlflow.db", "multirun/optuna.db"):
        with sqlite3.connect(tmp_path / store) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",), store


def test_writers_of_one_file_at_once_each_leave_it_whole(tmp_path):
    """Two processes' writes of one file (a group's record, a sweep's results) each go to a file of their
    own beside it: with one shared half-written name, one writer would rename the other's away or
    half-written."""
    from concurrent.futures import ThreadPoolExecutor

    from trainlab.atomic import write_atomically

    path = tmp_path / "group.json"
    payloads = [json.dumps({"writer": w, "data": "x" * 200_000}) for w in range(4)]

    def write(payload: str) -> None:
        for _ in range(50):
            write_atomically(path, payload)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, payloads))  # raises what any writer raised
    assert path.read_text() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["group.json"]
