"""Validate a composed config once, before anything trains, so the rest of the code trusts its inputs.

Each rule names a key and what it allows; a broken rule becomes one `ConfigError` line such as
`optimizer.lr=-1: must be a number > 0`. Choices that depend on code (model, norm, optimizer names and
their keys) are checked against the registries that build them.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import check_choice, fail
from trainlab.rules import SEEDS, Rule, check_call, check_rules, is_int, is_number, is_seed, target_arguments

RULES: tuple[Rule, ...] = (
    Rule("seed", is_seed, f"{SEEDS} (0 is a valid seed; null: a random one)", optional=True),
    Rule("repeats", lambda v: is_int(v) and v >= 1, "an integer >= 1 (1: one run)", optional=True),
    # The data group's keys depend on its kind: trainlab.data.check_data checks them.
    Rule("model.dropout", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)", optional=True),
    Rule("optimizer.lr", lambda v: is_number(v) and v > 0, "a number > 0"),
    Rule("regularizer.l1", lambda v: is_number(v) and v >= 0, "a number >= 0"),
    Rule("regularizer.l2", lambda v: is_number(v) and v >= 0, "a number >= 0"),
    Rule(
        "regularizer.target",
        lambda v: v in ("weights", "activations"),
        "weights or activations",
        optional=True,
    ),
    Rule("init.std", lambda v: is_number(v) and v >= 0, "a number >= 0", optional=True),
    Rule("init.distribution", lambda v: v in ("normal", "uniform"), "normal or uniform", optional=True),
    Rule("init.fan", lambda v: v in ("in", "avg"), "in or avg", optional=True),
    Rule("optimizer.nesterov", lambda v: isinstance(v, bool), "true or false", optional=True),
    Rule("norm.eps", lambda v: is_number(v) and v > 0, "a number > 0", optional=True),
    Rule("callbacks.timer", lambda v: isinstance(v, bool), "true or false", optional=True),
    Rule(
        "callbacks.checkpoint.every_n_train_steps",
        lambda v: is_int(v) and v >= 1,
        "null (at each epoch's end) or an integer >= 1",
        optional=True,
    ),
    Rule(
        "callbacks.curves.every_n_steps",
        lambda v: is_int(v) and v >= 0,
        "null or 0 (off), or an integer >= 1",
        optional=True,
    ),
    Rule(
        "callbacks.curves.every_n_epochs",
        lambda v: is_int(v) and v >= 0,
        "null or 0 (off), or an integer >= 1",
        optional=True,
    ),
    Rule(
        "callbacks.curves.max_images",
        lambda v: is_int(v) and v >= 1,
        "null (all of them) or an integer >= 1",
        optional=True,
    ),
    Rule(
        "callbacks.progress_bar.refresh_rate",
        lambda v: is_int(v) and v >= 0,
        "an integer >= 0 (0: no bar)",
        optional=True,
    ),
    # Trainer values that Lightning checks only once `fit` has started (the preflight builds a Trainer, which
    # checks the rest): a wrong type or a 0 here would stop the run after its data is read, with a traceback.
    Rule(
        "trainer.max_epochs",
        lambda v: is_int(v) and v >= -1,
        "null, -1 (no end) or an integer >= 0",
        optional=True,
    ),
    Rule("trainer.min_epochs", lambda v: is_int(v) and v >= 0, "null or an integer >= 0", optional=True),
    Rule("trainer.max_steps", lambda v: is_int(v) and v >= -1, "-1 (no end) or an integer >= 0"),
    Rule("trainer.min_steps", lambda v: is_int(v) and v >= 0, "null or an integer >= 0", optional=True),
    Rule("trainer.accumulate_grad_batches", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule(
        "trainer.check_val_every_n_epoch",
        lambda v: is_int(v) and v >= 1,
        "null or an integer >= 1",
        optional=True,
    ),
    Rule(
        "trainer.val_check_interval",
        # A time ("DD:HH:MM:SS" or {minutes: 5}) is Lightning's to judge, when the preflight builds a Trainer.
        lambda v: isinstance(v, str | dict) or (is_int(v) and v >= 1) or (is_number(v) and 0 < v <= 1),
        "null, a fraction in (0, 1], an integer >= 1 (batches) or a time",
        optional=True,
    ),
    Rule(
        "trainer.gradient_clip_val",
        lambda v: is_number(v) and v >= 0,
        "null or a number >= 0",
        optional=True,
    ),
    Rule("trainer.detect_anomaly", lambda v: isinstance(v, bool), "true or false", optional=True),
    # A config without early stopping is fine; one with it sets each of its keys.
    Rule(
        "callbacks.early_stopping.enabled",
        lambda v: isinstance(v, bool),
        "true or false",
        optional=True,
        nullable=False,
    ),
    Rule(
        "callbacks.early_stopping.mode",
        lambda v: v in ("min", "max"),
        "min or max",
        optional=True,
        nullable=False,
    ),
    Rule(
        "callbacks.early_stopping.patience",
        lambda v: is_int(v) and v >= 0,
        "an integer >= 0 (validations without improvement)",
        optional=True,
        nullable=False,
    ),
    Rule(
        "callbacks.early_stopping.min_delta",
        lambda v: is_number(v) and v >= 0,
        "a number >= 0",
        optional=True,
        nullable=False,
    ),
    Rule("diagnostics.enabled", lambda v: isinstance(v, bool), "true or false"),
    Rule("logger.log_checkpoint", lambda v: isinstance(v, bool), "true or false", optional=True),
    Rule("ckpt_path", lambda v: isinstance(v, str) and v != "", '"last" or a checkpoint path', optional=True),
)


def _logger_choice() -> object:
    """The `logger` group's choice on the command line (a list for several loggers), where Hydra composed
    the run: Hydra's runtime choices leave a list out."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return None
    given = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") == "logger"]
    return OverridesParser.create().parse_overrides(given)[-1].value() if given else None


