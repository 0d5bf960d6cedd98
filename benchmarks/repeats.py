"""Repeats and folds as one population against the same runs one after another (docs/performance.md,
"Repeats and folds"; docs/sweeps.md, "Repeats and cross-validation").

    python benchmarks/repeats.py --work /tmp/repeats-bench                    # both figures (~8 min, 2 cores)
    python benchmarks/repeats.py --work /tmp/repeats-bench --only repeats --epochs 1
    python benchmarks/repeats.py --only repeats --runs 32 --epochs 1 --accelerator gpu      # gpu.sh

- `repeats`: `python src/train.py repeats=5` of the default MLP (784-100×4-10, SGD, batch 100), 3 epochs on
  the full Fashion-MNIST (Debian's, else a synthetic MNIST of the same size): the command as it runs
  (one population, each member its own data order) against the same 5 runs one after another in one
  process (a `callbacks.extra` keeps a group out of a population).
- `folds`: the same for `data.folds=5` (each member its own fold).
For each: the command's wall time, and the cost of one member-epoch against one standalone epoch, both
read from the runs' MLflow metric timestamps between the end of epoch 1 and of the last epoch (so start-up
and the first epoch are left out). Both sides run back to back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRAIN = REPO / "src" / "train.py"
QUIET = ["hydra.job_logging.root.level=WARNING", "callbacks.progress_bar.refresh_rate=0"]
ONE_AFTER_ANOTHER = "callbacks.extra=[{_target_:lightning.pytorch.callbacks.Callback}]"
FIGURES = {"repeats": "repeats={}", "folds": "data.folds={}"}


def epoch_seconds(root: Path) -> tuple[float, int]:
    """(seconds the group's runs spent from the end of their first epoch to the end of their last, how
    many runs trained in that time at once): a population's members log each epoch together."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("trainlab")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "group.member" in r.data.tags]
    spans = {}
    for run in runs:
        points = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
        spans[run.info.run_id] = (points[0].timestamp, points[-1].timestamp, len(points))
    together = "population.job" in runs[0].data.tags
    if together:  # one span for all: the members' epochs ran at once
        first, last, count = next(iter(spans.values()))
        return (last - first) / 1000 / (count - 1), len(runs)
    per_epoch = [(last - first) / 1000 / (count - 1) for first, last, count in spans.values()]
    return sum(per_epoch) / len(per_epoch), 1


def run(args: list[str], root: Path) -> float:
    """Wall seconds of `python src/train.py ARGS` with its project folder in `root`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(TRAIN), f"paths.root_dir={root}", *args], check=True, cwd=root)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainlab-repeats")
    parser.add_argument("--only", choices=sorted(FIGURES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="repeats, or folds")
    parser.add_argument("--accelerator", default="cpu")
    options = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from population import full_size_data

    data = full_size_data(options.work / "data")
    for name in [options.only] if options.only else list(FIGURES):
        runs = FIGURES[name].format(options.runs)
        common = [runs, *data, f"trainer.max_epochs={options.epochs}", *QUIET]
        common.append(f"trainer.accelerator={options.accelerator}")
        result = {"figure": name, "runs": options.runs, "epochs": options.epochs, "on": options.accelerator}
        for side, extra in (("population", []), ("one_after_another", [ONE_AFTER_ANOTHER])):
            root = options.work / name / side
            shutil.rmtree(root, ignore_errors=True)  # a fresh store: an earlier round's runs would count
            root.mkdir(parents=True)
            wall = run([*common, *extra], root)
            seconds, at_once = epoch_seconds(root)
            result[side] = {"wall_s": round(wall, 1), "epoch_s": round(seconds, 2), "runs_at_once": at_once}
        population, alone = result["population"], result["one_after_another"]
        result["speedup"] = round(alone["wall_s"] / population["wall_s"], 2)
        member_epoch = population["epoch_s"] / population["runs_at_once"]
        result["member_epoch_vs_standalone"] = round(member_epoch / alone["epoch_s"], 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
