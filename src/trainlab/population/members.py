"""Which trials can share a population, and how a job is told its members.

Members train with one architecture on one data set, so their configs must agree on everything but the
keys in VARYING: the optimiser's numbers, the learning-rate schedule, the penalty strengths, the init,
the seed, the fold and the dropout rate (plus keys that only name a run). Members that differ in seed or
fold each get their own batches (trainlab.data.members). Anything else that differs (`model.hidden`,
`model.activation`, `norm`, `model`, `optimizer` as a group, other `data.*`, `trainer.*`) puts trials in
different populations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import ConfigError

# Dotted keys (or prefixes ending in ".") that members may set each their own way.
VARYING = (
    "optimizer.",  # but optimizer.name and the boolean switches: see SHARED_WITHIN
    "scheduler.",  # each member steps a torch scheduler of its own (trainlab.population.schedules)
    "regularizer.l1",
    "regularizer.l2",
    "regularizer.name",  # none/l1/l2/elastic_net differ only in l1 and l2
    "init.",
    "seed",
    "data.fold",  # each member its own fold's batches
    "model.dropout",
    "variant",  # an experiment's row: what it sets is compared through the keys it sets
    "logger.run_name",
    "report.",
)
# Keys under a VARYING prefix that still change the update's form, so members must share them.
SHARED_WITHIN = (
    "optimizer.name",
    "optimizer.nesterov",
    "optimizer.centered",
    "optimizer.amsgrad",
    "optimizer.maximize",
)
# Settings a population cannot run with, and why (each a one-line error).
UNSUPPORTED = {
    "regularizer.target": (
        "activations",
        "the activation penalty hooks one network's layer; run it as single trials",
    ),
    "diagnostics.enabled": (True, "per-layer hooks watch one network; use diagnostics=off in a population"),
    "model.compile": (True, "torch.compile of a vmapped network is not supported; use model.compile=false"),
    "scheduler.cycle_momentum": (
        True,
        "one-cycle momentum cycling changes each member's momentum; use scheduler.cycle_momentum=false",
    ),
}


def _varies(key: str) -> bool:
    if key in SHARED_WITHIN:
        return False
    return any(key == v or (v.endswith(".") and key.startswith(v)) for v in VARYING)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shared_part(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved keys every member of a population must share (the population's signature)."""
    plain = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    plain = {k: v for k, v in plain.items() if k not in ("population", "variants", "hydra", "paths")}
    return {key: value for key, value in _flat(plain).items() if not _varies(key)}


def unsupported(config: DictConfig, groups: bool = False) -> str | None:
    """Why `config` cannot train in a population, or None. `groups`: a group of repeats or folds may join
    one, all its runs members (a grid sweep's variants: trainlab.repeats.group.train_groups)."""
    if OmegaConf.is_list(config.get("optimized_metric")):
        return (
            "optimized_metric is a list: a population scores its members on one metric; run as single trials"
        )
    folds = OmegaConf.select(config, "data.folds", default=None)
    group = (config.get("repeats") or 1) > 1 or (folds is not None and config.data.get("fold") is None)
    if group and not groups:
        return "repeats or data.folds: each trial trains its group of runs (as a population) in its own job"
    if group and config.data.name == "custom":
        return "data=custom: a group's runs share your DataModule's batches; each group trains in its own job"
    strategy = OmegaConf.select(config, "trainer.strategy", default=None)
    if isinstance(strategy, str) and "ddp" in strategy:
        return f"trainer.strategy={strategy}: a population trains on one device; run the trials alone"
    if OmegaConf.select(config, "callbacks.extra", default=None):
        return "callbacks.extra: your callbacks are written for one network, not K stacked members"
    for key, (value, why) in UNSUPPORTED.items():
        if OmegaConf.select(config, key, default=None) == value:
            return f"{key}={value}: {why}"
    return None


def check_shared(configs: Sequence[DictConfig]) -> None:
    """One-line error naming the first key (and values) on which two members differ that they must share."""
    for config in configs:
        if (why := unsupported(config)) is not None:
            raise ConfigError(f"population: {why}")
    first = shared_part(configs[0])
    for index, config in enumerate(configs[1:], start=1):
        other = shared_part(config)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise ConfigError(
                    f"population: members 0 and {index} differ in {key} ({first.get(key)!r} vs "
                    f"{other.get(key)!r}); a population may vary only the optimiser's numbers, "
                    "the schedule, regularizer.l1/l2, the init, the seed, data.fold and model.dropout"
                )


@dataclass(frozen=True)
class MemberSpec:
    """A member as the job is told it: its overrides on top of the job's, its Optuna trial, if any, and
    tags of its run besides the job's (a group's `group.member`)."""

    overrides: tuple[str, ...]
    trial_id: int | None = None
    job_num: int | None = None
    tags: tuple[tuple[str, str], ...] = ()


def member_specs(population: Any) -> list[MemberSpec]:
    """The `population` config value (a list of {overrides, trial, job, tags}) as MemberSpecs; unresolved,
    so an override's `${…}` reaches the member's composition as the user wrote it."""
    entries = (
        OmegaConf.to_container(population, resolve=False) if OmegaConf.is_config(population) else population
    )
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"population={population!r}: must be a non-empty list of {{overrides: [...]}}")
    return [
        MemberSpec(
            tuple(entry.get("overrides", [])),
            entry.get("trial"),
            entry.get("job"),
            tuple((entry.get("tags") or {}).items()),
        )
        for entry in entries
    ]


def quote_override_value(text: str) -> str:
    """A Hydra override value that stays a plain string whatever it contains (quoted, escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def population_override(specs: Sequence[MemberSpec]) -> str:
    """`population=[…]`: the one override that hands a job its members (Hydra's list/dict grammar)."""
    entries = []
    for spec in specs:
        fields = [f"overrides:[{','.join(quote_override_value(o) for o in spec.overrides)}]"]
        if spec.trial_id is not None:
            fields.append(f"trial:{spec.trial_id}")
        if spec.job_num is not None:
            fields.append(f"job:{spec.job_num}")
        entries.append("{" + ",".join(fields) + "}")
    return f"population=[{','.join(entries)}]"
