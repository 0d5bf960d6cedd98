"""`hydra/sweeper=grid`, trainlab's default: Hydra's basic sweeper (the cartesian product of `a=1,2 b=x,y`,
same keys), plus `population`: jobs that may share a network are trained together as one vectorised
model in one job, all of them by default (not on SLURM: see `on_slurm`), at most K with `population=K`,
one job each with `hydra.sweeper.population=1` (`python src/train.py -m experiment=overfitting`: its five
variants, one job).

Only this module is imported when Hydra scans its plugins; the grouping loads when a sweep starts.
"""

import sys
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.trainlab_population.grid_sweeper.GridSweeper"
    # Trials trained at once in one job where they share a network (null: all that can, but one trial per
    # job on SLURM; 1: one trial per job; K: at most K).
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

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        size = self.population or (1 if on_slurm(config) else sys.maxsize)
        if size != 1:
            from trainlab.population.launch import PopulationLauncher

            self.launcher = PopulationLauncher(self.launcher, size, hydra_context, config)


def on_slurm(config: DictConfig) -> bool:
    """On SLURM a sweep's trials are its jobs by default: they run side by side on the cluster's GPUs,
    each with the resources it asked for, and one lost job loses one trial. `population=K` packs them."""
    return "slurm" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="trainlab")
