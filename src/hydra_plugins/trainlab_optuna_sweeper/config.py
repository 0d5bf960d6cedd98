"""The sweeper's config surface: the stock `hydra-optuna-sweeper`'s keys and samplers, plus what resuming,
pruning and populations need, registered with Hydra's ConfigStore.

The name: `hydra/sweeper=trainlab_optuna` always; also `hydra/sweeper=optuna` (and the stock sampler
names) unless `hydra-optuna-sweeper` is installed, in which case those names stay the stock plugin's.
Which package answers to `optuna` then depends on what is installed, never on the order Hydra happens
to import the two plugins in (docs/sweeps.md, "The name").
"""

from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

NAME = "trainlab_optuna"
STOCK_NAME = "optuna"


def stock_plugin_installed() -> bool:
    """Whether `hydra-optuna-sweeper` is importable (found without importing it)."""
    return find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: bool | None = None


@dataclass
class MOTPESamplerConf(TPESamplerConf):
    """Optuna 4 removed MOTPESampler: TPESampler optimises several objectives itself (the sweeper says so)."""

    _target_: str = "hydra_plugins.trainlab_optuna_sweeper._samplers.motpe"


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    independent_sampler: Any = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any = None
    inc_popsize: int = 2
    use_separable_cma: bool = False
    source_trials: Any = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any = None


@dataclass
class GridSamplerConf:
    """Every point of the (discrete) search space once; the sweeper fills in the grid from `params`."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any = None
    warn_independent_sampling: bool = True


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
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])

    sampler: Any = MISSING
    # null: never prune; or hydra/sweeper/pruner=median|successive_halving|hyperband (single objective).
    pruner: Any = None
    # minimize or maximize the task's return value; a list ([maximize, minimize]) for a task that returns
    # one value per objective. minimize is the stock plugin's and Optuna's default.
    direction: Any = "minimize"
    # null: $OPTUNA_STORAGE if set, else sqlite:///<the sweep folder's parent>/optuna.db, so that the
    # same command resumes (for trainlab: multirun/optuna.db), and with workers a journal file there
    # (multirun/optuna.journal); or any SQLAlchemy URL (postgresql://…), or a journal file's path.
    storage: str | None = None
    # null: derived from the app (or hparams_search option) and the sweep's overrides, so the same
    # command finds the same study.
    study_name: str | None = None
    # The study's total of finished trials (COMPLETE, PRUNED or FAIL), not this invocation's.
    n_trials: int = 20
    # Trials launched together, one batch at a time, through hydra/launcher (joblib: processes).
    n_jobs: int = 1
    # Stop once more than this share of n_trials has failed (1.0: never stop for failures).
    max_failure_rate: float = 0.5
    # Trials trained at once as one vectorised model in one job (trainlab.population): K trials share a
    # job where they share a network; 1: one trial per job; null: 4 for trainlab's single-objective
    # searches, 1 on SLURM and otherwise. Each batch asks for n_jobs × population trials.
    population: int | None = None
    # CPU threads per trial (torch.set_num_threads, in trainlab's jobs); null: the cores / n_jobs.
    threads_per_job: int | None = None
    # Workers that pull trials from the study until it has n_trials (docs/sweeps.md#workers): 0, one
    # batch of n_jobs trials at a time from this process; N, N jobs of hydra/launcher=slurm (one array),
    # or else N processes here, submitted at once: the command returns and the sweep goes on without it.
    workers: int = 0
    # With workers: follow the sweep to its end here and print the best trial, instead of returning.
    wait: bool = False
    # Each sweeper or worker writes a heartbeat into the study this often (s)...
    heartbeat_interval: int = 60
    # ...and a RUNNING trial whose sweeper has not written one for this long (or whose process on this
    # machine is gone) is failed and retried: at once by another worker, else when the study is resumed.
    grace_period: int = 300
    # The search space in Hydra's sweep grammar: interval(a, b), tag(log, interval(a, b)),
    # int(interval(a, b)), range(a, b, step), choice(a, b, ...), also over config groups.
    params: dict[str, str] | None = None
    # The stock plugin's deprecated form, accepted as it accepts it (with its warnings; params wins):
    # {key: {type: int|float|categorical, low, high, step, log, choices}}.
    search_space: dict[str, Any] | None = None
    # A dotted path to a function (cfg, trial) -> None that suggests more (e.g. conditional) parameters
    # once `params` are drawn: https://optuna.readthedocs.io/en/stable/tutorial/10_key_features/002_configurations.html
    custom_search_space: str | None = None


SAMPLERS = {
    "tpe": TPESamplerConf,
    "motpe": MOTPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "grid": GridSamplerConf,
    "qmc": QMCSamplerConf,
    "gp": GPSamplerConf,
}
PRUNERS = {
    "median": MedianPrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}


def register() -> None:
    store = ConfigStore.instance()
    names = [NAME] if stock_plugin_installed() else [NAME, STOCK_NAME]
    for name in names:
        store.store(group="hydra/sweeper", name=name, node=OptunaSweeperConf, provider="trainlab")
    # The stock plugin's sampler entries name the same Optuna samplers; where it is installed, they are its.
    samplers = {"brute_force": BruteForceSamplerConf, **({} if stock_plugin_installed() else SAMPLERS)}
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="trainlab")
    for name, node in PRUNERS.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="trainlab")


register()
