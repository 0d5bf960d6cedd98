"""The sweep loop: ask Optuna for a batch of `n_jobs` trials, launch them as Hydra jobs, tell Optuna how
each ended (COMPLETE, PRUNED, or FAIL with its reason), until the study holds `n_trials` finished trials.

Resuming is the same command again: the study is found by name in the persistent storage, trials left
RUNNING by a sweeper that died are failed and their parameters queued again, and only the remaining
trials run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from hydra_plugins.trainlab_optuna_sweeper._parent_run import ParentRun
from hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper import Settings
from hydra_plugins.trainlab_optuna_sweeper.search_space import parse_search_space
from trainlab.trial import TrialLink, open_storage

log = logging.getLogger(__name__)

# This sweeper, as trials and the study name it: "host:pid".
SWEEPER = f"{socket.gethostname()}:{os.getpid()}"
# Study attribute prefix: "sweeper:<host>:<pid>" → the time of that sweeper's last heartbeat.
BEAT = "sweeper:"
# A trial failed because its sweeper died, not because of its parameters: it is retried, not counted.
INTERRUPTED = "interrupted"


def study_name(config: DictConfig, overrides: Sequence[str]) -> str:
    """`<hparams_search option>-<hash of the search space and the other overrides>`: the same command
    finds the same study; machine paths (`paths.*`) do not count."""
    option = config.hydra.runtime.choices.get("hparams_search") or "sweep"
    key = "\n".join(sorted(o for o in overrides if not o.startswith("paths.")))
    return f"{option}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def counts_as_finished(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a reason of its own (not an interrupted sweeper)."""
    if trial.state == TrialState.FAIL:
        return not trial.user_attrs.get(INTERRUPTED, False)
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


def _alive(sweeper: str, beat: float, grace_period: float) -> bool:
    """On this machine: is its process there? Elsewhere: has it beaten within the grace period?"""
    host, pid = sweeper.rsplit(":", 1)
    if host != SWEEPER.rsplit(":", 1)[0]:
        return time.time() - beat <= grace_period
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def live_sweepers(study: optuna.Study, grace_period: float) -> set[str]:
    """The other sweepers that may still be running trials of `study`."""
    beats = {key.removeprefix(BEAT): t for key, t in study.user_attrs.items() if key.startswith(BEAT)}
    return {s for s, beat in beats.items() if s != SWEEPER and _alive(s, beat, grace_period)}


def _stale_reason(trial: FrozenTrial, live: set[str]) -> str | None:
    """Why a RUNNING trial has no sweeper any more, or None if it may still be running."""
    owner = trial.user_attrs.get("sweeper")
    if owner is None:  # its sweeper died between asking for it and signing it
        return None if live else "its sweeper stopped as it started the trial"
    return None if owner in live else f"its sweeper ({owner}) is gone"


