"""The sweep's MLflow parent run: the study's name and search space, its best value and parameters as
trials finish, and at the end the optimisation history and parameter importances as figures, or with
several objectives the Pareto front as a figure and a table. Only for an app whose config has a
trainlab `logger` (an MLflow one); for any other app, nothing.

Trials are its children (the job tags its own run with `mlflow.parentRunId`); the parent's id is kept
in the study, so a resumed sweep reopens the same parent run. Sweepers started together on a new study
share one parent: the one whose `create_study` succeeded opens it, the others wait for its id.
"""

from __future__ import annotations

import csv
import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from trainlab.tracking.tracker import MlflowTracker, RunInfo, ending, make_tracker

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
PARENT_WAIT_S = 60.0


class ParentRun:
    """The parent run of `study` in the tracker `logger_cfg` configures (nothing for logger=csv/none, or
    an app without `logger`); `opening`: the sweeper that created the study a moment ago may be opening
    it, so its id is waited for."""

    def __init__(
        self, logger_cfg: DictConfig | None, study: optuna.Study, description: dict[str, Any], opening: bool
    ) -> None:
        self.tracker = make_tracker(logger_cfg) if logger_cfg is not None else None
        self.study = study
        objective = description["objective"]
        names = objective if isinstance(objective, list) else []
        self.objectives = [str(n) for n in names] or [f"objective {i}" for i in range(len(study.directions))]
        if not isinstance(self.tracker, MlflowTracker):
            return
        from mlflow.exceptions import MlflowException

        self.info = info = RunInfo(f"sweep {study.study_name}", {"optuna.study": study.study_name})
        self.description = description
        self.config_yaml = config_yaml = OmegaConf.to_yaml(OmegaConf.create(description))
        try:
            try:
                info.resume_run_id = (
                    _await_parent_run(study) if opening else study.user_attrs.get(PARENT_ATTR)
                )
                self.tracker.start(description, config_yaml, info)
            except MlflowException:  # the parent run is gone (deleted, or another tracking store)
                info.resume_run_id = None
                self.tracker.start(description, config_yaml, info)
            study.set_user_attr(PARENT_ATTR, self.tracker.run_id)
        except BaseException as err:  # opened, it is ended: the sweep's own code takes over from here
            self.end(*ending(err))
            raise

    @property
    def run_id(self) -> str | None:
        return getattr(self.tracker, "run_id", None)

    def hand_over(self) -> None:
        """Leave the run RUNNING for the sweep's workers, owned by none (trainlab.tracking.orphans), so
        that it is not marked KILLED while they wait in a queue; each takes it over as it starts."""
        if not isinstance(self.tracker, MlflowTracker):
            return
        from trainlab.tracking.orphans import HEARTBEATS, OWNER_TAG

        HEARTBEATS.remove(self.run_id)
        self.tracker.client.delete_tag(self.run_id, OWNER_TAG)

    def attach(self) -> None:
        """A worker takes the run over (RUNNING, owned by it) before each trial: a worker that stops
        leaves it to be marked KILLED only if no other runs a trial after it."""
        if isinstance(self.tracker, MlflowTracker) and self.run_id is not None:
            self.info.resume_run_id = self.run_id
            self.tracker.start(self.description, self.config_yaml, self.info)

    def release(self) -> None:
        """This process no longer keeps the run alive; the worker still running ends it."""
        if isinstance(self.tracker, MlflowTracker) and self.run_id is not None:
            from trainlab.tracking.orphans import HEARTBEATS

            HEARTBEATS.remove(self.run_id)

    def mark_trial(self, trial: optuna.trial.FrozenTrial, reason: str | None = None) -> None:
        """Tag the trial's own run with its final state; a pruned or interrupted run ends KILLED."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not isinstance(self.tracker, MlflowTracker) or run_id is None:
            return
        client = self.tracker.client
        client.set_tag(run_id, "optuna.state", trial.state.name)
        if reason:
            client.set_tag(run_id, "failure_reason", reason[:5000])
        if trial.state == optuna.trial.TrialState.PRUNED or client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")

    def end(self, status: str, reason: str | None = None) -> None:
        """End the parent run (never raises): a sweep that stopped before its end."""
        if self.tracker is not None:
            self.tracker.end(status, reason)

    def record_best(self, finished: int) -> None:
        """Log the best value so far (step: finished trials) and tag the best parameters (one objective)."""
        if not isinstance(self.tracker, MlflowTracker) or len(self.study.directions) > 1:
            return
        try:
            best = self.study.best_trial
        except ValueError:  # no COMPLETE trial yet
            return
        self.tracker.client.log_metric(self.run_id, "best_value", best.value, step=finished)
        tags = {f"best.{key}": str(value) for key, value in best.params.items()}
        self.tracker.set_tags({**tags, "best.trial": str(best.number)})

    def finish(self, results: Path, reason: str | None = None) -> None:
        """Attach the results file and figures (and the Pareto front's table); end FINISHED, or FAILED
        with `reason`. A store that refuses the figures costs the figures, not the sweep's end (the results
        file stays in the sweep folder); an interrupt ends it KILLED."""
        if not isinstance(self.tracker, MlflowTracker):
            return
        try:
            self.tracker.log_artifact(results)
            with tempfile.TemporaryDirectory() as folder:
                if len(self.study.directions) > 1:
                    self.tracker.log_artifact(_pareto_table(self.study, self.objectives, Path(folder)))
                for figure in _figures(self.study, self.objectives, Path(folder)):
                    self.tracker.log_artifact(figure, "figures")
        except Exception as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            log.warning(
                "The sweep's results and figures were not logged to MLflow (%s): see %s", first, results
            )
        except BaseException as err:
            self.end(*ending(err))
            raise
        self.tracker.end("FAILED" if reason else "FINISHED", reason)


def _await_parent_run(study: optuna.Study) -> str | None:
    """The parent run id kept in `study`, once the sweeper that created it has stored one; None when
    trials exist without one (the study was swept without MLflow) or after PARENT_WAIT_S."""
    deadline = time.monotonic() + PARENT_WAIT_S
    waiting = False
    while not (run_id := study.user_attrs.get(PARENT_ATTR)) and not study.get_trials(deepcopy=False):
        if not waiting:
            log.info("Waiting for the sweeper that created study %s to open its MLflow run", study.study_name)
            waiting = True
        elif time.monotonic() > deadline:
            log.warning("Study %s got no parent run in %.0f s: opening one", study.study_name, PARENT_WAIT_S)
            return None
        time.sleep(0.5)
    return run_id


def _pareto_table(study: optuna.Study, objectives: list[str], folder: Path) -> Path:
    """pareto_front.csv: trial, parameters and objectives of each Pareto-optimal trial, best first."""
    front = sorted(
        study.best_trials, key=lambda t: t.values[0], reverse=study.directions[0].name == "MAXIMIZE"
    )
    keys = sorted({key for t in front for key in t.params})
    path = folder / "pareto_front.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial", *keys, *objectives])
        for t in front:
            writer.writerow([t.number, *(t.params.get(key, "") for key in keys), *t.values])
    return path


def _plot_pareto_front(study: optuna.Study, target_names: list[str]) -> Any:
    """Optuna's Pareto-front plot (two objectives), each front point labelled with its trial number, so
    the figure reads with pareto_front.csv."""
    from optuna.visualization import matplotlib as plots

    axes = plots.plot_pareto_front(study, target_names=target_names)
    if len(study.directions) != 2:
        return axes
    points: dict[tuple[float, ...], list[str]] = {}
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        points.setdefault(tuple(trial.values), []).append(f"#{trial.number}")
    # Staggered, so that neighbouring points' labels do not print over each other.
    for i, (values, names) in enumerate(sorted(points.items())):
        offset = (4, 4 + 10 * (i % 3))
        axes.annotate(", ".join(names), values, textcoords="offset points", xytext=offset, fontsize=8)
    return axes


def _figures(study: optuna.Study, objectives: list[str], folder: Path) -> list[Path]:
    """optimization_history.png and, once two trials completed, param_importances.png; with several
    objectives, pareto_front.png (every completed trial, the front highlighted)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written = []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(study.directions) > 1:
        figures = {"pareto_front": functools.partial(_plot_pareto_front, target_names=objectives)}
    else:
        figures = {"optimization_history": plots.plot_optimization_history}
        if len(complete) >= 2 and any(t.params != complete[0].params for t in complete):
            figures["param_importances"] = plots.plot_param_importances
    for name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a one-valued parameter
                log.warning("No %s figure: %s", name, err)
                continue
        path = folder / f"{name}.png"
        axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(path)
    return written
