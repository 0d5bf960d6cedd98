"""`hydra/sweeper=grid`, trainlab's default: Hydra's basic sweeper (the cartesian product of `a=1,2 b=x,y`,
same keys), plus `population`: jobs that may share a network are trained together as one vectorised
model in one job, all of them by default (not on SLURM: see `on_slurm`), at most K with `population=K`,
one job each with `hydra.sweeper.population=1` (`python src/train.py -m experiment=overfitting`: its five
variants, one job). Populations are for trainlab's own task only (`trainlab_task`): any other app's sweep
is exactly the basic sweeper's.

Only this module is imported when Hydra scans its plugins; the grouping loads when a sweep starts.
"""

import logging
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# trainlab's task, as files under src/: train.py's `main`, and trainlab.cli.main's `run_job` (what
# trainlab.api sweeps). Only it reads the `population=[…]` that a population job is handed.
TASK_FILES = ("train.py", "trainlab/cli/main.py")


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.trainlab_population.grid_sweeper.GridSweeper"
    # Trials trained at once in one job where they share a network (null: all that can, but one trial per
    # job on SLURM; 1: one trial per job; K: at most K). trainlab's task only.
    population: int | None = None


class GridSweeper(BasicSweeper):
    def __init__(
        self, max_batch_size: int | None, params: dict[str, str] | None = None, population: int | None = None
    ):
        if population is not None and population < 1:
            raise ValueError(
                f"hydra.sweeper.population={population}: must be null (all that can share) or an integer "
                ">= 1 (1: one trial per job)"
            )
        super().__init__(max_batch_size, params)
        self.population = population
        self.trainlab = False

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.trainlab = trainlab_task(task_function)
        if not populations_allowed(task_function, self.population):
            return
        size = self.population or (1 if on_slurm(config) else sys.maxsize)
        if size != 1:
            from trainlab.population.launch import PopulationLauncher

            self.launcher = PopulationLauncher(self.launcher, size, hydra_context, config)

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's basic sweep; for trainlab's task, a job that stops on a mistake, a diverged run or a file
        it cannot write ends the sweep with the CLI's one line (`trainlab.errors.Stop`), not Hydra's
        traceback."""
        if not self.trainlab:
            return super().sweep(arguments)
        from trainlab.errors import Diverged, Stop, as_mistake

        try:
            return super().sweep(arguments)
        except Exception as err:
            if (mistake := as_mistake(err)) is None:
                raise
            raise Stop(mistake, 1 if isinstance(mistake, Diverged) else 2) from None


def trainlab_task(task_function: TaskFunction) -> bool:
    """Whether `task_function` is trainlab's own task (`TASK_FILES`). Told by the function, not by the
    config's keys: any app may have `model`, `trainer`, `paths` or a `population` of its own (a
    lightning-hydra-template app has the first three), and its jobs must not be handed trainlab's."""
    code = getattr(task_function, "__code__", None)
    spec = find_spec("trainlab")
    if code is None or spec is None or spec.origin is None:
        return False
    src = Path(spec.origin).resolve().parents[1]
    return Path(code.co_filename).resolve() in {src / name for name in TASK_FILES}


def populations_allowed(task_function: TaskFunction, population: int | None) -> bool:
    """Populations for trainlab's task; for any other app none, and a `population=K` set by hand is
    ignored with a warning (its jobs go to the launcher as the basic sweeper sends them)."""
    if trainlab_task(task_function):
        return True
    if population not in (None, 1):
        log.warning(
            "hydra.sweeper.population=%s ignored: populations train trainlab's task (src/train.py) only; "
            "this app's trials run one a job",
            population,
        )
    return False


def on_slurm(config: DictConfig) -> bool:
    """On SLURM a sweep's trials are its jobs by default: they run side by side on the cluster's GPUs,
    each with the resources it asked for, and one lost job loses one trial. `population=K` packs them."""
    return "slurm" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="trainlab")
