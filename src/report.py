"""Redraw an exercise's figure and results table from MLflow.

    python src/report.py experiment=vanishing_gradient               # the latest sweep
    python src/report.py experiment=optimizers sweep=2026-11-28_04-40-00_123456
    python src/report.py experiment=overfitting kind=accuracy paths.root_dir=/elsewhere
    python src/report.py augmented data=cifar10 augment=flip_crop   # a grid of augmented samples

Thin on purpose: MLflow and matplotlib are imported only once the arguments are read.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="sweep: a folder name under multirun/ (default: the latest sweep); kind: the figure "
        "(default accuracy); any other key=value overrides the config (paths.root_dir=..., ...).",
    )
    parser.add_argument(
        "arguments", nargs="*", metavar="experiment=NAME [sweep=FOLDER] [kind=KIND] [key=value]"
    )
    arguments = parser.parse_args().arguments
    if arguments[:1] == ["augmented"]:
        from trainlab.figures.augmented import main as augmented

        return augmented(arguments[1:])
    from trainlab.figures.exercise import main as report

    return report(arguments)


if __name__ == "__main__":
    sys.exit(main())
