"""Where an Optuna sweep stands: its trials (finished, running, waiting to be retried), the best so far
and its workers' jobs. What `python src/sweeps.py STUDY` prints, `trainlab.sweep_status` returns, and a
sweep started with `hydra.sweeper.wait=true` shows as it goes; the sweeper
(hydra_plugins/trainlab_optuna_sweeper) records here which trials count and where its workers went.

    python src/sweeps.py                      # every study in multirun/'s storages, one line each
    python src/sweeps.py lr-1a2b3c4d          # one study, with its workers
    python -m trainlab.sweeps STUDY --storage URL_OR_JOURNAL_FILE    # any Hydra app's sweep
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# A trial failed because its sweeper died, not because of its parameters: it is retried, not counted.
INTERRUPTED = "interrupted"
# Study attributes: the sweep's n_trials (set by a sweep with workers), and each start of workers.
N_TRIALS = "n_trials"
WORKERS = "workers:"
# Where studies are, relative to the project, when no storage is named: workers' journal, then SQLite.
DEFAULT_STORAGES = ("multirun/optuna.journal", "multirun/optuna.db")
# Job states that may still run a trial.
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "running"}


@dataclass(frozen=True)
class Submitted:
    """Where the workers went: a SLURM array job, or processes of this machine."""

    launcher: str  # "slurm" or "local"
    ids: list[str]  # the array's job id, or the processes' ids
    logs: str  # the folder of their logs

    def describe(self) -> str:
        if self.launcher == "slurm":
            return f"SLURM array job {self.ids[0]}"
        return f"process{'es' if len(self.ids) > 1 else ''} {', '.join(self.ids)} of this machine"

    def stop_hint(self) -> str:
        if self.launcher == "slurm":
            return f"scancel {self.ids[0]}"
        return f"kill {' '.join(self.ids)}"


def counts_as_finished(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a reason of its own (not an interrupted sweeper)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return not trial.user_attrs.get(INTERRUPTED, False)
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Progress:
    """A study's trials by state, its best trial (one objective) and its workers' jobs by state."""

    study: str
    n_trials: int | None
    states: dict[str, int]  # COMPLETE, PRUNED, FAIL (counted), RUNNING, WAITING, RETRIED (not counted)
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    finished: list[FrozenTrial] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, study: optuna.Study, n_trials: int | None = None, workers: bool = False) -> Progress:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if counts_as_finished(t)]
        states = Counter(t.state.name for t in finished)
        states["RUNNING"] = sum(t.state == TrialState.RUNNING for t in trials)
        states["WAITING"] = sum(t.state == TrialState.WAITING for t in trials)
        states["RETRIED"] = sum(t.state == TrialState.FAIL and not counts_as_finished(t) for t in trials)
        progress = cls(study.study_name, n_trials or study.user_attrs.get(N_TRIALS), dict(states))
        progress.finished = finished
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        if complete and len(study.directions) == 1:
            best = study.best_trial
            progress.best_value, progress.best_trial, progress.best_params = (
                best.value,
                best.number,
                best.params,
            )
        if workers:
            progress.workers = [_describe(record) for record in _worker_records(study)]
        return progress

    @property
    def done(self) -> bool:
        return self.n_trials is not None and len(self.finished) >= self.n_trials

    def line(self) -> str:
        """`7 of 12 trials finished (5 COMPLETE, 1 PRUNED, 1 FAIL), 2 running; best 0.91 (trial 3)`."""
        counted = ", ".join(
            f"{self.states[s]} {s}" for s in ("COMPLETE", "PRUNED", "FAIL") if self.states.get(s)
        )
        of = f" of {self.n_trials}" if self.n_trials is not None else ""
        text = f"{len(self.finished)}{of} trials finished" + (f" ({counted})" if counted else "")
        text += f", {self.states.get('RUNNING', 0)} running"
        if self.states.get("WAITING"):
            text += f", {self.states['WAITING']} waiting to be retried"
        if self.best_trial is not None:
            text += f"; best {self.best_value:.6g} (trial {self.best_trial})"
        return text

    def __str__(self) -> str:
        lines = [f"{self.study}: {self.line()}"]
        if self.best_params:
            lines.append("  best parameters: " + " ".join(f"{k}={v}" for k, v in self.best_params.items()))
        if self.states.get("RETRIED"):
            lines.append(
                f"  {self.states['RETRIED']} trial(s) lost with their worker and retried (not counted)"
            )
        lines += [f"  workers: {w}" for w in self.workers]
        return "\n".join(lines)


def record_workers(study: optuna.Study, submitted: Submitted) -> None:
    """Keep in the study where the workers went, for the status command."""
    record = dataclasses.asdict(submitted) | {"host": socket.gethostname(), "started": time.time()}
    study.set_user_attr(f"{WORKERS}{time.time():.6f}", record)


def _worker_records(study: optuna.Study) -> list[dict[str, Any]]:
    return [v for k, v in sorted(study.user_attrs.items()) if k.startswith(WORKERS)]


def _job_states(record: dict[str, Any]) -> Counter[str]:
    """The states of one start's workers: SLURM's (squeue while queued or running, then sacct), or for
    processes of this machine `running`/`ended` (`unknown` from another machine)."""
    if record["launcher"] == "slurm":
        job = record["ids"][0]
        if shutil.which("squeue"):
            out = _run(["squeue", "-h", "-r", "-j", job, "-o", "%T"])
            if out.strip():
                return Counter(out.split())
        if shutil.which("sacct"):
            out = _run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"])
            return Counter(line.split()[0] for line in out.splitlines() if line.strip())
        return Counter(unknown=1)
    if record["host"] != socket.gethostname():
        return Counter(unknown=len(record["ids"]))
    from trainlab.tracking.orphans import process_running

    return Counter("running" if process_running(int(pid)) else "ended" for pid in record["ids"])


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _describe(record: dict[str, Any]) -> str:
    states = _job_states(record)
    shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none found"
    where = (
        f"SLURM array job {record['ids'][0]}"
        if record["launcher"] == "slurm"
        else (f"processes {', '.join(record['ids'])} on {record['host']}")
    )
    return f"{where} (started {time.strftime('%Y-%m-%d %H:%M', time.localtime(record['started']))}): {shown}"


def workers_active(study: optuna.Study) -> bool:
    """Whether any worker of `study` may still run (queued, running, or on a machine not checkable)."""
    return any(
        state in ACTIVE or state == "unknown" for r in _worker_records(study) for state in _job_states(r)
    )


def status_command(study: str, storage: str, trainlab: bool) -> str:
    """The command that shows `study`'s status."""
    entry = "python src/sweeps.py" if trainlab else "python -m trainlab.sweeps"
    return f"{entry} {study} --storage {storage}"


