"""Run a finished run's best network on new images: `python src/predict.py run_id=<MLflow run id>
input=<an image, a folder of images, an .npz or an IDX file>` (or `ckpt_path=<best.ckpt>`): a CSV of
each input's predicted class and class probabilities.

Thin on purpose: torch and MLflow are imported inside `trainlab.evaluate.prediction` (docs/after-training.md).
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


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="predict")
def main(cfg: DictConfig) -> Path:
    from trainlab.cli.main import reporting_errors
    from trainlab.evaluate.prediction import predict

    return reporting_errors(lambda: predict(cfg))


if __name__ == "__main__":
    from trainlab.cli.fast_exit import run_then_exit

    run_then_exit(main)
