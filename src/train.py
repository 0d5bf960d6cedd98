"""Train a model: `python src/train.py [group=option ...] [key=value ...]`, or `-m` for a sweep.

Thin on purpose: torch, Lightning and MLflow are imported inside `trainlab.run.training`, so
`--help`, `--cfg job` and tab completion stay instant.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import trainlab.cluster.launcher  # noqa: F401  (registers ${slurm_gpus:…} for conf/launcher/slurm.yaml)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))

if "--help" in sys.argv or "-h" in sys.argv:
    from trainlab.cli.help import list_groups_from

    list_groups_from(ROOT / "conf")
else:
    from trainlab.cli.options import check_options

    check_options(sys.argv[1:], ROOT / "conf")


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> float | list[dict] | None:
    from trainlab.cli.main import main as train

    return train(cfg)


if __name__ == "__main__":
    from trainlab.cli.fast_exit import run_then_exit  # skips the 2 s interpreter teardown (see there)

    run_then_exit(main)
