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


SEEDS = "an integer from 0 to 4294967295"


def is_seed(value: Any) -> bool:
    """A seed NumPy takes (an unsigned 32-bit integer): Lightning seeds it as well as torch."""
    return is_int(value) and 0 <= value < 2**32


@dataclass(frozen=True)
class Rule:
    """`check(value)` is True when `key` holds an allowed value; `allowed` says what that is."""

    key: str
    check: Callable[[Any], bool]
    allowed: str
    optional: bool = False  # the key may be absent or null
    nullable: bool = True  # with `optional`, False: absent only (a config that has the key must set it)


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


def target_arguments(entry: DictConfig) -> dict[str, Any]:
    """The constructor arguments of a `{_target_: package.Class, ...}` entry: its keys but Hydra's own."""
    given = OmegaConf.to_container(entry, resolve=True)
    return {k: v for k, v in given.items() if not (k.startswith("_") and k.endswith("_"))}


def check_call(key: str, label: str, target: Callable, given: Mapping[str, Any]) -> None:
    """`given` are keyword arguments that `target` (named `label`) takes, and all it needs: else the error of
    `key.<argument>`, the one it does not take or the first it lacks."""
    parameters = inspect.signature(target).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {name: p for name, p in parameters.items() if p.kind in named}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for name, value in given.items():
            if name not in accepted:
                takes = f"only {', '.join(sorted(accepted))}" if accepted else "no arguments"
                raise fail(f"{key}.{name}", value, f"unset: {label} takes {takes}")
    for name, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and name not in given:
            raise fail(f"{key}.{name}", None, f"set: {label} has no default for it")


def construct(key: str, label: str, target: Callable, given: dict[str, Any]) -> Any:
    """`target(**given)`. What it raises is the error of the argument to blame, `key.<argument>`: the one
    whose default, in its place, lets `target` build (else the error of all of them, `key`)."""
    try:
        return target(**given)
    except Exception as error:  # the user's code or a library's: whatever it raises is reported
        said = (str(error).strip().splitlines() or [""])[0]
        why = f"({type(error).__name__}: {said})" if said else f"({type(error).__name__})"
    parameters = inspect.signature(target).parameters
    for name, value in given.items():
        if name not in parameters or parameters[name].default is inspect.Parameter.empty:
            continue
        try:
            target(**{k: v for k, v in given.items() if k != name})
        except Exception:  # not this argument alone: try the next
            continue
        raise fail(f"{key}.{name}", value, f"a value {label} accepts {why}")
    raise fail(key, given, f"arguments {label} accepts {why}")


def check_rules(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    """Raise `ConfigError` for the first rule whose key holds a value it does not allow."""
    for rule in rules:
        value = _select(cfg, rule.key)
        if value is _MISSING or value is None:
            if rule.optional and (value is _MISSING or rule.nullable):
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
