"""The job's side of an Optuna trial: report the optimised metric after each validation, stop the run
when the pruner says so, and file the job's MLflow run as a child of the sweep's parent run.

The sweeper tells a job which trial it is through environment variables (set per job with Hydra's
`hydra.job.env_set`, so they reach launcher worker processes too); without them, nothing happens. The
storage URL and the pruner come from the job's own copy of `hydra.sweeper`, so that no password
travels through the environment or the launcher's log.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

if TYPE_CHECKING:
    import lightning as L
    import optuna

T = TypeVar("T")

STUDY_ENV = "TRAINLAB_OPTUNA_STUDY"
TRIAL_ENV = "TRAINLAB_OPTUNA_TRIAL_ID"
PARENT_RUN_ENV = "TRAINLAB_MLFLOW_PARENT_RUN_ID"
THREADS_ENV = "TRAINLAB_NUM_THREADS"
# The trial's user attribute naming its last.ckpt: a retry of a trial its worker lost goes on from it.
LAST_CHECKPOINT = "last_checkpoint"
# Where studies are kept when hydra.sweeper.storage is null (as MLFLOW_TRACKING_URI is for runs).
STORAGE_ENV = "OPTUNA_STORAGE"

# SQLite allows one writer at a time; parallel trials wait this long (s) for the lock instead of failing
# with "database is locked".
SQLITE_TIMEOUT_S = 120


# The storage's writes: one that meets "database is locked" (beyond the SQLite timeout) is tried again.
STORAGE_WRITES = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "create_new_trial",
    "_create_new_trial",  # what Optuna's own cached storage calls
    "set_trial_param",
    "_set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
)


def is_journal(url: str) -> bool:
    """A journal file's path (no `scheme://`), not a database URL."""
    return "://" not in url


