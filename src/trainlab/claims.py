"""Claims: what an experiment expects of its variants, stated as data in its config (`claims:`), so that a
study (trainlab.studies.run) can judge it over seeds. One claim:

    - name: ReLU + He beats ReLU + Xavier          # the table's row
      metric: curve/test/acc                       # each run's last value of it
      a: {model.activation: relu, init: he}        # a variant, by the sweep's own overrides
      b: {model.activation: relu, init: xavier}
      expect: more                                 # more | less (than b), chance | reaches (a threshold)
      threshold: 0.2                               # chance: A below it (default 0.2); reaches: A >= it
      data: mnist                                  # optional: the data set the threshold was set on

Everything here is checked before any training: the fields (with every run's config, trainlab.config), and
that `a` and `b` each pick exactly one variant of the sweep (`select`, when a study plans its runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import ConfigError, fail
from trainlab.rules import is_number

EXPECTATIONS = ("more", "less", "chance", "reaches")
COMPARED = ("more", "less")  # need `b`
CHANCE = 0.2  # twice chance for 10 classes: what "stays at chance" means without a threshold
CURVES = ("curve/train/acc", "curve/train/loss", "curve/test/acc", "curve/test/loss")
# Metrics a claim may name that no run logs by that name: each a difference of two that it does.
DIFFERENCES = {
    "train_test_gap": ("train/acc", "test/acc"),
    "curve/train_test_gap": ("curve/train/acc", "curve/test/acc"),
}
FIELDS = ("name", "metric", "a", "b", "expect", "threshold", "data")


@dataclass(frozen=True)
class Claim:
    """One expectation: `a` (and `b`) are the overrides that pick a variant ({"init": "he"})."""

    name: str
    metric: str
    a: dict[str, str]
    b: dict[str, str] | None
    expect: str
    threshold: float | None
    data: str | None

    def value(self, metrics: Mapping[str, float]) -> float | None:
        """A run's value of the claim's metric (its last logged value), or None if it has none."""
        if self.metric in DIFFERENCES:
            first, second = DIFFERENCES[self.metric]
            if first in metrics and second in metrics:
                return metrics[first] - metrics[second]
            return None
        return metrics.get(self.metric)


def claim_metrics(cfg: DictConfig) -> tuple[str, ...]:
    """What a claim's `metric` may name: what every run logs (its final test too), the sampled curves when
    `callbacks.curves` is on, and the train − test gaps of those."""
    from trainlab.module import logged_metrics

    names = list(logged_metrics(cfg.trainer, tested=True))
    curves = OmegaConf.select(cfg, "callbacks.curves", default={}) or {}
    if curves.get("every_n_steps") or curves.get("every_n_epochs"):
        names += CURVES
    names += [name for name, parts in DIFFERENCES.items() if set(parts) <= set(names)]
    return tuple(names)


def _selector(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(key, value, "a mapping of the sweep's keys to values, e.g. {init: he}")
    return {k: str(v) for k, v in value.items()}


def same_value(chosen: str, given: str) -> bool:
    """Whether a claim's value and an override's are one value: as text, or as numbers (YAML reads the
    claim's `1e-4` as 0.0001; the sweep's override keeps `1e-4`)."""
    if chosen == given:
        return True
    try:
        return float(chosen) == float(given)
    except ValueError:
        return False


def read_claims(cfg: DictConfig) -> list[Claim]:
    """The config's `claims`, checked: a mistake is one line naming `claims[i].<field>`."""
    entries = cfg.get("claims")
    entries = OmegaConf.to_container(entries, resolve=True) if OmegaConf.is_config(entries) else entries or []
    if not isinstance(entries, list):
        raise fail("claims", entries, "a list of {name, metric, a, b, expect, threshold}")
    metrics = claim_metrics(cfg)
    claims = []
    for index, entry in enumerate(entries):
        key = f"claims[{index}]"
        if not isinstance(entry, dict):
            raise fail(key, entry, "a mapping {name, metric, a, b, expect, threshold}")
        if unknown := sorted(set(entry) - set(FIELDS)):
            raise fail(f"{key}.{unknown[0]}", entry[unknown[0]], f"left out: a claim has {', '.join(FIELDS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(f"{key}.name", name, "a non-empty text (the claim as the table shows it)")
        expect = entry.get("expect")
        if expect not in EXPECTATIONS:
            raise fail(f"{key}.expect", expect, "one of " + ", ".join(EXPECTATIONS))
        metric = entry.get("metric")
        if metric not in metrics:
            why = "" if set(CURVES) <= set(metrics) else " (curve/*: with callbacks.curves.every_n_steps)"
            raise fail(f"{key}.metric", metric, f"one of {', '.join(sorted(metrics))}{why}")
        b = entry.get("b")
        if expect in COMPARED and b is None:
            raise fail(f"{key}.b", b, f"the variant that `a` is {expect} than (expect={expect} compares two)")
        if expect not in COMPARED and b is not None:
            raise fail(f"{key}.b", b, f"left out: expect={expect} judges `a` alone against its threshold")
        threshold = entry.get("threshold", CHANCE if expect == "chance" else None)
        if expect in COMPARED and threshold is not None:
            raise fail(f"{key}.threshold", threshold, f"left out: expect={expect} compares `a` with `b`")
        if expect not in COMPARED and not (is_number(threshold) and math.isfinite(threshold)):
            raise fail(f"{key}.threshold", threshold, f"a number (expect={expect} compares `a` with it)")
        data = entry.get("data")
        if data is not None and not isinstance(data, str):
            raise fail(f"{key}.data", data, "null or a data set's name (data.name) the threshold was set on")
        a = _selector(f"{key}.a", entry.get("a") or {})
        chosen = None if b is None else _selector(f"{key}.b", b)
        claims.append(Claim(name.strip(), metric, a, chosen, expect, threshold, data))
    return claims


def select(claims: Sequence[Claim], variants: Sequence[Mapping[str, str]], experiment: str) -> None:
    """Check that each claim's `a` and `b` pick exactly one of the sweep's `variants` (each the overrides
    that make it): a claim on a variant the sweep does not train is a mistake, found before training."""
    varied = {key for variant in variants for key in variant}
    for index, claim in enumerate(claims):
        for side, chosen in (("a", claim.a), ("b", claim.b)):
            if chosen is None:
                continue
            key = f"{experiment}: claims[{index}].{side}"
            for name, value in chosen.items():
                values = list(dict.fromkeys(v[name] for v in variants if name in v))
                if name not in varied:
                    what = ", ".join(sorted(varied)) or "nothing: it is one variant, picked by a: {}"
                    raise ConfigError(f"{key}.{name}={value}: not a key the sweep varies (it varies {what})")
                if not any(same_value(value, v) for v in values):
                    raise fail(f"{key}.{name}", value, f"one of the sweep's values {', '.join(values)}")
            found = [v for v in variants if matches(chosen, v)]
            if len(found) != 1:
                keys = ", ".join(sorted(varied - set(chosen)))
                raise ConfigError(f"{key}={chosen}: picks {len(found)} variants; name {keys} too")


def matches(chosen: Mapping[str, str], overrides: Mapping[str, str]) -> bool:
    """Whether the variant made by `overrides` is the one `chosen` names."""
    return all(key in overrides and same_value(value, overrides[key]) for key, value in chosen.items())
