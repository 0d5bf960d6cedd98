"""The sweeper's config surface, registered with Hydra's ConfigStore under `hydra/sweeper=optuna`.

It keeps the stock `hydra-optuna-sweeper`'s keys (`sampler`, `direction`, `storage`, `study_name`,
`n_trials`, `n_jobs`, `max_failure_rate`, `params`) and adds what resuming and pruning need.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class BruteForceSamplerConf:
    """Every combination of a discrete space once (a grid search), in random order."""

    _target_: str = "optuna.samplers.BruteForceSampler"
    seed: int | None = None


@dataclass
class MedianPrunerConf:
    """Prune a trial whose metric at an epoch is worse than the median of earlier trials at that epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 2
    n_warmup_steps: int = 0


@dataclass
class SuccessiveHalvingPrunerConf:
    """Keep the best 1/reduction_factor of the trials at each rung of min_resource·factorᵏ epochs."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class HyperbandPrunerConf:
    """Successive halving over several brackets, so a slow starter is not always cut first."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": None}])

    sampler: Any = MISSING
    # null: never prune; or hydra/sweeper/pruner=median|successive_halving|hyperband.
    pruner: Any = None
    # What to do with the job's return value (`optimized_metric`, val/acc by default): maximize or minimize.
    direction: str = "maximize"
    # Persistent by default so that the same command resumes; any SQLAlchemy URL (postgresql://…) works.
    storage: str = "sqlite:///${paths.root_dir}/multirun/optuna.db"
    # null: derived from the hparams_search option and the sweep's overrides, so the same command
    # finds the same study.
    study_name: str | None = None
    # The study's total of finished trials (COMPLETE, PRUNED or FAIL), not this invocation's.
    n_trials: int = 20
    # Trials launched together, one batch at a time, through hydra/launcher (joblib: processes).
    n_jobs: int = 1
    # Stop once more than this share of n_trials has failed (1.0: never stop for failures).
    max_failure_rate: float = 0.5
    # Trials trained at once as one vectorised model in one job (trainlab.population): K trials share a
    # job where they share a network; 1: one trial per job. Each batch asks for n_jobs × population trials.
    population: int = 1
    # CPU threads per trial (torch.set_num_threads); null: the machine's cores / n_jobs.
    threads_per_job: int | None = None
    # A RUNNING trial whose sweeper has not written a heartbeat for this long (or whose sweeper
    # process on this machine is gone) is failed and retried when the study is resumed.
    grace_period: int = 300
    # The search space in Hydra's sweep grammar: interval(a, b), tag(log, interval(a, b)),
    # int(interval(a, b)), range(a, b, step), choice(a, b, ...), also over config groups.
    params: dict[str, str] | None = None


_STORE = ConfigStore.instance()
_STORE.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="trainlab")
for _name, _node in {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "brute_force": BruteForceSamplerConf,
}.items():
    _STORE.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="trainlab")
_PRUNERS = {
    "median": MedianPrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}
for _name, _node in _PRUNERS.items():
    _STORE.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="trainlab")
