"""Samplers the stock plugin names that current Optuna builds differently (loaded only when a sweep
instantiates one)."""

from __future__ import annotations

import logging
from typing import Any

import optuna

log = logging.getLogger(__name__)


def motpe(**kwargs: Any) -> optuna.samplers.TPESampler:
    """`hydra/sweeper/sampler=motpe`: Optuna 4 removed MOTPESampler, folding multi-objective TPE into
    TPESampler, so this is a TPESampler with the same arguments."""
    log.info("sampler=motpe: Optuna 4 folded MOTPESampler into TPESampler, which this sweep uses")
    return optuna.samplers.TPESampler(**kwargs)


def grid(
    partial: Any, space: dict[str, optuna.distributions.BaseDistribution]
) -> optuna.samplers.GridSampler:
    """`hydra/sweeper/sampler=grid`: a GridSampler over every point of the discrete search space."""
    return partial({key: grid_points(key, dist) for key, dist in space.items()})


def grid_points(key: str, dist: optuna.distributions.BaseDistribution) -> list[Any]:
    """The values a discrete distribution can draw, both ends included (as the distribution has them)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    step = getattr(dist, "step", None)
    if step is None:
        raise ValueError(
            f"hydra.sweeper.params.{key}: sampler=grid needs discrete values: choice(…) or range(a, b, step)"
        )
    count = round((dist.high - dist.low) / step) + 1
    return [dist.low + i * step for i in range(count)]
