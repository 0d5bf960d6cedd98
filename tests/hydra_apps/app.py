"""Another team's Hydra app, not trainlab's: its configs share some of trainlab's keys (`model`, `trainer`,
`paths`, a `population` of their own) but not its task, so trainlab's sweepers must run its jobs as Hydra's
basic sweeper would. `--config-name=no_paths|no_trainer` (conf/) or `structured` (a dataclass, below)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@dataclass
class Model:
    width: int = 8


@dataclass
class Structured:
    """Every top-level key that trainlab's own config has and this app might too."""

    model: Model = field(default_factory=Model)
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 1})
    paths: dict[str, Any] = field(default_factory=lambda: {"output_dir": "out"})
    population: int = 8
    seed: int = 0
    lr: float = 0.1


ConfigStore.instance().store(name="structured", node=Structured)


@hydra.main(version_base="1.3", config_path="conf", config_name="no_paths")
def main(cfg: DictConfig) -> float:
    """width × lr + seed, also written to the job's folder (its output)."""
    value = cfg.model.width * cfg.lr + cfg.seed
    (Path(HydraConfig.get().runtime.output_dir) / "value.txt").write_text(f"{value}\n")
    return value


if __name__ == "__main__":
    main()
