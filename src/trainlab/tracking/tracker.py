"""Where a run's metrics, params and artifacts go: MLflow (default), CSV files, or nowhere.

The tracker, not Lightning, owns the MLflow run's life: it creates the run (or reopens it on resume)
before training and ends it as FINISHED, FAILED (with the reason as a tag) or KILLED, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.errors import UserError, check_choice, fail
from trainlab.tracking.creation_lock import creation_lock
from trainlab.tracking.provenance import Record

log = logging.getLogger(__name__)

# Config keys that hold machine-specific paths or URIs: useless for comparing runs, and private.
PRIVATE_KEYS = (
    "paths",
    "tags",  # logged as tags, not params
    "hydra",
    "ckpt_path",
    "report",
    "variants",
    "data.root",
    "logger.tracking_uri",
    "logger.artifact_location",
)


def check_logger(cfg: DictConfig, choice: Any = None) -> None:
    """Given Hydra's choice for the group, a list holds one tracker at most and only loggers trainlab runs;
    then the tracker (`logger.name`; none when only further loggers are chosen) and each further logger
    (its settings under `logger.<name>`)."""
    if OmegaConf.is_list(choice) or isinstance(choice, list):
        names = [str(name) for name in choice]
        trackers = [name for name in names if name in TRACKERS]
        if len(trackers) > 1 or not set(names) <= {*TRACKERS, *FURTHER_LOGGERS}:
            allowed = f"one of {', '.join(TRACKERS)} at most, and any of {', '.join(FURTHER_LOGGERS)}"
            raise fail("logger", names, allowed)
    check_choice("logger.name", cfg.get("name", "none"), TRACKERS)
    for key, value in cfg.items_ex(resolve=False):  # `save_dir: ${paths.output_dir}` resolves later
        if not isinstance(value, DictConfig | Mapping):
            continue
        if key not in FURTHER_LOGGERS:
            allowed = f"unset: loggers beside the tracker are {', '.join(FURTHER_LOGGERS)}"
            raise fail(f"logger.{key}", OmegaConf.to_container(value), allowed)
        FURTHER_LOGGERS[key][0](value)
    log_model, name = cfg.get("log_model"), cfg.get("register_model")
    if log_model not in (None, True, False):
        raise fail("logger.log_model", log_model, "null (on for a single run, off in a sweep), true or false")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise fail("logger.register_model", name, "null or a model name")
    if name is not None and log_model is False:
        raise fail(
            "logger.register_model", name, "null when logger.log_model=false (it registers the logged model)"
        )


def run_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """The config's `tags` as MLflow tags: a string as it is, a list of strings joined by ", "; anything
    else is a mistake (`tags.round=2`: quote it, `+tags.round='2'`)."""
    found: dict[str, str] = {}
    plain = OmegaConf.to_container(tags, resolve=True) if OmegaConf.is_config(tags) else tags
    if plain is not None and not isinstance(plain, Mapping):
        raise fail("tags", plain, "names and values, e.g. +tags.study=mine")
    for key, value in (plain or {}).items():
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
        if isinstance(value, str):
            found[str(key)] = value
        elif items is not None and all(isinstance(item, str) for item in items):
            found[str(key)] = ", ".join(items)
        else:
            raise fail(f"tags.{key}", value, "a string or a list of strings (quote a number: '2')")
    return found


def logs_model(cfg: DictConfig, sweep: bool) -> bool:
    """Whether the run logs its best network as an MLflow model: `logger.log_model`, or when null, for a
    single run or a registered one. Sweep trials leave it out: each would add a copy of its network (and
    seconds of logging) to the store; `python src/eval.py run_id=<trial> logger.log_model=true` logs the
    one worth keeping."""
    if cfg.get("log_model") is not None:
        return cfg.log_model
    return cfg.get("register_model") is not None or not sweep


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
    provenance: Record | None = None  # what produced the run (trainlab.tracking.provenance)


class Tracker:
    """No tracking: checkpoints and the console only (`logger=none`)."""

    run_id: str | None = None
    run_dir: Path | None = None
    experiment_id: str | None = None

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

    def check_model_name(self, label: str) -> None:
        """Fail fast if `logger.register_model` names a registered model of another network than `label`."""

    def log_model(self, network: Any, examples: Any, label: str) -> None:
        """Keep the network as a servable model (and register it if `logger.register_model` is set)."""

    def end(self, status: str, reason: str | None = None) -> None:
        """Mark the run FINISHED, FAILED or KILLED (never raises: see MlflowTracker.end)."""

    @contextmanager
    def run(self, config: Mapping[str, Any], config_yaml: str, info: RunInfo) -> Iterator[None]:
        """Open the run and end it whatever happens inside, from its first write on: FINISHED; KILLED
        after Ctrl-C, SIGTERM or a requeue; FAILED after any other error, its reason kept as the tag
        `failure_reason` (`ending`)."""
        try:
            self.start(config, config_yaml, info)
            yield
        except BaseException as err:
            self.end(*ending(err))
            raise
        self.end("FINISHED")


def ending(err: BaseException) -> tuple[str, str]:
    """(status, failure_reason) of a run that stopped with `err`."""
    if isinstance(err, interrupts.Interrupted):
        return "KILLED", f"interrupted ({err.name})"
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return "KILLED", "interrupted (KeyboardInterrupt)"  # Lightning turns one into sys.exit(1)
    if isinstance(err, SystemExit):  # a requeue (trainlab.cluster.requeue.Preempted says so), an exit
        return "KILLED", getattr(err, "reason", f"exited with status {err.code}")
    return "FAILED", f"{type(err).__name__}: {err}"[:5000]


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
        from trainlab.tracking.spool import ResilientClient

        if cfg.tracking_uri.startswith(("http://", "https://")):
            # Fail in seconds, not after MLflow's default minutes of retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = ResilientClient(cfg.tracking_uri)
        self._logger = None

    def check(self) -> None:
        """A server answers within seconds; then (any store) the runs whose process is gone are marked."""
        import requests

        from trainlab.tracking.orphans import reap_orphans

        uri = self.cfg.tracking_uri
        if self.client.remote:
            try:
                requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
            except requests.RequestException as err:
                raise UserError(
                    f"logger.tracking_uri={uri}: no MLflow server answers ({type(err).__name__}); start "
                    "it, or unset MLFLOW_TRACKING_URI to log to the local SQLite store"
                ) from None
        reap_orphans(uri)

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

        from trainlab.tracking.orphans import HEARTBEATS, OWNER_TAG, owner

        if info.run_dir is not None:
            self.client.spool_path = info.run_dir / "mlflow_spool.jsonl"
        self.run_dir = info.run_dir
        if info.resume_run_id:
            self.run_id = info.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            HEARTBEATS.add(self.client.client, self.run_id)
            self.client.log_batch(self.run_id, tags=[RunTag("resumed", "true"), RunTag(OWNER_TAG, owner())])
            resumed = self.client.get_run(self.run_id)
            self.experiment_id = resumed.info.experiment_id
            if "failure_reason" in resumed.data.tags:  # the reason it stopped before
                self.client.delete_tag(self.run_id, "failure_reason")
            log.info("Resuming MLflow run %s", self.run_id)
            return
        self.experiment_id = experiment_id = self._experiment_id()
        # Its owner with its first write: a run whose process dies at any later point is found
        # (trainlab.tracking.orphans).
        run = self.client.create_run(
            experiment_id, run_name=self.cfg.run_name or info.name, tags={OWNER_TAG: owner()}
        )
        self.run_id = run.info.run_id
        HEARTBEATS.add(self.client.client, self.run_id)
        uri = self.cfg.tracking_uri
        server = "" if self.client.remote else f" (after `mlflow ui --backend-store-uri {uri}`)"
        log.info("MLflow run %s: %s%s", self.run_id, runs_table_url(uri, experiment_id), server)
        provenance = info.provenance or Record()
        flat = flatten(config) | provenance.params
        params = [Param(key, value[:6000]) for key, value in flat.items()]
        tags = [RunTag(key, value[:5000]) for key, value in (provenance.tags | info.tags).items()]
        for start in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(
                self.run_id, params=params[start : start + 100], tags=tags if not start else []
            )
        self.client.log_text(self.run_id, config_yaml, "config.yaml")
        for file, text in provenance.files.items():
            self.client.log_text(self.run_id, text, f"provenance/{file}")

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
            # Opened already: Lightning would open it with mlflow.set_tracking_uri, which also sets
            # $MLFLOW_TRACKING_URI for the whole process (the next run's config would read it as its own).
            self._logger._experiment_id = self.experiment_id
            self._logger._initialized = True
        return self._logger

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def check_model_name(self, label: str) -> None:
        from trainlab.tracking.model import check_registered_name

        if self.cfg.get("register_model"):
            check_registered_name(self.client, self.cfg.register_model, label)

    def log_model(self, network: Any, examples: Any, label: str) -> None:
        from trainlab.tracking.model import log_network

        name = self.cfg.get("register_model")
        uri = log_network(self.cfg.tracking_uri, self.run_id, network, examples, name, label)
        log.info("MLflow model %s", uri)

    def end(self, status: str, reason: str | None = None) -> None:
        """Mark the run; never raises (`end_run`)."""
        if self.run_id is not None:
            end_run(self.client, self.run_id, status, reason, self.run_dir)


def end_run(
    client: Any, run_id: str, status: str, reason: str | None = None, run_dir: Path | None = None
) -> None:
    """Mark the MLflow run FINISHED, FAILED or KILLED through `client` (a ResilientClient); never raises, so
    that the run's own outcome (its exception, its result) stands. A write that fails is tried again on a
    fresh connection, then kept: in the store's spool folder (a SQLite store: the next trainlab command
    sends it) or the run's spool (a server), and in `run_dir`'s run.json; one line says so. A
    KeyboardInterrupt met here stops the work at its next safe point (trainlab.interrupts), after this."""
    from trainlab.tracking.orphans import HEARTBEATS

    HEARTBEATS.remove(run_id)
    writes = [("set_tag", (run_id, "failure_reason", reason))] if reason else []
    writes.append(("set_terminated", (run_id, status)))
    pending = None  # a KeyboardInterrupt that no safe point will see: raised once the run is ended
    try:
        _write_all(client, writes)
        sent = _flush(client)
    except BaseException as first:
        if not isinstance(first, Exception) and not interrupts.request():
            pending = first
        try:
            client.reconnect()
            _write_all(client, writes)
            sent = _flush(client)
        except BaseException as err:
            _keep_ending(client, run_id, writes, status, reason, run_dir, err)
            sent = True  # said so
    if pending is not None:
        raise pending
    if not sent:
        log.warning(
            "MLflow server still unreachable: %d writes of this run are kept in %s; send them later "
            "with `python -m trainlab.tracking.spool %s`",
            client.pending(),
            client.spool_path,
            client.spool_path,
        )


def summary_run(tracking_uri: str, experiment_id: str, name: str, tag: str, value: str) -> str:
    """The run that holds what is drawn from other runs (a report's figures, a study's tables), found again
    by its `tag`; ended FINISHED as soon as it is made (`end_run` never raises), and owned by this process
    meanwhile, so that an interrupted report leaves no run RUNNING (the next command reaps it)."""
    from trainlab.tracking.orphans import OWNER_TAG, owner
    from trainlab.tracking.spool import ResilientClient

    client = ResilientClient(tracking_uri)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'")
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={tag: value, OWNER_TAG: owner()})
    end_run(client, run.info.run_id, "FINISHED")
    return run.info.run_id


def _flush(client: Any) -> bool:
    """Send what the run's spool still holds (a server that was away); whether nothing is left."""
    try:
        return client.flush()
    except Exception:  # a spool that cannot even be read stays on disk as it is
        return False


