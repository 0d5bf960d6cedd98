"""The sweep loop: ask Optuna for a batch of `n_jobs` trials, launch them as Hydra jobs, tell Optuna how
each ended (COMPLETE with the task's return value(s), PRUNED, or FAIL with its reason), until the study
holds `n_trials` finished trials. Any Hydra app: trainlab's keys (`logger`, `optimized_metric`) are read
only where the app's config has them.

Resuming is the same command again: the study is found by name in the persistent storage, trials left
RUNNING by a sweeper that died are failed and their parameters queued again, and only the remaining
trials run. A study is resumed only for the search it was created for (`_record`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
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
from typing import Any, NoReturn

import optuna
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.trainlab_optuna_sweeper._parent_run import ParentRun
from hydra_plugins.trainlab_optuna_sweeper._record import RECORD, differences, mismatch, search_record
from hydra_plugins.trainlab_optuna_sweeper._samplers import grid, grid_points
from hydra_plugins.trainlab_optuna_sweeper.search_space import from_search_space, parse_search_space
from hydra_plugins.trainlab_optuna_sweeper.settings import Settings
from hydra_plugins.trainlab_population.grid_sweeper import on_slurm
from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.errors import ConfigError, Stop, SweepFailed, UserError, storage_error
from trainlab.population.members import quote_override_value
from trainlab.run.trial import LAST_CHECKPOINT, TrialLink, open_storage, shown_storage, storage_url
from trainlab.sweeps import (
    INTERRUPTED,
    N_TRIALS,
    Progress,
    counts_as_finished,
    follow,
    record_workers,
    status_command,
)
from trainlab.tracking.orphans import process_running
from trainlab.tracking.tracker import ending

log = logging.getLogger(__name__)

# What an interrupted sweep's one line says.
RESUME = "the sweep is saved (parent run KILLED); the same command resumes it, the stopped trials again"

# This sweeper, as trials and the study name it: "host:pid".
SWEEPER = f"{socket.gethostname()}:{os.getpid()}"
# Study attribute prefix: "sweeper:<host>:<pid>" → the time of that sweeper's last heartbeat.
BEAT = "sweeper:"
# Study attribute: the sweeper that created the study.
CREATOR = "created_by"
# How often an idle worker looks for a lost trial to retry (s).
WORKER_POLL_S = 5.0


def study_name(config: DictConfig, overrides: Sequence[str]) -> str:
    """`<hparams_search option, or the app's name>-<hash of the search space and the other overrides>`:
    the same command finds the same study; machine paths (`paths.*`) do not count."""
    option = config.hydra.runtime.choices.get("hparams_search") or config.hydra.job.name
    key = "\n".join(sorted(o for o in overrides if not o.startswith("paths.")))
    return f"{option}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _alive(sweeper: str, beat: float, grace_period: float) -> bool:
    """On this machine: is its process there? Elsewhere: has it beaten within the grace period?"""
    host, pid = sweeper.rsplit(":", 1)
    if host != SWEEPER.rsplit(":", 1)[0]:
        return time.time() - beat <= grace_period
    return process_running(int(pid))


def _not_counted(study: optuna.Study, trial: FrozenTrial | optuna.Trial, why: str) -> FrozenTrial:
    """FAIL a trial that did not end on its own: not counted (`counts_as_finished`)."""
    handle = optuna.trial.Trial(study, trial._trial_id)
    handle.set_user_attr(INTERRUPTED, True)
    handle.set_user_attr("fail_reason", f"{INTERRUPTED}: {why}")
    return study.tell(trial.number, state=TrialState.FAIL)


def _retry_later(study: optuna.Study, trial: FrozenTrial, parent: ParentRun, why: str) -> None:
    """FAIL a trial that did not end on its own, its run with it, and queue its parameters to run again
    (from its last checkpoint: `OptunaSweep._resume_from`)."""
    frozen = _not_counted(study, trial, why)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    parent.mark_trial(frozen, f"{INTERRUPTED}: {why}")


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


# Optuna's own heartbeats (RDBStorage(heartbeat_interval, grace_period), fail_stale_trials and its
# RetryFailedTrialCallback) cannot serve: its heartbeat thread is private (`_heartbeat.get_heartbeat_thread`)
# and runs only inside `study.optimize`, which a sweeper that launches jobs does not call, and it judges
# a trial stale by time alone, so the same command rerun after a crash would wait grace_period before
# retrying the dead sweeper's trials; a per-sweeper beat plus a local process check retries them at once.
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

    def __init__(
        self,
        settings: Settings,
        config: DictConfig,
        launcher: Launcher,
        trainlab: bool = False,
        worker: int | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker  # this process is worker `worker` of a sweep with workers (_workers)
        self.config = config
        self.launcher = launcher
        self.trainlab = trainlab  # trainlab's own task: its CLI prints a `Stop`, its Python API raises it
        self.job_idx = 0
        self.exhausted = False
        self.n_trials = settings.n_trials
        self.storage = storage_url(
            settings.storage, config.hydra.sweep.dir, config.hydra.runtime.cwd, settings.workers
        )
        # What the task's return value is called in messages: trainlab's optimized_metric, where there is one.
        metric = config.get("optimized_metric")
        self.objective = OmegaConf.to_container(metric) if OmegaConf.is_list(metric) else metric
        self.extend = get_method(settings.custom_search_space) if settings.custom_search_space else None

    def _open_study(
        self, overrides: list[str], sampler: optuna.samplers.BaseSampler, record: dict[str, Any]
    ) -> tuple[optuna.Study, bool]:
        """The study, and whether this sweeper created it (sweepers started together agree on that). A
        study created for another search (`record`) stops the sweep with one line, exit status 2, before
        anything is written to it."""
        url = self.storage
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study_args = {
            "study_name": self.settings.study_name or study_name(self.config, overrides),
            "storage": open_storage(url),
            "sampler": sampler,
            "pruner": self.settings.pruner,
        }
        try:
            study = optuna.create_study(**study_args, directions=list(self.settings.direction))
            study.set_user_attr(CREATOR, SWEEPER)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.load_study(**study_args), False
        # A study of an earlier trainlab has no record, but its directions.
        directions = [d.name.lower() for d in study.directions]
        recorded = study.user_attrs.get(RECORD, {}) | {"direction": directions}
        if found := differences(recorded, record):
            shown = shown_storage(url)
            self._stop(ConfigError(mismatch(study.study_name, shown, found)), 2)
        if RECORD not in study.user_attrs:
            study.set_user_attr(RECORD, record)
        if study.get_trials(deepcopy=False) or self.worker is not None:
            # A seeded sampler would replay the first invocation's draws (or each worker the same ones):
            # resumed, or in a worker, it draws afresh.
            study.sampler.reseed_rng()
        return study, created

    def _creator_may_open_parent(self, study: optuna.Study) -> bool:
        """Whether the sweeper that created `study` may still be opening its parent run: not this process
        (it opens none now), nor one that is gone; unknown (a study of an earlier trainlab, or one whose
        creator has not signed it yet), it may."""
        creator = study.user_attrs.get(CREATOR)
        if creator is None:
            return True
        beat = study.user_attrs.get(BEAT + creator, time.time())
        return creator != SWEEPER and _alive(creator, beat, self.settings.grace_period)

    def _fail_stale_trials(self, study: optuna.Study, parent: ParentRun) -> None:
        """FAIL the RUNNING trials whose sweeper died, and queue their parameters to run again."""
        live = live_sweepers(study, self.settings.grace_period)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = _stale_reason(trial, live)
            if reason is None:
                continue
            _retry_later(study, trial, parent, reason)
            log.warning(
                "Trial %d was left RUNNING: %s; failed it and queued its parameters again",
                trial.number,
                reason,
            )

    def _threads(self) -> int:
        """threads_per_job, else the cores the launcher gives each job (SLURM: launcher.cpus), else this
        machine's cores shared by the trials that run on it at once (n_jobs, or one per worker)."""
        given = self.config.hydra.launcher.get("cpus_per_task")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        at_once = self.settings.workers or self.settings.n_jobs
        return self.settings.threads_per_job or given or max(1, cores // at_once)

    def _job_overrides(self, trial: optuna.Trial, fixed: dict[str, str], parent: ParentRun) -> list[str]:
        link = TrialLink(trial.study.study_name, trial._trial_id, parent.run_id, self._threads())
        env = [f"++hydra.job.env_set.{key}={quote_override_value(v)}" for key, v in link.env().items()]
        params = [f"{key}={value}" for key, value in trial.params.items()]
        return [*params, *fixed.values(), *env, *self._resume_from(trial)]

    def _resume_from(self, trial: optuna.Trial) -> list[str]:
        """For trainlab's task, a trial that retries one its worker lost (`retry_of`) goes on from that
        trial's last checkpoint, in its folder and its MLflow run (`ckpt_path=`), where it saved one."""
        retried = trial.user_attrs.get("retry_of")
        if not self.trainlab or retried is None or self.settings.population > 1:
            return []
        lost = trial.study.get_trials(deepcopy=False)[retried]  # trials come in the order of their numbers
        checkpoint = lost.user_attrs.get(LAST_CHECKPOINT)
        if checkpoint is None or not Path(checkpoint).is_file():
            return []
        log.info("Trial %d goes on from trial %d's %s", trial.number, retried, checkpoint)
        return [f"ckpt_path={quote_override_value(checkpoint)}"]

    def _values(self, value: Any) -> list[float] | str:
        """The job's return value as one finite float per objective, or why it is not."""
        count = len(self.settings.direction)
        values = (
            value if count > 1 and isinstance(value, Sequence) and not isinstance(value, str) else [value]
        )
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            floats = []
        if len(floats) != count or not all(map(math.isfinite, floats)):
            expected = "a number" if count == 1 else f"a sequence of {count} numbers (one per direction)"
            named = f" for {self.objective}" if self.objective else ""
            return f"returned {value!r}{named}: expected {expected}, finite"
        return floats

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> FrozenTrial:
        """Record how the job ended; a NaN, a missing value or an exception is a FAIL with its reason."""
        if result.status == JobStatus.COMPLETED:
            values = self._values(result.return_value)
            if not isinstance(values, str):
                return self._finish(study, trial, TrialState.COMPLETE, values)
            reason = values
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
        self, study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None = None
    ) -> FrozenTrial:
        try:
            return study.tell(trial, values, state=state)
        except RuntimeError as err:  # a grid sampler that has tried every point asks the study to stop
            if "Study.stop" not in str(err):
                raise
            log.info("Every point of the search space has been tried")
            self.exhausted = True
            return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)

    def _sampler(self, space: dict[str, Any]) -> optuna.samplers.BaseSampler:
        """The configured sampler; a grid (`_partial_` GridSampler) gets its points from the search space,
        and n_trials is cut to their number."""
        sampler = self.settings.sampler
        if not isinstance(sampler, functools.partial):
            return sampler
        if self.extend is not None:
            raise ValueError(
                "hydra.sweeper.custom_search_space: sampler=grid needs the whole space in params"
            )
        size = math.prod(len(grid_points(key, dist)) for key, dist in space.items())
        if size < self.n_trials:
            log.info("n_trials=%d cut to the %d points of the grid", self.n_trials, size)
            self.n_trials = size
        return grid(sampler, space)

    def _stop(self, error: UserError, code: int) -> NoReturn:
        """End the sweep with `error`'s one line and exit status `code`: printed by trainlab's CLI (raised by
        its Python API), printed here for any other app."""
        if self.trainlab:
            raise Stop(error, code)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(code)

    def run(self, arguments: list[str]) -> None:
        """The sweep; Ctrl-C or SIGTERM stops it at the next trial boundary or the running trials' next
        batch (trainlab.interrupts), with its trials marked to run again and its parent run KILLED."""
        with interrupts.cooperative():
            try:
                self._run(arguments)
            except Exception as err:  # a study or a folder that cannot be written: one line
                if (mistake := storage_error(err)) is None:
                    raise
                self._stop(mistake, 2)

    def _run(self, arguments: list[str]) -> None:
        params = [f"{key}={value}" for key, value in (self.settings.params or {}).items()]
        space, fixed = parse_search_space([*params, *arguments])
        deprecated = from_search_space(self.settings.search_space, self.settings.params)
        space = {key: dist for key, dist in deprecated.items() if key not in fixed} | space
        named_by = [*params, *arguments, *(f"{key}={dist!r}" for key, dist in deprecated.items())]
        record = search_record(space, self.settings.direction, self.objective, self.config)
        if self.settings.workers and on_slurm(self.config) and self.storage.startswith("sqlite"):
            self._stop(
                ConfigError(
                    f"hydra.sweeper.storage={self.storage}: SQLite cannot be shared by workers on several "
                    "nodes (its locks do not hold on network file systems); leave storage null for a "
                    "journal file in the sweep folder's parent, or give a journal file's path or a "
                    "postgresql:// URL"
                ),
                2,
            )
        study, created = self._open_study(named_by, self._sampler(space), record)
        # Another sweeper that created the study a moment ago is opening its MLflow parent run: wait for it.
        opening = not created and self._creator_may_open_parent(study)
        description = {
            "study": study.study_name,
            "direction": list(self.settings.direction),
            "objective": self.objective or "the task's return value",
            "sampler": type(study.sampler).__name__,
            "pruner": type(study.pruner).__name__,
            "population": self.settings.population,
            "search_space": {key: repr(dist) for key, dist in space.items()},
            "fixed": list(fixed.values()),
        }
        logger = self.config.get("logger")  # trainlab's logger group: an MLflow parent run
        parent = ParentRun(
            logger if OmegaConf.is_dict(logger) and "name" in logger else None, study, description, opening
        )
        shown = shown_storage(self.storage)
        log.info("Study %s in %s: %s", study.study_name, shown, description["search_space"])
        self._fail_stale_trials(study, parent)
        launcher = getattr(self.launcher, "launcher", self.launcher)  # inside a PopulationLauncher
        if (
            self.settings.n_jobs > 1
            and not self.settings.workers
            and type(launcher).__name__ == "BasicLauncher"
        ):
            log.warning("hydra/launcher=basic runs trials one at a time: use hydra/launcher=joblib")

        if self.worker is None and self.settings.workers:
            self._start_workers(study, parent, arguments)
            return
        failure, finisher = None, self.worker is None
        try:
            with Heartbeat(study, self.settings.heartbeat_interval):
                while True:
                    interrupts.check(RESUME)
                    trials = study.get_trials(deepcopy=False)
                    finished = [t for t in trials if counts_as_finished(t)]
                    if failure := self._failure(finished):
                        break
                    todo = self.n_trials - len(finished)
                    if todo <= 0 or self.exhausted:
                        break
                    if self.worker is None:
                        size = min(todo, self.settings.n_jobs * self.settings.population)
                    else:
                        # A worker with no trial left to ask for stays while others run theirs: one that is
                        # lost is retried here.
                        self._fail_stale_trials(study, parent)
                        running = sum(t.state == TrialState.RUNNING for t in trials)
                        size = min(todo - running, self.settings.population)
                        finisher = False
                        if size <= 0:
                            time.sleep(min(WORKER_POLL_S, self.settings.heartbeat_interval))
                            continue
                        parent.attach()
                    self._run_batch(study, space, fixed, parent, size)
                    parent.record_best(len(finished) + size)
                    finisher = True
            if not finisher and not failure:  # the worker that told the last trial ends the parent run
                parent.release()
                return
            results = self._write_results(study)
        except BaseException as err:
            self._stopped(study, parent, err)
            if isinstance(err, interrupts.Interrupted):
                raise interrupts.Interrupted(err.signum, RESUME) from None
            raise
        parent.finish(results, failure)
        if failure:
            self._stop(SweepFailed(f"sweep stopped: {failure}; see {results}"), 1)

    def _failure(self, finished: list[FrozenTrial]) -> str | None:
        """Why the sweep stops for its failed trials (`max_failure_rate`), or None."""
        failed = [t for t in finished if t.state == TrialState.FAIL]
        rate, total = self.settings.max_failure_rate, self.n_trials
        if len(failed) <= rate * total:
            return None
        return (
            f"{len(failed)} of {len(finished)} trials failed, more than max_failure_rate={rate} of "
            f"n_trials={total}; the last: {failed[-1].user_attrs.get('fail_reason')}"
        )

    def _stopped(self, study: optuna.Study, parent: ParentRun, err: BaseException) -> None:
        """End the parent run for a sweep stopped before its end; a worker leaves it to the others still
        running (the same command resumes the sweep)."""
        if self.worker is not None and live_sweepers(study, self.settings.grace_period):
            parent.release()
        else:
            parent.end(*ending(err))

    def _start_workers(self, study: optuna.Study, parent: ParentRun, arguments: list[str]) -> None:
        """Submit the workers and return (or, with `wait`, follow the sweep to its end)."""
        from hydra_plugins.trainlab_optuna_sweeper import _workers

        progress = Progress.of(study, self.n_trials)
        if progress.done:
            log.info("Study %s has its %d trials", study.study_name, self.n_trials)
            parent.finish(self._write_results(study), self._failure(progress.finished))
            return
        launcher = getattr(self.launcher, "launcher", self.launcher)  # inside a PopulationLauncher
        config = copy.deepcopy(self.config)
        with read_write(config), open_dict(config):
            config.hydra.sweep.dir = str(Path(config.hydra.runtime.cwd, config.hydra.sweep.dir).resolve())
        settings = dataclasses.replace(self.settings, study_name=study.study_name, n_trials=self.n_trials)
        worker = Worker(
            settings,
            config,
            launcher.hydra_context,
            launcher.task_function,
            self.trainlab,
            arguments,
            Singleton.get_state(),
        )
        try:
            study.set_user_attr(N_TRIALS, self.n_trials)
            parent.hand_over()
            submitted = _workers.start(worker, self.settings.workers, launcher, Path(config.hydra.sweep.dir))
        except BaseException as err:  # none started: the parent run is this command's to end
            parent.end(*ending(err))
            raise
        record_workers(study, submitted)
        watch = status_command(study.study_name, self.storage, self.trainlab)
        print(
            f"Study {study.study_name}: {self.settings.workers} worker(s) started ({submitted.describe()}); "
            f"{progress.line()}\n  watch: {watch}\n  more workers: the same command again; stop: "
            f"{submitted.stop_hint()} (the running trials are retried at the next start)\n"
            f"  logs: {submitted.logs}",
            flush=True,
        )
        if self.settings.wait:
            try:
                follow(study, self.n_trials, self.settings.heartbeat_interval, submitted.logs)
            except SweepFailed as gone:  # the workers ended before the study had its trials
                self._stop(gone, 1)
            self._write_results(study)

    def _run_batch(
        self,
        study: optuna.Study,
        space: dict[str, Any],
        fixed: dict[str, str],
        parent: ParentRun,
        size: int,
    ) -> None:
        """Ask for `size` trials, launch them, tell how each ended. A batch that stops half-way (Ctrl-C, a
        launcher that fails, a store that fails) fails its trials still RUNNING as interrupted: they run
        again when the same command resumes the sweep."""
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        try:
            trials = [study.ask(space) for _ in range(size)]
            for trial in trials:
                trial.set_user_attr("sweeper", SWEEPER)
                if self.extend is not None:
                    self.extend(self.config, trial)
            if self.worker is not None and not (trials := self._within_budget(study, trials)):
                return
            overrides = [self._job_overrides(trial, fixed, parent) for trial in trials]
            results = self._launch(overrides, [trial.number for trial in trials])
            for trial, result in zip(trials, results, strict=True):
                frozen = self._tell(study, trial, result)
                parent.mark_trial(frozen, frozen.user_attrs.get("fail_reason"))
        except BaseException as err:
            why = interrupts.reason() if interrupts.received() else f"{type(err).__name__}: {err}"
            self._fail_unfinished(study, running, parent, why.splitlines()[0][:300])
            raise

    def _within_budget(self, study: optuna.Study, trials: list[optuna.Trial]) -> list[optuna.Trial]:
        """The asked trials that fit in n_trials: workers asking at the same moment may ask for one too
        many; the newest trials over the budget are set aside (FAIL, not counted), whoever asked them."""
        every = study.get_trials(deepcopy=False)
        running = sorted((t.number for t in every if t.state == TrialState.RUNNING), reverse=True)
        over = len(running) + sum(map(counts_as_finished, every)) - self.n_trials
        newest = set(running[: max(0, over)])
        for trial in trials:
            if trial.number in newest:
                _not_counted(study, trial, "asked beyond n_trials by workers asking at once")
        return [trial for trial in trials if trial.number not in newest]

    def _launch(self, overrides: list[list[str]], numbers: list[int]) -> list[JobReturn]:
        """Launch the jobs; a worker numbers each by its trial, so that the folders of trials that
        workers run at once never meet."""
        if self.worker is None:
            results = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(results)
            return results
        if self.settings.population > 1:  # a PopulationLauncher
            return self.launcher.launch(overrides, numbers[0], numbers=numbers)
        return [
            self.launcher.launch([o], initial_job_idx=n)[0] for o, n in zip(overrides, numbers, strict=True)
        ]

    def _fail_unfinished(self, study: optuna.Study, before: set[int], parent: ParentRun, why: str) -> None:
        """FAIL (as interrupted: retried, not counted) this sweeper's trials that a batch left RUNNING, and
        queue their parameters again; each on its own, so that one failing write leaves the others done."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in before or trial.user_attrs.get("sweeper", SWEEPER) != SWEEPER:
                continue
            try:
                _retry_later(study, trial, parent, why)
            except Exception as err:  # its sweeper is gone once this one ends: the next run fails it
                log.warning(
                    "Trial %d left RUNNING (%s): the same command fails and retries it", trial.number, err
                )

    def _write_results(self, study: optuna.Study) -> Path:
        """optimization_results.yaml in the sweep folder, as the stock plugin writes it (best_params and
        best_value; with several objectives, `solutions`: the Pareto-optimal trials); also logged."""
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "trials": {state: states.count(state) for state in sorted(set(states))},
        }
        if len(study.directions) > 1:
            front = sorted(study.best_trials, key=lambda t: t.number)
            results["solutions"] = [
                {"params": t.params, "values": t.values, "trial": t.number} for t in front
            ]
            log.info("%d Pareto-optimal trials: %s", len(front), [(t.number, t.values) for t in front])
        elif any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("Best value %s (trial %d) with %s", best.value, best.number, best.params)
        else:
            results.update(best_params=None, best_value=None)
            log.warning("No trial of study %s completed", study.study_name)
        path = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, OmegaConf.to_yaml(OmegaConf.create(results)))
        return path


@dataclasses.dataclass
class Worker:
    """A worker of a sweep with workers: this app's task and the sweep's settings, pickled, then called
    where it runs (trainlab_optuna_sweeper._workers); it runs its trials in its own process through Hydra's
    basic launcher (and a population launcher where trials share a network)."""

    settings: Settings
    config: DictConfig
    hydra_context: HydraContext
    task_function: TaskFunction
    trainlab: bool
    arguments: list[str]
    singleton_state: dict[Any, Any]

    def __call__(self, index: int) -> None:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        Singleton.set_state(self.singleton_state)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        launcher: Any = BasicLauncher()
        launcher.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        if self.settings.population > 1:
            from trainlab.population.launch import PopulationLauncher

            launcher = PopulationLauncher(launcher, self.settings.population, self.hydra_context, self.config)
        OptunaSweep(self.settings, self.config, launcher, self.trainlab, worker=index).run(self.arguments)

    def checkpoint(self, index: int) -> Any:
        """submitit's hook: a worker preempted or out of time is requeued as itself (its trial is retried,
        from its last checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)
