"""Where a run's metrics, params and artifacts go: MLflow (default), CSV files, or nowhere.

The tracker, not Lightning, owns the MLflow run's life: it creates the run (or reopens it on resume)
before training and ends it as FINISHED, FAILED (with the reason as a tag) or KILLED, whatever happens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainlab.config import check_choice
from trainlab.creation_lock import creation_lock
from trainlab.errors import UserError

log = logging.getLogger(__name__)

# Config keys that hold machine-specific paths or URIs: useless for comparing runs, and private.
PRIVATE_KEYS = (
    "paths",
    "hydra",
    "ckpt_path",
    "report",
    "variants",
    "data.root",
    "logger.tracking_uri",
    "logger.artifact_location",
)


def check_logger(cfg: DictConfig) -> None:
    check_choice("logger.name", cfg.name, TRACKERS)


REDACTED = "<from the environment>"


def redact_environment(config: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with every value that came from `${oc.env:...}` in the unresolved `raw` config replaced
    by REDACTED: tokens and passwords passed through the environment never reach MLflow."""
    public = dict(config)
    for key, value in raw.items():
        if isinstance(value, Mapping) and isinstance(public.get(key), Mapping):
            public[key] = redact_environment(public[key], value)
        elif isinstance(value, str) and "oc.env:" in value:
            public[key] = REDACTED
    return public


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {"optimizer.lr": "0.01", ...}, leaving out PRIVATE_KEYS."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if dotted in PRIVATE_KEYS:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = str(value)
    return flat


@dataclass
class RunInfo:
    """What identifies a run besides its config: its name, tags, and the MLflow run to resume, if any."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    resume_run_id: str | None = None
    run_dir: Path | None = None  # where an unreachable server's writes are kept


class Tracker:
    """No tracking: checkpoints and the console only (`logger=none`)."""

    run_id: str | None = None

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """Fail fast (before any data or training) if the store cannot be used."""

    @property
    def lightning_logger(self) -> Any:
        return False

    def start(self, config: Mapping[str, Any], config_yaml: str, info: RunInfo) -> None:
        """Open the run (before training, after validation: nothing is created for a bad config)."""

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """Keep a file with the run."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach tags learnt during the run (e.g. where the data came from)."""

    def end(self, status: str, reason: str | None = None) -> None:
        """Mark the run FINISHED, FAILED or KILLED."""

    @contextmanager
    def running(self, interrupted: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """End the run as FINISHED, KILLED (Ctrl-C, SIGTERM: `interrupted()` is true) or FAILED (any
        other error, its reason kept as the tag `failure_reason`)."""
        try:
            yield
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt) or interrupted():  # Lightning turns it into SystemExit
                self.end("KILLED", "interrupted (Ctrl-C or SIGTERM)")
            elif isinstance(err, SystemExit):  # preempted on a cluster and requeued (trainlab.cluster)
                self.end("KILLED", "preempted: saved and requeued")
            else:
                self.end("FAILED", f"{type(err).__name__}: {err}"[:5000])
            raise
        self.end("FINISHED")


class CsvTracker(Tracker):
    """Per-epoch metrics as CSV under `logger.save_dir`."""

    @property
    def lightning_logger(self) -> Any:
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(self.cfg.save_dir, name="csv")


# The experiment tag by which MLflow's UI tells a model-training experiment from a GenAI one (traces,
# token usage); trainlab sets it on every experiment it creates or reopens.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


# Where people open the MLflow UI when that is not the tracking URI: in the compose stack the trainer
# reaches the server as http://mlflow:5000, people as http://127.0.0.1:$MLFLOW_PORT.
UI_URL_ENV = "TRAINLAB_UI_URL"


