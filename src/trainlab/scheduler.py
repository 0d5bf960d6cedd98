"""Learning-rate schedules by name. A config's keys are the torch scheduler's own arguments, plus trainlab's
`interval` (step: after every optimiser step; epoch: after every epoch), `frequency` (every N intervals)
and, for `plateau`, `monitor` (the metric it watches).

- step:          lr = lr₀ · γ^⌊t / step_size⌋
- multistep:     lr = lr₀ · γ^(milestones passed)
- exponential:   lr = lr₀ · γ^t
- cosine:        lr = η_min + (lr₀ − η_min)(1 + cos(π t / T_max)) / 2        (T_max null: the run's length)
- onecycle:      up from max_lr/div_factor to max_lr, then down to max_lr/(div_factor·final_div_factor)
- plateau:       lr ·= factor when `monitor` has not improved for `patience` epochs
- warmup_cosine: linear warm-up from start_factor·lr₀ over `warmup` intervals, then cosine to η_min at T_max

t counts intervals (steps or epochs, every `frequency`-th). A population's members each get a torch scheduler
of their own numbers, stepped on a one-number optimiser (`trainlab.population.module`), so member k's
learning rate is a standalone run's at every step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from trainlab.errors import check_choice, fail
from trainlab.optim import build_optimizer
from trainlab.rules import arguments, check_arguments, construct, is_int, is_number

lr_scheduler = torch.optim.lr_scheduler


class WarmupCosine:
    """The factor of lr₀ at interval t (see `warmup_cosine`). An object, not a closure, so that LambdaLR's
    state_dict keeps its numbers: a resumed run goes on with the run length it started with, whatever its
    shorter first epoch makes Lightning count."""

    def __init__(self, base: float, warmup: int, T_max: int, start_factor: float, eta_min: float) -> None:
        self.base, self.warmup, self.T_max = base, warmup, T_max
        self.start_factor, self.eta_min = start_factor, eta_min

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.start_factor + (1 - self.start_factor) * t / self.warmup
        span = max(self.T_max - self.warmup, 1)
        progress = min(t - self.warmup, span) / span
        cosine = self.eta_min + (self.base - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        return cosine / self.base


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup: int,
    T_max: int,
    start_factor: float = 0.01,
    eta_min: float = 0.0,
    last_epoch: int = -1,
) -> lr_scheduler.LambdaLR:
    """Linear warm-up then cosine annealing, as torch's LinearLR then CosineAnnealingLR would give them:

        lr(t) = lr₀ · (s + (1 − s) · t / w)                                      t < w
        lr(t) = η_min + (lr₀ − η_min) · (1 + cos(π (t − w) / (T_max − w))) / 2   w ≤ t ≤ T_max
        lr(t) = η_min                                                             t > T_max

    One closed form (a LambdaLR) rather than torch's SequentialLR, which re-steps its second scheduler with a
    deprecated epoch argument at the milestone and warns about it."""
    base = optimizer.param_groups[0]["lr"]
    return lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(base, warmup, T_max, start_factor, eta_min), last_epoch
    )


SCHEDULERS: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "step": lr_scheduler.StepLR,
    "multistep": lr_scheduler.MultiStepLR,
    "exponential": lr_scheduler.ExponentialLR,
    "cosine": lr_scheduler.CosineAnnealingLR,
    "onecycle": lr_scheduler.OneCycleLR,
    "plateau": lr_scheduler.ReduceLROnPlateau,
    "warmup_cosine": warmup_cosine,
}
# trainlab's keys: when and how often to step, and what a plateau watches (Lightning's scheduler config).
OWN_KEYS = ("interval", "frequency", "monitor")
# Keys torch takes that the run sets itself: resuming restores the count, and the optimiser is the run's.
_RESERVED = ("optimizer", "last_epoch", "epochs", "steps_per_epoch")
# Keys that default to the run's length in intervals when null.
_RUN_LENGTH_KEYS = {"cosine": "T_max", "warmup_cosine": "T_max", "onecycle": "total_steps"}


def torch_arguments(cfg: DictConfig, length: int) -> dict[str, Any]:
    """The torch scheduler's arguments; a null T_max/total_steps becomes the run's `length` in intervals."""
    kwargs = {k: v for k, v in arguments(cfg).items() if k not in OWN_KEYS}
    key = _RUN_LENGTH_KEYS.get(cfg.name)
    if key is not None and kwargs.get(key) is None:
        kwargs[key] = length
    return kwargs


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, length: int) -> Any:
    """The torch scheduler named by `cfg.name` over `optimizer`, for a run of `length` intervals (None for
    `none`)."""
    build = SCHEDULERS[cfg.name]
    return None if build is None else build(optimizer, **torch_arguments(cfg, length))


def lightning_config(cfg: DictConfig, scheduler: Any) -> dict[str, Any]:
    """Lightning's lr_scheduler dict: when to step it and, for a plateau, on which metric."""
    config = {"scheduler": scheduler, "interval": cfg.interval, "frequency": cfg.frequency}
    if cfg.name == "plateau":
        config["monitor"] = cfg.monitor
    return config


