"""What a single run and a population job share: the Hydra job they run in, and a quieter Lightning."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf


class Job(NamedTuple):
    """Where a run writes, the overrides that name it and its tags: the Hydra job's (`job_context`), or
    those a group of repeats gives each of its runs, with the group's `report` to its Optuna trial."""

    output_dir: Path
    overrides: list[str]
    tags: dict[str, str]
    report: Any = None  # trainlab.run.trial.MeanReport: the group's runs report their mean


def job_context() -> Job:
    """(output folder, the job's overrides, tags naming the job and its group choices) from Hydra."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # Where files go is the machine's business, not the run's: keep paths out of names and tags. Unresolved,
    # so that `key=${oc.env:TOKEN}` stays that text and the token's value never reaches MLflow.
    task = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    overrides = [o for o in task if not o.startswith("paths.")]
    tags = {
        f"choice.{group}": str(option)
        for group, option in hydra_cfg.runtime.choices.items()
        if not group.startswith("hydra")
    }
    tags["overrides"] = " ".join(overrides) or "(defaults)"
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        tags["sweep_dir"] = str(Path(hydra_cfg.sweep.dir).name)
        tags["job_num"] = str(hydra_cfg.job.num)
    return Job(Path(hydra_cfg.runtime.output_dir), overrides, tags)


def quiet_lightning() -> None:
    """Lightning logs through its own handler as well as Hydra's: print each line once; and keep out a
    deprecation warning of Lightning's own that a user cannot act on."""
    logging.getLogger("lightning.pytorch").propagate = False
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Metrics are logged once per epoch (trainlab.module), never every `log_every_n_steps`: an epoch
    # shorter than that interval loses nothing.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning's hint to prepend `srun` wherever SLURM is installed: trainlab's way onto SLURM is
    # `launcher=slurm`, and a run on a login node is meant to run there.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
