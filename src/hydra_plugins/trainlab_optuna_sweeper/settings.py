"""`hydra.sweeper`'s settings, checked: what the plugin and the sweep loop both read (light: no Optuna)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig

from hydra_plugins.trainlab_optuna_sweeper.search_space import check_entry

DIRECTIONS = ("maximize", "minimize")
# `population: null`: trials per job where they can share a network. Each batch asks Optuna for
# n_jobs × K trials and TPE learns between batches only; with its 10 random start-up trials, a 20-trial
# search keeps 2–3 rounds of learning at K = 4.
DEFAULT_POPULATION = 4


def directions(direction: Any) -> tuple[str, ...]:
    """`direction` as a tuple of objectives: `maximize` → (maximize,); [maximize, minimize] as is; the
    stock plugin's Direction enum by its name."""
    items = (
        direction
        if isinstance(direction, Sequence | ListConfig) and not isinstance(direction, str)
        else [direction]
    )
    names = tuple(getattr(item, "name", item) for item in items)
    if not names or any(name not in DIRECTIONS for name in names):
        raise ValueError(
            f"hydra.sweeper.direction={direction}: must be maximize, minimize or a list of them "
            "(one per objective)"
        )
    return names


@dataclass(frozen=True)
class Settings:
    """`hydra.sweeper` with the sampler and pruner instantiated (see config.OptunaSweeperConf)."""

    sampler: Any
    pruner: Any
    direction: Any
    storage: str | None
    study_name: str | None
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    population: int | None
    threads_per_job: int | None
    grace_period: float
    params: Mapping[str, str] | None
    workers: int = 0
    wait: bool = False
    heartbeat_interval: float = 60
    custom_search_space: str | None = None
    search_space: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", directions(self.direction))
        checks = {
            "n_trials": (self.n_trials >= 1, "an integer >= 1"),
            "n_jobs": (self.n_jobs >= 1, "an integer >= 1"),
            "max_failure_rate": (0 <= self.max_failure_rate <= 1, "a number in [0, 1]"),
            "population": (
                self.population is None or self.population >= 1,
                f"null ({DEFAULT_POPULATION} where trials can share a network) or an integer >= 1 "
                "(1: one trial per job)",
            ),
            "threads_per_job": (self.threads_per_job is None or self.threads_per_job >= 1, "null or >= 1"),
            "workers": (self.workers >= 0, "0 (one batch of n_jobs trials at a time) or N >= 1 workers"),
            "heartbeat_interval": (
                0 < self.heartbeat_interval < self.grace_period,
                f"a number of seconds > 0 and < grace_period={self.grace_period}",
            ),
            "pruner": (
                self.pruner is None or len(self.direction) == 1,
                "null with several directions (Optuna prunes single-objective studies only)",
            ),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"hydra.sweeper.{key}={getattr(self, key)}: must be {allowed}")
        for key, entry in (self.search_space or {}).items():
            check_entry(str(key), entry)
