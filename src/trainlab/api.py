"""trainlab from Python (a notebook, a script): the same runs as `python src/train.py`, and their results
read back as DataFrames.

    import trainlab
    run = trainlab.train("optimizer=adam", "norm=layer")          # one run, as the CLI would train it
    runs = trainlab.sweep("experiment=optimizers")                 # `-m`: a sweep, one row per run
    trainlab.results(experiment="optimizers")                      # runs with params and final metrics
    trainlab.curves(runs, "curve/test/acc")                        # learning curves, one row per point
    figure, table = trainlab.report("optimizers")                  # the exercise's figure and table
    trainlab.study("experiment=optimizers,batch_norm", "repeats=5")  # claims judged over seeds

Each call composes the config with Hydra exactly as the CLI does (same `conf/`, same overrides, same
validation, same MLflow store and checkpoints) and runs Hydra's own run or multirun, so several runs
follow one another in one process. A mistake raises the class of `trainlab.errors.UserError` that the
CLI reports, with its one-line message; an interrupt (Jupyter's stop button) stops the run at its next
batch, KILLED with its `last.ckpt` kept, and raises KeyboardInterrupt, and only an interrupt does.
Nothing calls `os._exit`, and Hydra's global state is cleared after each call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainlab.cli.session import ROOT, compose_config, hydra_session

# conf/hydra/default.yaml names sweep folders so; `sweep` names its own the same way.
SWEEP_FOLDER = "%Y-%m-%d_%H-%M-%S_%f"


@dataclass(frozen=True)
class Run:
    """One finished run: its MLflow run id, its output folder, and the value a sweeper would optimise."""

    run_id: str | None
    output_dir: Path
    value: Any


def train(*overrides: str) -> Run:
    """Train one model: `train("optimizer=adam", "norm=layer")` is `python src/train.py optimizer=adam
    norm=layer`. Returns the run's MLflow id, output folder and optimised metric's best value."""
    import json

    from trainlab.cli.main import run_job

    with hydra_session(overrides) as hydra:
        job = hydra.run("train", run_job, list(overrides))
    output_dir = Path(job.hydra_cfg.hydra.runtime.output_dir)
    record = output_dir / "run.json"
    run_id = json.loads(record.read_text()).get("mlflow_run_id") if record.is_file() else None
    return Run(run_id, output_dir, job.return_value)


def sweep(*overrides: str, config_dir: str | Path | None = None) -> Any:
    """Run a sweep: `sweep("experiment=optimizers")` is `python src/train.py -m experiment=optimizers`
    (`config_dir`: `--config-dir`, your own configs). Returns its runs as `results` gives them (one row
    per run, in job order). With `hydra.sweeper.workers=N` it returns once the workers started, with the
    runs so far: `sweep_status` says where the sweep stands, `results` gives the runs later."""
    from trainlab.cli.main import run_job

    overrides = [*overrides, "hydra.mode=MULTIRUN"]  # what the CLI's -m adds
    if not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        # A folder named here, so that its runs can be found again by their `sweep_dir` tag.
        folder = datetime.now().strftime(SWEEP_FOLDER)
        overrides.append(f"hydra.sweep.dir=${{paths.root_dir}}/multirun/{folder}")
    with hydra_session(overrides, config_dir) as hydra:
        hydra.multirun("train", run_job, overrides)
        cfg = compose_config(overrides, hydra)
    return _results(cfg, Path(cfg.hydra.sweep.dir).name)


def sweep_status(study: str | None = None, storage: str | None = None) -> Any:
    """Where Optuna sweeps stand, as `python src/sweeps.py [STUDY] [--storage URL]` prints it: for a
    `study`, its `Progress` (trials by state, the best so far, its workers' jobs); else one per study in
    `storage` (default: the project's multirun/ storages)."""
    from trainlab.errors import UserError
    from trainlab.sweeps import Progress, studies

    root = Path(os.environ.get("TRAINLAB_ROOT", ROOT))
    found = [s for _, s in studies(storage, root) if study is None or s.study_name == study]
    if study is None:
        return [Progress.of(s) for s in found]
    if not found:
        raise UserError(f"study {study!r} not found in {storage or 'multirun/'}")
    return Progress.of(found[0], workers=True)


def results(*overrides: str, experiment: str | None = None, sweep: str | None = None) -> Any:
    """The runs of an MLflow experiment as a pandas DataFrame: one row per run (oldest first) with its
    name, status, overrides, `param.*` (the resolved config) and final `metric.*` values.

    `experiment` names one of conf/experiment/ (its runs live in its MLflow experiment); without it,
    the experiment that `overrides` would log to (`logger.experiment_name`, default `trainlab`).
    `sweep` keeps the runs of one sweep folder (the name under multirun/)."""
    overrides = [f"experiment={experiment}", *overrides] if experiment else list(overrides)
    with hydra_session(overrides) as hydra:
        cfg = compose_config(overrides, hydra)
    return _results(cfg, sweep)


def _results(cfg: Any, sweep: str | None) -> Any:
    import pandas as pd

    from trainlab.errors import UserError
    from trainlab.tracking.orphans import store_without_orphans

    client = store_without_orphans(cfg.logger.tracking_uri)
    found = client.get_experiment_by_name(cfg.logger.experiment_name)
    if found is None:
        raise UserError(f"logger.experiment_name={cfg.logger.experiment_name}: no runs logged there yet")
    query = f"tags.sweep_dir = '{sweep}'" if sweep else ""
    runs = client.search_runs([found.experiment_id], query, order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        row = {
            "run_id": run.info.run_id,
            "name": run.info.run_name,
            "status": run.info.status,
            "overrides": run.data.tags.get("overrides", ""),
            "sweep": run.data.tags.get("sweep_dir"),
        }
        row.update({f"param.{k}": v for k, v in sorted(run.data.params.items())})
        row.update({f"metric.{k}": v for k, v in sorted(run.data.metrics.items())})
        rows.append(row)
    return pd.DataFrame(rows)


def curves(runs: Any, *metrics: str, tracking_uri: str | None = None) -> Any:
    """Learning curves as a long DataFrame (run_id, name, metric, step, value), for `runs`: a DataFrame
    from `results`/`sweep`, a `Run`, a run id, or a list of those. Default metrics: the step-level
    accuracy curves (`curve/train/acc`, `curve/test/acc`)."""
    import pandas as pd

    from trainlab.tracking.store import open_store

    if tracking_uri is None:
        with hydra_session() as hydra:
            tracking_uri = compose_config([], hydra).logger.tracking_uri
    client = open_store(tracking_uri)
    if hasattr(runs, "columns"):
        ids = list(runs["run_id"])
    else:
        items = runs if isinstance(runs, list | tuple) else [runs]
        ids = [item.run_id if isinstance(item, Run) else str(item) for item in items]
    rows = []
    for run_id in ids:
        name = client.get_run(run_id).info.run_name
        for metric in metrics or ("curve/train/acc", "curve/test/acc"):
            for point in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step):
                rows.append(
                    {
                        "run_id": run_id,
                        "name": name,
                        "metric": metric,
                        "step": point.step,
                        "value": point.value,
                    }
                )
    return pd.DataFrame(rows, columns=["run_id", "name", "metric", "step", "value"])


def report(experiment: str, *overrides: str, sweep: str | None = None, kind: str = "accuracy") -> Any:
    """An exercise's figure and results table, as `python src/report.py experiment=NAME` draws them:
    (the matplotlib Figure, shown inline by Jupyter; the table as a DataFrame). Also saved and logged
    as the CLI does."""
    import pandas as pd

    from trainlab.figures.exercise import report as draw

    os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))
    drawn = draw(experiment, sweep, kind, list(overrides))
    _show_figures_inline()
    return drawn.figure, pd.DataFrame(drawn.rows)


def study(*overrides: str, config_dir: str | Path | None = None, train_missing: bool = True) -> Any:
    """A study, as `python src/study.py <overrides>` runs it: `study("experiment=optimizers,batch_norm",
    "repeats=5")` trains what is missing, judges every claim and returns the report (a `StudyReport`:
    Jupyter shows its figures and claims tables; `.table` is a DataFrame). `config_dir`: your own configs."""
    from trainlab.studies.run import run_study

    os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))
    found = run_study(overrides, config_dir, train_missing)
    _show_figures_inline()
    return found


def _show_figures_inline() -> None:
    """In Jupyter, a Figure as a cell's value is drawn as a PNG. The report draws without pyplot (no
    global figure state), so IPython's inline backend, which pyplot would load, is not there to say so."""
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython
    from IPython.core.pylabtools import select_figure_formats

    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        select_figure_formats(shell, {"png"})
