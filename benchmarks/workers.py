"""Sweep workers on a real SLURM, side by side with the batched sweep, in one run (issue 36):

1. submit and leave: seconds until the command returns (the sweep goes on without it);
2. uneven trials (each draws trainer.max_epochs from 1-6), 2 workers against `n_jobs=2` batches: makespan;
3. one worker killed mid-trial (SIGKILL of its process): n_trials finished at the end, the trial retried,
   none RUNNING;
4. successive halving across the workers against no pruner: epochs trained and the best values.

    SLURM_PREFIX=/tmp/bench-slurm NODES=1 CPUS=4 WITH_DBD=1 bash tests/slurm/slurm-up.sh
    SLURM_CONF=/tmp/bench-slurm/etc/slurm.conf python benchmarks/workers.py --work /tmp/workers

Prints one Markdown row per measurement. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src")]

from trainlab.sweeps import Progress, workers_active  # noqa: E402

# Fashion-MNIST (Debian's dataset-fashion-mnist), 12,000 training images: trials that differ, ~1 s an epoch.
JOB = [
    "launcher=slurm", "trainer=cpu", "launcher.cpus=1", "launcher.mem=2", "data=fashion_mnist",
    "data.train_size=12000", "data.val_size=2000", "data.batch_size=50",
    "callbacks.progress_bar.refresh_rate=0", "hydra.job_logging.root.level=WARNING", "logger.log_model=false",
]  # fmt: skip
SEARCH = ["hparams_search=lr", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0"]
SEARCH.append("hydra.sweeper.n_trials=12")
UNEVEN = "trainer.max_epochs=range(1,7)"  # drawn per trial: 1 to 6 epochs


def sweep(root: Path, *overrides: str) -> tuple[float, subprocess.CompletedProcess]:
    """`python src/train.py -m ...` in project folder `root`: its seconds and its result."""
    command = [sys.executable, str(REPO / "src" / "train.py"), "-m", f"paths.root_dir={root}", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done


def submit(root: Path, *overrides: str) -> tuple[float, float]:
    """The command with workers: its seconds to return, and of those the seconds after it submitted them
    (it prints that line once sbatch took the array)."""
    command = [sys.executable, str(REPO / "src" / "train.py"), "-m", f"paths.root_dir={root}", *overrides]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    submitted = started
    for line in process.stdout:
        if "worker(s) started" in line:
            submitted = time.perf_counter()
    if process.wait():
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read()[-3000:]}")
    ended = time.perf_counter()
    return ended - started, ended - submitted


def journal(root: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(root / "multirun" / "optuna.journal")))
    return optuna.load_study(study_name=None, storage=storage)


def until_done(root: Path, started: float, kill: bool = False) -> tuple[float, bool]:
    """Seconds from `started` until the workers of `root`'s study ended; with `kill`, one worker's process
    is killed (SIGKILL) once its trial saved a checkpoint while the other worker runs one too."""
    killed = not kill
    while True:
        study = journal(root)
        if not killed:
            running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
            saved = [t for t in running if Path(t.user_attrs.get("last_checkpoint", "/nowhere")).is_file()]
            if len(running) == 2 and saved:
                owner = saved[0].user_attrs["sweeper"]
                os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)
                print(f"| killed (SIGKILL) the worker {owner} running trial {saved[0].number} |", flush=True)
                killed = True
        if not workers_active(study):
            return time.perf_counter() - started, killed
        time.sleep(0.5)


def fresh(work: Path, name: str) -> Path:
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("SLURM_CONF: point it at a running cluster (see this script's docstring)")
    args.work.mkdir(parents=True, exist_ok=True)
    print("| measurement | value |\n|---|---|", flush=True)

    root = fresh(args.work, "batched")
    batched, _ = sweep(root, *JOB, *SEARCH, UNEVEN, "hydra.sweeper.n_jobs=2", "hydra.sweeper.population=1")
    print(f"| uneven trials, batched n_jobs=2: makespan | {batched:.1f} s |", flush=True)

    root = fresh(args.work, "workers")
    started = time.perf_counter()
    returned, after = submit(root, *JOB, *SEARCH, UNEVEN, "hydra.sweeper.workers=2")
    makespan, _ = until_done(root, started)
    print(f"| submit and leave: the command returned after | {returned:.1f} s ({after:.2f} s after sbatch) |")
    print(f"| uneven trials, 2 workers: makespan | {makespan:.1f} s ({batched / makespan:.2f}x shorter) |")
    print(f"| uneven trials, 2 workers: study | {Progress.of(journal(root)).line()} |", flush=True)

    root = fresh(args.work, "killed")
    started = time.perf_counter()
    submit(root, *JOB, *SEARCH, UNEVEN, "hydra.sweeper.workers=2")
    until_done(root, started, kill=True)
    progress = Progress.of(journal(root))
    print(f"| one worker killed (SIGKILL) mid-trial: study | {progress.line()}, {progress.states} |")

    epochs = {}
    pruners = {"no pruner": [], "successive halving": ["hydra/sweeper/pruner=successive_halving"]}
    for name, pruner in pruners.items():
        root = fresh(args.work, name.replace(" ", "_"))
        started = time.perf_counter()
        submit(root, *JOB, *SEARCH, "trainer.max_epochs=6", "hydra.sweeper.workers=2", *pruner)
        seconds, _ = until_done(root, started)
        study = journal(root)
        epochs[name] = sum(len(t.intermediate_values) for t in study.trials)
        pruned = sum(t.state.name == "PRUNED" for t in study.trials)
        print(
            f"| {name}, 6 epochs a trial, 2 workers | {epochs[name]} epochs trained, {pruned} pruned, best "
            f"{study.best_value:.4f} (trial {study.best_trial.number}), {seconds:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