def _write_all(client: Any, writes: list[tuple[str, tuple]]) -> None:
    for name, args in writes:
        getattr(client, name)(*args)


def _keep_ending(
    client: Any,
    run_id: str,
    writes: list[tuple[str, tuple]],
    status: str,
    reason: str | None,
    run_dir: Path | None,
    err: BaseException,
) -> None:
    """The run's end, where the next command (or `python -m trainlab.tracking.spool`) finds it."""
    from trainlab.tracking.spool import store_spool_folder

    folder = store_spool_folder(client.tracking_uri)
    client.spool_path = folder / f"{run_id}.jsonl" if folder else client.spool_path
    kept = []
    with contextlib.suppress(OSError):
        if client.spool_path is not None:
            for name, args in writes:
                client.keep(name, *args)
            kept.append(str(client.spool_path))
    if run_dir is not None:
        with contextlib.suppress(OSError):
            record = run_dir / "run.json"
            found = json.loads(record.read_text()) if record.is_file() else {}
            found["outcome"] = {"status": status, "failure_reason": reason}
            write_atomically(record, json.dumps(found, indent=2))
            kept.append(str(record))
    log.warning(
        "MLflow run %s could not be marked %s (%s); %s",
        run_id,
        status,
        str(err).splitlines()[0][:200] if str(err) else type(err).__name__,
        f"kept in {' and '.join(kept)}: the next trainlab command on the store sends it"
        if kept
        else "the next trainlab command on the store marks it KILLED",
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


def check_tensorboard(cfg: DictConfig) -> None:
    """TensorBoard must be installed and its folder writable: found now, before any run is created, not
    after the data loads."""
    from importlib.util import find_spec

    if not (isinstance(cfg.get("save_dir"), str) and cfg.save_dir.strip()):
        raise fail("logger.tensorboard.save_dir", cfg.get("save_dir"), "a folder (its event files go there)")
    if find_spec("tensorboard") is None and find_spec("tensorboardX") is None:
        raise UserError(
            "logger=[…,tensorboard] needs the tensorboard package: pip install -e '.[tensorboard]'"
        )
    save_dir = Path(cfg.save_dir)
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        probe = save_dir / ".trainlab-writable"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise fail(
            "logger.tensorboard.save_dir", str(save_dir), f"a writable folder ({err.strerror})"
        ) from None


def tensorboard_logger(cfg: DictConfig) -> Any:
    """Lightning's TensorBoardLogger writing event files straight into `save_dir` (`tensorboard --logdir
    multirun/` then shows every job of a sweep)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(str(cfg.save_dir), name="", version="", default_hp_metric=False)


TRACKERS: dict[str, type[Tracker]] = {"mlflow": MlflowTracker, "csv": CsvTracker, "none": Tracker}
# Loggers that write beside the tracker, chosen as `logger=[mlflow,tensorboard]`: each keeps its settings
# under `logger.<name>` (its file's `# @package logger.<name>`), so the tracker's `logger.*` keys stay put.
# Each: (its check, called by config.validate; what builds its Lightning logger).
FURTHER_LOGGERS: dict[str, tuple[Callable[[DictConfig], None], Callable[[DictConfig], Any]]] = {
    "tensorboard": (check_tensorboard, tensorboard_logger),
}


def make_tracker(cfg: DictConfig) -> Tracker:
    return TRACKERS[cfg.get("name", "none")](cfg)


def lightning_loggers(tracker: Tracker, cfg: DictConfig) -> Any:
    """The Trainer's `logger`: the tracker's Lightning logger first (callbacks that log to MLflow find it
    as `trainer.logger`), then the further loggers; False for none."""
    found = [tracker.lightning_logger] if tracker.lightning_logger else []
    found += [build(cfg[name]) for name, (_, build) in FURTHER_LOGGERS.items() if name in cfg]
    return found or False