def run_length(cfg: DictConfig, epochs: int, steps_per_epoch: int, max_steps: int = -1) -> int:
    """How many times the schedule steps in a run of `epochs` epochs (or `max_steps` optimiser steps)."""
    steps = epochs * steps_per_epoch if max_steps < 0 else min(max_steps, epochs * steps_per_epoch)
    intervals = steps if cfg.interval == "step" else math.ceil(steps / max(steps_per_epoch, 1))
    return max(intervals // cfg.frequency, 1)


# Arguments that are plain non-negative numbers (torch accepts a string for some and fails at the first step).
_NUMBERS = (
    "gamma",
    "eta_min",
    "factor",
    "threshold",
    "min_lr",
    "eps",
    "max_lr",
    "pct_start",
    "div_factor",
    "final_div_factor",
    "start_factor",
    "base_momentum",
    "max_momentum",
)
# Arguments that count intervals (or a plateau's epochs), and the least each may be: torch takes a string or a
# negative count for some and fails mid-run, or never steps.
_COUNTS = {"T_max": 1, "total_steps": 1, "step_size": 1, "warmup": 0, "patience": 0, "cooldown": 0}
_NULL_MEANS = {"T_max": " or null (the run's length)", "total_steps": " or null (the run's length)"}
# Switches, which torch reads as truthy: "no" would turn them on.
_FLAGS = ("three_phase", "cycle_momentum")


def _is_count(value: Any, key: str) -> bool:
    if value is None:
        return key in _NULL_MEANS
    return is_int(value) and value >= _COUNTS[key]


def check_scheduler(cfg: DictConfig, optimizer: DictConfig) -> None:
    """Every key an argument of the named torch scheduler or trainlab's own, with a value of its kind, and
    the scheduler built once over a one-number `optimizer` (the run's), for torch to judge the rest. A
    plateau's `monitor` is one of the metrics the run logs: trainlab.config.check_metrics."""
    check_choice("scheduler.name", cfg.name, SCHEDULERS)
    build = SCHEDULERS[cfg.name]
    if build is None:
        return
    if cfg.get("interval") not in ("step", "epoch"):
        raise fail("scheduler.interval", cfg.get("interval"), "step or epoch")
    frequency = cfg.get("frequency")
    if not (is_int(frequency) and frequency >= 1):
        raise fail("scheduler.frequency", frequency, "an integer >= 1 (step every N intervals)")
    if cfg.name == "plateau" and cfg.interval != "epoch":  # its metrics are logged once an epoch
        raise fail("scheduler.interval", cfg.interval, "epoch for plateau (its metric is logged per epoch)")
    if cfg.name != "plateau" and cfg.get("monitor") is not None:
        raise fail("scheduler.monitor", cfg.monitor, f"unset: only plateau watches a metric, not {cfg.name}")
    torch_cfg = {k: v for k, v in arguments(cfg).items() if k not in OWN_KEYS}
    check_arguments("scheduler", DictConfig({"name": cfg.name, **torch_cfg}), build, _RESERVED)
    _check_values(cfg, torch_cfg)
    if torch_cfg.get("cycle_momentum") and not _has_momentum(_one_number(optimizer)):
        raise fail(
            "scheduler.cycle_momentum",
            True,
            f"false with optimizer={optimizer.name}, which has no momentum or beta1 to cycle (or an "
            "optimizer with one: optimizer=momentum, adam or adamw)",
        )

    @functools.wraps(build)
    def on_the_optimizer(**kwargs: Any) -> Any:  # a fresh one each time: a scheduler sets its rates
        return build(_one_number(optimizer), **kwargs)

    construct("scheduler", f"torch's {cfg.name} schedule", on_the_optimizer, torch_arguments(cfg, 10**6))


def _check_values(cfg: DictConfig, torch_cfg: dict[str, Any]) -> None:
    """Counts, numbers, switches and milestones of their kind and range, before torch sees them."""
    for key, value in torch_cfg.items():
        if key in _COUNTS and not _is_count(value, key):
            raise fail(f"scheduler.{key}", value, f"an integer >= {_COUNTS[key]}" + _NULL_MEANS.get(key, ""))
        if key in _NUMBERS and not (is_number(value) and value >= 0):
            raise fail(f"scheduler.{key}", value, "a number >= 0")
        if key in _FLAGS and not isinstance(value, bool):
            raise fail(f"scheduler.{key}", value, "true or false")
    milestones = torch_cfg.get("milestones", [])
    if not (isinstance(milestones, list) and all(is_int(m) and m >= 1 for m in milestones)):
        raise fail(
            "scheduler.milestones", milestones, "a list of integers >= 1 (the intervals the rate drops at)"
        )
    if not 0 < torch_cfg.get("start_factor", 1) <= 1:  # as torch's LinearLR: a warm-up rises to optimizer.lr
        raise fail("scheduler.start_factor", torch_cfg["start_factor"], "a number in (0, 1]")
    if cfg.name == "warmup_cosine" and torch_cfg.get("T_max") is not None and cfg.warmup >= cfg.T_max:
        raise fail("scheduler.warmup", cfg.warmup, f"less than scheduler.T_max={cfg.T_max}")


def _one_number(optimizer: DictConfig) -> torch.optim.Optimizer:
    """The run's optimiser over one number: what a scheduler's constructor needs of it."""
    return build_optimizer(optimizer, [torch.zeros(1, requires_grad=True)])


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether one-cycle's `cycle_momentum` has a momentum to cycle: SGD's or RMSprop's if not 0, Adam's β₁
    (torch refuses Adagrad at the run's start, and turns a plain SGD into one with momentum)."""
    return "betas" in optimizer.defaults or bool(optimizer.defaults.get("momentum"))


def check_length(cfg: DictConfig, length: int, described: str) -> None:
    """A warm-up must end within the run, and a one-cycle's steps cover it (torch stops past its last
    step): `length` is the run's intervals, `described` says how they were counted."""
    if cfg.name == "warmup_cosine" and cfg.get("T_max") is None and cfg.warmup >= length:
        raise fail(
            "scheduler.warmup", cfg.warmup, f"less than the run's {length} {cfg.interval}s ({described})"
        )
    if cfg.name == "onecycle" and cfg.get("total_steps") is not None and cfg.total_steps < length:
        raise fail(
            "scheduler.total_steps",
            cfg.total_steps,
            f"null or at least the run's {length} {cfg.interval}s ({described})",
        )


def planned_length(cfg: DictConfig, trainer: Any, batches: int) -> tuple[int, str]:
    """The run's length in the schedule's intervals, and how it was counted, from the training batches of
    an epoch (`trainlab.data.epoch_batches`) and `trainer` (the `trainer` config, or the Lightning Trainer:
    the same names)."""
    epochs = getattr(trainer, "max_epochs", None)
    if getattr(trainer, "fast_dev_run", False):
        batches, epochs = 1, 1
    else:
        limit = getattr(trainer, "overfit_batches", 0) or getattr(trainer, "limit_train_batches", None)
        if isinstance(limit, float) and limit <= 1:
            batches = max(int(batches * limit), 1)
        elif limit is not None:
            batches = min(batches, int(limit))
    per_epoch = math.ceil(batches / (getattr(trainer, "accumulate_grad_batches", None) or 1))
    max_steps = getattr(trainer, "max_steps", -1)
    if epochs is None or epochs < 0:
        epochs = 1000 if max_steps < 0 else math.ceil(max_steps / per_epoch)  # Lightning's defaults
    length = run_length(cfg, epochs, per_epoch, max_steps)
    described = f"{epochs} epochs of {per_epoch} steps" + (
        f", max_steps={max_steps}" if max_steps >= 0 else ""
    )
    return length, described


def check_schedule_fits(cfg: DictConfig, datamodule: Any) -> None:
    """`check_length` for the run config `cfg` once its data module is built (its size sets the run's)."""
    if cfg.scheduler.name == "none":
        return
    from trainlab.data import epoch_batches

    batches = epoch_batches(datamodule)
    if batches is None:
        raise fail(
            "scheduler", cfg.scheduler.name, "none with a DataModule whose train_dataloader() has no len()"
        )
    length, described = planned_length(cfg.scheduler, cfg.trainer, batches)
    check_length(cfg.scheduler, length, described)
