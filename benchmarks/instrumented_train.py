"""`src/train.py ARGS` with stopwatches: writes what the benchmarks need as JSON to $TRAINLAB_BENCH_OUT.

- `first_step_s`: seconds from $TRAINLAB_BENCH_T0 (the launcher's `time.time()` before it started this
  process) to the start of the first training batch;
- `mlflow_fit_s`, `fit_epochs`: seconds spent inside MlflowClient calls during `trainer.fit`, and its
  epochs (all metrics of all epochs, curve points included; the run's start and end are not per epoch);
- `peak_rss_mb`: this process's peak resident memory.

    TRAINLAB_BENCH_OUT=/tmp/out.json python benchmarks/instrumented_train.py src/train.py key=value ...

Only the measuring is added: the run is the CLI's, in this process.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import resource
import runpy
import sys
import time

RESULT: dict[str, float] = {"mlflow_fit_s": 0.0, "mlflow_other_s": 0.0}
_in_fit = False


def _timed(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            RESULT["mlflow_fit_s" if _in_fit else "mlflow_other_s"] += time.perf_counter() - start

    return wrapper


def _time_mlflow() -> None:
    from mlflow.tracking import MlflowClient

    for name, method in vars(MlflowClient).items():
        if callable(method) and not name.startswith("_"):
            setattr(MlflowClient, name, _timed(method))


def _add_probes() -> None:
    """Wrap `Trainer.fit` and the first `training_step`: no callback, so no cost added to each step's
    hook calls (Lightning calls every hook of every callback)."""
    import lightning as L

    from trainlab.module import Classifier

    fit, training_step = L.Trainer.fit, Classifier.training_step

    def timed_fit(self, *args, **kwargs):
        global _in_fit
        _in_fit = True
        try:
            return fit(self, *args, **kwargs)
        finally:
            _in_fit = False
            RESULT["fit_epochs"] = self.current_epoch

    def first_step(self, *args, **kwargs):
        RESULT["first_step_s"] = time.time() - float(os.environ.get("TRAINLAB_BENCH_T0", "nan"))
        Classifier.training_step = training_step
        return training_step(self, *args, **kwargs)

    L.Trainer.fit = timed_fit
    Classifier.training_step = first_step


def _write() -> None:
    RESULT["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.environ["TRAINLAB_BENCH_OUT"], "w") as f:
        json.dump(RESULT, f)


if __name__ == "__main__":
    _time_mlflow()
    _add_probes()
    atexit.register(_write)  # the CLI leaves through its exit handlers and then os._exit (fast_exit.py)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
