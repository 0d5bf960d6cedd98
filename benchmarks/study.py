"""The study's conclusions with error bars, timed: `python src/study.py` on exercises 1–5 with 5 seeds
(the claims live in conf/experiment/*.yaml; the report is the command's own), and, with `--baseline REV`,
the same experiments as they were trained before the study command existed (one `train.py -m
experiment=X repeats=5` after another, in a git worktree of REV), in the same benchmark run.

    python benchmarks/study.py --work /tmp/study --data fashion_mnist                   # the study, timed
    python benchmarks/study.py --work /tmp/study --data fashion_mnist --baseline a7f93a4
    python benchmarks/study.py --work /tmp/study --only alexnet                          # exercise 6

Prints one row per way and experiment (seconds) and the total; the study's report (claims table, figures)
is in <work>/study/multirun/<study>/report.md. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXERCISES = ["vanishing_gradient", "batch_norm", "optimizers", "overfitting", "simple_cnn"]
QUIET = [
    "hydra.job_logging.root.level=WARNING",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.accelerator=cpu",
]


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def baseline(revision: str, work: Path, exercises: list[str], data: list[str]) -> dict[str, float]:
    """Each exercise's `train.py -m experiment=X repeats=5` with the code of `revision`: its seconds."""
    source = work / "baseline-src"
    if not source.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(source), revision], check=True, cwd=REPO)
    root = work / "baseline"
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(source / "src")}  # its trainlab, not this checkout's
    seconds = {}
    for exercise in exercises:
        command = [sys.executable, str(source / "src" / "train.py"), "-m", f"experiment={exercise}"]
        command += ["repeats=5", f"paths.root_dir={root}", *data, *QUIET]
        seconds[exercise] = timed(command, root, env)
        print(f"| baseline {revision} | {exercise} | {seconds[exercise]:.1f} |", flush=True)
    return seconds


def study(work: Path, exercises: list[str], data: list[str]) -> float:
    """`python src/study.py experiment=<all> repeats=5`, to its finished report: its seconds."""
    root = work / "study"
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "src" / "study.py"), f"experiment={','.join(exercises)}"]
    command += ["repeats=5", f"paths.root_dir={root}", *data, *QUIET]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=root)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", action="append", help="an experiment (repeatable); default: exercises 1-5")
    parser.add_argument("--data", default=None, help="fashion_mnist: the full Fashion-MNIST (Debian's)")
    parser.add_argument("--baseline", help="a git revision: also time today's way with its code, first")
    options = parser.parse_args()
    exercises = options.only or EXERCISES
    options.work.mkdir(parents=True, exist_ok=True)
    data = [f"data={options.data}"] if options.data else []
    print("| way | experiment | seconds |\n|---|---|---|", flush=True)
    before = baseline(options.baseline, options.work, exercises, data) if options.baseline else {}
    if before:
        print(f"| baseline {options.baseline} | all | {sum(before.values()):.1f} |", flush=True)
    seconds = study(options.work, exercises, data)
    print(f"| study | all (to the finished report) | {seconds:.1f} |")


if __name__ == "__main__":
    main()
