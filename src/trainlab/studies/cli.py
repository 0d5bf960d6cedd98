"""`python src/study.py`: a study with its mistakes (and a full disk) as one line, exit 2, and Ctrl-C as a
pause (exit 130: the same command continues it)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence


def run(arguments: Sequence[str], config_dir: str | None, status: bool) -> None:
    from trainlab.cli.main import reporting_errors
    from trainlab.studies.run import run_study, status_of

    job = status_of if status else run_study
    try:
        reporting_errors(lambda: job(arguments, config_dir))
    except KeyboardInterrupt as stop:
        said = str(stop) if str(stop).startswith("interrupted") else "interrupted by SIGINT"
    else:
        return
    print(f"{said}; the same command continues the study", file=sys.stderr)
    raise SystemExit(128 + signal.SIGINT)
