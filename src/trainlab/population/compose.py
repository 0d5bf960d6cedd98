"""Many jobs' configs that differ mostly in numbers (a sweep's trials), composed without composing each:
Hydra takes ~0.2 s a composition (20 trials: 4 s, longer than their training), so it composes once per
distinct set of the overrides that need it (config groups, additions, deletions, hydra.*), and a job's
plain `key=value` overrides (an Optuna trial's parameters) are set on a copy of that config."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

Extra = TypeVar("Extra")


def compose_each(
    jobs: Sequence[Sequence[str]],
    compose: Callable[[list[str]], tuple[DictConfig, dict[str, str], Extra]],
) -> list[tuple[DictConfig, Extra]]:
    """Each job's config as `compose(its overrides)` makes it, with what `compose` returns besides.
    `compose` returns (config, its config-group choices, anything else); the choices of the first job's
    config tell which override keys are groups."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups = set(compose(list(jobs[0]))[1]) if jobs else set()
    bases: dict[tuple[str, ...], tuple[DictConfig, Extra]] = {}
    configs = []
    for overrides in jobs:
        parsed = parser.parse_overrides(list(overrides))
        plain = [
            o
            for o in parsed
            if o.type.name == "CHANGE"
            and o.package is None
            and not o.is_sweep_override()
            and o.key_or_group not in groups
            and not o.is_hydra_override()
            # `logger=[mlflow,tensorboard]`: a list of a group's options, which Hydra's choices leave out
            and not ("." not in o.key_or_group and isinstance(o.value(), list))
        ]
        composed = tuple(o.input_line for o in parsed if o not in plain)
        if composed not in bases:
            base, _, extra = compose(list(composed))
            bases[composed] = base, extra
        base, extra = bases[composed]
        cfg = copy.deepcopy(base)
        for override in plain:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
        configs.append((cfg, extra))
    return configs
