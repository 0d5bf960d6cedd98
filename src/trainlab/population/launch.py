"""Sweeps in populations: the jobs a sweeper would launch one by one are grouped into populations of at
most K trials that may share a network (`trainlab.population.members`), each launched as ONE job through
the configured launcher (a local process, a joblib worker, a SLURM array task), and each population's
result is handed back as one JobReturn per trial, so the sweeper sees what it would have seen. A grid
sweep's trials with `repeats` are groups: a population of them trains every run of each
(trainlab.repeats.group.train_groups).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from trainlab.population.compose import compose_each
from trainlab.population.members import MemberSpec, population_override, shared_part, unsupported

log = logging.getLogger(__name__)

# The one per-trial override a population keeps per member rather than per job (trainlab.run.trial).
_TRIAL_OVERRIDE = "++hydra.job.env_set.TRAINLAB_OPTUNA_TRIAL_ID="


def _trial_id(override: str) -> int | None:
    if not override.startswith(_TRIAL_OVERRIDE):
        return None
    return int(override.removeprefix(_TRIAL_OVERRIDE).strip("'"))


class PopulationLauncher:
    """Wraps `launcher`: `launch` takes the sweeper's batch of jobs and launches populations instead."""

    def __init__(
        self, launcher: Launcher, size: int, hydra_context: HydraContext, config: DictConfig
    ) -> None:
        self.launcher = launcher
        self.size = size
        self.hydra_context = hydra_context
        self.config = config

    def _compose(self, overrides: list[str]) -> tuple[DictConfig, dict[str, str], list[str]]:
        """A job's run config (without its own output folder, which needs the Hydra runtime it does not
        have yet), its config-group choices, and its hydra.* overrides."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        choices = {group: str(option) for group, option in cfg.hydra.runtime.choices.items()}
        with open_dict(cfg):
            cfg.paths.output_dir = None
            del cfg["hydra"]
        return cfg, choices, sorted(o for o in overrides if "hydra." in o.split("=", 1)[0])

    def populations(self, jobs: Sequence[Sequence[str]]) -> list[list[int]]:
        """Job indices grouped into populations of at most `size` (members share what `shared_part`
        names and their hydra.* overrides), in launch order; a job that cannot join one runs alone."""
        without_trial = [[o for o in job if _trial_id(o) is None] for job in jobs]
        groups: dict[str, list[list[int]]] = {}
        for index, (cfg, hydra_overrides) in enumerate(compose_each(without_trial, self._compose)):
            # Groups of repeats join a population in a grid sweep; an Optuna trial's trains in its own job.
            grid = all(_trial_id(o) is None for o in jobs[index])
            if unsupported(cfg, groups=grid) is None:
                signature = repr((sorted(shared_part(cfg).items()), hydra_overrides))
            else:
                signature = f"alone:{index}"
            chunks = groups.setdefault(signature, [[]])
            if len(chunks[-1]) == self.size:
                chunks.append([])
            chunks[-1].append(index)
        return sorted((chunk for chunks in groups.values() for chunk in chunks), key=lambda chunk: chunk[0])

    def launch(
        self, jobs: Sequence[Sequence[str]], initial_job_idx: int, numbers: Sequence[int] | None = None
    ) -> list[JobReturn]:
        """`numbers`: each job's own number (a sweep's worker: its trials'), not consecutive from
        `initial_job_idx`; each population is then launched as the number of its first member."""
        groups = self.populations(jobs)
        numbers = list(numbers or range(initial_job_idx, initial_job_idx + len(jobs)))
        launched = []
        for group in groups:
            members = [list(jobs[i]) for i in group]
            common = [o for o in members[0] if all(o in m for m in members[1:]) and _trial_id(o) is None]
            specs = [
                MemberSpec(
                    tuple(o for o in m if o not in common and _trial_id(o) is None),
                    next((t for o in m if (t := _trial_id(o)) is not None), None),
                    numbers[i],
                )
                for i, m in zip(group, members, strict=True)
            ]
            launched.append([*common, population_override(specs)] if len(group) > 1 else members[0])
        sizes = ", ".join(str(len(g)) for g in groups)
        log.info("Launching %d trials as %d population job(s) of %s", len(jobs), len(groups), sizes)
        if numbers == list(range(initial_job_idx, initial_job_idx + len(jobs))):
            returns = self.launcher.launch(launched, initial_job_idx=initial_job_idx)
        else:
            firsts = [numbers[group[0]] for group in groups]
            returns = [
                self.launcher.launch([job], initial_job_idx=n)[0]
                for job, n in zip(launched, firsts, strict=True)
            ]
        results: list[JobReturn | None] = [None] * len(jobs)
        for group, result in zip(groups, returns, strict=True):
            for position, index in enumerate(group):
                results[index] = result if len(group) == 1 else _member_return(result, position, jobs[index])
        return results  # type: ignore[return-value]


def _member_return(result: JobReturn, position: int, overrides: Sequence[str]) -> JobReturn:
    """Member `position`'s JobReturn, as a standalone job of it would have returned."""
    member = replace(result, overrides=list(overrides))
    if result.status != JobStatus.COMPLETED:  # the population job failed as a whole: so did each trial
        return member
    outcome: dict[str, Any] = result.return_value[position]
    member.working_dir = outcome["run_dir"]
    if outcome["state"] == "COMPLETE":
        member.return_value = outcome["value"]
        return member
    member.status = JobStatus.FAILED
    member.return_value = _error(outcome)
    return member


def _error(outcome: dict[str, Any]) -> BaseException:
    """The exception a standalone job of this trial would have raised (the sweeper reads its type)."""
    from trainlab.errors import Diverged

    if outcome["state"] == "PRUNED":
        import optuna

        return optuna.TrialPruned(outcome["reason"])
    if outcome.get("error") == "Diverged":
        return Diverged(outcome["reason"])
    return RuntimeError(outcome["reason"])