def shown_storage(url: str) -> str:
    """The storage as messages show it: a journal file's path, a database URL without its password."""
    from sqlalchemy.engine import make_url

    return url if is_journal(url) else make_url(url).render_as_string(hide_password=True)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's journal storage for a file path (appended to under a lock that works on NFS: what workers
    on several nodes share with no server), else its RDB storage for `url`; SQLite connections wait for
    the write lock (and a write that still meets it is tried again), and sweepers starting at once on a
    new SQLite file or PostgreSQL database take turns creating its tables."""
    import optuna

    from trainlab.tracking.creation_lock import creation_lock

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))

    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    with creation_lock(url):
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    for name in STORAGE_WRITES:  # on the instance: Optuna's own wrappers call these
        setattr(storage, name, _retrying_when_locked(getattr(storage, name)))
    return storage


def _retrying_when_locked(write: Callable[..., T], attempts: int = 5) -> Callable[..., T]:
    @functools.wraps(write)
    def retrying(*args: object, **kwargs: object) -> T:
        for attempt in range(attempts):
            try:
                return write(*args, **kwargs)
            except Exception as err:
                if "database is locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(min(0.1 * 2**attempt, 2.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return retrying


def storage_url(storage: str | None, sweep_dir: str, cwd: str, workers: int = 0) -> str:
    """`hydra.sweeper.storage` (a journal file's path made absolute from the launch folder `cwd`); for
    null the environment's OPTUNA_STORAGE (as MLFLOW_TRACKING_URI for runs: the compose stack sets it),
    else a file beside the sweep folder (`sweep_dir`, relative to `cwd`), the same for every run of a
    command, so the command resumes: SQLite, or for `workers` a journal file, which workers on other
    nodes can share through the file system."""
    url = storage or os.environ.get(STORAGE_ENV)
    if url:
        return str((Path(cwd) / url).resolve()) if is_journal(url) else url
    folder = (Path(cwd) / sweep_dir).resolve().parent
    return str(folder / "optuna.journal") if workers else f"sqlite:///{folder / 'optuna.db'}"


@dataclass(frozen=True)
class TrialLink:
    """Which trial of which study this job is, and where to find it."""

    study: str
    trial_id: int | None  # None in a population job: each member has its own (trainlab.population)
    parent_run_id: str | None
    threads: int | None

    def env(self) -> dict[str, str]:
        """The environment variables that hand this link to a job."""
        env = {STUDY_ENV: self.study}
        if self.trial_id is not None:
            env[TRIAL_ENV] = str(self.trial_id)
        if self.parent_run_id:
            env[PARENT_RUN_ENV] = self.parent_run_id
        if self.threads:
            env[THREADS_ENV] = str(self.threads)
        return env


def current_trial() -> TrialLink | None:
    """The trial this job runs for (trial_id None for a population job), or None outside an Optuna sweep."""
    if STUDY_ENV not in os.environ:
        return None
    threads = os.environ.get(THREADS_ENV)
    trial_id = os.environ.get(TRIAL_ENV)
    return TrialLink(
        study=os.environ[STUDY_ENV],
        trial_id=int(trial_id) if trial_id else None,
        parent_run_id=os.environ.get(PARENT_RUN_ENV),
        threads=int(threads) if threads else None,
    )


def _load_study(name: str) -> optuna.Study:
    """The sweep's study, with its storage and pruner from the job's copy of `hydra.sweeper`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    url = storage_url(sweeper.storage, hydra.sweep.dir, hydra.runtime.cwd, sweeper.get("workers", 0))
    pruner = OmegaConf.to_yaml(sweeper.pruner) if sweeper.get("pruner") else ""
    return _open_study(name, url, pruner)


@functools.cache
def _open_study(name: str, url: str, pruner: str) -> optuna.Study:
    """Loaded once per process, storage and pruner (a population's members share it; several sweeps in one
    process, as the Python API runs them, each its own)."""
    import optuna
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    found = instantiate(OmegaConf.create(pruner)) if pruner else optuna.pruners.NopPruner()
    return optuna.load_study(study_name=name, storage=open_storage(url), pruner=found)


def trial_handle(study: str, trial_id: int) -> optuna.trial.Trial:
    """The running trial `trial_id` of `study`, to report to and ask whether to prune."""
    import optuna

    return optuna.trial.Trial(_load_study(study), trial_id)


class MeanReport:
    """What the runs of a group of repeats (trainlab.repeats) report to their one trial: at each epoch,
    the mean of the values its runs have reached there so far, so that the pruner judges the mean."""

    def __init__(self) -> None:
        self.values: dict[int, list[float]] = {}

    def add(self, epoch: int, value: float) -> float:
        """Record a run's `value` after `epoch`; the mean over the runs that reached it."""
        values = self.values.setdefault(epoch, [])
        values.append(value)
        return sum(values) / len(values)


class TrialCallback(Callback):
    """Reports `metric` to the trial at each validation end (step = epoch) and raises `TrialPruned` when
    the pruner cuts the trial; the sweeper then records it PRUNED. Also limits the job's CPU threads to
    its share and tags its MLflow run with the parent run, the study and the trial number. With several
    objectives (`metric` None) it reports nothing: Optuna prunes single-objective studies only.

    A run of a group of repeats (`report` given) reports the group's mean so far instead, replacing the
    value an earlier run reported at that epoch, and leaves its trial's run to the group's parent run."""

    def __init__(self, link: TrialLink, metric: str | None, report: MeanReport | None = None) -> None:

        self.link = link
        self.metric = metric
        self.report = report
        self.trial = trial_handle(link.study, link.trial_id)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.link.threads:
            import torch

            torch.set_num_threads(self.link.threads)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        saver = trainer.checkpoint_callback
        if self.report is None and trainer.is_global_zero and getattr(saver, "dirpath", None):
            self.trial.set_user_attr(LAST_CHECKPOINT, str(Path(saver.dirpath) / "last.ckpt"))
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id is None or not trainer.is_global_zero or self.report is not None:
            return
        self.trial.set_user_attr("mlflow_run_id", run_id)
        tags = {"optuna.study": self.link.study, "optuna.trial": str(self.trial.number)}
        if self.link.parent_run_id:
            tags["mlflow.parentRunId"] = self.link.parent_run_id
        for key, value in tags.items():
            logger.experiment.set_tag(run_id, key, value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        value = trainer.callback_metrics.get(self.metric) if self.metric else None
        if trainer.sanity_checking or value is None:
            return
        epoch, value = trainer.current_epoch, float(value)
        if self.report is not None:
            value = self.report.add(epoch, value)
            # Trial.report keeps the first value of a step; the storage's own call replaces it.
            self.trial.storage.set_trial_intermediate_value(self.link.trial_id, epoch, value)
        elif trainer.is_global_zero:
            self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            named = f"the mean {self.metric}" if self.report is not None else self.metric
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {named}={value:.4g}")


def trial_callbacks(run_cfg: DictConfig, report: MeanReport | None = None) -> list[Callback]:
    """[TrialCallback] inside an Optuna sweep, [] otherwise."""
    link = current_trial()
    if link is None or link.trial_id is None:
        return []
    metric = run_cfg.optimized_metric
    return [TrialCallback(link, metric if isinstance(metric, str) else None, report)]
