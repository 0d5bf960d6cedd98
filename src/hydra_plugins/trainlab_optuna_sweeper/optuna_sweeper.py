"""The Hydra Sweeper plugin: `hydra/sweeper=trainlab_optuna` (or `optuna`, see config.py) for any Hydra app.

Only this and the config surface are imported when Hydra scans its plugins; Optuna, MLflow and the
sweep loop load when a sweep starts.
"""

from dataclasses import replace
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.trainlab_optuna_sweeper.settings import DEFAULT_POPULATION, Settings
from hydra_plugins.trainlab_population.grid_sweeper import on_slurm, populations_allowed, trainlab_task


def population_size(settings: Settings, config: DictConfig) -> int:
    """For trainlab's task (`populations_allowed`): `population` as set, or for null: DEFAULT_POPULATION
    where the trials can share a network (one objective, each trial one run) and the jobs are not
    SLURM's; else 1."""
    if settings.population is not None:
        return settings.population
    from trainlab.population.members import unsupported

    shares = "model" in config and "trainer" in config and unsupported(config) is None
    return DEFAULT_POPULATION if shares and len(settings.direction) == 1 and not on_slurm(config) else 1


class OptunaSweeper(Sweeper):
    """Optuna trials as Hydra jobs; the loop is `_impl.OptunaSweep`."""

    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.trainlab = trainlab_task(task_function)
        allowed = populations_allowed(task_function, self.settings.population)
        size = population_size(self.settings, config) if allowed else 1
        self.settings = replace(self.settings, population=size)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        if self.settings.population > 1:
            from trainlab.population.launch import PopulationLauncher

            self.launcher = PopulationLauncher(self.launcher, self.settings.population, hydra_context, config)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.trainlab_optuna_sweeper._impl import OptunaSweep

        OptunaSweep(self.settings, self.config, self.launcher, self.trainlab).run(list(arguments))