def validate(cfg: DictConfig, build: bool = True) -> None:
    """Raise `ConfigError` for the first key whose value is not allowed. `build=False` leaves out the
    preflight: a population builds its network once, for its first member (the others differ only in
    numbers that the rules check)."""
    if "variants" in cfg:  # an experiment's table of variants (conf/experiment/): its keys read from it
        check_choice("variant", cfg.get("variant"), tuple(cfg.variants))
    check_rules(cfg, RULES)

    # Checks against the code that builds each group (imported here: they pull in torch).
    from trainlab.augment import check_augment
    from trainlab.claims import read_claims
    from trainlab.data import check_data
    from trainlab.diagnostics import check_diagnostics
    from trainlab.init import check_init
    from trainlab.models import check_model
    from trainlab.optim import check_optimizer
    from trainlab.preflight import preflight
    from trainlab.scheduler import check_scheduler
    from trainlab.tracking.tracker import check_logger, run_tags

    check_data(cfg.data)
    curves = cfg.callbacks.get("curves") or {}
    if cfg.data.name == "custom" and (curves.get("every_n_steps") or curves.get("every_n_epochs")):
        why = "null with data=custom (the curves evaluate trainlab's in-memory splits)"
        raise fail("callbacks.curves.every_n_steps", curves.get("every_n_steps"), why)
    if "augment" in cfg:
        check_augment(cfg.augment)
    check_model(cfg.model, cfg.norm)
    check_init(cfg.init)
    check_optimizer(cfg.optimizer)
    check_scheduler(cfg.scheduler, cfg.optimizer)
    check_callbacks(cfg.callbacks)
    check_metrics(cfg)
    read_claims(cfg)
    check_logger(cfg.logger, _logger_choice())
    run_tags(cfg.get("tags"))
    check_diagnostics(cfg.diagnostics)
    if build:
        preflight(cfg)  # last: it builds what the checks above let through