def follow(study: optuna.Study, n_trials: int, interval: float, logs: str) -> Progress:
    """Print the sweep's progress as it changes until it has `n_trials`, or its workers (logging to
    `logs`) are all gone."""
    from trainlab import interrupts
    from trainlab.errors import SweepFailed

    shown = ""
    while True:
        progress = Progress.of(study, n_trials)
        if progress.line() != shown:
            shown = progress.line()
            print(f"{time.strftime('%H:%M:%S')} {shown}", flush=True)
        if progress.done:
            return progress
        interrupts.check("stopped following the sweep: its workers go on")
        if not workers_active(study) and not progress.states.get("RUNNING"):
            raise SweepFailed(
                f"the workers of study {study.study_name} ended with {progress.line()}; why: their logs "
                f"in {logs}; the same command starts new ones"
            )
        time.sleep(min(2.0, interval))


def studies(storage: str | None, root: Path) -> list[tuple[str, optuna.Study]]:
    """(storage, study) for every study in `storage`, or in the project's default storages."""
    import optuna

    from trainlab.run.trial import open_storage

    urls = [storage] if storage else [str(root / s) for s in DEFAULT_STORAGES if (root / s).exists()]
    found = []
    for url in urls:
        url = url if "://" in url else str(Path(url).resolve())
        if "://" not in url and not Path(url).exists():
            raise FileNotFoundError(f"--storage {url}: no such journal file")
        opened = open_storage(f"sqlite:///{url}" if url.endswith(".db") and "://" not in url else url)
        for summary in optuna.get_all_study_summaries(opened, include_best_trial=False):
            found.append((url, optuna.load_study(study_name=summary.study_name, storage=opened)))
    return found


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Where Optuna sweeps stand: trials, best so far, workers.")
    parser.add_argument("study", nargs="?", help="a study's name (default: every study, one line each)")
    parser.add_argument("--storage", help="a database URL or a journal file (default: multirun/'s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    root = Path(os.environ.get("TRAINLAB_ROOT", "."))
    try:
        found = studies(args.storage, root)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.study is None:
        for url, study in found:
            print(f"{study.study_name}: {Progress.of(study).line()}  [{url}]")
        if not found:
            print(f"no studies in {args.storage or ', '.join(DEFAULT_STORAGES)}")
        return 0
    match = [study for _, study in found if study.study_name == args.study]
    if not match:
        names = ", ".join(sorted({s.study_name for _, s in found})) or "none"
        print(f"error: study {args.study!r} not found; the studies there: {names}", file=sys.stderr)
        return 2
    print(Progress.of(match[0], workers=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