def _quote(value: str) -> str:
    """A Hydra override value that stays a plain string whatever it contains."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Heartbeat:
    """Writes the time into the study as `sweeper:<host>:<pid>` every `interval` s while the sweep runs,
    so that a sweeper resuming the study elsewhere can tell a live sweep's trials from a dead one's."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self.study = study
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="optuna-heartbeat")

    def __enter__(self) -> Heartbeat:
        self.study.set_user_attr(BEAT + SWEEPER, time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.study.set_user_attr(BEAT + SWEEPER, time.time())


class OptunaSweep:
    """One invocation of the sweeper on one study."""

    def __init__(self, settings: Settings, config: DictConfig, launcher: Launcher) -> None:
        self.settings = settings
        self.config = config
        self.launcher = launcher
        self.job_idx = 0
        self.exhausted = False

    def _open_study(self, overrides: list[str]) -> tuple[optuna.Study, bool]:
        """The study, and whether this sweeper created it (sweepers started together agree on that)."""
        url = self.settings.storage
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study_args = {
            "study_name": self.settings.study_name or study_name(self.config, overrides),
            "storage": open_storage(url),
            "sampler": self.settings.sampler,
            "pruner": self.settings.pruner,
        }
        try:
            study, created = optuna.create_study(**study_args, direction=self.settings.direction), True
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.load_study(**study_args), False
        if study.direction.name.lower() != self.settings.direction:
            raise ValueError(
                f"hydra.sweeper.direction={self.settings.direction}: study {study.study_name} was created "
                f"to {study.direction.name.lower()}; use that or another study_name"
            )
        if study.get_trials(deepcopy=False):
            # A seeded sampler would replay the first invocation's draws: resumed, it draws afresh.
            study.sampler.reseed_rng()
        return study, created

    def _fail_stale_trials(self, study: optuna.Study, parent: ParentRun) -> None:
        """FAIL the RUNNING trials whose sweeper died, and queue their parameters to run again."""
        live = live_sweepers(study, self.settings.grace_period)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = _stale_reason(trial, live)
            if reason is None:
                continue
            handle = optuna.trial.Trial(study, trial._trial_id)
            handle.set_user_attr(INTERRUPTED, True)
            handle.set_user_attr("fail_reason", f"{INTERRUPTED}: {reason}")
            frozen = study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            parent.mark_trial(frozen, f"{INTERRUPTED}: {reason}")
            log.warning(
                "Trial %d was left RUNNING: %s; failed it and queued its parameters again",
                trial.number,
                reason,
            )

    def _threads(self) -> int:
        """threads_per_job, else the cores the launcher gives each job (SLURM: launcher.cpus), else this
        machine's cores shared by the n_jobs trials that run on it at once."""
        given = self.config.hydra.launcher.get("cpus_per_task")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.settings.threads_per_job or given or max(1, cores // self.settings.n_jobs)

    def _job_overrides(self, trial: optuna.Trial, fixed: dict[str, str], parent: ParentRun) -> list[str]:
        link = TrialLink(trial.study.study_name, trial._trial_id, parent.run_id, self._threads())
        env = [f"++hydra.job.env_set.{key}={_quote(value)}" for key, value in link.env().items()]
        params = [f"{key}={value}" for key, value in trial.params.items()]
        return [*params, *(f"{key}={value}" for key, value in fixed.items()), *env]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> FrozenTrial:
        """Record how the job ended; a NaN, a missing value or an exception is a FAIL with its reason."""
        if result.status == JobStatus.COMPLETED:
            value = result.return_value
            if value is not None and math.isfinite(value):
                return self._finish(study, trial, TrialState.COMPLETE, float(value))
            reason = f"returned {value} for {self.config.optimized_metric}"
        else:
            error = result._return_value  # the job's exception (`.return_value` would re-raise it)
            if isinstance(error, optuna.TrialPruned):
                log.info("Trial %d PRUNED: %s", trial.number, error)
                return self._finish(study, trial, TrialState.PRUNED)
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
        log.warning("Trial %d FAIL: %s", trial.number, reason)
        trial.set_user_attr("fail_reason", reason[:2000])
        return self._finish(study, trial, TrialState.FAIL)

    def _finish(
        self, study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None
    ) -> FrozenTrial:
        try:
            return study.tell(trial, value, state=state)
        except RuntimeError as err:  # a grid sampler that has tried every point asks the study to stop
            if "Study.stop" not in str(err):
                raise
            log.info("Every point of the search space has been tried")
            self.exhausted = True
            return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)

    def run(self, arguments: list[str]) -> None:
        params = [f"{key}={value}" for key, value in (self.settings.params or {}).items()]
        space, fixed = parse_search_space([*params, *arguments])
        study, created = self._open_study([*params, *arguments])
        description = {
            "study": study.study_name,
            "direction": self.settings.direction,
            "objective": self.config.optimized_metric,
            "sampler": type(study.sampler).__name__,
            "pruner": type(study.pruner).__name__,
            "search_space": {key: repr(dist) for key, dist in space.items()},
            "fixed": fixed,
        }
        parent = ParentRun(self.config.logger, study, description, created)
        shown = make_url(self.settings.storage).render_as_string(hide_password=True)
        log.info("Study %s in %s: %s", study.study_name, shown, description["search_space"])
        self._fail_stale_trials(study, parent)
        if self.settings.n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning("hydra/launcher=basic runs trials one at a time: use hydra/launcher=joblib")

        failure = None
        with Heartbeat(study, max(1.0, self.settings.grace_period / 4)):
            while True:
                finished = [t for t in study.get_trials(deepcopy=False) if counts_as_finished(t)]
                failed = sum(t.state == TrialState.FAIL for t in finished)
                rate, total = self.settings.max_failure_rate, self.settings.n_trials
                if failed > rate * total:
                    failure = (
                        f"{failed} of {len(finished)} trials failed, more than "
                        f"max_failure_rate={rate} of n_trials={total}"
                    )
                    break
                todo = self.settings.n_trials - len(finished)
                if todo <= 0 or self.exhausted:
                    break
                size = min(todo, self.settings.n_jobs)
                self._run_batch(study, space, fixed, parent, size)
                parent.record_best(len(finished) + size)

        results = self._write_results(study)
        parent.finish(results, failure)
        if failure:
            print(f"error: sweep stopped: {failure}; see {results}", file=sys.stderr)
            raise SystemExit(1)

    def _run_batch(
        self,
        study: optuna.Study,
        space: dict[str, Any],
        fixed: dict[str, str],
        parent: ParentRun,
        size: int,
    ) -> None:
        trials = [study.ask(space) for _ in range(size)]
        for trial in trials:
            trial.set_user_attr("sweeper", SWEEPER)
        overrides = [self._job_overrides(trial, fixed, parent) for trial in trials]
        results = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(results)
        for trial, result in zip(trials, results, strict=True):
            frozen = self._tell(study, trial, result)
            parent.mark_trial(frozen, frozen.user_attrs.get("fail_reason"))

    def _write_results(self, study: optuna.Study) -> Path:
        """optimization_results.yaml in the sweep folder, as the stock plugin writes it; also logged."""
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_params": None,
            "best_value": None,
            "trials": {state: states.count(state) for state in sorted(set(states))},
        }
        try:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("Best value %s (trial %d) with %s", best.value, best.number, best.params)
        except ValueError:
            log.warning("No trial of study %s completed", study.study_name)
        path = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), path)
        return path