def runs_table_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI's runs table of an experiment. MLflow 3.17's UI takes its view from its own "GenAI /
    Model training" switch (`workflowType`, remembered by the browser), not from the tag: a first visit
    without it opens every experiment on the GenAI overview."""
    remote = tracking_uri.startswith(("http://", "https://"))
    base = os.environ.get(UI_URL_ENV) or (tracking_uri if remote else "http://127.0.0.1:5000")
    base = base.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class MlflowTracker(Tracker):
    """One MLflow run per training run: params, tags, config.yaml, metrics, and the best checkpoint.

    Writes go through `ResilientClient`: a tracking server that disappears mid-run costs no training
    (writes are spooled to the run folder and sent later); a SQLite store busy with other writers is
    retried.
    """

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        from trainlab.spool import ResilientClient

        if cfg.tracking_uri.startswith(("http://", "https://")):
            # Fail in seconds, not after MLflow's default minutes of retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        with creation_lock(cfg.tracking_uri):  # opening the store creates (migrates) its tables
            self.client = ResilientClient(cfg.tracking_uri)
        self._logger = None

    def check(self) -> None:
        import requests

        uri = self.cfg.tracking_uri
        if not self.client.remote:
            return
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            raise UserError(
                f"logger.tracking_uri={uri}: no MLflow server answers ({type(err).__name__}); start it, "
                "or unset MLFLOW_TRACKING_URI to log to the local SQLite store"
            ) from None

    def _experiment_id(self) -> str:
        with creation_lock(self.cfg.tracking_uri):
            return self._get_or_create_experiment()

    def _get_or_create_experiment(self) -> str:
        """The experiment's id; it is created, restored or tagged as a model-training experiment as needed."""
        name = self.cfg.experiment_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            if experiment.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
            return experiment.experiment_id
        location = None
        if self.cfg.tracking_uri.startswith("sqlite:"):
            location = Path(self.cfg.artifact_location).resolve().as_uri()
        return self.client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}
        )

    def start(self, config: Mapping[str, Any], config_yaml: str, info: RunInfo) -> None:
        from mlflow.entities import Param, RunTag

        if info.run_dir is not None:
            self.client.spool_path = info.run_dir / "mlflow_spool.jsonl"
        if info.resume_run_id:
            self.run_id = info.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "resumed", "true")
            if "failure_reason" in self.client.get_run(self.run_id).data.tags:  # the reason it stopped before
                self.client.delete_tag(self.run_id, "failure_reason")
            log.info("Resuming MLflow run %s", self.run_id)
            return
        experiment_id = self._experiment_id()
        run = self.client.create_run(experiment_id, run_name=self.cfg.run_name or info.name)
        self.run_id = run.info.run_id
        uri = self.cfg.tracking_uri
        server = "" if self.client.remote else f" (after `mlflow ui --backend-store-uri {uri}`)"
        log.info("MLflow run %s: %s%s", self.run_id, runs_table_url(uri, experiment_id), server)
        params = [Param(key, value[:6000]) for key, value in flatten(config).items()]
        tags = [RunTag(key, value) for key, value in info.tags.items()]
        for start in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(
                self.run_id, params=params[start : start + 100], tags=tags if not start else []
            )
        self.client.log_text(self.run_id, config_yaml, "config.yaml")

    @property
    def lightning_logger(self) -> Any:
        if self._logger is None:
            from lightning.pytorch.loggers import MLFlowLogger

            class RunOwnedMLFlowLogger(MLFlowLogger):
                """Lightning logs the metrics; the tracker logs params and ends the run."""

                def log_hyperparams(self, params: Any) -> None:
                    pass

                def finalize(self, status: str = "success") -> None:
                    pass

            self._logger = RunOwnedMLFlowLogger(tracking_uri=self.cfg.tracking_uri, run_id=self.run_id)
            self._logger._mlflow_client = self.client  # its writes spool or retry too
        return self._logger

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def end(self, status: str, reason: str | None = None) -> None:
        if self.run_id is None:
            return
        if reason:
            self.client.set_tag(self.run_id, "failure_reason", reason)
        self.client.set_terminated(self.run_id, status)
        if not self.client.flush():
            log.warning(
                "MLflow server still unreachable: %d writes of this run are kept in %s; send them later "
                "with `python -m trainlab.spool %s`",
                self.client.pending(),
                self.client.spool_path,
                self.client.spool_path,
            )


def log_points(logger: Any, points: list[tuple[str, float, int]]) -> None:
    """Send many (metric, value, step) points at once: one MLflow call per 1,000 points (MLflow's
    batch limit) instead of ~10 ms per point; other loggers get one call per step.

    For curves sampled within an epoch (every N steps): collect the points, then call this once, e.g.
    at the epoch's end.
    """
    if not points or not logger:
        return
    if hasattr(logger, "run_id") and hasattr(logger, "experiment"):  # MLflow
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value, step in points]
        for start in range(0, len(metrics), 1000):
            logger.experiment.log_batch(logger.run_id, metrics=metrics[start : start + 1000])
        return
    by_step: dict[int, dict[str, float]] = {}
    for key, value, step in points:
        by_step.setdefault(step, {})[key] = float(value)
    for step, metrics in sorted(by_step.items()):
        logger.log_metrics(metrics, step)


TRACKERS: dict[str, type[Tracker]] = {"mlflow": MlflowTracker, "csv": CsvTracker, "none": Tracker}


def make_tracker(cfg: DictConfig) -> Tracker:
    return TRACKERS[cfg.name](cfg)
