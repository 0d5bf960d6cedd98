"""Workers (`hydra.sweeper.workers=N`): N processes that each pull trials from the study, train them and
tell their results, until the study has its `n_trials` (`_impl.OptunaSweep._work`). The command that
starts them returns at once: SLURM jobs (one array) under hydra/launcher=slurm, else processes of this
machine in sessions of their own, so that the sweep outlives the shell that started it.

A worker is this app's task with the sweep's settings, pickled (as submitit pickles a launcher's jobs):
it runs its trials in its own process through Hydra's basic launcher, and a population launcher where
trials share a network.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import configure_log, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.trainlab_optuna_sweeper.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a worker needs to run the sweep's trials wherever it starts."""

    settings: Settings
    config: DictConfig
    hydra_context: HydraContext
    task_function: TaskFunction
    trainlab: bool
    arguments: list[str]
    singleton_state: dict[Any, Any]

    def __call__(self, index: int) -> None:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from hydra_plugins.trainlab_optuna_sweeper._impl import OptunaSweep

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


@dataclass(frozen=True)
class Submitted:
    """Where the workers went: a SLURM array job, or processes of this machine."""

    launcher: str  # "slurm" or "local"
    ids: list[str]  # the array's job id, or the processes' ids
    logs: str  # the folder of their logs

    def describe(self) -> str:
        if self.launcher == "slurm":
            return f"SLURM array job {self.ids[0]}"
        return f"process{'es' if len(self.ids) > 1 else ''} {', '.join(self.ids)} of this machine"

    def stop_hint(self) -> str:
        if self.launcher == "slurm":
            return f"scancel {self.ids[0]}"
        return f"kill {' '.join(self.ids)}"


def start(worker: Worker, count: int, launcher: Any, sweep_dir: Path) -> Submitted:
    """Submit `count` workers through `launcher` where it is trainlab's SLURM launcher, else start them
    here; return at once."""
    if hasattr(launcher, "submit_workers"):
        job = launcher.submit_workers(worker, count)
        return Submitted("slurm", [job], str(sweep_dir / ".submitit" / job))
    return _start_here(worker, count, sweep_dir / ".workers")


def _start_here(worker: Worker, count: int, folder: Path) -> Submitted:
    """`count` processes of this machine, each in a session of its own (a closed terminal's SIGHUP does
    not reach it), logging to `folder`."""
    import cloudpickle

    from trainlab.atomic import write_atomically

    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    pickled = folder / "worker.pkl"  # read once, as each worker starts
    write_atomically(pickled, cloudpickle.dumps(worker))
    # The app's own modules import in the worker as they did here (a script's folder is on sys.path).
    paths = [str(Path(sys.argv[0]).resolve().parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    ids = []
    for index in range(count):
        with open(folder / f"worker_{stamp}_{index}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(pickled), str(index)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=worker.config.hydra.runtime.cwd,
                env=env,
                start_new_session=True,
            )
        # Waited for when it ends, should this process live on (a notebook's kernel): no zombie is left.
        threading.Thread(target=process.wait, daemon=True).start()
        ids.append(str(process.pid))
    return Submitted("local", ids, str(folder))


def _main(pickled: str, index: str) -> int:
    """A worker process of this machine; its log ends with its one line where it stops on purpose."""
    import cloudpickle

    from trainlab import interrupts
    from trainlab.errors import Stop

    worker = cloudpickle.loads(Path(pickled).read_bytes())
    try:
        worker(int(index))
    except Stop as stop:
        print(f"error: {stop.error}", file=sys.stderr)
        return int(stop.code or 1)
    except interrupts.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
