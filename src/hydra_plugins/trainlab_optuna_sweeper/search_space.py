"""Hydra's sweep grammar → Optuna distributions, mapped exactly as the stock hydra-optuna-sweeper maps it.

    choice(a, b, …)            → CategoricalDistribution([a, b, …])   (also over config groups)
    interval(a, b)             → FloatDistribution(a, b)
    tag(log, interval(a, b))   → FloatDistribution(a, b, log=True)
    int(interval(a, b))        → IntDistribution(a, b)                (tag(log, …) adds log=True)
    range(a, b, step)          → IntDistribution(a, b, step), or FloatDistribution(a, b, step=step) for
                                 floats; like the stock plugin, b itself can be drawn
    shuffle(range(…))          → CategoricalDistribution of the range's values

Anything else (`key=value`, `~key`) is a fixed override passed to every trial.
"""

from __future__ import annotations

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
