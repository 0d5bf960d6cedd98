"""What a study was created for, kept in it as the user attribute `search`: its search space, direction(s),
objective and app. Optuna finds a study by its name alone, so a sweep with another search under the same
name (an explicit `study_name`, or another app sharing the sweep folder's storage) would resume the old
study and report its best; with the record, such a sweep stops before it writes anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution

from hydra_plugins.trainlab_optuna_sweeper.search_space import to_grammar

RECORD = "search"
# The objective of an app without trainlab's optimized_metric.
RETURN_VALUE = "the task's return value"


def search_record(
    space: Mapping[str, BaseDistribution], directions: Sequence[str], objective: Any, config: DictConfig
) -> dict[str, Any]:
    """This sweep's record (JSON, as study attributes are): what a study it resumes was created for."""
    job = config.hydra.job
    return {
        "space": {key: json.loads(distribution_to_json(dist)) for key, dist in sorted(space.items())},
        "direction": list(directions),
        "objective": RETURN_VALUE if objective is None else objective,
        "app": f"{job.name}/{job.config_name}" if job.config_name else job.name,
    }


def differences(recorded: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """What `record` changes of `recorded`, each as `<what> <old>, now <new>`; what `recorded` lacks (a
    study of an earlier trainlab has only its directions) is not compared."""
    found = []
    if "space" in recorded:
        old, new = _space(recorded["space"]), _space(record["space"])
        keys = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
        if keys:
            found.append(f"search space {_shown(old, keys)}, now {_shown(new, keys)}")
    for what in ("direction", "objective", "app"):
        if what in recorded and recorded[what] != record[what]:
            found.append(f"{what} {_text(recorded[what])}, now {_text(record[what])}")
    return found


def mismatch(study: str, storage: str, found: Sequence[str]) -> str:
    """The one line that stops a sweep whose search differs from its study's."""
    return (
        f"study {study} in {storage} was created for another search: {'; '.join(found)}; to start a new "
        "study, set another hydra.sweeper.study_name or a new hydra.sweeper.storage"
    )


def _space(entries: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    # Compared as distributions, not as JSON: Optuna reads its older forms of them too.
    return {key: json_to_distribution(json.dumps(entry)) for key, entry in entries.items()}


def _shown(space: Mapping[str, BaseDistribution], keys: Sequence[str]) -> str:
    return " ".join(f"{key}={to_grammar(space[key])}" if key in space else f"no {key}" for key in keys)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else f"[{', '.join(map(str, value))}]"
    return str(value)
