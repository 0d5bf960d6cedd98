"""Judge the experiments' claims over seeds: train what is missing, then write one report.

    python src/study.py experiment=vanishing_gradient,batch_norm,optimizers repeats=5
    python src/study.py experiment=mine --config-dir ~/my_conf data=fashion_mnist   # your own experiment
    python src/study.py experiment=optimizers --status                              # how far, no training

Thin on purpose: torch, Lightning and MLflow are imported only once the arguments are read.
"""

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each experiment is a sweep (python src/train.py -m experiment=NAME repeats=5 ...) in "
        "multirun/<study>.<experiment>/; the report goes to multirun/<study>/ and MLflow's `studies`. "
        "The same command resumes an interrupted study. name=NAME names the study (default: a hash of "
        "the arguments); any other key=value overrides every experiment's config.",
    )
    parser.add_argument("arguments", nargs="*", metavar="experiment=A,B [name=NAME] [key=value]")
    parser.add_argument("--config-dir", "-cd", help="a folder of your own configs (its experiment/ too)")
    parser.add_argument("--status", action="store_true", help="say how far the study is; train nothing")
    options = parser.parse_intermixed_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    from trainlab.studies.cli import run

    run(options.arguments, options.config_dir, options.status)


if __name__ == "__main__":
    from trainlab.cli.fast_exit import run_then_exit

    run_then_exit(main)