def check_callbacks(cfg: DictConfig) -> None:
    """The best checkpoint's mode, and each `extra` entry: a Lightning Callback class and its arguments
    (their values are its constructor's to judge: the preflight builds it). Monitors: `check_metrics`."""
    check_choice("callbacks.checkpoint.mode", cfg.checkpoint.mode, ("min", "max"))
    extra = cfg.get("extra")
    if extra is not None and not OmegaConf.is_list(extra):
        raise fail("callbacks.extra", extra, "a list of {_target_: package.Class, ...}")
    for index, entry in enumerate(extra or []):
        check_callback_target(f"callbacks.extra.{index}", entry)


def check_callback_target(key: str, entry: object) -> None:
    """`entry` is {_target_: a class that imports and is a Lightning Callback, ...its arguments}."""
    import importlib

    from lightning.pytorch.callbacks import Callback

    target = entry.get("_target_") if isinstance(entry, DictConfig) else None
    if not isinstance(target, str):
        raise fail(key, entry, "a {_target_: package.Class, ...} mapping")
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:  # the import's own words say what is missing
        raise fail(f"{key}._target_", target, f"an importable class ({error})") from None
    if not isinstance(found, type):
        raise fail(f"{key}._target_", target, "a lightning.pytorch.callbacks.Callback subclass")
    if not issubclass(found, Callback):
        raise fail(f"{key}._target_", target, "a lightning.pytorch.callbacks.Callback subclass")
    check_call(key, target, found, target_arguments(entry))


# Every key that names a metric, and whether the run reads it (one it does not read is left alone). Monitors
# are read at every epoch's end; `optimized_metric`, what a run returns to a sweeper, after the final test.
MONITORS: dict[str, Callable[[DictConfig], bool]] = {
    "callbacks.checkpoint.monitor": lambda cfg: True,
    "callbacks.early_stopping.monitor": lambda cfg: bool(
        OmegaConf.select(cfg, "callbacks.early_stopping.enabled", default=False)
    ),
    "scheduler.monitor": lambda cfg: cfg.scheduler.name == "plateau",
}
OBJECTIVE = "optimized_metric"


def check_metrics(cfg: DictConfig) -> None:
    """One rule for every key that names a metric: it names one the run logs by the time it reads the key
    (`trainlab.module.logged_metrics`), else Lightning stops the run after an epoch with a traceback, or a
    sweep's trials return nothing after training."""
    from trainlab.module import VAL_METRICS, logged_metrics

    monitored = logged_metrics(cfg.trainer)
    why = "" if set(VAL_METRICS) <= set(monitored) else " (trainer.limit_val_batches=0: no validation)"
    for key, reads in MONITORS.items():
        if reads(cfg):
            _check_metric(key, OmegaConf.select(cfg, key, default=None), monitored, why)
    objective = cfg.get(OBJECTIVE)
    objective = OmegaConf.to_container(objective) if OmegaConf.is_list(objective) else objective
    names = logged_metrics(cfg.trainer, tested=True)
    count = _sweep_objectives()  # an Optuna sweep's trials return one value per direction
    if count is None and objective is None:
        return  # a run on its own may return nothing
    if count == 1 or (count is None and not isinstance(objective, list)):
        _check_metric(OBJECTIVE, objective, names, why)
        return
    if not isinstance(objective, list) or not objective or (count is not None and len(objective) != count):
        what = f"a list of {count} metrics (one per hydra.sweeper.direction)" if count else "a non-empty list"
        raise fail(OBJECTIVE, objective, f"{what} of {', '.join(sorted(names))}{why}")
    for index, metric in enumerate(objective):
        _check_metric(f"{OBJECTIVE}.{index}", metric, names, why)


def _check_metric(key: str, value: object, names: tuple[str, ...], why: str) -> None:
    if value not in names:
        raise fail(key, value, f"one of {', '.join(sorted(names))}{why}")


def _sweep_objectives() -> int | None:
    """How many values the Optuna sweep this job is a trial of optimises (`hydra.sweeper.direction`), or None
    outside one."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or hydra.mode is None or hydra.mode.name != "MULTIRUN":
        return None
    direction = hydra.sweeper.get("direction")
    if direction is None:
        return None
    return len(direction) if OmegaConf.is_list(direction) else 1
