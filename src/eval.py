"""Evaluate a finished run, no training: `python src/eval.py run_id=<MLflow run id>` or
`python src/eval.py ckpt_path=<best.ckpt>`, with `data=<data set>` for other data of the same shape.

Thin on purpose: torch and MLflow are imported inside `trainlab.evaluate.evaluation` (docs/after-training.md).
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))

if "--help" not in sys.argv and "-h" not in sys.argv:
    from trainlab.cli.options import check_options

    check_options(sys.argv[1:], ROOT / "conf")  # `data=mnst`: one line and exit 2, not Hydra's dozen


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="eval")
def main(cfg: DictConfig) -> dict[str, float]:
    from trainlab.cli.main import reporting_errors
    from trainlab.evaluate.evaluation import evaluate

    return reporting_errors(lambda: evaluate(cfg))


if __name__ == "__main__":
    from trainlab.cli.fast_exit import run_then_exit

    run_then_exit(main)
