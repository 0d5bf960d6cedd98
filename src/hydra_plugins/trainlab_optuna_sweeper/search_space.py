"""Hydra's sweep grammar → Optuna distributions, mapped exactly as the stock hydra-optuna-sweeper maps it.

    choice(a, b, …)            → CategoricalDistribution([a, b, …])   (also over config groups)
    interval(a, b)             → FloatDistribution(a, b)
    tag(log, interval(a, b))   → FloatDistribution(a, b, log=True)
    int(interval(a, b))        → IntDistribution(a, b)                (tag(log, …) adds log=True)
    range(a, b, step)          → IntDistribution(a, b, step), or FloatDistribution(a, b, step=step) for
                                 floats; like the stock plugin, b itself can be drawn
    shuffle(range(…))          → CategoricalDistribution of the range's values

Anything else (`key=value`, `~key`) is a fixed override passed to every trial.

The stock plugin's deprecated `hydra.sweeper.search_space` (`x: {type: float, low: -5.5, high: 5.5,
step: 0.5}`) is read as the stock 1.3 plugin reads it, with its warnings (`from_search_space`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from textwrap import dedent
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def _values(override: Override) -> list[Any]:
    return list(override.sweep_iterator(transformer=Transformer.encode))


def _range(sweep: RangeSweep, override: Override) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if sweep.shuffle:
        return CategoricalDistribution(_values(override))
    if any(isinstance(v, float) for v in (sweep.start, sweep.stop, sweep.step)):
        return FloatDistribution(sweep.start, sweep.stop, step=sweep.step)
    return IntDistribution(int(sweep.start), int(sweep.stop), step=int(sweep.step))


def _interval(sweep: IntervalSweep) -> BaseDistribution:
    from optuna.distributions import FloatDistribution, IntDistribution

    log = "log" in sweep.tags
    if isinstance(sweep.start, int) and isinstance(sweep.end, int):
        return IntDistribution(sweep.start, sweep.end, log=log)
    return FloatDistribution(sweep.start, sweep.end, log=log)


def to_distribution(override: Override) -> BaseDistribution | str:
    """The distribution a sweep override describes, or the fixed override itself as a string."""
    from optuna.distributions import CategoricalDistribution

    if override.is_delete():
        return override.input_line
    if not override.is_sweep_override():
        return f"{override.get_key_element()}={override.get_value_element_as_str()}"
    sweep = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(_values(override))
    if override.is_range_sweep():
        return _range(sweep, override)
    if override.is_interval_sweep():
        return _interval(sweep)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample (use choice, range or interval)")


def to_grammar(distribution: BaseDistribution) -> str:
    """`distribution` in the sweep grammar, as a user writes it (`to_distribution`'s inverse): messages."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(repr, distribution.choices))})"
    bounds = f"{distribution.low}, {distribution.high}"
    integer = isinstance(distribution, IntDistribution)
    if distribution.step is not None and not (integer and distribution.step == 1):
        return f"range({bounds}, step={distribution.step})"
    interval = f"int(interval({bounds}))" if integer else f"interval({bounds})"
    return f"tag(log, {interval})" if distribution.log else interval


DISTRIBUTION_KEYS = ("type", "choices", "low", "high", "log", "step")
UPGRADE_URL = "https://hydra.cc/docs/upgrades/1.1_to_1.2/changes_to_sweeper_config/"


def check_entry(key: str, config: Mapping[str, Any]) -> str:
    """The kind of a deprecated `search_space` entry (int, float or categorical), or a ValueError naming
    the entry; light (no Optuna), so the sweeper's settings check it before a sweep starts."""
    where = f"hydra.sweeper.search_space.{key}"
    unknown = sorted(set(config) - set(DISTRIBUTION_KEYS))
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: not a key of a distribution ({', '.join(DISTRIBUTION_KEYS)})"
        )
    kind = getattr(config.get("type"), "name", config.get("type"))  # the stock DistributionType enum too
    if kind == "categorical" and config.get("choices") is not None:
        return kind
    if kind in ("int", "float") and config.get("low") is not None and config.get("high") is not None:
        return kind
    raise ValueError(
        f"{where}={dict(config)}: must be {{type: categorical, choices: [...]}} or "
        "{type: int|float, low: ..., high: ...} (with step or log: true)"
    )


def from_config(key: str, config: Mapping[str, Any]) -> BaseDistribution:
    """One deprecated `search_space` entry as the stock plugin maps it (its deprecated Optuna classes
    are these distributions in Optuna >= 3):

        {type: categorical, choices: [a, b]}        → CategoricalDistribution([a, b])
        {type: int, low, high[, step | log: true]}  → IntDistribution(low, high, step or 1 | log=True)
        {type: float, low, high[, step | log: true]} → FloatDistribution(low, high, step=step | log=True)
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = check_entry(key, config)
    if kind == "categorical":
        return CategoricalDistribution(list(config["choices"]))
    low, high, log, step = config["low"], config["high"], bool(config.get("log")), config.get("step")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=1 if log or step is None else int(step))
    return FloatDistribution(low, high, log=log, step=None if log else step)


def from_search_space(
    search_space: Mapping[str, Any] | None, params: Mapping[str, str] | None
) -> dict[str, BaseDistribution]:
    """The deprecated `hydra.sweeper.search_space` as distributions, warned about as the stock 1.3 plugin
    warns: deprecated on its own; ignored, for `params`, when both are set."""
    from hydra._internal.deprecation_warning import deprecation_warning

    if search_space is None:
        return {}
    if params is not None:
        warnings.warn(
            "Both hydra.sweeper.params and hydra.sweeper.search_space are configured."
            f"\nHydra will use hydra.sweeper.params for defining search space.\n{UPGRADE_URL}",
            stacklevel=2,
        )
        return {}
    deprecation_warning(
        message=dedent(
            f"""\
            `hydra.sweeper.search_space` is deprecated and will be removed in the next major release.
            Please configure with `hydra.sweeper.params`.
            {UPGRADE_URL}
            """
        ),
    )
    return {str(key): from_config(str(key), config) for key, config in search_space.items()}


def parse_search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions by key, fixed overrides by key) from `key=<sweep or value>` strings; a key given
    twice keeps its last value, so the command line overrides `hydra.sweeper.params`."""
    from optuna.distributions import BaseDistribution

    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        value = to_distribution(override)
        if isinstance(value, BaseDistribution):
            space[key] = value
        else:
            fixed[key] = value
    return space, fixed
