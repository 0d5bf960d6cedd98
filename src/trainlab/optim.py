"""Optimisers by name. A config's keys (besides `name`) are the torch optimiser's own arguments.

- sgd:      w -= lr · g
- momentum: V = μV − lr · g;  w += V                        (torch SGD(momentum=μ))
- adagrad:  h₀ = θ;  h += g²;  w -= lr · g / (√h + θ)       (Adagrad(initial_accumulator_value=θ, eps=θ))
- rmsprop:  h = αh + (1−α) g²;  w -= lr · g / (√h + eps)
- adam, adamw: bias-corrected moments (AdamW decouples weight decay)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig

from trainlab.errors import check_choice, fail
from trainlab.rules import arguments, check_arguments

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

# Arguments that take a number in [0, 1) wherever an optimiser has them.
_FRACTIONS = ("momentum", "alpha", "dampening")


def check_optimizer(cfg: DictConfig) -> None:
    """Every key must be an argument of the named torch optimiser, with a value in its range."""
    check_choice("optimizer.name", cfg.name, OPTIMIZERS)
    check_arguments("optimizer", cfg, OPTIMIZERS[cfg.name])
    for key, value in arguments(cfg).items():
        if key in _FRACTIONS and not (isinstance(value, int | float) and 0 <= value < 1):
            raise fail(f"optimizer.{key}", value, "a number in [0, 1)")
        if key in ("eps", "weight_decay", "initial_accumulator_value") and not (
            isinstance(value, int | float) and value >= 0
        ):
            raise fail(f"optimizer.{key}", value, "a number >= 0")
        if key == "betas" and not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(b, int | float) and 0 <= b < 1 for b in value)
        ):
            raise fail(f"optimizer.{key}", value, "two numbers in [0, 1), e.g. [0.9, 0.999]")


def build_optimizer(cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    kwargs = arguments(cfg)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS[cfg.name](params, **kwargs)
