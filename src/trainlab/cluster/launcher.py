"""What `launcher=slurm` asks SLURM for, derived from the trainer (`${slurm_gpus:…}` in
conf/launcher/slurm.yaml), checked before anything is submitted. Light on purpose: src/train.py imports
it before Hydra composes the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trainlab.errors import ConfigError, Stop
from trainlab.rules import Rule, check_rules

# `auto` takes the GPUs a job is given, so on a cluster it asks for them: a CPU job says trainer=cpu.
GPU_ACCELERATORS = ("gpu", "cuda", "auto")
ACCELERATORS = (*GPU_ACCELERATORS, "cpu")


def slurm_gpus(accelerator: str, devices: Any) -> Any:
    """GPUs per node: `trainer.devices` on a GPU accelerator, 0 on a CPU (RULES check both)."""
    return devices if accelerator in GPU_ACCELERATORS else 0


OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)


def _at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


# SLURM starts one task per device (trainer.devices per node), so it needs counts, not `auto`.
RULES: tuple[Rule, ...] = (
    Rule("trainer.accelerator", lambda v: v in ACCELERATORS, f"one of {', '.join(ACCELERATORS)} on SLURM"),
    Rule("trainer.devices", _at_least(1), "an integer >= 1 on SLURM (tasks per node)"),
    Rule("trainer.num_nodes", _at_least(1), "an integer >= 1"),
    Rule("launcher.gpus", _at_least(0), "an integer >= 0 (GPUs per node)"),
    Rule("launcher.cpus", _at_least(1), "an integer >= 1 (CPU cores per task)"),
    Rule("launcher.mem", _at_least(1), "null or an integer >= 1 (GB per node)", optional=True),
    Rule("launcher.time", _at_least(1), "an integer >= 1 (minutes)"),
    Rule("launcher.array_parallelism", _at_least(1), "an integer >= 1"),
    Rule("launcher.max_requeues", _at_least(0), "an integer >= 0"),
)


class CheckLauncher(Callback):
    """One line on stderr and exit status 2, before anything is submitted, for a value SLURM cannot take
    (otherwise sbatch refuses it, or Hydra fails inside its launcher with a traceback) or a container
    image the jobs cannot run in (one start of it: trainlab.cluster.container)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from trainlab.cluster import container

        try:
            check_rules(config, RULES)
            container.check(config)
        except ConfigError as err:
            raise Stop(err) from None
