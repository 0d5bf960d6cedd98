"""The fault-injection harness (after SQLite's I/O-error tests, which make each I/O call fail in turn, and
FoundationDB's simulation): seven short scenarios — a single run, a population of 3, `repeats=3`, an
`eval.py`, a 3-trial Optuna sweep, a sweep with a worker, a study of a user's experiment — run as the
CLI runs them, in this process (a worker: a process of its own, waited for). A first pass counts their
write points (every MLflow and Optuna write, every file written whole, every checkpoint: tests/faults.py),
each named by the line of trainlab's code that makes it; then, at the first and the last write of each
point in turn, the harness injects a KeyboardInterrupt, a Ctrl-C (SIGINT delivered during the write), a
full disk (ENOSPC) and, at a store's write, SQLite's "database is locked". Then a few kill -9 at points
drawn at random, in a process of their own.

After each fault: one line on stderr and a non-zero status, or a clean recovery (status 0); no MLflow run
and no Optuna trial left RUNNING; every file whole; and the same command again (with `ckpt_path=last`
for training) finishes, resuming where it stopped. Each scenario prints its row of the table in
docs/reliability.md (`pytest -s tests/test_faults.py`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import runpy
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, mlflow_runs, write_mnist
from faults import Fault, Injector, subprocess_env

QUICK = (
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar.refresh_rate=0",
    "data.batch_size=20",
    "model.hidden=[16]",
    "logger.log_model=false",
)
WORKER = ("hydra.sweeper.population=1", "hydra.sweeper.workers=1", "hydra.sweeper.wait=true")
FAULTS = ("KeyboardInterrupt", "ENOSPC")
# After which faults the same command is run again. Resuming does not depend on what stopped the command,
# only on where: once per point.
RESUMED = ("KeyboardInterrupt", "SIGINT")
SIGNALLED = 3  # a Ctrl-C during this many writes of each scenario, drawn at random
STORES = ("mlflow.", "optuna.")  # "database is locked" is a store's fault, not a file's
KILLS = 2  # kill -9 at this many points of each scenario, drawn at random


@dataclass(frozen=True)
class Scenario:
    """A command (`script` and its arguments), what runs first without faults (`setup`: the run that
    eval.py evaluates), what the same command again adds to resume (`resume`), and the scenario whose
    write points it shares and leaves to it (`shares`: the same lines of code, called by the same lines)."""

    script: str
    args: tuple[str, ...]
    resume: tuple[str, ...] = ()
    setup: tuple[str, ...] | None = None
    shares: str | None = None


SCENARIOS = {
    "single run": Scenario("train.py", QUICK, ("ckpt_path=last",)),
    "population of 3": Scenario("train.py", ("-m", *QUICK, "optimizer.lr=0.05,0.1,0.2"), ("ckpt_path=last",)),
    "repeats=3": Scenario("train.py", (*QUICK, "repeats=3"), ("ckpt_path=last",), shares="population of 3"),
    # On another data set of the run's shape: its results go into a child run, which the command opens.
    "eval.py": Scenario(
        "eval.py",
        ("run_id={run_id}", "mistakes=4", "data=fashion_mnist", "data.system_copy=null"),
        setup=QUICK,
    ),
    "3-trial sweep": Scenario(
        "train.py", ("-m", *QUICK, "hparams_search=lr", "hydra.sweeper.n_trials=3"), shares="population of 3"
    ),
    # A user's experiment with claims (tests/user_study): its two variants' groups as one population, the
    # claims judged, the report written and logged. The same command continues it.
    # Workers (one process of its own, here) that the command waits for: its faults are the command's, before
    # the worker starts, while it runs, after it ended; the same command continues (or ends) the sweep.
    "sweep with a worker": Scenario(
        "train.py",
        ("-m", *QUICK, "hparams_search=lr", "hydra.sweeper.n_trials=1", *WORKER),
        shares="3-trial sweep",
    ),
    "study": Scenario(
        "study.py",
        (f"--config-dir={REPO / 'tests' / 'user_study'}", "experiment=two_rates", "repeats=2", *QUICK),
        shares="repeats=3",
    ),
}


def cli(script: str, root: Path, args: tuple[str, ...]) -> tuple[int, str]:
    """`python src/<script> paths.root_dir=<root> <args>` in this process, up to its exit: its status and
    what it printed on stderr."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from trainlab.cli.fast_exit import exit_status

    flags = [a for a in args if a.startswith("-")]
    argv = [
        str(REPO / "src" / script),
        *flags,
        f"paths.root_dir={root}",
        *(a for a in args if a not in flags),
    ]
    printed = io.StringIO()
    saved, handler = sys.argv, signal.getsignal(signal.SIGINT)
    try:
        sys.argv = argv
        with contextlib.redirect_stderr(printed):
            # Named as the script, not __main__ (whose block would end this process): Hydra names the job
            # after the calling module, as it names a script's after its file.
            code = exit_status(runpy.run_path(argv[0], run_name=Path(script).stem)["main"])
    finally:
        sys.argv = saved
        # Each command is a process of its own: Lightning's way out of a KeyboardInterrupt (SIGINT
        # ignored from then on) must not outlive it into the next command, or the next test.
        signal.signal(signal.SIGINT, handler)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    return code, printed.getvalue()


