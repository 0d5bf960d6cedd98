"""Build what a run will build, while validating: the Trainer's device choices, then the network on a
batch of the data set's shape, with its init, penalty, backward pass and optimiser, and the user's own
callbacks. A value that only Lightning, torch or the user's code can judge then fails as one `ConfigError`
line, before MLflow or the data.

A failure names the fewest keys that cause it: each key set away from a value known to work (the
library's default) is put back in turn, and stays back if the build still fails (delta debugging). An
integer key is then bisected for the nearest value that works ("model.kernel_size=40: must be at most 27").
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainlab.data import describe_data
from trainlab.errors import ConfigError
from trainlab.rules import construct, target_arguments

# The groups the builds read; the rest (paths, logger) may need Hydra's runtime to resolve.
_GROUPS = ("trainer", "model", "norm", "init", "optimizer", "regularizer")

# The batch the network takes its step on: the fewest samples a BatchNorm accepts in training. A smaller
# data.batch_size is used as it is, so that it fails here and not at the run's first step.
_BATCH = 2

_ABSENT = object()  # the reference of a key the library does not take: leave it out


@dataclass(frozen=True)
class _Build:
    """One thing a run builds from the config. `references(cfg)` gives each key it reads that has a value
    known to work; `fallback` names the keys to blame when even those values fail."""

    library: str
    run: Callable[[DictConfig], None]
    references: Callable[[DictConfig], dict[str, Any]]
    fallback: tuple[str, ...]


def preflight(cfg: DictConfig) -> None:
    """Raise `ConfigError` if Lightning or torch refuse what the run config `cfg` would build.

    A plain function of a composed config (no Hydra runtime), so a population can check each member."""
    plain = OmegaConf.create({group: OmegaConf.to_container(cfg[group], resolve=True) for group in _GROUPS})
    data = describe_data(cfg.data)
    batch = cfg.data.get("batch_size", _BATCH)  # a custom DataModule's batch size is its own
    shape = {"image_shape": list(data.image_shape), "num_classes": data.num_classes}
    plain.data = {"name": cfg.data.name, "batch_size": batch, **shape}
    with _quiet():
        for build in (_TRAINER, _NETWORK):
            error = _attempt(build, plain)
            if error is not None:
                raise _explain(build, plain, error)
        _build_extra_callbacks(cfg.callbacks.get("extra") or [])


def _build_extra_callbacks(entries: list[DictConfig]) -> None:
    """Each of the user's `callbacks.extra` once, as the run builds it: a value its constructor refuses is
    `callbacks.extra.<i>.<argument>`'s error. (Their classes and argument names are checked with the
    callbacks group: trainlab.config.check_callbacks.)"""
    for index, entry in enumerate(entries):
        given = target_arguments(entry)
        construct(f"callbacks.extra.{index}", entry._target_, _instantiating(entry, given), given)


def _instantiating(entry: DictConfig, given: dict[str, Any]) -> Callable[..., Any]:
    """`entry`'s class built as Hydra's `instantiate` builds it (with the entry's keys for Hydra), from the
    arguments it is called with, raising what the class raises."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate

    for_hydra = {k: v for k, v in OmegaConf.to_container(entry, resolve=True).items() if k not in given}

    @functools.wraps(get_class(entry._target_))  # its signature: `construct` reads the defaults there
    def build(**kwargs: Any) -> Any:
        try:
            return instantiate({**for_hydra, **kwargs})
        except InstantiationException as error:  # Hydra's wrapping: the class's own error says why
            raise (error.__cause__ or error) from None

    return build


def _build_trainer(cfg: DictConfig) -> None:
    import lightning as L

    # The logger, callbacks and progress bar are trainlab's own, checked with their groups.
    L.Trainer(**OmegaConf.to_container(cfg.trainer), logger=False, callbacks=[], enable_progress_bar=False)


def _trainer_references(cfg: DictConfig) -> dict[str, Any]:
    import lightning as L

    params = inspect.signature(L.Trainer.__init__).parameters
    return {f"trainer.{key}": params[key].default if key in params else _ABSENT for key in cfg.trainer}


def _train_one_step(cfg: DictConfig) -> None:
    """The module, its optimiser, and a training step with its backward pass, on the meta device: torch
    checks every shape there as on a CPU or GPU, but allocates nothing and computes nothing. (So no
    optimiser step: it needs numbers. Its constructor checks its arguments.)"""
    from trainlab.module import Classifier

    config = OmegaConf.to_container(cfg)
    config["model"]["compile"] = False  # compiling takes tens of seconds and changes no shape
    batch = min(cfg.data.batch_size, _BATCH)
    shape = tuple(cfg.data.image_shape)
    with torch.device("meta"):
        module = Classifier(config, shape, cfg.data.num_classes)
        module.configure_optimizers()
        images, labels = torch.zeros(batch, *shape), torch.zeros(batch, dtype=torch.long)
        module.training_step((images, labels), 0).backward()


def _network_references(cfg: DictConfig) -> dict[str, Any]:
    from trainlab.models import MODELS
    from trainlab.optim import OPTIMIZERS

    references: dict[str, Any] = {"data.batch_size": _BATCH, "norm.name": "none", "init.name": "default"}
    for group, target in (("model", MODELS[cfg.model.name]), ("optimizer", OPTIMIZERS[cfg.optimizer.name])):
        params = inspect.signature(target).parameters
        references |= {
            f"{group}.{key}": params[key].default
            for key in cfg[group]
            if key in params and params[key].default is not inspect.Parameter.empty
        }
    return references | {"regularizer.l1": 0.0, "regularizer.l2": 0.0}


_TRAINER = _Build("Lightning", _build_trainer, _trainer_references, ("trainer.accelerator",))
_NETWORK = _Build("torch", _train_one_step, _network_references, ("model.name", "data.name"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning logs its device choice and torch warns (zero-element weights, …): the run says it later."""
    import lightning  # noqa: F401  (on import it sets its logger's level, which must not undo ours)

    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _attempt(build: _Build, cfg: DictConfig) -> Exception | None:
    """What `build` raises on `cfg`, or None; trainlab's own `ConfigError` passes through."""
    try:
        build.run(cfg)
    except ConfigError:
        raise
    except Exception as error:  # whatever Lightning or torch raise: all of it is reported, not handled
        return error
    return None


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    group, name = key.rsplit(".", 1)
    if value is _ABSENT:
        cfg[group].pop(name, None)
    else:
        cfg[group][name] = value


def _works_with(build: _Build, cfg: DictConfig, key: str, value: Any) -> bool:
    trial = copy.deepcopy(cfg)
    _set(trial, key, value)
    return _attempt(build, trial) is None


def _culprits(build: _Build, cfg: DictConfig, references: dict[str, Any]) -> list[str]:
    """The fewest keys set away from their references that still make `build` fail together."""
    trial = copy.deepcopy(cfg)
    culprits = []
    for key, reference in references.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or value == reference:
            continue
        _set(trial, key, reference)
        if _attempt(build, trial) is None:  # the failure needs this key's value: keep it
            _set(trial, key, value)
            culprits.append(key)
    return culprits


def _nearest_working(build: _Build, cfg: DictConfig, key: str, reference: Any) -> int | None:
    """The integer nearest the user's value of `key` that works with the other keys as set: bisection
    between the user's value (fails) and the reference, if that works."""
    value = OmegaConf.select(cfg, key)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (value, reference)):
        return None
    if not _works_with(build, cfg, key, reference):
        return None
    good, bad = reference, value
    while abs(bad - good) > 1:
        middle = (good + bad) // 2
        if _works_with(build, cfg, key, middle):
            good = middle
        else:
            bad = middle
    return good


def _accelerators_present() -> str:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = AcceleratorRegistry.available_accelerators()
    present = sorted(n for n in names if AcceleratorRegistry[n]["accelerator"].is_available())
    return "one of " + ", ".join(["auto", *present]) + " (the accelerators this machine has)"


# What would work, for keys whose working values depend on the machine rather than the config.
_HINTS: dict[str, Callable[[], str]] = {"trainer.accelerator": _accelerators_present}


def _text(value: Any) -> str:
    """A value as the user writes it: null and booleans in YAML, the rest as `fail` shows it."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _shown(key: str, value: Any) -> str:
    """`key=value`; a group's choice as the user picks it (`norm=batch`)."""
    if key.endswith(".name"):
        return f"{key.removesuffix('.name')}={value}"
    return f"{key} unset" if value is _ABSENT else f"{key}={_text(value)}"


def _what_works(
    build: _Build, cfg: DictConfig, key: str, references: dict[str, Any]
) -> tuple[str, str] | None:
    """(what `key` must be, the same with the key named), for a key that alone can mend the failure."""
    if key in _HINTS:
        hint = _HINTS[key]()
        return hint, f"{key} {hint}"
    if key not in references:
        return None
    nearest = _nearest_working(build, cfg, key, references[key])
    if nearest is not None:
        hint = f"at {'most' if OmegaConf.select(cfg, key) > nearest else 'least'} {nearest}"
        return hint, f"{key} {hint}"
    if _works_with(build, cfg, key, references[key]):
        shown = _shown(key, references[key])
        if references[key] is _ABSENT:
            return "unset", shown
        value = references[key] if key.endswith(".name") else _text(references[key])
        return f"{value} or another value {build.library} accepts", shown
    return None


def _explain(build: _Build, cfg: DictConfig, error: Exception) -> ConfigError:
    """One line: the keys to blame with their values, what would work, and the library's own first line."""
    references = build.references(cfg)
    culprits = _culprits(build, cfg, references) or list(build.fallback)
    found = [works for key in culprits if (works := _what_works(build, cfg, key, references))]
    if not found:
        allowed = f"a value {build.library} accepts"
    elif len(culprits) == 1:
        allowed = found[0][0]
    else:
        allowed = " or ".join(named for _, named in found)
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    keys = ", ".join(_shown(key, OmegaConf.select(cfg, key)) for key in culprits)
    return ConfigError(f"{keys}: must be {allowed} ({build.library}: {said})")
