"""Validate a composed config once, before anything trains, so the rest of the code trusts its inputs.

Each rule names a key and what it allows; a broken rule becomes one `ConfigError` line such as
`optimizer.lr=-1: must be a number > 0`. Choices that depend on code (model, norm, optimizer names and
their keys) are checked against the registries that build them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import ConfigError


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """`check(value)` is True when `key` holds an allowed value; `allowed` says what that is."""

    key: str
    check: Callable[[Any], bool]
    allowed: str
    optional: bool = False  # the key may be absent or null


RULES: tuple[Rule, ...] = (
    Rule("seed", _is_int, "an integer (0 is a valid seed)", optional=True),
    Rule("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.train_size", lambda v: _is_int(v) and v >= 1, "null or an integer >= 1", optional=True),
    Rule(
        "data.val_size",
        lambda v: _is_number(v) and (0 < v < 1 or (_is_int(v) and v >= 1)),
        "a fraction in (0, 1) or an integer count >= 1",
    ),
    Rule("data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    Rule("data.download", lambda v: isinstance(v, bool), "true or false"),
    Rule("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)", optional=True),
    Rule("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    Rule("regularizer.l1", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("regularizer.l2", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule(
        "regularizer.target",
        lambda v: v in ("weights", "activations"),
        "weights or activations",
        optional=True,
    ),
    Rule("init.std", lambda v: _is_number(v) and v >= 0, "a number >= 0", optional=True),
    Rule("init.distribution", lambda v: v in ("normal", "uniform"), "normal or uniform", optional=True),
    Rule("init.fan", lambda v: v in ("in", "avg"), "in or avg", optional=True),
    Rule("norm.eps", lambda v: _is_number(v) and v > 0, "a number > 0", optional=True),
    Rule("callbacks.timer", lambda v: isinstance(v, bool), "true or false", optional=True),
    Rule(
        "callbacks.progress_bar.refresh_rate",
        lambda v: _is_int(v) and v >= 0,
        "an integer >= 0 (0: no bar)",
        optional=True,
    ),
    # Trainer values that Lightning checks only once `fit` has started (the preflight builds a Trainer, which
    # checks the rest): a wrong type or a 0 here would stop the run after its data is read, with a traceback.
    Rule(
        "trainer.max_epochs",
        lambda v: _is_int(v) and v >= -1,
        "null, -1 (no end) or an integer >= 0",
        optional=True,
    ),
    Rule("trainer.min_epochs", lambda v: _is_int(v) and v >= 0, "null or an integer >= 0", optional=True),
    Rule("trainer.max_steps", lambda v: _is_int(v) and v >= -1, "-1 (no end) or an integer >= 0"),
    Rule("trainer.min_steps", lambda v: _is_int(v) and v >= 0, "null or an integer >= 0", optional=True),
    Rule("trainer.accumulate_grad_batches", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule(
        "trainer.check_val_every_n_epoch",
        lambda v: _is_int(v) and v >= 1,
        "null or an integer >= 1",
        optional=True,
    ),
    Rule(
        "trainer.val_check_interval",
        # A time ("DD:HH:MM:SS" or {minutes: 5}) is Lightning's to judge, when the preflight builds a Trainer.
        lambda v: isinstance(v, str | dict) or (_is_int(v) and v >= 1) or (_is_number(v) and 0 < v <= 1),
        "null, a fraction in (0, 1], an integer >= 1 (batches) or a time",
        optional=True,
    ),
    Rule(
        "trainer.gradient_clip_val",
        lambda v: _is_number(v) and v >= 0,
        "null or a number >= 0",
        optional=True,
    ),
    Rule("trainer.detect_anomaly", lambda v: isinstance(v, bool), "true or false", optional=True),
    Rule("ckpt_path", lambda v: isinstance(v, str) and v != "", '"last" or a checkpoint path', optional=True),
)

_MISSING = object()


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if isinstance(value, DictConfig | Mapping) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return value


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    """The project's one error format: `key=value: must be <allowed>`."""
    return ConfigError(f"{key}={value!r}: must be {allowed}")


def check_choice(key: str, value: Any, choices: Mapping[str, Any] | tuple[str, ...]) -> None:
    """Raise unless `value` names one of `choices` (a registry or a tuple of names)."""
    if value not in choices:
        raise fail(key, value, "one of " + ", ".join(sorted(choices)))


def arguments(cfg: DictConfig) -> dict[str, Any]:
    """A group's keys other than `name`, as plain values: the arguments of what the name builds."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}


def check_arguments(group: str, cfg: DictConfig, target: Callable, reserved: tuple[str, ...] = ()) -> None:
    """Every key of `cfg` (but `name`) must be an argument of `target` that the config may set."""
    accepted = set(inspect.signature(target).parameters) - {"self", "params", *reserved}
    for key, value in arguments(cfg).items():
        if key not in accepted:
            raise fail(f"{group}.{key}", value, f"unset: {cfg.name} takes only {', '.join(sorted(accepted))}")


def check_rules(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    """Raise `ConfigError` for the first rule whose key holds a value it does not allow."""
    for rule in rules:
        value = _select(cfg, rule.key)
        if value is _MISSING or value is None:
            if rule.optional:
                continue
            raise fail(rule.key, None, rule.allowed)
        if not rule.check(value):
            raise fail(rule.key, value, rule.allowed)


def validate(cfg: DictConfig, build: bool = True) -> None:
    """Raise `ConfigError` for the first key whose value is not allowed. `build=False` leaves out the
    preflight: a population builds its network once, for its first member (the others differ only in
    numbers that the rules check)."""
    if "variants" in cfg:  # an experiment's table of variants (conf/experiment/): its keys read from it
        check_choice("variant", cfg.get("variant"), tuple(cfg.variants))
    check_rules(cfg, RULES)

    # Checks against the code that builds each group (imported here: they pull in torch).
    from trainlab.data import check_data
    from trainlab.diagnostics import check_diagnostics
    from trainlab.init import check_init
    from trainlab.models import check_model
    from trainlab.optim import check_optimizer
    from trainlab.preflight import preflight
    from trainlab.tracking import check_logger

    check_data(cfg.data)
    check_model(cfg.model, cfg.norm)
    check_init(cfg.init)
    check_optimizer(cfg.optimizer)
    check_logger(cfg.logger)
    check_diagnostics(cfg.diagnostics)
    if build:
        preflight(cfg)  # last: it builds what the checks above let through
