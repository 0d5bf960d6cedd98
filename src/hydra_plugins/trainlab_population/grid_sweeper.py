"""`hydra/sweeper=grid`, trainlab's default: Hydra's basic sweeper (the cartesian product of `a=1,2 b=x,y`,
same keys), plus `population`: with K > 1, jobs that may share a network are trained K at a time as one
vectorised model in one job (`python src/train.py -m experiment=overfitting hydra.sweeper.population=5`).

Only this module is imported when Hydra scans its plugins; the grouping loads when a sweep starts.
"""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.trainlab_population.grid_sweeper.GridSweeper"
    # Trials trained at once in one job where they share a network (1: one trial per job).
    population: int = 1


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None, population: int = 1):
        if population < 1:
            raise ValueError(
                f"hydra.sweeper.population={population}: must be an integer >= 1 (1: one trial per job)"
            )
        super().__init__(max_batch_size, params)
        self.population = population

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.population > 1:
            from trainlab.population.launch import PopulationLauncher

            self.launcher = PopulationLauncher(self.launcher, self.population, hydra_context, config)


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="trainlab")