def running_runs(root: Path) -> list[str]:
    """MLflow runs left RUNNING in the project's store, in any experiment."""
    path = root / "mlruns" / "mlflow.db"
    if not path.is_file():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [run for (run,) in db.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'")]


def running_trials(root: Path) -> list[int]:
    """Optuna trials left RUNNING in the sweeps' study storages (SQLite, and the workers' journal)."""
    found = []
    if (path := root / "multirun" / "optuna.db").is_file():
        with contextlib.closing(sqlite3.connect(path)) as db:
            found += [n for (n,) in db.execute("SELECT number FROM trials WHERE state = 'RUNNING'")]
    for study in journal_studies(root):
        found += [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    return found


def journal_studies(root: Path) -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = root / "multirun" / "optuna.journal"
    if not path.is_file():
        return []
    storage = JournalStorage(JournalFileBackend(str(path)))
    return [optuna.load_study(study_name=n, storage=storage) for n in optuna.get_all_study_names(storage)]


def settle(root: Path, limit: float = 180) -> None:
    """Wait for the workers a command started (a sweep with workers goes on without it) to end."""
    import time

    from trainlab.sweeps import workers_active

    deadline = time.monotonic() + limit
    for study in journal_studies(root):
        while workers_active(study):
            assert time.monotonic() < deadline, "the sweep's workers were still running"
            time.sleep(0.2)


def torn_files(root: Path) -> list[str]:
    """The files under `root` that are not whole: half-written ones left beside, unreadable records,
    checkpoints, tables, figures and databases."""
    from PIL import Image

    from trainlab.atomic import PARTIAL
    from trainlab.tracking.spool import spooled

    torn = []
    for path in root.rglob("*"):
        if not path.is_file() or "data" in path.relative_to(root).parts[:1]:
            continue
        try:
            if path.name.endswith(PARTIAL):
                raise ValueError("left half-written")
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".ckpt":
                torch.load(path, weights_only=True, map_location="cpu")
            elif path.suffix in (".yaml", ".yml"):
                yaml.safe_load(path.read_text())
            elif path.suffix == ".csv":
                list(csv.reader(io.StringIO(path.read_text())))
            elif path.suffix == ".jsonl":
                spooled(path)  # a torn last line is left out, with a warning: the write never completed
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
            elif path.suffix == ".db":
                with contextlib.closing(sqlite3.connect(path)) as db:
                    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        except Exception as err:
            torn.append(f"{path.relative_to(root)}: {type(err).__name__}: {err}"[:300])
    return torn


def problems(root: Path, code: int, stderr: str, recovered_too: bool = True) -> list[str]:
    """What a user would find wrong after a command that met a fault (and the workers it started ended)."""
    settle(root)
    found = []
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        found.append(f"a traceback: {stderr[-1500:]}")
    if code != 0 and not (lines and lines[-1].startswith(("error: ", "interrupted by "))):
        found.append(f"status {code} without its one line: {stderr[-600:]!r}")
    if code == 0 and not recovered_too:
        found.append("status 0")
    found += [f"MLflow run {run} left RUNNING" for run in running_runs(root)]
    found += [f"Optuna trial {n} left RUNNING" for n in running_trials(root)]
    found += [f"torn: {file}" for file in torn_files(root)]
    return found


@dataclass
class Harness:
    """One scenario under every fault: its table row (points, faults injected, survived)."""

    name: str
    scenario: Scenario
    folder: Path
    injector: Injector
    points: list[tuple[str, str, int]] = field(default_factory=list)  # (point, site, n-th)
    order: list[tuple[str, str]] = field(default_factory=list)  # the first pass's writes, in order
    injected_at: list[tuple[str, str, int]] = field(default_factory=list)
    injected: int = 0
    failures: list[str] = field(default_factory=list)
    _roots: int = 0

    def fresh_root(self, scenario: Scenario | None = None) -> tuple[Path, tuple[str, ...]]:
        """A new project folder with the tiny data, an empty MLflow store (its tables made once: MLflow's
        migrations take a second) and the setup done; the command's arguments there."""
        self._roots += 1
        root = self.folder / f"root_{self._roots}"
        shutil.copytree(self.folder / "data", root / "data")
        shutil.copytree(self.folder / "mlruns", root / "mlruns")
        scenario = scenario or self.scenario
        args = scenario.args
        if scenario.setup is not None:
            self.injector.arm(None)
            code, stderr = cli("train.py", root, scenario.setup)
            assert code == 0, stderr
            (run,) = mlflow_runs(root)
            args = tuple(a.format(run_id=run.info.run_id) for a in args)
        return root, args

    def count(self) -> None:
        """The first pass: every write point (the first write of each), in order; `injected_at`: those not
        left to the scenario it shares them with."""
        self.order = self._writes(self.scenario)
        self.points = [(point, site, 1) for point, site in dict.fromkeys(self.order)]
        shared = set(self._writes(SCENARIOS[self.scenario.shares])) if self.scenario.shares else set()
        self.injected_at = [(point, site, n) for point, site, n in self.points if (point, site) not in shared]

    def _writes(self, scenario: Scenario) -> list[tuple[str, str]]:
        """The writes of `scenario`'s command, in order, in a fresh project folder."""
        root, args = self.fresh_root(scenario)
        self.injector.arm(None)
        code, stderr = cli(scenario.script, root, args)
        assert code == 0, stderr
        assert not problems(root, code, stderr)
        return list(self.injector.points)

    def inject(self, kind: str, point: str, site: str, n: int) -> None:
        root, args = self.fresh_root()
        self.injector.arm(Fault(kind, point, n, site))
        code, stderr = cli(self.scenario.script, root, args)
        self.injected += 1
        where = f"{kind} at {point} ({site}, #{n})"
        if self.injector.fired is None:
            self.failures.append(f"{where}: never reached")
            return
        found = problems(root, code, stderr)
        if kind in RESUMED and code != 0 and not found:  # it stopped: the same command again finishes
            self.injector.arm(None)
            again, stderr = cli(self.scenario.script, root, (*args, *self.scenario.resume))
            found = [f"then again: {p}" for p in problems(root, again, stderr)]
            if again != 0:
                found.append(f"then again: status {again}: {stderr[-600:]}")
        self.failures += [f"{where}: {problem}" for problem in found]

    def row(self, kind: str) -> str:
        """Its row of the table: scenario, fault, write points, faults injected, survived."""
        survived = self.injected - len({f.split(": ", 1)[0] for f in self.failures})
        return f"| {self.name} | {kind} | {len(self.points)} | {self.injected} | {survived} |"


def write_template(folder: Path) -> None:
    """What each project folder starts from: the tiny data, and an MLflow store with its tables."""
    from mlflow.tracking import MlflowClient

    write_mnist(folder / "data", n_train=60, n_test=20)
    write_mnist(folder / "data", n_train=60, n_test=20, folder="FashionMNIST")  # eval.py's other data
    (folder / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db").search_experiments()


@pytest.fixture(scope="module")
def injector() -> Injector:
    with pytest.MonkeyPatch.context() as patch:
        yield Injector().install(patch.setattr)


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_write_point_survives_a_fault(name, kind, injector, tmp_path, monkeypatch, request):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    write_template(tmp_path)
    harness = Harness(name, SCENARIOS[name], tmp_path, injector)
    harness.count()
    for point, site, n in harness.injected_at:
        harness.inject(kind, point, site, n)
    request.node.user_properties.append(("fault_row", harness.row(kind)))
    assert not harness.failures, "\n".join(harness.failures[:20])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_store_locked_at_every_write_is_waited_out(name, injector, tmp_path, monkeypatch, request):
    """SQLite's "database is locked" (a writer that held the store beyond the wait) at every write point
    of the MLflow and Optuna stores, each the first time it is written, all in one command: each write is
    tried again, and the command ends as if nothing had happened."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    write_template(tmp_path)
    harness = Harness(name, SCENARIOS[name], tmp_path, injector)
    harness.count()
    stored = {(point, site) for point, site, _ in harness.points if point.startswith(STORES)}
    root, args = harness.fresh_root()
    injector.arm(Fault("locked", STORES, each=True))
    code, stderr = cli(harness.scenario.script, root, args)
    assert code == 0 and not problems(root, code, stderr), stderr[-3000:]
    assert injector.hit == stored  # every store write point was hit
    row = f"| {name} | locked, at every store write at once | {len(harness.points)} | {len(stored)} |"
    request.node.user_properties.append(("fault_row", f"{row} {len(stored)} |"))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_ctrl_c_or_a_kill_9_at_writes_drawn_at_random_loses_nothing(
    name, injector, tmp_path, monkeypatch, request
):
    """A Ctrl-C (SIGINT) during writes drawn at random: the command stops at its next safe point; and
    kill -9 before others, in a CLI process of its own. Then the same command, which resumes, and which
    marks a run the killed process left RUNNING as KILLED."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    write_template(tmp_path)
    harness = Harness(name, SCENARIOS[name], tmp_path, injector)
    harness.count()
    draws = random.Random(name).sample(harness.points, SIGNALLED + KILLS)
    for point, site, n in draws[:SIGNALLED]:
        harness.inject("SIGINT", point, site, n)
    request.node.user_properties.append(("fault_row", harness.row("SIGINT (at random)")))
    assert not harness.failures, "\n".join(harness.failures[:20])
    for point, site, n in draws[SIGNALLED:]:
        root, args = harness.fresh_root()
        flags = [a for a in args if a.startswith("-")]
        cmd = [sys.executable, str(REPO / "src" / harness.scenario.script), *flags, f"paths.root_dir={root}"]
        cmd += [a for a in args if a not in flags]
        n_th = _by_name(harness.order, point, site, n)
        # In the command's process only (its last argument), not in the workers it starts.
        fault = subprocess_env(Fault("SIGKILL", point, n_th), TRAINLAB_TEST_FAULT_ARGV=cmd[-1])
        killed = subprocess.run(cmd, env=fault, capture_output=True, text=True, cwd=root)
        assert killed.returncode == -9, f"SIGKILL at {point} #{n_th}: {killed.stderr[-2000:]}"
        settle(root)
        assert not torn_files(root)
        injector.arm(None)
        code, stderr = cli(harness.scenario.script, root, (*args, *harness.scenario.resume))
        assert not problems(root, code, stderr) and code == 0, (point, site, stderr[-2000:])
    row = f"| {name} | kill -9 (at random) | {len(harness.points)} | {KILLS} | {KILLS} |"
    request.node.user_properties.append(("fault_row", row))


def _by_name(order: list[tuple[str, str]], point: str, site: str, n: int) -> int:
    """Which write named `point` the n-th of (point, site) is: a process of its own counts by name."""
    matched = by_name = 0
    for written in order:
        by_name += written[0] == point
        matched += written == (point, site)
        if matched == n:
            return by_name
    raise AssertionError(f"{point} ({site}) #{n} not in the first pass")
