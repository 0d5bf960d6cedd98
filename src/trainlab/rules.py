"""Config rules as data: `Rule(key, check, allowed)`, checked in order, the first broken one raised as one
`ConfigError` line (`optimizer.lr=-1: must be a number > 0`); and the rule that a group's keys are the
arguments of what its name builds."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import fail


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """`check(value)` is True when `key` holds an allowed value; `allowed` says what that is."""

    key: str
    check: Callable[[Any], bool]
    allowed: str
    optional: bool = False  # the key may be absent or null


_MISSING = object()


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if isinstance(value, DictConfig | Mapping) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return value


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


def import_class(key: str, target: object, base: type, kind: str, example: str) -> type:
    """The class `target` names (`my_pkg.module.Class`), imported from the user's code: a subclass of
    `base`, else the error of `key` (`kind` names the base with its article, `example` a dotted path)."""
    what = kind.partition(" ")[2]
    if not isinstance(target, str) or "." not in target:
        raise fail(key, target, f"the dotted path of {kind} class, e.g. {example}")
    module, _, name = target.rpartition(".")
    # `python src/train.py` puts src/ on the import path, not the folder it runs in, where user code lives.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise fail(key, target, f"an importable {what} class ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise fail(key, target, f"a subclass of {base.__module__.split('.')[0]}.{what}")
    return cls
